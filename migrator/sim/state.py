"""The simulated tenant's live state, built from an estate and changed by API calls.

Everything the simulator serves (ARM, Graph, Entra, managed identities, app runtimes) reads and
writes this one object model, so a role assignment made through ARM is what the app runtime's
health check consults a moment later. Ids not given in the estate are uuid5 of the name: the same
file gives the same tenant.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from migrator.sim.catalog import (
    GRAPH_APP_ID,
    GRAPH_APP_ROLES,
    GRAPH_ROLE_NAMES,
    NAMESPACE,
    app_role_id,
    derive_id,
    generate_client_secret,
)
from migrator.sim.estate import (
    EstateNames,
    EstateSpec,
    NeedSpec,
    SiteSpec,
    SlotSpec,
    custom_role_id,
    gc_paused,
)
from migrator.sim.rbac import BUILTIN_ROLES, ROLES_BY_NAME, RoleDefinition
from migrator.sim.signins import (
    ARM_RESOURCE,
    NAMED_RESOURCES,
    ExternalCaller,
    SignInEvent,
    SignInLog,
    new_event,
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SimError(Exception):
    """A request the simulated cloud refuses; carries the HTTP status and Azure's error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class WebError(SimError):
    """A refusal by the App Service resource provider itself (not ARM's gateway), which Azure
    answers in Microsoft.Web's own error shape rather than ARM's `{"error": {...}}`."""


# --- directory objects -----------------------------------------------------------------------


@dataclass
class PasswordCredential:
    key_id: str
    secret: str  # lives only inside the simulator, as in Entra
    display_name: str | None
    start: datetime
    end: datetime

    @property
    def hint(self) -> str:
        return self.secret[:3]


@dataclass
class Application:
    object_id: str
    app_id: str
    display_name: str
    passwords: list[PasswordCredential] = field(default_factory=list)
    created: datetime = field(default_factory=utcnow)
    # Object ids of the service principals that own the registration: an owner holding only
    # Application.ReadWrite.OwnedBy may manage its credentials, and nothing else's.
    owners: list[str] = field(default_factory=list)


@dataclass
class ServicePrincipal:
    object_id: str
    app_id: str
    display_name: str
    kind: Literal["Application", "ManagedIdentity"] = "Application"
    account_enabled: bool = True
    app_roles: dict[str, str] = field(default_factory=dict)  # value -> id (resource apps)
    alternative_names: list[str] = field(default_factory=list)  # MI: its resource id
    visible_at: float = 0.0  # monotonic time from which RBAC and Graph know it
    created: datetime = field(default_factory=utcnow)


@dataclass
class AppRoleAssignment:
    id: str
    principal_id: str
    resource_id: str
    app_role_id: str
    created: datetime = field(default_factory=utcnow)


@dataclass(frozen=True)
class Delays:
    """How long Azure takes to make a change known, which a simulator must not skip.

    A new managed identity's principal is unknown to RBAC and Graph for a while (Entra
    replication: PrincipalNotFound on a role assignment), and a role assignment reaches
    data-plane authorization minutes after it is made (AZURE-FACTS, "RBAC"; Microsoft's
    "Troubleshoot Azure RBAC", symptom "Role assignment changes are not being detected": up to
    10 minutes, up to 30 with Resource Manager's caching). `REALISTIC` is
    what `migrator sim serve` uses unless told otherwise; tests and the demo shorten them and
    say so, never to zero by accident.

    Sign-ins reach Entra's logs (and Graph's `auditLogs/signIns`) minutes after they happen:
    2 minutes at the 95th percentile, 5 at the 99th (sim/signins.py has the sources). A Log
    Analytics workspace that Entra's diagnostic settings feed gets them later still, through
    Azure Monitor's ingestion pipeline (sim/loganalytics.py has the sources).
    """

    replication: float = 20.0
    rbac: float = 120.0
    sign_in_ingestion: float = 180.0
    workspace_ingestion: float = 300.0


REALISTIC_DELAYS = Delays()
# for tests and the demo: seconds, not minutes
SHORT_DELAYS = Delays(replication=0.5, rbac=2.0, sign_in_ingestion=1.0, workspace_ingestion=1.0)
# Only for tests of other behaviour of the simulator itself, which pass it by name.
NO_DELAYS = Delays(replication=0.0, rbac=0.0, sign_in_ingestion=0.0, workspace_ingestion=0.0)


@dataclass
class RoleAssignment:
    name: str  # a GUID
    scope: str
    role_definition_id: str  # role GUID
    principal_id: str
    principal_type: str = "ServicePrincipal"
    created: datetime = field(default_factory=utcnow)
    condition: str | None = None  # ABAC (sim.conditions); narrows what the role allows
    condition_version: str | None = None
    effective_at: float = 0.0  # monotonic time from which data-plane checks honour it
    description: str | None = None
    # Who wrote it: the object id of the caller; empty for the estate's own assignments.
    created_by: str = ""
    updated_by: str = ""
    updated: datetime | None = None

    @property
    def id(self) -> str:
        return f"{self.scope}/providers/Microsoft.Authorization/roleAssignments/{self.name}"


