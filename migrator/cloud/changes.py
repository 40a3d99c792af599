"""The write side of the cloud layer: every change a migration makes, and the reads it verifies by.

The executor's steps (identity, grant, swap, revoke) and their undos call `CloudChanges` and
nothing else, so a step never touches an SDK object and every failure reaches it as one typed,
one-line `CloudError`. Each write is idempotent where Azure allows it (a deterministic role
assignment name, create-or-update for identities, "already there" treated as done), because
a runbook job may restart from the beginning and a resumed migration repeats its last step.

Settings values and minted secrets are secrets: no message built here quotes one, and an Azure
error that echoes a value being written is redacted before it is raised.
"""

from __future__ import annotations

import functools
import json
import re
import ssl
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)
from azure.mgmt.msi.models import Identity
from azure.mgmt.web.models import (
    ConnectionStringDictionary,
    ConnStringValueTypePair,
    ManagedServiceIdentity,
    SitePatchResource,
    SlotConfigNames,
    SlotConfigNamesResource,
    StringDictionary,
    UserAssignedIdentity,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.application_item_request_builder import (
    ApplicationItemRequestBuilder,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.models.app_role_assignment import AppRoleAssignment
from msgraph.generated.models.password_credential import PasswordCredential

from migrator.cloud.errors import (
    AzureCallError,
    CloudConfigError,
    InvalidResourceId,
    PrincipalNotReplicated,
)
from migrator.cloud.factory import ClientFactory
from migrator.cloud.graph import GraphAdapter
from migrator.cloud.records import (
    AccessPolicyRecord,
    AppRoleGrantRecord,
    HealthProbe,
    IdentityRecord,
    NewSecret,
    PasswordCredentialRecord,
    Permission,
    PrincipalRecord,
    RoleAssignmentRecord,
    SiteAddress,
    SiteState,
    UserAssignedIdentityRecord,
    VaultRecord,
)
from migrator.cloud.rights import RightsAdapter, _guid, _permissions
from migrator.cloud.signins import SignInRecord, sign_ins_from
from migrator.cloud.web import (
    _identity,
    _site,
    arm_call,
    enum_text,
    read_app_settings,
    read_connection_strings,
)

# The records this module's methods take and return, importable from here with the class.
__all__ = [
    "CloudChanges", "HealthProbe", "NewSecret", "SiteAddress", "SiteState",
    "UserAssignedIdentityRecord", "parse_site_id", "role_assignment_name",
]

_SITE_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Web/"
    r"sites/(?P<name>[^/]+)(?:/slots/(?P<slot>[^/]+))?/?$", re.IGNORECASE)
_UAI_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/(?P<name>[^/]+)/?$", re.IGNORECASE)
_VAULT_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
    r"Microsoft\.KeyVault/vaults/(?P<name>[^/]+)/?$", re.IGNORECASE)
_SUBSCRIPTION_SCOPE = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)

IDENTITY_TYPES = ("None", "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned")
PRINCIPAL_TYPE = "ServicePrincipal"  # managed identities; the SDK's default would be "User"
# A value shorter than this is not redacted from error text: "1", "true" or "dotnet" are not
# secrets, and replacing them would garble the message (status codes, words) for nothing.
REDACT_MIN_LENGTH = 8
DETAIL_LIMIT = 200
# Graph's words for "no such principal" on a write naming a principal that is still
# replicating: Request_ResourceNotFound ("... does not exist ..."), and "Not a valid reference
# update." for a principalId it cannot resolve yet.
_NOT_REPLICATED_TEXT = ("does not exist", "not a valid reference update", "principalnotfound")


def parse_site_id(site_id: str) -> SiteAddress:
    """The parts of a site or slot id, as the Web SDK's calls take them. ARM ids are
    case-insensitive, and plans carry ids as Azure printed them."""
    m = _SITE_ID.match(site_id.strip())
    if m is None:
        raise InvalidResourceId(f"not a site or slot id: {site_id!r}")
    return SiteAddress(m.group("sub"), m.group("rg"), m.group("name"), m.group("slot"))