# --- resources -------------------------------------------------------------------------------


@dataclass
class UserAssignedIdentity:
    subscription_id: str
    resource_group: str
    name: str
    location: str
    client_id: str
    principal_id: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{self.name}")


@dataclass
class AccessPolicy:
    object_id: str
    secrets: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    storage: list[str] = field(default_factory=list)


@dataclass
class KeyVault:
    subscription_id: str
    resource_group: str
    name: str
    location: str
    rbac: bool
    access_policies: list[AccessPolicy]
    secrets: dict[str, str]  # name -> the current version's value
    # Every version of each secret, oldest first; the estate's secrets get one version each,
    # made when first asked for (a Key Vault reference may pin a version).
    versions: dict[str, list[SecretVersion]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{self.name}")

    @property
    def uri(self) -> str:
        return f"https://{self.name}.vault.azure.net/"

    def secret_versions(self, name: str) -> list[SecretVersion]:
        """The versions of a secret, oldest first (none if there is no such secret)."""
        found = self.versions.get(name)
        if found is None and name in self.secrets:
            first = uuid.uuid5(uuid.NAMESPACE_URL, f"{self.id}/secrets/{name}").hex
            found = self.versions[name] = [SecretVersion(first, self.secrets[name])]
        return found or []

    def secret_value(self, name: str, version: str | None = None) -> str | None:
        """A secret's current value, or a version's (Key Vault versions are case-insensitive
        hex); None when there is no such secret or version."""
        for v in reversed(self.secret_versions(name)):
            if version is None or v.version.lower() == version.lower():
                return v.value if v.enabled else None
        return None

    def set_secret(self, name: str, value: str, content_type: str | None = None,
                   tags: dict[str, str] | None = None) -> SecretVersion:
        """A new current version of a secret (Key Vault's `PUT /secrets/{name}`)."""
        made = SecretVersion(uuid.uuid4().hex, value, content_type=content_type,
                             tags=dict(tags or {}))
        self.secret_versions(name)
        self.versions.setdefault(name, []).append(made)
        self.secrets[name] = value
        return made


@dataclass
class SecretVersion:
    version: str  # 32 hex digits, as Key Vault makes them
    value: str
    created: datetime = field(default_factory=utcnow)
    enabled: bool = True
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class ConnectionString:
    type: str
    value: str


@dataclass
class SiteIdentity:
    system_principal_id: str | None = None
    user_assigned: list[str] = field(default_factory=list)  # UAI resource ids
    # lower-case UAI resource id -> (principal id, client id) as they were when it was
    # assigned. Azure keeps these on the site: deleting the identity leaves the entry behind,
    # and one re-created under the same name (new ids) does not reach the site until it is
    # assigned again (see Tenant.delete_identity).
    assigned_ids: dict[str, tuple[str, str]] = field(default_factory=dict)

    def assign(self, uai: UserAssignedIdentity) -> None:
        if uai.id.lower() not in {r.lower() for r in self.user_assigned}:
            self.user_assigned.append(uai.id)
        self.assigned_ids[uai.id.lower()] = (uai.principal_id, uai.client_id)

    def held(self, resource_id: str, current: UserAssignedIdentity | None
             ) -> tuple[str, str] | None:
        """(principal id, client id) the site holds for one of its user-assigned identities:
        those of its assignment, else the identity's own (`current`, or None)."""
        return self.assigned_ids.get(resource_id.lower()) or (
            (current.principal_id, current.client_id) if current else None)

    @property
    def type(self) -> str:
        parts = (["SystemAssigned"] if self.system_principal_id else []) + (
            ["UserAssigned"] if self.user_assigned else []
        )
        return ", ".join(parts) or "None"


@dataclass
class AutomationAccount:
    """An Automation account: its runbooks get tokens for its system-assigned identity from
    the same managed-identity endpoint as App Service (IDENTITY_ENDPOINT/IDENTITY_HEADER)."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    identity: SiteIdentity = field(default_factory=SiteIdentity)

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Automation/automationAccounts/{self.name}")

    @property
    def display(self) -> str:
        return self.name


@dataclass
class WebApp:
    """A site or one of its slots: each has its own settings and its own managed identity."""

    subscription_id: str
    resource_group: str
    site_name: str
    slot_name: str | None
    kind: str
    location: str
    code: str
    health_path: str | None  # None: no health check path is configured
    app_settings: dict[str, str]
    connection_strings: dict[str, ConnectionString]
    needs: list[NeedSpec]
    identity: SiteIdentity = field(default_factory=SiteIdentity)
    key_vault_reference_identity: str = "SystemAssigned"  # or a UAI resource id
    restarts: int = 0
    identity_generation: int = 0
    # Slot-sticky names live on the production site only (ARM: config/slotConfigNames).
    sticky_app_settings: list[str] = field(default_factory=list)
    sticky_connection_strings: list[str] = field(default_factory=list)
    # Whether slotConfigNames was ever written: Azure answers null lists until it is.
    sticky_written: bool = False
    slots: dict[str, WebApp] = field(default_factory=dict)

    @property
    def id(self) -> str:
        base = (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Web/sites/{self.site_name}")
        return f"{base}/slots/{self.slot_name}" if self.slot_name else base

    @property
    def display(self) -> str:
        return f"{self.site_name}/{self.slot_name}" if self.slot_name else self.site_name

    @property
    def site_id(self) -> str:
        """The production site's resource id (a slot's parent)."""
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Web/sites/{self.site_name}")

    @property
    def outbound_ips(self) -> list[str]:
        """`outboundIpAddresses`: where this app's outbound calls come from now (its scale
        unit's; a slot shares its site's)."""
        return outbound_addresses(self.site_id)[:OUTBOUND_COUNT]

    @property
    def possible_outbound_ips(self) -> list[str]:
        """`possibleOutboundIpAddresses`: every address it may use, the current ones first."""
        return outbound_addresses(self.site_id)


# App Service reports a few current outbound addresses and a longer list of possible ones, the
# current first (Azure/azure-cli appservice recordings, e.g. test_functionapp_assign_user_
# identity: 5 of them and 7 possible; others give 5 and 10). The simulator's come from
# 20.0.0.0/8, far from the documentation ranges (203.0.113.0/24, ...) test estates give their
# external callers.
OUTBOUND_COUNT = 5
POSSIBLE_OUTBOUND_COUNT = 10


def outbound_addresses(site_id: str) -> list[str]:
    """A site's possible outbound IPv4 addresses, deterministic per site (sha256 of its
    lower-cased resource id), distinct, the current ones first."""
    out: list[str] = []
    counter = 0
    while len(out) < POSSIBLE_OUTBOUND_COUNT:
        digest = hashlib.sha256(f"{site_id.lower()}#{counter}".encode()).digest()
        counter += 1
        address = f"20.{digest[0]}.{digest[1]}.{1 + digest[2] % 254}"
        if address not in out:
            out.append(address)
    return out


@dataclass
class SqlDatabase:
    server: str
    name: str
    users: dict[str, list[str]] = field(default_factory=dict)  # principal object id -> roles


@dataclass
class LogAnalyticsWorkspace:
    """A Log Analytics workspace. Queries name it by `customer_id` (the "Workspace ID" of the
    portal, a GUID), ARM by its resource id. `sign_in_logs`: the tenant's Entra diagnostic
    settings send service-principal sign-ins here (table AADServicePrincipalSignInLogs)."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    customer_id: str  # lower-case GUID
    sign_in_logs: bool = False
    created: datetime = field(default_factory=utcnow)

    @property
    def id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.OperationalInsights/workspaces/{self.name}")


@dataclass
class SqlServer:
    subscription_id: str
    resource_group: str
    name: str
    databases: dict[str, SqlDatabase] = field(default_factory=dict)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.database.windows.net"


@dataclass
class Subscription:
    id: str
    name: str
    resource_groups: dict[str, str]  # lowercase name -> name as written


# --- the tenant ------------------------------------------------------------------------------

V = TypeVar("V")


class IndexedDict(dict[str, V]):
    """A dict that also finds its values by a secondary key (case-insensitive), so look-ups
    by app id or principal id stay O(1) in a tenant of 10,000 apps."""

    def __init__(self, key: Callable[[V], str]) -> None:
        super().__init__()
        self._key = key
        self._index: dict[str, dict[str, V]] = {}

    def __setitem__(self, name: str, value: V) -> None:
        if name in self:
            self._unindex(name, self[name])
        super().__setitem__(name, value)
        self._index.setdefault(self._key(value).lower(), {})[name] = value

    def __delitem__(self, name: str) -> None:
        self._unindex(name, self[name])
        super().__delitem__(name)

    def pop(self, name: str, default: Any = None) -> Any:
        if name not in self:
            return default
        value = self[name]
        del self[name]
        return value

    def _unindex(self, name: str, value: V) -> None:
        bucket = self._index.get(self._key(value).lower(), {})
        bucket.pop(name, None)

    def find(self, secondary: str) -> list[V]:
        return list(self._index.get(secondary.lower(), {}).values())