def role_assignment_name(scope: str, principal_id: str, role_definition_id: str) -> str:
    """The name this tool gives the assignment of a role to a principal at a scope: the same
    every time (AZURE-FACTS.md, RBAC), so a repeated step finds its own assignment instead of
    making a second, and an undo knows what to delete."""
    key = f"{scope.lower()}|{principal_id.lower()}|{_guid(role_definition_id)}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def _parse(pattern: re.Pattern[str], resource_id: str, kind: str) -> tuple[str, str, str]:
    m = pattern.match(resource_id.strip())
    if m is None:
        raise InvalidResourceId(f"not a {kind} id: {resource_id!r}")
    return m.group("sub"), m.group("rg"), m.group("name")


def _identity_kinds(kind: str) -> frozenset[str]:
    return frozenset(p.strip().lower() for p in kind.split(",") if p.strip()) - {"none"}


def _canonical_identity_type(kind: str) -> str:
    """One of ARM's four spellings, from any case and spacing of them."""
    parts = _identity_kinds(kind)
    for known in IDENTITY_TYPES:
        if _identity_kinds(known) == parts:
            return known
    raise ValueError(f"unknown managed identity type {kind!r}; one of {', '.join(IDENTITY_TYPES)}")


def _retyped(exc: AzureCallError, cls: type[AzureCallError] = AzureCallError,
             text: str | None = None) -> AzureCallError:
    """The same error as another class, or with another message after the "what: " prefix."""
    tail = (text if text is not None else str(exc))[len(exc.what) + 2:]
    made = cls(exc.what, None, None, tail)
    made.status, made.code = exc.status, exc.code
    return made


def _redacted(exc: AzureCallError, values: Iterable[str]) -> AzureCallError:
    """The error, with any value being written cut out of its text."""
    text = str(exc)
    for value in sorted({v for v in values if len(v) >= REDACT_MIN_LENGTH}, key=len,
                        reverse=True):
        text = text.replace(value, "<redacted>")
    return exc if text == str(exc) else _retyped(exc, type(exc), text)


def _role_record(assignment: Any) -> RoleAssignmentRecord:
    return RoleAssignmentRecord(
        id=str(assignment.id), scope=str(assignment.scope),
        role_definition_id=_guid(assignment.role_definition_id),
        principal_id=str(assignment.principal_id).lower(),
        principal_type=enum_text(assignment.principal_type),
        condition=assignment.condition or None,
        condition_version=assignment.condition_version or None,
    )


def _uai_record(identity: Any) -> UserAssignedIdentityRecord:
    return UserAssignedIdentityRecord(
        id=str(identity.id), name=str(identity.name), client_id=str(identity.client_id),
        principal_id=str(identity.principal_id), location=str(identity.location or ""))


def _next_owners(application_object_id: str, link: str, graph: Any) -> Any:
    """The next page of an application's owners, by the link Graph gave."""
    return graph.applications.by_application_id(application_object_id).owners.with_url(
        link).get()


def _password_record(cred: PasswordCredential) -> PasswordCredentialRecord:
    return PasswordCredentialRecord(
        key_id=str(cred.key_id), hint=cred.hint, display_name=cred.display_name,
        start=cred.start_date_time.isoformat() if cred.start_date_time else None,
        end=cred.end_date_time.isoformat() if cred.end_date_time else None,
    )