class Tenant:
    """The whole simulated tenant. Callers hold `lock` across a read-modify-write."""

    def __init__(self, tenant_id: str, domain: str, operator: str) -> None:
        self.id = tenant_id
        self.domain = domain
        self.operator = operator
        self.lock = threading.RLock()
        # When the tenant was built: the creation time of what the estate declares.
        self.started_at = utcnow()
        self.started = self.started_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # Entra ID licence: free, P1 or P2; Graph serves sign-in logs only with P1 or P2.
        self.licence = "P2"
        # Every sign-in Entra logged (sim/signins.py), and who signs in from outside Azure.
        self.sign_ins = SignInLog(self.lock)
        self.external_callers: dict[str, ExternalCaller] = {}
        # Keyed by object id (assignment name for role assignments), indexed by app id or
        # principal id.
        self.applications: IndexedDict[Application] = IndexedDict(lambda a: a.app_id)
        self.service_principals: IndexedDict[ServicePrincipal] = IndexedDict(lambda s: s.app_id)
        self.app_role_assignments: dict[str, AppRoleAssignment] = {}
        self.role_assignments: IndexedDict[RoleAssignment] = IndexedDict(
            lambda r: r.principal_id)
        self.role_definitions: dict[str, RoleDefinition] = {r.id: r for r in BUILTIN_ROLES}
        self.roles_by_name: dict[str, RoleDefinition] = dict(ROLES_BY_NAME)  # lowercase
        self.subscriptions: dict[str, Subscription] = {}
        self.identities: dict[str, UserAssignedIdentity] = {}  # lowercase resource id
        self.identity_generations: dict[str, int] = {}  # lowercase resource id -> deletions
        self.vaults: dict[str, KeyVault] = {}  # lowercase name
        self.sites: dict[str, WebApp] = {}  # lowercase name
        self.sql_servers: dict[str, SqlServer] = {}  # lowercase name
        self.workspaces: dict[str, LogAnalyticsWorkspace] = {}  # lowercase resource id
        self.names: dict[str, str] = {}  # estate name -> principal object id
        self.identity_headers: dict[str, str] = {}  # X-IDENTITY-HEADER -> resource id
        self.webapps_by_id: dict[str, WebApp] = {}  # lowercase resource id
        self.automation_accounts: dict[str, AutomationAccount] = {}  # lowercase resource id
        # How long Azure takes to make a change known (see Delays); set by SimServer.
        self.replication_delay = 0.0  # seconds a new managed identity stays unknown
        self.rbac_delay = 0.0  # seconds before a new role assignment reaches the data plane
        self.sign_in_delay = 0.0  # seconds before a sign-in shows in Graph's sign-in logs
        self.workspace_delay = 0.0  # seconds before it reaches a Log Analytics workspace
        # Log Analytics' result truncation (sim/loganalytics.py): rows and bytes per answer.
        self.log_analytics_row_cap = 500_000
        self.log_analytics_size_cap = 64 * 1024 * 1024
        self.graph_sp = self._add_graph()

    # -- construction

    def _add_graph(self) -> ServicePrincipal:
        sp = ServicePrincipal(
            object_id=derive_id("sp", "Microsoft Graph"), app_id=GRAPH_APP_ID,
            display_name="Microsoft Graph", app_roles=dict(GRAPH_APP_ROLES),
        )
        self.service_principals[sp.object_id] = sp
        return sp

    # -- look-ups

    def sp_by_app_id(self, app_id: str) -> ServicePrincipal | None:
        found = self.service_principals.find(app_id)
        return found[0] if found else None

    def app_by_app_id(self, app_id: str) -> Application | None:
        found = self.applications.find(app_id)
        return found[0] if found else None

    def is_visible(self, sp: ServicePrincipal) -> bool:
        """False while a brand-new managed identity is still replicating."""
        return time.monotonic() >= sp.visible_at

    def visible_sp(self, object_id: str) -> ServicePrincipal | None:
        sp = self.service_principals.get(object_id.lower())
        return sp if sp is not None and self.is_visible(sp) else None

    def webapp(self, site: str, slot: str | None = None) -> WebApp | None:
        found = self.sites.get(site.lower())
        if found is None or slot is None:
            return found
        return found.slots.get(slot.lower())

    def webapps(self) -> Iterator[WebApp]:
        for site in self.sites.values():
            yield site
            yield from site.slots.values()

    def workspace_by_customer_id(self, customer_id: str) -> LogAnalyticsWorkspace | None:
        """The workspace a query names by its customer id (any letter case)."""
        wanted = customer_id.strip().lower()
        return next((w for w in self.workspaces.values() if w.customer_id == wanted), None)

    def identity_by_client_id(self, client_id: str) -> UserAssignedIdentity | None:
        lowered = client_id.lower()
        return next((i for i in self.identities.values() if i.client_id == lowered), None)

    def role_named(self, name_or_id: str) -> RoleDefinition | None:
        guid = name_or_id.rsplit("/", 1)[-1].lower()
        return self.roles_by_name.get(name_or_id.lower()) or self.role_definitions.get(guid)

    def add_role_definition(self, role: RoleDefinition) -> None:
        self.role_definitions[role.id] = role
        self.roles_by_name[role.name.lower()] = role

    # -- authorization

    def assignments_of(self, principal_id: str) -> Iterable[RoleAssignment]:
        return self.role_assignments.find(principal_id)

    def can(self, principal_id: str, action: str, scope: str, *, data: bool = False) -> bool:
        """RBAC: any assignment at or above `scope` whose role allows `action`, and whose
        condition, if it has one, allows it there."""
        from migrator.sim.conditions import allows
        from migrator.sim.rbac import scope_covers

        now = time.monotonic()
        for a in self.assignments_of(principal_id):
            if data and a.effective_at > now:
                continue  # not propagated to the data plane yet
            role = self.role_definitions.get(a.role_definition_id)
            if role and scope_covers(a.scope, scope) and role.allows(action, data=data) \
                    and allows(a.condition, action, scope):
                return True
        return False

    def has_any_role_under(self, principal_id: str, scope: str) -> bool:
        """Azure lists a subscription to a caller holding any role in it."""
        lowered = scope.rstrip("/").lower()
        return any(
            a.scope.lower() == lowered
            or a.scope.lower().startswith(lowered + "/")
            or lowered.startswith(a.scope.lower().rstrip("/") + "/")
            for a in self.assignments_of(principal_id)
        )

    def app_roles_of(self, principal_id: str, resource_id: str) -> list[str]:
        """Values of the app roles of the API `resource_id` granted to a principal."""
        resource = self.service_principals.get(resource_id.lower())
        values = {i: v for v, i in (resource.app_roles if resource else {}).items()}
        return sorted(values.get(a.app_role_id, a.app_role_id)
                      for a in self.app_role_assignments.values()
                      if a.principal_id == principal_id and a.resource_id == resource_id)

    def graph_roles_of(self, principal_id: str) -> list[str]:
        """Names of the Graph application permissions granted to a principal."""
        return sorted(
            GRAPH_ROLE_NAMES.get(a.app_role_id, a.app_role_id)
            for a in self.app_role_assignments.values()
            if a.principal_id == principal_id and a.resource_id == self.graph_sp.object_id
        )

    # -- managed identities

    def new_managed_sp(self, display_name: str, resource_id: str, *, client_id: str,
                       object_id: str, delayed: bool) -> ServicePrincipal:
        sp = ServicePrincipal(
            object_id=object_id, app_id=client_id, display_name=display_name,
            kind="ManagedIdentity", alternative_names=["isExplicit=False", resource_id],
            visible_at=time.monotonic() + (self.replication_delay if delayed else 0.0),
        )
        self.service_principals[object_id] = sp
        return sp

    def enable_system_identity(self, app: WebApp, *, delayed: bool = True) -> str:
        if app.identity.system_principal_id:
            return app.identity.system_principal_id
        app.identity_generation += 1
        oid = derive_id("system-identity", f"{app.id.lower()}#{app.identity_generation}")
        display = f"{app.site_name}/slots/{app.slot_name}" if app.slot_name else app.site_name
        self.new_managed_sp(display, app.id, client_id=derive_id("system-client", oid),
                            object_id=oid, delayed=delayed)
        app.identity.system_principal_id = oid
        return oid

    def disable_system_identity(self, app: WebApp) -> None:
        oid = app.identity.system_principal_id
        if oid:
            self.delete_service_principal(oid)
            app.identity.system_principal_id = None

    def delete_service_principal(self, object_id: str) -> None:
        """Entra deletes a principal's app-role assignments with it; ARM role assignments stay
        behind, orphaned ("Identity not found"), as in Azure."""
        self.service_principals.pop(object_id, None)
        for key in [k for k, a in self.app_role_assignments.items()
                    if object_id in (a.principal_id, a.resource_id)]:
            del self.app_role_assignments[key]

    def create_identity(self, subscription_id: str, resource_group: str, name: str,
                        location: str, *, delayed: bool = True) -> UserAssignedIdentity:
        rid = (f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
               f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}")
        existing = self.identities.get(rid.lower())
        if existing:
            existing.location = location
            return existing
        # A re-created identity is a new principal with new ids (generation > 0).
        generation = self.identity_generations.get(rid.lower(), 0)
        seed = rid.lower() if generation == 0 else f"{rid.lower()}#{generation}"
        uai = UserAssignedIdentity(
            subscription_id, resource_group, name, location,
            client_id=derive_id("uai-client", seed),
            principal_id=derive_id("uai-principal", seed),
        )
        self.identities[rid.lower()] = uai
        self.new_managed_sp(name, rid, client_id=uai.client_id, object_id=uai.principal_id,
                            delayed=delayed)
        return uai

    def delete_identity(self, resource_id: str) -> UserAssignedIdentity | None:
        """Delete a user-assigned identity as Azure does: its principal goes (and its Graph
        app-role assignments with it); its ARM role assignments stay, orphaned; and the sites
        it was assigned to keep their entry for it, with the old ids, which no longer sign in
        ("When a managed identity is deleted, any role assignments for that managed identity
        are not automatically deleted", learn.microsoft.com/samples/azure/
        azure-quickstart-templates/key-vault-managed-identity-role-assignment). One made again
        under the same name gets new principal and client ids."""
        uai = self.identities.pop(resource_id.lower(), None)
        if uai is None:
            return None
        self.identity_generations[resource_id.lower()] = (
            self.identity_generations.get(resource_id.lower(), 0) + 1)
        self.delete_service_principal(uai.principal_id)
        return uai

    def identity_header_for(self, resource_id: str) -> str:
        """The X-IDENTITY-HEADER a resource's code would find in IDENTITY_HEADER."""
        header = derive_id("identity-header", resource_id.lower())
        self.identity_headers[header] = resource_id
        return header

    def identity_host(self, header: str) -> WebApp | AutomationAccount | None:
        """The site, slot or Automation account whose code sent this X-IDENTITY-HEADER."""
        rid = self.identity_headers.get(header)
        if rid is None:
            return None
        return self.webapps_by_id.get(rid.lower()) or self.automation_accounts.get(rid.lower())

    # -- credentials

    def check_client_secret(self, app_id: str, secret: str, *, ip: str = "",
                            resource: tuple[str, str] | None = None,
                            at: datetime | None = None) -> ServicePrincipal:
        """Entra's client-credentials check; raises SimError with the AADSTS code Entra uses.
        Every attempt, refused or not, is logged as a service-principal sign-in from `ip` for
        `resource` (app id, display name; ARM if not given) at `at` (now if not given)."""
        when = at or utcnow()
        try:
            sp, key_id = self._client_secret_outcome(app_id, secret, when)
        except SimError as err:
            self._record_secret_sign_in(app_id, None, None, when, ip, resource, err)
            raise
        self._record_secret_sign_in(app_id, sp, key_id, when, ip, resource, None)
        return sp

    def _client_secret_outcome(self, app_id: str, secret: str, now: datetime
                               ) -> tuple[ServicePrincipal, str]:
        """(principal, keyId of the credential used), or SimError as Entra refuses."""
        app = self.app_by_app_id(app_id)
        sp = self.sp_by_app_id(app_id)
        if app is None or sp is None:
            raise SimError(400, "unauthorized_client", (
                f"AADSTS700016: Application with identifier '{app_id}' was not found in the "
                f"directory '{self.domain}'."))
        if not sp.account_enabled:
            raise SimError(400, "unauthorized_client", (
                f"AADSTS7000112: Application '{app.app_id}'({app.display_name}) is disabled."))
        for cred in app.passwords:
            if cred.secret == secret:
                if cred.end <= now or cred.start > now:
                    raise SimError(401, "invalid_client", (
                        "AADSTS7000222: The provided client secret keys for app "
                        f"'{app.app_id}' are expired."))
                return sp, cred.key_id
        raise SimError(401, "invalid_client", (
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the "
            f"request is the client secret value, not the client secret ID, for a secret added "
            f"to app '{app.app_id}'."))

    def _record_secret_sign_in(self, app_id: str, sp: ServicePrincipal | None,
                               key_id: str | None, at: datetime, ip: str,
                               resource: tuple[str, str] | None, err: SimError | None) -> None:
        known = sp or self.sp_by_app_id(app_id)
        rid, rname = resource or ARM_RESOURCE
        code, reason = 0, None
        if err is not None:  # the message names app ids only, never secret text
            head = err.message.split(":", 1)[0]
            digits = head.removeprefix("AADSTS")
            code = int(digits) if head.startswith("AADSTS") and digits.isdigit() else 1
            reason = err.message
        self.sign_ins.append(new_event(
            created=at, event_type="servicePrincipal", app_id=app_id.lower(),
            app_display_name=known.display_name if known else "",
            service_principal_id=known.object_id if known else "", ip_address=ip,
            resource_id=rid, resource_display_name=rname, tenant_id=self.id,
            key_id=key_id, error_code=code, failure_reason=reason))

    def record_managed_identity_sign_in(self, sp: ServicePrincipal, *, ip: str,
                                        resource: tuple[str, str],
                                        host_id: str | None = None,
                                        at: datetime | None = None) -> SignInEvent:
        """A managed identity's token request, which Entra logs apart from service-principal
        sign-ins (`signInEventTypes: ["managedIdentity"]`)."""
        associated = host_id or (sp.alternative_names[-1] if sp.alternative_names else None)
        user_assigned = "/userassignedidentities/" in (sp.alternative_names[-1].lower()
                                                       if sp.alternative_names else "")
        event = new_event(
            created=at or utcnow(), event_type="managedIdentity", app_id=sp.app_id,
            app_display_name=sp.display_name, service_principal_id=sp.object_id,
            ip_address=ip, resource_id=resource[0], resource_display_name=resource[1],
            tenant_id=self.id, msi_type="userAssigned" if user_assigned else "systemAssigned",
            associated_resource_id=associated)
        self.sign_ins.append(event)
        return event

    def catch_up_sign_ins(self, now: datetime | None = None) -> int:
        """Make the sign-ins the external callers have made up to `now`, each judged by the
        credentials as they are now: call it before a credential changes, and before the log
        is read. Returns how many it made."""
        when = now or utcnow()
        made = 0
        with self.lock:
            for caller in self.external_callers.values():
                for at in caller.due(when):
                    # A refusal is logged as a failed sign-in, as Entra logs it.
                    with contextlib.suppress(SimError):
                        self.check_client_secret(caller.app_id, caller.secret, ip=caller.ip,
                                                 resource=caller.resource, at=at)
                    made += 1
        return made

    def caller_key_id(self, caller: ExternalCaller) -> str | None:
        """The keyId of the credential a caller's copy of a secret is (None once removed)."""
        app = self.app_by_app_id(caller.app_id)
        found = next((p for p in app.passwords if p.secret == caller.secret), None) \
            if app else None
        return found.key_id if found else None

    def add_password(self, app: Application, display_name: str | None,
                     end: datetime | None) -> PasswordCredential:
        key_id = str(uuid.uuid4())
        secret = generate_client_secret()
        now = utcnow()
        cred = PasswordCredential(key_id, secret, display_name, now,
                                  end or now + timedelta(days=730))
        app.passwords.append(cred)
        return cred


# --- building a tenant from an estate ----------------------------------------------------------


def _dt(d: date | None, default: datetime) -> datetime:
    if d is None:
        return default
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def build_tenant(spec: EstateSpec) -> Tenant:
    """A live tenant from a validated estate (run `check_references` first: load_estate does)."""
    with gc_paused():
        return _build_tenant(spec)


def _build_tenant(spec: EstateSpec) -> Tenant:
    names = EstateNames(spec)
    tenant = Tenant(str(spec.tenant.id), spec.tenant.domain, spec.operator)
    tenant.licence = spec.tenant.licence
    far = datetime(2099, 12, 31, tzinfo=timezone.utc)
    epoch = datetime(2024, 1, 1, tzinfo=timezone.utc)
    for p in spec.principals:
        app = Application(names.app_object_id(p.name), names.app_id(p.name), p.name)
        for i, s in enumerate(p.secrets):
            app.passwords.append(PasswordCredential(
                str(s.key_id or derive_id("secret", f"{p.name}#{i}")),
                names.secret_value(p.name, i),
                s.display_name, _dt(s.start, epoch), _dt(s.expires, far)))
        tenant.applications[app.object_id] = app
        sp = ServicePrincipal(names.sp_object_id(p.name), app.app_id, p.name,
                              account_enabled=p.enabled,
                              app_roles={value: app_role_id(p.name, value)
                                         for value in p.app_roles})
        tenant.service_principals[sp.object_id] = sp
        tenant.names[p.name] = sp.object_id
        for role in p.graph_app_roles:
            _grant_graph(tenant, sp.object_id, role)
    for p in spec.principals:  # once every principal exists
        owned = tenant.applications[names.app_object_id(p.name)]
        owned.owners = [tenant.names[o] for o in p.owners]
        for grant in p.api_app_roles:
            api, _, value = grant.partition("/")
            _grant(tenant, tenant.names[p.name], tenant.names[api], app_role_id(api, value))
    for sub in spec.subscriptions:
        sid = names.subscriptions[sub.name]
        tenant.subscriptions[sid] = Subscription(
            sid, sub.name, {rg.name.lower(): rg.name for rg in sub.resource_groups})
        for rg in sub.resource_groups:
            for uai_name in rg.user_assigned_identities:
                uai = tenant.create_identity(sid, rg.name, uai_name, rg.location, delayed=False)
                tenant.names[uai_name] = uai.principal_id
            for server in rg.sql_servers:
                tenant.sql_servers[server.name.lower()] = SqlServer(
                    sid, rg.name, server.name,
                    {d.name.lower(): SqlDatabase(server.name, d.name) for d in server.databases})
            for law in rg.log_analytics_workspaces:
                workspace = LogAnalyticsWorkspace(
                    sid, rg.name, law.name, rg.location,
                    names.workspace_customer_id(sub.name, rg.name, law.name),
                    law.sign_in_logs, created=tenant.started_at)
                tenant.workspaces[workspace.id.lower()] = workspace
            for site in rg.sites:
                tenant.sites[site.name.lower()] = _build_site(tenant, names, sid, rg.name,
                                                              rg.location, site)
            for account_spec in rg.automation_accounts:
                account = AutomationAccount(sid, rg.name, account_spec.name, rg.location)
                oid = derive_id("system-identity", f"{account.id.lower()}#1")
                tenant.new_managed_sp(account.name, account.id,
                                      client_id=derive_id("system-client", oid), object_id=oid,
                                      delayed=False)
                account.identity.system_principal_id = oid
                tenant.automation_accounts[account.id.lower()] = account
                tenant.identity_header_for(account.id)
                tenant.names[account.name] = oid
                for role in account_spec.graph_app_roles:
                    _grant_graph(tenant, oid, role)
    for sub in spec.subscriptions:
        sid = names.subscriptions[sub.name]
        for rg in sub.resource_groups:
            for kv in rg.key_vaults:
                tenant.vaults[kv.name.lower()] = KeyVault(
                    sid, rg.name, kv.name, rg.location, kv.rbac,
                    [AccessPolicy(tenant.names[a.principal], list(a.secrets), list(a.keys),
                                  list(a.certificates)) for a in kv.access_policies],
                    {k: names.substitute(v) for k, v in kv.secrets.items()})
            for server in rg.sql_servers:
                for db in server.databases:
                    target = tenant.sql_servers[server.name.lower()].databases[db.name.lower()]
                    for user in db.users:
                        target.users[tenant.names[user.principal]] = list(user.roles)
    for rd in spec.role_definitions:
        tenant.add_role_definition(RoleDefinition(
            str(rd.id or custom_role_id(rd.name)).lower(), rd.name, rd.description,
            actions=tuple(rd.actions), not_actions=tuple(rd.not_actions),
            data_actions=tuple(rd.data_actions), not_data_actions=tuple(rd.not_data_actions),
            custom=True, assignable_scopes=tuple(
                s if s == "/" else names.scope(s) for s in rd.assignable_scopes)))
    for ra in spec.role_assignments:
        definition = tenant.role_named(ra.role)
        assert definition is not None  # check_references saw to it
        scope = names.scope(ra.scope)
        pid = tenant.names[ra.principal]
        name = role_assignment_name(scope, pid, definition.id)
        tenant.role_assignments[name] = RoleAssignment(
            name, scope, definition.id, pid, condition=ra.condition,
            condition_version=(ra.condition_version or "2.0") if ra.condition else None)
    for caller in spec.external_callers:
        if caller.resource in NAMED_RESOURCES:
            resource = NAMED_RESOURCES[caller.resource]
        else:  # an estate API, named by its principal (check_references saw to it)
            resource = (names.app_id(caller.resource), caller.resource)
        tenant.external_callers[caller.name] = ExternalCaller(
            name=caller.name, principal=caller.principal, app_id=names.app_id(caller.principal),
            secret_index=caller.secret, ip=str(ipaddress.ip_address(caller.ip)),
            every=caller.every, resource=resource, active=caller.active,
            history_days=caller.history_days,
            origin=tenant.started_at - timedelta(days=caller.history_days),
            secret=names.secret_value(caller.principal, caller.secret))
    return tenant