def _same_scope(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _short(text: str) -> str:
    """Whitespace folded, at most DETAIL_LIMIT characters."""
    folded = " ".join(text.split())
    return folded if len(folded) <= DETAIL_LIMIT else folded[:DETAIL_LIMIT - 1] + "…"


def _body_summary(response: httpx.Response) -> str:
    """What a health answer says about itself: its failing checks or error message when it is
    JSON that has them, else the start of its text."""
    try:
        parsed = json.loads(response.text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("failing", "error", "message", "detail", "title"):
            value = parsed.get(key)
            if isinstance(value, list) and value:
                return _short("; ".join(str(v) for v in value))
            if isinstance(value, str) and value:
                return _short(value)
    return _short(response.text)


class CloudChanges:
    """Reads and writes a migration makes, per site (or slot) id, principal or resource id."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory = factory
        self._graph = GraphAdapter(factory)

    def sign_ins(self, app_ids: Iterable[str], since: datetime, *,
                 workspace: str | None = None) -> list[SignInRecord]:
        """The service-principal sign-ins of these principals since `since`, from Graph or
        from a Log Analytics workspace (cloud/signins)."""
        return sign_ins_from(self.factory, self._graph, workspace).read(app_ids, since)

    def signed_in_tenant(self) -> str | None:
        """The tenant the operator's ARM token was issued by, or None when it does not say."""
        from migrator.cloud.whoami import signed_in

        return signed_in(self.factory).tenant_id

    def operator_permissions(self, scope: str) -> tuple[Permission, ...]:
        """The operator's effective ARM permissions at a scope (see RightsAdapter)."""
        return RightsAdapter(self.factory).permissions(scope)

    def operator_object_id(self) -> str | None:
        """The object id of the signed-in operator, from its ARM token."""
        from migrator.cloud.whoami import signed_in

        oid = signed_in(self.factory).object_id
        return oid.lower() if oid else None

    def application_owners(self, application_object_id: str) -> frozenset[str]:
        """Object ids (lowercase) of an application's owners: who may manage its credentials
        with only Application.ReadWrite.OwnedBy. Owners are few; every page is read."""
        what = f"read the owners of application {application_object_id}"
        page = self._graph.run(what, lambda g: g.applications.by_application_id(
            application_object_id).owners.get())
        owners = {str(o.id).lower() for o in (page.value or []) if o.id}
        while page.odata_next_link:
            page = self._graph.run(what, functools.partial(
                _next_owners, application_object_id, str(page.odata_next_link)))
            owners |= {str(o.id).lower() for o in (page.value or []) if o.id}
        return frozenset(owners)

    def operator_graph_roles(self) -> frozenset[str] | None:
        """The Graph application permissions in the operator's token; None for a token that
        lists none (a user's)."""
        from migrator.cloud.whoami import graph_roles

        return graph_roles(self.factory)

    # -- sites and slots ---------------------------------------------------------------------

    def _site_model(self, address: SiteAddress) -> Any:
        web = self.factory.web(address.subscription_id)
        rg, name, slot = address.resource_group, address.name, address.slot
        if slot:
            return arm_call(f"read site {address.display}",
                            lambda: web.web_apps.get_slot(rg, name, slot))
        return arm_call(f"read site {address.display}", lambda: web.web_apps.get(rg, name))

    def site(self, site_id: str) -> SiteState:
        """A site or slot with what a step needs besides its settings: its identity (the
        snapshot an identity undo restores), its host name and health path (the swap's
        check)."""
        address = parse_site_id(site_id)
        model = self._site_model(address)
        record = _site(address.subscription_id, model,
                       slot_of=address.name if address.slot else None)
        if not record.resource_group:
            record = replace(record, resource_group=address.resource_group)
        config = getattr(model, "site_config", None)
        path = getattr(config, "health_check_path", None)
        if not path:
            # GET site carries only part of siteConfig; the health path may be missing there.
            web = self.factory.web(address.subscription_id)
            rg, name, slot = address.resource_group, address.name, address.slot
            if slot:
                full = arm_call(f"read configuration of {address.display}",
                                lambda: web.web_apps.get_configuration_slot(rg, name, slot))
            else:
                full = arm_call(f"read configuration of {address.display}",
                                lambda: web.web_apps.get_configuration(rg, name))
            path = full.health_check_path
        return SiteState(record=record,
                         default_host_name=str(getattr(model, "default_host_name", "") or ""),
                         health_check_path=str(path) if path else None)

    def set_identity(self, site_id: str, type: str,
                     user_assigned: tuple[str, ...]) -> IdentityRecord:
        """Make the site's managed identities exactly these, and return them as read back.

        ARM's PATCH adds the user-assigned identities it is given and keeps the others, so
        each one to drop is sent as null; a type without UserAssigned drops them all. The
        read-back is compared with the request: an identity Azure did not apply is an error,
        not something to discover at the grant stage."""
        kind = _canonical_identity_type(type)
        wants_user = "userassigned" in _identity_kinds(kind)
        wanted = {rid.lower(): rid for rid in user_assigned}
        if wants_user != bool(wanted):
            raise ValueError(f"identity type {kind!r} with {len(wanted)} user-assigned "
                             "identities: UserAssigned needs at least one, other types none")
        address = parse_site_id(site_id)
        what = f"set managed identity of {address.display} to {kind}"
        current = _identity(getattr(self._site_model(address), "identity", None))
        listed: dict[str, UserAssignedIdentity | None] = {}
        if wants_user:
            listed = {rid: UserAssignedIdentity() for rid in wanted.values()}
            listed |= {rid: None for rid in current.user_assigned
                       if rid.lower() not in wanted}
        patch = SitePatchResource(identity=ManagedServiceIdentity(
            type=kind, user_assigned_identities=listed or None))  # type: ignore[arg-type]
        web = self.factory.web(address.subscription_id)
        rg, name, slot = address.resource_group, address.name, address.slot
        if slot:
            arm_call(what, lambda: web.web_apps.update_slot(rg, name, slot, patch))
        else:
            arm_call(what, lambda: web.web_apps.update(rg, name, patch))
        after = _identity(getattr(self._site_model(address), "identity", None))
        got_kinds = _identity_kinds(after.type)
        got_user = {rid.lower() for rid in after.user_assigned}
        if got_kinds != _identity_kinds(kind) or got_user != set(wanted):
            raise AzureCallError(what, None, "IdentityNotApplied", (
                f"Azure shows {after.type} with {len(got_user)} user-assigned "
                f"identities ({', '.join(sorted(got_user)) or 'none'})"))
        return after

    # -- settings ------------------------------------------------------------------------------

    def app_settings(self, site_id: str) -> dict[str, str]:
        """A site's (or slot's) app settings, values included: the snapshot a swap restores.
        Keep it in memory or in the stash, never in logs."""
        return read_app_settings(self.factory, parse_site_id(site_id))

    def set_app_settings(self, site_id: str, settings: dict[str, str]) -> None:
        """Replace all app settings (ARM's PUT has no merge: a name left out is deleted). The
        app restarts with them."""
        address = parse_site_id(site_id)
        web = self.factory.web(address.subscription_id)
        rg, name, slot = address.resource_group, address.name, address.slot
        body = StringDictionary(properties=dict(settings))
        what = f"write {len(settings)} app settings of {address.display}"
        try:
            if slot:
                arm_call(what, lambda: web.web_apps.update_application_settings_slot(
                    rg, name, slot, body))
            else:
                arm_call(what, lambda: web.web_apps.update_application_settings(rg, name, body))
        except AzureCallError as exc:
            raise _redacted(exc, settings.values()) from None

    def connection_strings(self, site_id: str) -> dict[str, tuple[str, str]]:
        """A site's (or slot's) connection strings, name -> (type, value); values are secrets."""
        return read_connection_strings(self.factory, parse_site_id(site_id))

    def set_connection_strings(self, site_id: str,
                               strings: dict[str, tuple[str, str]]) -> None:
        """Replace all connection strings, name -> (type, value), as ARM's PUT does."""
        address = parse_site_id(site_id)
        web = self.factory.web(address.subscription_id)
        rg, name, slot = address.resource_group, address.name, address.slot
        body = ConnectionStringDictionary(properties={
            key: ConnStringValueTypePair(value=value, type=kind)
            for key, (kind, value) in strings.items()})
        what = f"write {len(strings)} connection strings of {address.display}"
        try:
            if slot:
                arm_call(what, lambda: web.web_apps.update_connection_strings_slot(
                    rg, name, slot, body))
            else:
                arm_call(what, lambda: web.web_apps.update_connection_strings(rg, name, body))
        except AzureCallError as exc:
            raise _redacted(exc, [v for _, v in strings.values()]) from None

    def slot_config_names(self, site_id: str) -> tuple[frozenset[str], frozenset[str]]:
        """Names of the slot-sticky app settings and connection strings. They belong to the
        production site, so a slot id reads its site's."""
        address = parse_site_id(site_id)
        web = self.factory.web(address.subscription_id)
        rg, name = address.resource_group, address.name
        found = arm_call(f"read slot settings of {name}",
                         lambda: web.web_apps.list_slot_configuration_names(rg, name))
        return (frozenset(found.app_setting_names or ()),
                frozenset(found.connection_string_names or ()))

    def set_slot_config_names(self, site_id: str, app_settings: frozenset[str],
                              connection_strings: frozenset[str]) -> None:
        """Set which names stay with their slot on a swap (the site's list, for a slot id as
        well). The PUT replaces the whole resource, so its third list (Azure Storage mounts)
        is read first and kept."""
        address = parse_site_id(site_id)
        web = self.factory.web(address.subscription_id)
        rg, name = address.resource_group, address.name
        current = arm_call(f"read slot settings of {name}",
                           lambda: web.web_apps.list_slot_configuration_names(rg, name))
        body = SlotConfigNamesResource(properties=SlotConfigNames(
            app_setting_names=sorted(app_settings),
            connection_string_names=sorted(connection_strings),
            azure_storage_config_names=list(current.azure_storage_config_names or []) or None,
        ))
        arm_call(f"write slot settings of {name}",
                 lambda: web.web_apps.update_slot_configuration_names(rg, name, body))

    # -- user-assigned identities ------------------------------------------------------------

    def user_assigned_identity(self, resource_id: str) -> UserAssignedIdentityRecord | None:
        """The identity, or None if there is none (a step checks before it creates)."""
        sub, rg, name = _parse(_UAI_ID, resource_id, "user-assigned identity")
        client = self.factory.msi(sub)
        try:
            found = arm_call(f"read user-assigned identity {name}",
                             lambda: client.user_assigned_identities.get(rg, name))
        except AzureCallError as exc:
            if exc.status == 404:
                return None
            raise
        return _uai_record(found)

    def create_user_assigned_identity(self, resource_id: str, location: str,
                                      tags: dict[str, str]) -> UserAssignedIdentityRecord:
        """Create (or, if it is there, update) the identity that apps sharing one principal
        will share. Create-or-update keeps its principal and client id: safe to repeat."""
        sub, rg, name = _parse(_UAI_ID, resource_id, "user-assigned identity")
        client = self.factory.msi(sub)
        made = arm_call(f"create user-assigned identity {name}",
                        lambda: client.user_assigned_identities.create_or_update(
                            rg, name, Identity(location=location, tags=dict(tags))))
        return _uai_record(made)

    def delete_user_assigned_identity(self, resource_id: str) -> None:
        """Delete the identity (the undo of its creation); one already gone is fine."""
        sub, rg, name = _parse(_UAI_ID, resource_id, "user-assigned identity")
        client = self.factory.msi(sub)
        try:
            arm_call(f"delete user-assigned identity {name}",
                     lambda: client.user_assigned_identities.delete(rg, name))
        except AzureCallError as exc:
            if exc.status != 404:
                raise

    # -- role assignments ----------------------------------------------------------------------

    def _authorization(self, scope: str) -> Any:
        m = _SUBSCRIPTION_SCOPE.match(scope)
        # Scope operations put the scope, not the client's subscription, in the URL; a scope
        # above every subscription (a management group, "/") needs some client all the same.
        return self.factory.authorization(m.group(1) if m else
                                          "00000000-0000-0000-0000-000000000000")

    def role_assignments_for(self, principal_id: str,
                             subscription_id: str) -> list[RoleAssignmentRecord]:
        """A principal's role assignments at, above and below a subscription (what an
        identity already holds, and what a grant copies from the old principal)."""
        client = self.factory.authorization(subscription_id)
        flt = f"principalId eq '{principal_id}'"
        return arm_call(f"list role assignments of {principal_id}", lambda: [
            _role_record(a) for a in client.role_assignments.list_for_subscription(filter=flt)])

    def _find_assignments(self, scope: str, role_guid: str,
                          principal_id: str) -> list[RoleAssignmentRecord]:
        client = self._authorization(scope)
        flt = f"principalId eq '{principal_id}'"
        found = arm_call(f"list role assignments of {principal_id} at {scope}", lambda: [
            _role_record(a) for a in client.role_assignments.list_for_scope(scope, filter=flt)])
        return [a for a in found if _same_scope(a.scope, scope)
                and a.role_definition_id == role_guid
                and a.principal_id == principal_id.lower()]

    def create_role_assignment(self, scope: str, role_definition_id: str, principal_id: str,
                               condition: str | None = None,
                               condition_version: str | None = None) -> RoleAssignmentRecord:
        """Assign a role to a managed identity at a scope, under the deterministic name and
        with `condition` verbatim (ARM lets a PUT of our own assignment change its condition);
        an assignment someone else made with the same scope, role and principal is returned
        as is, whatever its condition: the caller compares.

        principalType is always sent: ARM then accepts a principal still replicating, where it
        would otherwise answer PrincipalNotFound (and the SDK's default type is "User"). If it
        refuses all the same, PrincipalNotReplicated tells the caller to wait and retry."""
        role_guid = _guid(role_definition_id)
        if role_definition_id.strip().startswith("/"):
            full_role_id = role_definition_id.strip()
        else:
            m = _SUBSCRIPTION_SCOPE.match(scope)
            prefix = f"/subscriptions/{m.group(1)}" if m else ""
            full_role_id = f"{prefix}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}"
        name = role_assignment_name(scope, principal_id, role_guid)
        params = RoleAssignmentCreateParameters(
            role_definition_id=full_role_id, principal_id=principal_id,
            principal_type=PRINCIPAL_TYPE, condition=condition,
            condition_version=(condition_version or "2.0") if condition else None)
        client = self._authorization(scope)
        what = f"assign role {role_guid} to {principal_id} at {scope}"
        try:
            made = arm_call(what, lambda: client.role_assignments.create(scope, name, params))
        except AzureCallError as exc:
            if exc.code == "PrincipalNotFound":
                raise _retyped(exc, PrincipalNotReplicated) from None
            if exc.code == "RoleAssignmentExists" or exc.status == 409:
                existing = self._find_assignments(scope, role_guid, principal_id)
                if existing:
                    return existing[0]
            raise
        return _role_record(made)

    def delete_role_assignment(self, scope: str, role_definition_id: str,
                               principal_id: str) -> bool:
        """Remove the principal's assignment of a role at exactly this scope: ours by its
        name, and any other one with the same scope, role and principal (the old principal's,
        made by hand). True if something was deleted; nothing there is fine."""
        role_guid = _guid(role_definition_id)
        client = self._authorization(scope)
        name = role_assignment_name(scope, principal_id, role_guid)
        what = f"delete role assignment of {role_guid} to {principal_id} at {scope}"
        deleted = False
        try:
            gone = arm_call(what, lambda: client.role_assignments.delete(scope, name))
            deleted = gone is not None
        except AzureCallError as exc:
            if exc.status != 404:
                raise
        for other in self._find_assignments(scope, role_guid, principal_id):
            other_name = other.id.rstrip("/").rsplit("/", 1)[-1]
            try:
                gone = arm_call(what, functools.partial(client.role_assignments.delete, scope,
                                                        other_name))
                deleted = deleted or gone is not None
            except AzureCallError as exc:
                if exc.status != 404:
                    raise
        return deleted

    # -- Key Vault access policies -------------------------------------------------------------

    def _vault_model(self, vault_id: str) -> tuple[Any, str, str]:
        sub, rg, name = _parse(_VAULT_ID, vault_id, "key vault")
        client = self.factory.keyvault(sub)
        return arm_call(f"read key vault {name}", lambda: client.vaults.get(rg, name)), rg, sub

    def vault(self, vault_id: str) -> VaultRecord:
        """A vault's permission model and access policies, as a grant verifies them."""
        found, _, sub = self._vault_model(vault_id)
        props = found.properties
        return VaultRecord(
            id=str(found.id), name=str(found.name), subscription_id=sub,
            rbac=bool(props.enable_rbac_authorization) if props else False,
            access_policies=tuple(
                AccessPolicyRecord(
                    object_id=str(p.object_id).lower(),
                    secrets=_permissions(p.permissions, "secrets"),
                    keys=_permissions(p.permissions, "keys"),
                    certificates=_permissions(p.permissions, "certificates"),
                ) for p in (props.access_policies or [] if props else [])),
        )

    def _update_policies(self, vault_id: str, kind: str,
                         entries: Callable[[Any], list[AccessPolicyEntry]]) -> None:
        found, rg, sub = self._vault_model(vault_id)
        policies = entries(found)
        if not policies:
            return
        client = self.factory.keyvault(sub)
        params = VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=policies))
        arm_call(f"{kind} access policy on key vault {found.name}",
                 lambda: client.vaults.update_access_policy(rg, str(found.name), kind, params))

    def add_access_policy(self, vault_id: str, object_id: str, secrets: tuple[str, ...] = (),
                          keys: tuple[str, ...] = (),
                          certificates: tuple[str, ...] = ()) -> None:
        """Give an identity these permissions on a vault (merged into any it has: Key Vault's
        "add" operation), as the old principal's access policy had them."""
        if not (secrets or keys or certificates):
            return

        def entry(found: Any) -> list[AccessPolicyEntry]:
            tenant = str(found.properties.tenant_id or self.factory.profile.tenant_id or "")
            return [AccessPolicyEntry(
                tenant_id=tenant, object_id=object_id,
                permissions=Permissions(keys_property=list(keys) or None,
                                        secrets=list(secrets) or None,
                                        certificates=list(certificates) or None))]

        self._update_policies(vault_id, "add", entry)

    def remove_access_policy(self, vault_id: str, object_id: str) -> None:
        """Remove an identity's whole access policy entry: Key Vault's "remove" subtracts the
        permissions it is sent, so it is sent every permission the entry holds now. No entry:
        nothing to do."""

        def entries(found: Any) -> list[AccessPolicyEntry]:
            props = found.properties
            return [AccessPolicyEntry(tenant_id=p.tenant_id, object_id=p.object_id,
                                      application_id=p.application_id,
                                      permissions=p.permissions)
                    for p in (props.access_policies or [] if props else [])
                    if str(p.object_id).lower() == object_id.lower()]

        self._update_policies(vault_id, "remove", entries)

    # -- Graph: app-role assignments -----------------------------------------------------------

    def app_role_assignments(self, principal_id: str) -> list[AppRoleGrantRecord]:
        """The application permissions a principal holds (Graph's, and other APIs').

        Graph answers 404 for a managed identity it does not know yet (Entra replication):
        PrincipalNotReplicated, so that the caller waits instead of failing the step."""
        try:
            return list(self._graph._grants(principal_id))
        except AzureCallError as exc:
            if exc.status == 404:
                raise _retyped(exc, PrincipalNotReplicated) from None
            raise

    def assign_app_role(self, principal_id: str, resource_id: str, app_role_id: str) -> str:
        """Grant an app role of a resource (Microsoft Graph's principal, say) to an identity;
        the assignment's id. Graph refuses a duplicate, so one already there is returned."""
        what = f"assign app role {app_role_id} of {resource_id} to {principal_id}"

        def existing() -> str | None:
            grants = self.app_role_assignments(principal_id)
            return next((g.id for g in grants if g.resource_id.lower() == resource_id.lower()
                         and g.app_role_id.lower() == app_role_id.lower()), None)

        found = existing()
        if found is not None:
            return found
        body = AppRoleAssignment(principal_id=uuid.UUID(principal_id),
                                 resource_id=uuid.UUID(resource_id),
                                 app_role_id=uuid.UUID(app_role_id))
        try:
            made = self._graph.run(what, lambda g: g.service_principals.by_service_principal_id(
                principal_id).app_role_assignments.post(body))
        except AzureCallError as exc:
            text = str(exc).lower()
            if "already exists" in text:
                again = existing()
                if again is not None:
                    return again
            if exc.status == 404 or any(t in text for t in _NOT_REPLICATED_TEXT):
                raise _retyped(exc, PrincipalNotReplicated) from None
            raise
        return str(made.id)

    def remove_app_role_assignment(self, principal_id: str, assignment_id: str) -> None:
        """Withdraw one app-role assignment; one already gone is fine."""
        try:
            self._graph.run(
                f"remove app role assignment {assignment_id} of {principal_id}",
                lambda g: g.service_principals.by_service_principal_id(principal_id)
                .app_role_assignments.by_app_role_assignment_id(assignment_id).delete())
        except AzureCallError as exc:
            if exc.status != 404:
                raise

    # -- Graph: password credentials -----------------------------------------------------------

    def password_credentials(self, application_object_id: str
                             ) -> list[PasswordCredentialRecord]:
        """An application's password credentials (hint and key id, never text)."""
        query = ApplicationItemRequestBuilder.ApplicationItemRequestBuilderGetQueryParameters(
            select=["id", "passwordCredentials"])
        app = self._graph.run(
            f"read password credentials of application {application_object_id}",
            lambda g: g.applications.by_application_id(application_object_id).get(
                RequestConfiguration(query_parameters=query)))
        return [_password_record(c) for c in (app.password_credentials or [])]

    def add_password(self, application_object_id: str, display_name: str
                     ) -> tuple[PasswordCredentialRecord, NewSecret]:
        """Mint a client secret (a revoke's undo). Graph shows its text once, here: it comes
        back wrapped so that nothing prints it by accident."""
        what = f"add password to application {application_object_id}"
        body = AddPasswordPostRequestBody(
            password_credential=PasswordCredential(display_name=display_name))
        made = self._graph.run(what, lambda g: g.applications.by_application_id(
            application_object_id).add_password.post(body))
        text = getattr(made, "secret_text", None)
        if made is None or not text:
            raise AzureCallError(what, None, "NoSecretText", "Graph returned no secret text")
        secret = NewSecret(str(text))
        made.secret_text = None
        return _password_record(made), secret

    def set_vault_secret(self, vault_uri: str, name: str, value: NewSecret,
                         tags: dict[str, str]) -> str:
        """Write a new current version of a Key Vault secret (a revoke's undo, where an app's
        Key Vault reference reads the secret); the version's id comes back. The value is never
        in an error: Key Vault does not echo it, and it is cut out if it ever did."""
        what = f"write a new version of secret {name} in vault {vault_uri}"
        client = self.factory.key_vault_secrets(vault_uri)
        try:
            made = arm_call(what, lambda: client.set_secret(
                name, value.reveal(), tags=tags, content_type="msi-migrator replacement"))
        except AzureCallError as exc:
            raise _redacted(exc, [value.reveal()]) from None
        version = made.properties.version
        if not version:
            raise AzureCallError(what, None, "NoVersion", "Key Vault returned no version id")
        return str(version)

    def remove_password(self, application_object_id: str, key_id: str) -> None:
        """Remove one password credential by key id (the revoke stage); one already gone is
        fine, so a resumed revoke does not fail on its own earlier success."""
        body = RemovePasswordPostRequestBody(key_id=uuid.UUID(key_id))
        try:
            self._graph.run(
                f"remove password {key_id} of application {application_object_id}",
                lambda g: g.applications.by_application_id(
                    application_object_id).remove_password.post(body))
        except AzureCallError as exc:
            if exc.status not in (400, 404):
                raise
            # Graph's answer for a key id it does not hold; if the application itself is
            # missing, reading its credentials raises that instead.
            held = {c.key_id.lower() for c in self.password_credentials(application_object_id)}
            if key_id.lower() in held:
                raise

    # -- Graph: principals -----------------------------------------------------------------------

    def service_principal_by_object_id(self, object_id: str) -> PrincipalRecord | None:
        """A service principal (and its application, if this tenant holds it) by object id:
        how a step re-reads a managed identity or the old principal; None if there is none."""
        try:
            sp = self._graph.run(f"look up service principal {object_id}",
                                  lambda g: g.service_principals.by_service_principal_id(
                                      object_id).get())
        except AzureCallError as exc:
            if exc.status == 404:
                return None
            raise
        app = None
        if sp.service_principal_type != "ManagedIdentity":  # no application object to find
            app_id = str(sp.app_id)
            try:
                app = self._graph.run(f"look up application {app_id}",
                                       lambda g: g.applications_with_app_id(app_id).get())
            except AzureCallError as exc:
                if exc.status != 404:
                    raise
        return self._graph._record(sp, app)

    # -- health --------------------------------------------------------------------------------

    def _health_url(self, state: SiteState) -> str:
        path = state.health_check_path or "/"
        path = path if path.startswith("/") else "/" + path
        record = state.record
        template = self.factory.profile.site_url
        if not template:
            return f"https://{state.default_host_name}{path}"
        try:
            base = template.format(site=record.name, slot=record.slot or "",
                                   slot_path=f"/slots/{record.slot}" if record.slot else "")
        except (KeyError, IndexError, ValueError) as exc:
            raise CloudConfigError(f"cloud profile site_url {template!r}: {exc}") from None
        return base.rstrip("/") + path

    def probe_health(self, state: SiteState, timeout: float = 10) -> HealthProbe:
        """GET the app's health path once: the swap's proof that the app still works with
        its new credential. Never raises for the network: no answer is a failed probe."""
        if not (state.default_host_name or self.factory.profile.site_url):
            return HealthProbe(False, None, f"{state.record.display} has no host name to probe")
        url = self._health_url(state)
        ca_bundle = self.factory.profile.ca_bundle
        try:
            verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=ca_bundle)
                                             if ca_bundle else True)
        except OSError as exc:
            return HealthProbe(False, None, _short(f"cannot load CA bundle {ca_bundle}: {exc}"))
        try:
            with httpx.Client(verify=verify, timeout=timeout, follow_redirects=False) as http:
                response = http.get(url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return HealthProbe(False, None,
                               _short(f"GET {url}: {type(exc).__name__}: {exc}"))
        status = response.status_code
        ok = 200 <= status < 300
        summary = f"{status} {response.reason_phrase}".strip()
        if not ok:
            body = _body_summary(response)
            summary = _short(f"{summary}: {body}" if body else summary)
        return HealthProbe(ok, status, summary)