def role_assignment_name(scope: str, principal_id: str, role_id: str) -> str:
    """Deterministic assignment name (AZURE-FACTS.md): uuid5 of scope, principal and role."""
    return str(uuid.uuid5(NAMESPACE, f"{scope.lower()}|{principal_id.lower()}|{role_id.lower()}"))


def _grant_graph(tenant: Tenant, principal_id: str, role: str) -> None:
    _grant(tenant, principal_id, tenant.graph_sp.object_id, GRAPH_APP_ROLES[role])


def _grant(tenant: Tenant, principal_id: str, resource_id: str, role_id: str) -> None:
    aid = derive_id("app-role-assignment", f"{principal_id}|{role_id}")  # role ids are unique
    tenant.app_role_assignments[aid] = AppRoleAssignment(aid, principal_id, resource_id, role_id)


def _build_site(tenant: Tenant, names: EstateNames, sid: str, rg: str, location: str,
                site: SiteSpec) -> WebApp:
    def make(target: SiteSpec | SlotSpec, slot: str | None) -> WebApp:
        app = WebApp(
            subscription_id=sid, resource_group=rg, site_name=site.name, slot_name=slot,
            kind=site.kind, location=site.location or location,
            code=(target.code or site.code) if isinstance(target, SlotSpec) else site.code,
            health_path=target.health_path or site.health_path,
            app_settings={k: names.substitute(v) for k, v in target.app_settings.items()},
            connection_strings={k: ConnectionString(c.type, names.substitute(c.value))
                                for k, c in target.connection_strings.items()},
            needs=list(target.needs),
        )
        identity = target.identity
        uai_names: list[str] = []
        system = identity in ("system", "both")
        if isinstance(identity, list):
            system = "system" in identity
            uai_names = [n for n in identity if n != "system"]
        elif identity == "both":
            uai_names = [n for n, (s, g, _) in names.uais.items() if s == sid and g == rg]
        app.identity.user_assigned = [names.uai_resource_id(n) for n in uai_names]
        for rid in app.identity.user_assigned:
            uai = tenant.identities.get(rid.lower())
            if uai is not None:
                app.identity.assign(uai)
        if system:
            oid = tenant.enable_system_identity(app, delayed=False)
            tenant.names[app.display] = oid
        if target.key_vault_reference_identity:
            app.key_vault_reference_identity = names.uai_resource_id(
                target.key_vault_reference_identity)
        return app

    main = make(site, None)
    tenant.identity_header_for(main.id)
    tenant.webapps_by_id[main.id.lower()] = main
    main.sticky_app_settings = list(site.slot_settings)
    main.sticky_written = bool(site.slot_settings)
    for slot in site.slots:
        built = main.slots[slot.name.lower()] = make(slot, slot.name)
        tenant.identity_header_for(built.id)
        tenant.webapps_by_id[built.id.lower()] = built
    return main
