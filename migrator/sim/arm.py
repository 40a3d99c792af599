"""Azure Resource Manager as the simulator serves it: Web, Key Vault, Managed Identity, RBAC.

ARM paths are case-insensitive, so one catch-all route dispatches on a table of regular
expressions. Every call is authenticated (bearer token for the ARM audience) and authorized by
the simulated RBAC *before* the resource is looked up, as in Azure: a caller without rights gets
403 even for a resource that does not exist. JSON shapes follow the REST specs of the api-versions
the SDKs send (Microsoft.Web 2025-05-01, Microsoft.Authorization 2022-04-01, ...).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from migrator.sim.context import SimContext, arm_error, request_id, with_arm_headers
from migrator.sim.rbac import RoleDefinition, scope_covers
from migrator.sim.state import (
    AccessPolicy,
    ConnectionString,
    KeyVault,
    LogAnalyticsWorkspace,
    RoleAssignment,
    SimError,
    Tenant,
    UserAssignedIdentity,
    WebApp,
    WebError,
    utcnow,
)
from migrator.sim.tokens import Caller

PAGE_SIZE = 100
SUB = r"/subscriptions/(?P<sub>[^/]+)"
RG = SUB + r"/resourceGroups/(?P<rg>[^/]+)"
SITE = RG + r"/providers/Microsoft\.Web/sites/(?P<site>[^/]+)(?:/slots/(?P<slot>[^/]+))?"
VAULT = RG + r"/providers/Microsoft\.KeyVault/vaults/(?P<vault>[^/]+)"
UAI = RG + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/(?P<uai>[^/]+)"
WORKSPACE = RG + r"/providers/Microsoft\.OperationalInsights/workspaces/(?P<workspace>[^/]+)"
AUTHZ = r"(?P<scope>(?:/.*?)?)/providers/Microsoft\.Authorization"


@dataclass
class Call:
    """One ARM request, authenticated, with its path parameters."""

    request: Request
    caller: Caller
    params: dict[str, str]
    query: dict[str, str]
    raw: bytes = b""

    async def body(self) -> dict[str, Any]:
        raw = self.raw
        if not raw:
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise SimError(400, "InvalidRequestContent", "The request content was invalid "
                           "and could not be deserialized.") from None
        if not isinstance(parsed, dict):
            raise SimError(400, "InvalidRequestContent", "The request content must be an object.")
        return parsed


Handler = Callable[[Call], Awaitable[Response]]


def _json(body: object, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status)


def _forbidden(caller: Caller, action: str, scope: str) -> SimError:
    return SimError(403, "AuthorizationFailed", (
        f"The client '{caller.object_id}' with object id '{caller.object_id}' does not have "
        f"authorization to perform action '{action}' over scope '{scope}' or the scope is "
        "invalid. If access was recently granted, please refresh your credentials."))


class Arm:
    """The handlers; each authorizes, looks up, acts, and renders Azure's JSON."""

    def __init__(self, ctx: SimContext) -> None:
        self.ctx = ctx
        self.t: Tenant = ctx.tenant

    # -- helpers

    def authorize(self, call: Call, action: str, scope: str) -> None:
        if not self.t.can(call.caller.object_id, action, scope):
            raise _forbidden(call.caller, action, scope)

    def subscription(self, call: Call) -> str:
        sid = call.params["sub"].lower()
        if sid not in self.t.subscriptions:
            raise SimError(404, "SubscriptionNotFound",
                           f"The subscription '{call.params['sub']}' could not be found.")
        return sid

    def listable_subscription(self, call: Call, action: str) -> str:
        """A list in a subscription is filtered to what the caller may read, but a caller with
        no role anywhere in it is refused, as ARM does, rather than told 'nothing here'."""
        sid = self.subscription(call)
        scope = f"/subscriptions/{sid}"
        if not self.t.has_any_role_under(call.caller.object_id, scope):
            raise _forbidden(call.caller, action, scope)
        return sid

    def resource_group(self, call: Call) -> tuple[str, str]:
        sid = self.subscription(call)
        rg = self.t.subscriptions[sid].resource_groups.get(call.params["rg"].lower())
        if rg is None:
            raise SimError(404, "ResourceGroupNotFound",
                           f"Resource group '{call.params['rg']}' could not be found.")
        return sid, rg

    def _not_found(self, rtype: str, name: str, rg: str) -> SimError:
        return SimError(404, "ResourceNotFound", (
            f"The Resource '{rtype}/{name}' under resource group '{rg}' was not found. For more "
            "details please go to https://aka.ms/ARMResourceNotFoundFix"))

    def webapp(self, call: Call, action: str) -> WebApp:
        """Authorize `action` on the site (or slot) of the path, then find it."""
        site, slot = call.params["site"], call.params.get("slot")
        scope = call.request.url.path.split("/config/")[0].split("/restart")[0]
        scope = re.sub(r"/slots$", "", scope, flags=re.IGNORECASE)
        if slot:
            action = action.replace("Microsoft.Web/sites/", "Microsoft.Web/sites/slots/", 1)
        self.authorize(call, action, scope)
        sid, rg = self.resource_group(call)
        app = self.t.webapp(site)
        if app is None or app.subscription_id != sid or app.resource_group.lower() != rg.lower():
            raise self._not_found("Microsoft.Web/sites", site, call.params["rg"])
        if slot:
            found = app.slots.get(slot.lower())
            if found is None:
                raise self._not_found("Microsoft.Web/sites/slots", f"{site}/{slot}", rg)
            return found
        return app

    def page(self, call: Call, items: list[dict[str, Any]]) -> Response:
        """ARM paging: `value` plus an absolute `nextLink` carrying a skip token."""
        token = call.query.get("$skiptoken", "0") or "0"
        if not token.isdigit():  # a token this simulator did not hand out: refused, not a crash
            raise SimError(400, "InvalidSkipToken",
                           f"The skip token '{token[:64]}' is not valid for this request.")
        start = int(token)
        body: dict[str, Any] = {"value": items[start:start + PAGE_SIZE]}
        if start + PAGE_SIZE < len(items):
            query = dict(call.query) | {"$skiptoken": str(start + PAGE_SIZE)}
            body["nextLink"] = f"{self.ctx.base_url}{call.request.url.path}?{urlencode(query)}"
        return _json(body)

    # -- subscriptions

    def subscription_json(self, sid: str) -> dict[str, Any]:
        sub = self.t.subscriptions[sid]
        return {
            "id": f"/subscriptions/{sid}", "subscriptionId": sid, "tenantId": self.t.id,
            "displayName": sub.name, "state": "Enabled",
            "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                     "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"},
            "authorizationSource": "RoleBased",
        }

    async def list_subscriptions(self, call: Call) -> Response:
        oid = call.caller.object_id
        visible = [s for s in sorted(self.t.subscriptions)
                   if self.t.has_any_role_under(oid, f"/subscriptions/{s}")]
        return _json({"value": [self.subscription_json(s) for s in visible]})

    async def get_subscription(self, call: Call) -> Response:
        sid = call.params["sub"].lower()
        if sid not in self.t.subscriptions or not self.t.has_any_role_under(
                call.caller.object_id, f"/subscriptions/{sid}"):
            raise SimError(404, "SubscriptionNotFound",
                           f"The subscription '{call.params['sub']}' could not be found.")
        return _json(self.subscription_json(sid))

    # -- Microsoft.Web

    def identity_json(self, app: WebApp) -> dict[str, Any] | None:
        ident = app.identity
        if ident.type == "None":
            return {"type": "None"}
        out: dict[str, Any] = {"type": ident.type}
        if ident.system_principal_id:
            out |= {"principalId": ident.system_principal_id, "tenantId": self.t.id}
        if ident.user_assigned:
            out["userAssignedIdentities"] = {}
            for rid in ident.user_assigned:
                uai = self.t.identities.get(rid.lower())
                held = ident.held(rid, uai)
                # Azure answers the keys with a lower-case `resourcegroups` segment whatever
                # casing was written (Azure/azure-cli appservice recording
                # test_functionapp_assign_user_identity.yaml): a client must compare resource
                # ids case-insensitively.
                key = as_azure_writes(rid)
                out["userAssignedIdentities"][key] = (
                    {"principalId": held[0], "clientId": held[1]} if held else {})
        return out

    def site_json(self, app: WebApp) -> dict[str, Any]:
        host = f"{app.site_name}{'-' + app.slot_name if app.slot_name else ''}.azurewebsites.net"
        return {
            "id": app.id,
            "name": f"{app.site_name}/{app.slot_name}" if app.slot_name else app.site_name,
            "type": "Microsoft.Web/sites/slots" if app.slot_name else "Microsoft.Web/sites",
            "kind": app.kind, "location": app.location,
            # Azure leaves out `identity` when the site has none, and `tags` when it has none
            # (Azure/azure-cli recording test_functionapp_assign_user_identity): a reader
            # must take a missing identity for "None".
            **({"identity": self.identity_json(app)} if app.identity.type != "None" else {}),
            "properties": {
                "state": "Running", "enabled": True, "hostNames": [host],
                "defaultHostName": host, "resourceGroup": app.resource_group,
                "serverFarmId": (f"/subscriptions/{app.subscription_id}/resourceGroups/"
                                 f"{app.resource_group}/providers/Microsoft.Web/serverfarms/plan"),
                "keyVaultReferenceIdentity": app.key_vault_reference_identity,
                "httpsOnly": True, "reserved": "linux" in app.kind,
                # Comma-separated, the current addresses first (Azure/azure-cli appservice
                # recordings); a slot's are its site's (the same scale unit).
                "outboundIpAddresses": ",".join(app.outbound_ips),
                "possibleOutboundIpAddresses": ",".join(app.possible_outbound_ips),
                "usageState": "Normal", "availabilityState": "Normal",
                # GET site carries a siteConfig whose configuration fields are null, the
                # health path among them (Azure/azure-cli appservice recording
                # test_functionapp_assign_user_identity.yaml, commit 0169150: GET site
                # answers "healthCheckPath":null, "appSettings":null): it is only in
                # config/web, so a client must read that.
                "siteConfig": {"numberOfWorkers": 1, "appSettings": None,
                               "connectionStrings": None, "healthCheckPath": None,
                               "http20Enabled": False, "minTlsVersion": None},
            },
        }

    async def list_sites(self, call: Call) -> Response:
        sid = self.listable_subscription(call, "Microsoft.Web/sites/read")
        rg = call.params.get("rg")
        if rg is not None:
            self.resource_group(call)
        oid = call.caller.object_id
        apps = [a for a in self.t.sites.values() if a.subscription_id == sid
                and (rg is None or a.resource_group.lower() == rg.lower())]
        readable = [a for a in apps if self.t.can(oid, "Microsoft.Web/sites/read", a.id)]
        if rg is not None and not readable and not self.t.can(
                oid, "Microsoft.Web/sites/read", f"/subscriptions/{sid}/resourceGroups/{rg}"):
            raise _forbidden(call.caller, "Microsoft.Web/sites/read",
                             f"/subscriptions/{sid}/resourceGroups/{rg}")
        return self.page(call, [self.site_json(a) for a in sorted(readable, key=lambda a: a.id)])

    async def get_site(self, call: Call) -> Response:
        return _json(self.site_json(self.webapp(call, "Microsoft.Web/sites/read")))

    async def list_slots(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/read")
        return self.page(call, [self.site_json(s) for s in app.slots.values()])

    async def update_site(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/write")
        body = await call.body()
        if "identity" in body and body["identity"] is not None:
            self.apply_identity(call, app, body["identity"])
        props = body.get("properties") or {}
        if "keyVaultReferenceIdentity" in props:
            kvri = props["keyVaultReferenceIdentity"] or "SystemAssigned"
            if kvri != "SystemAssigned" and kvri.lower() not in {
                    r.lower() for r in app.identity.user_assigned}:
                raise WebError(400, "BadRequest", (
                    f"The user-assigned identity '{kvri}' is not assigned to {app.display}."))
            app.key_vault_reference_identity = kvri
        return _json(self.site_json(app))

    def apply_identity(self, call: Call, app: WebApp, identity: dict[str, Any]) -> None:
        """ARM identity semantics: the type says which kinds remain; listed user-assigned
        identities are added (null removes one); a type without UserAssigned drops them all."""
        kinds = {k.strip().lower() for k in str(identity.get("type", "None")).split(",")}
        unknown = kinds - {"systemassigned", "userassigned", "none"}
        if unknown:
            raise WebError(400, "BadRequest", f"Invalid identity type '{identity.get('type')}'.")
        listed: dict[str, Any] = identity.get("userAssignedIdentities") or {}
        if "userassigned" in kinds:
            keep = [r for r in app.identity.user_assigned if listed.get(r, {}) is not None
                    and not any(k.lower() == r.lower() and v is None for k, v in listed.items())]
            # An identity listed again keeps the ids the site holds for it, even if it was
            # deleted and made anew since: only removing it and assigning it again refreshes
            # them (the simulator's harsher reading; Azure documents no refresh).
            held = {r.lower(): app.identity.assigned_ids[r.lower()] for r in keep
                    if r.lower() in app.identity.assigned_ids}
            for rid, value in listed.items():
                if value is None or rid.lower() in {r.lower() for r in keep}:
                    continue
                uai = self.t.identities.get(rid.lower())
                if uai is None:
                    raise WebError(400, "BadRequest", (
                        f"Resource '{rid}' was not found. The user-assigned identity must exist "
                        "before it is assigned."))
                action = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"
                if not self.t.can(call.caller.object_id, action, uai.id):
                    raise SimError(403, "LinkedAuthorizationFailed", (
                        f"The client '{call.caller.object_id}' has permission to perform action "
                        f"'Microsoft.Web/sites/write' on scope '{app.id}'; however, it does not "
                        f"have permission to perform action(s) '{action}' on the linked "
                        f"scope(s) '{uai.id}' (respectively) or the linked scope(s) are "
                        "invalid."))
                keep.append(uai.id)
                held[uai.id.lower()] = (uai.principal_id, uai.client_id)
            if not keep:
                raise WebError(400, "BadRequest", (
                    "Identity type UserAssigned needs at least one user-assigned identity."))
            app.identity.user_assigned = keep
            app.identity.assigned_ids = held
        else:
            app.identity.user_assigned = []
            app.identity.assigned_ids = {}
            if app.key_vault_reference_identity != "SystemAssigned":
                app.key_vault_reference_identity = "SystemAssigned"
        if "systemassigned" in kinds:
            self.t.enable_system_identity(app)
        else:
            self.t.disable_system_identity(app)

    def _config(self, app: WebApp, name: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"id": f"{app.id}/config/{name}", "name": name,
                "type": "Microsoft.Web/sites/config", "location": app.location,
                "properties": properties}

    async def get_site_config(self, call: Call) -> Response:
        """`GET {site}/config/web` (azure-mgmt-web `get_configuration[_slot]`): the part of
        the site's configuration the simulator models."""
        app = self.webapp(call, "Microsoft.Web/sites/config/read")
        return _json(self._config(app, "web", {
            "healthCheckPath": app.health_path,
            # config/web has the key too, null where the site says "SystemAssigned" (Azure/
            # azure-cli recordings test_webapp_config, test_webapp_slot); a user-assigned one
            # is not recorded there, and the product reads the site's.
            "keyVaultReferenceIdentity": None
            if app.key_vault_reference_identity == "SystemAssigned"
            else app.key_vault_reference_identity}))

    async def list_app_settings(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/config/list/action")
        return _json(self._config(app, "appsettings", dict(app.app_settings)))

    async def put_app_settings(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/config/write")
        props = (await call.body()).get("properties") or {}
        if not all(isinstance(v, str) for v in props.values()):
            raise WebError(400, "BadRequest", "App setting values must be strings.")
        app.app_settings = dict(props)
        app.restarts += 1  # changing settings restarts the app, as in App Service
        return _json(self._config(app, "appsettings", dict(app.app_settings)))

    async def list_connection_strings(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/config/list/action")
        props = {k: {"value": c.value, "type": c.type} for k, c in app.connection_strings.items()}
        return _json(self._config(app, "connectionstrings", props))

    async def put_connection_strings(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/config/write")
        props = (await call.body()).get("properties") or {}
        try:
            app.connection_strings = {
                k: ConnectionString(str(v.get("type", "Custom")), str(v["value"]))
                for k, v in props.items()
            }
        except (KeyError, AttributeError, TypeError):
            raise WebError(400, "BadRequest",
                           "Each connection string needs a value and a type.") from None
        app.restarts += 1
        props = {k: {"value": c.value, "type": c.type} for k, c in app.connection_strings.items()}
        return _json(self._config(app, "connectionstrings", props))

    def _slot_names(self, app: WebApp, call: Call) -> dict[str, Any]:
        """As Microsoft.Web answers (Azure/azure-cli recordings test_webapp_config,
        test_webapp_slot): no id, the site's name, type and location; every list null until
        the names are first written, and a PUT replaces all of them (what it leaves out comes
        back empty); `secretsCollectionNames` from api-version 2022-03-01."""
        props: dict[str, Any] = {"connectionStringNames": None, "appSettingNames": None,
                                 "azureStorageConfigNames": None}
        if app.sticky_written:
            props = {"connectionStringNames": list(app.sticky_connection_strings),
                     "appSettingNames": list(app.sticky_app_settings),
                     "azureStorageConfigNames": []}
            if call.query.get("api-version", "") >= "2022-03-01":
                props["secretsCollectionNames"] = []
        return {"id": None, "name": app.site_name, "type": "Microsoft.Web/sites",
                "location": app.location, "properties": props}

    async def get_slot_config_names(self, call: Call) -> Response:
        return _json(self._slot_names(self.webapp(call, "Microsoft.Web/sites/config/read"),
                                      call))

    async def put_slot_config_names(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/config/write")
        props = (await call.body()).get("properties") or {}
        app.sticky_app_settings = list(props.get("appSettingNames") or [])
        app.sticky_connection_strings = list(props.get("connectionStringNames") or [])
        app.sticky_written = True
        return _json(self._slot_names(app, call))

    async def restart(self, call: Call) -> Response:
        app = self.webapp(call, "Microsoft.Web/sites/restart/action")
        app.restarts += 1
        return Response(status_code=200)

    # -- Microsoft.KeyVault

    def vault_json(self, kv: KeyVault) -> dict[str, Any]:
        """As Microsoft.KeyVault answers (Azure/azure-cli recording keyvault/
        test_keyvault_mgmt, api-version 2021-10-01): `systemData`, the deployment flag, soft
        delete's retention and public access always; `enableRbacAuthorization` only when it
        is on, so a reader must take a missing flag for access policies."""
        sp = self.t.service_principals.get(self.t.names.get(self.t.operator, ""))
        operator = sp.app_id if sp is not None else None
        props: dict[str, Any] = {
            "sku": {"family": "A", "name": "standard"}, "tenantId": self.t.id,
            "accessPolicies": [self.policy_json(p) for p in kv.access_policies],
            "enabledForDeployment": False, "enableSoftDelete": True,
            "softDeleteRetentionInDays": 90,
            "vaultUri": self.ctx.vault_urls.get(kv.name.lower(), kv.uri),
            "provisioningState": "Succeeded", "publicNetworkAccess": "Enabled",
        }
        if kv.rbac:
            props["enableRbacAuthorization"] = True
        return {
            "id": kv.id, "name": kv.name, "type": "Microsoft.KeyVault/vaults",
            "location": kv.location, "tags": {},
            "systemData": {"createdBy": operator, "createdByType": "Application",
                           "createdAt": self.t.started, "lastModifiedBy": operator,
                           "lastModifiedByType": "Application",
                           "lastModifiedAt": self.t.started},
            "properties": props,
        }

    def policy_json(self, p: AccessPolicy) -> dict[str, Any]:
        return {"tenantId": self.t.id, "objectId": p.object_id,
                "permissions": {"keys": p.keys, "secrets": p.secrets,
                                "certificates": p.certificates, "storage": p.storage}}

    def vault(self, call: Call, action: str) -> KeyVault:
        scope = re.split(r"/accessPolicies", call.request.url.path, flags=re.IGNORECASE)[0]
        self.authorize(call, action, scope)
        sid, rg = self.resource_group(call)
        kv = self.t.vaults.get(call.params["vault"].lower())
        if kv is None or kv.subscription_id != sid or kv.resource_group.lower() != rg.lower():
            raise self._not_found("Microsoft.KeyVault/vaults", call.params["vault"], rg)
        return kv

    async def list_vaults(self, call: Call) -> Response:
        sid = self.listable_subscription(call, "Microsoft.KeyVault/vaults/read")
        rg = call.params.get("rg")
        if rg is not None:
            self.resource_group(call)
        found = [kv for kv in self.t.vaults.values() if kv.subscription_id == sid
                 and (rg is None or kv.resource_group.lower() == rg.lower())
                 and self.t.can(call.caller.object_id, "Microsoft.KeyVault/vaults/read", kv.id)]
        return self.page(call, [self.vault_json(kv) for kv in sorted(found, key=lambda k: k.id)])

    async def get_resource_group(self, call: Call) -> Response:
        """`GET /subscriptions/{id}/resourcegroups/{name}` (Microsoft.Resources 2021-04-01):
        authorized at the group's scope first, so a caller who may read the subscription
        learns `ResourceGroupNotFound` (404) and one who may not gets 403, as in ARM."""
        scope = call.request.url.path.rstrip("/")
        self.authorize(call, "Microsoft.Resources/subscriptions/resourceGroups/read", scope)
        sid, rg = self.resource_group(call)
        located = [x.location for x in self.t.sites.values()
                   if x.subscription_id == sid and x.resource_group.lower() == rg.lower()]
        located += [x.location for x in self.t.vaults.values()
                    if x.subscription_id == sid and x.resource_group.lower() == rg.lower()]
        return _json({
            "id": f"/subscriptions/{sid}/resourceGroups/{rg}", "name": rg,
            "type": "Microsoft.Resources/resourceGroups",
            "location": located[0] if located else "westeurope",
            "properties": {"provisioningState": "Succeeded"}})

    async def get_vault(self, call: Call) -> Response:
        return _json(self.vault_json(self.vault(call, "Microsoft.KeyVault/vaults/read")))

    async def access_policies(self, call: Call) -> Response:
        kv = self.vault(call, "Microsoft.KeyVault/vaults/accessPolicies/write")
        kind = call.params["kind"].lower()
        entries = ((await call.body()).get("properties") or {}).get("accessPolicies") or []
        if kind not in ("add", "remove", "replace"):
            raise SimError(400, "BadRequest", f"Unknown access policy operation '{kind}'.")
        for entry in entries:
            oid = str(entry.get("objectId", "")).lower()
            perms = entry.get("permissions") or {}
            current = next((p for p in kv.access_policies if p.object_id == oid), None)
            if kind == "replace":
                if current is not None:
                    kv.access_policies.remove(current)
                kv.access_policies.append(_policy(oid, perms))
            elif kind == "add":
                if current is None:
                    kv.access_policies.append(_policy(oid, perms))
                else:
                    for field_name in ("secrets", "keys", "certificates", "storage"):
                        merged = getattr(current, field_name)
                        merged += [x for x in perms.get(field_name) or [] if x not in merged]
            elif current is not None:
                # Key Vault stores permissions in the casing they were sent ("Get" from the
                # portal, "get" from az), and both add and remove match them exactly: a
                # remove sent in another casing answers 200 and removes nothing
                # (Azure/azure-rest-api-specs#42963; add keeps both casings,
                # Azure/azure-cli#12531).
                for field_name in ("secrets", "keys", "certificates", "storage"):
                    drop = set(perms.get(field_name) or [])
                    setattr(current, field_name,
                            [x for x in getattr(current, field_name) if x not in drop])
                if not any((current.secrets, current.keys, current.certificates, current.storage)):
                    kv.access_policies.remove(current)
        return _json({"id": f"{kv.id}/accessPolicies/{kind}", "name": kind,
                      "type": "Microsoft.KeyVault/vaults/accessPolicies",
                      "properties": {"accessPolicies": [self.policy_json(p)
                                                        for p in kv.access_policies]}})

    # -- Microsoft.ManagedIdentity

    def uai_json(self, uai: UserAssignedIdentity, call: Call) -> dict[str, Any]:
        """As Microsoft.ManagedIdentity answers: the id with a lower-case `resourcegroups`
        (Azure/azure-cli identity and role recordings, api-versions 2021-09-30-preview to
        2023-01-31), and `isolationScope` only from the api-version that introduced it."""
        props: dict[str, Any] = {"tenantId": self.t.id, "principalId": uai.principal_id,
                                 "clientId": uai.client_id}
        if call.query.get("api-version", "") >= "2024-11-30":
            props["isolationScope"] = "None"
        return {"id": as_azure_writes(uai.id), "name": uai.name,
                "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
                "location": uai.location, "tags": dict(uai.tags), "properties": props}

    def uai_scope(self, call: Call) -> str:
        return call.request.url.path

    async def list_uais(self, call: Call) -> Response:
        sid = self.listable_subscription(
            call, "Microsoft.ManagedIdentity/userAssignedIdentities/read")
        rg = call.params.get("rg")
        if rg is not None:
            self.resource_group(call)
        found = [u for u in self.t.identities.values() if u.subscription_id == sid
                 and (rg is None or u.resource_group.lower() == rg.lower())
                 and self.t.can(call.caller.object_id,
                                "Microsoft.ManagedIdentity/userAssignedIdentities/read", u.id)]
        return self.page(call, [self.uai_json(u, call)
                                for u in sorted(found, key=lambda u: u.id)])

    async def get_uai(self, call: Call) -> Response:
        self.authorize(call, "Microsoft.ManagedIdentity/userAssignedIdentities/read",
                       self.uai_scope(call))
        _, rg = self.resource_group(call)
        uai = self.t.identities.get(self.uai_scope(call).lower())
        if uai is None:
            raise self._not_found("Microsoft.ManagedIdentity/userAssignedIdentities",
                                  call.params["uai"], rg)
        return _json(self.uai_json(uai, call))

    async def put_uai(self, call: Call) -> Response:
        self.authorize(call, "Microsoft.ManagedIdentity/userAssignedIdentities/write",
                       self.uai_scope(call))
        sid, rg = self.resource_group(call)
        body = await call.body()
        existing = self.t.identities.get(self.uai_scope(call).lower())
        if call.request.method == "PATCH":
            if existing is None:
                raise self._not_found("Microsoft.ManagedIdentity/userAssignedIdentities",
                                      call.params["uai"], rg)
            if isinstance(body.get("tags"), dict):
                existing.tags = {str(k): str(v) for k, v in body["tags"].items()}
            return _json(self.uai_json(existing, call))
        location = body.get("location")
        if not location:
            raise SimError(400, "LocationRequired", "The location property is required for "
                           "this definition.")
        uai = self.t.create_identity(sid, rg, call.params["uai"], str(location))
        uai.tags = {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
        if existing is not None:
            return _json(self.uai_json(uai, call))
        made = _json(self.uai_json(uai, call), 201)
        made.headers["location"] = as_azure_writes(uai.id)  # as the recorded 201s carry
        return made

    async def delete_uai(self, call: Call) -> Response:
        self.authorize(call, "Microsoft.ManagedIdentity/userAssignedIdentities/delete",
                       self.uai_scope(call))
        self.resource_group(call)
        if self.t.delete_identity(self.uai_scope(call)) is None:
            return Response(status_code=204)
        return Response(status_code=200)

    # -- Microsoft.Authorization

    def role_definition_json(self, role: RoleDefinition, scope: str) -> dict[str, Any]:
        return {
            "id": f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{role.id}",
            "name": role.id, "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": role.name, "type": "CustomRole" if role.custom else "BuiltInRole",
                "description": role.description,
                "assignableScopes": list(role.assignable_scopes),
                "permissions": [{"actions": list(role.actions),
                                 "notActions": list(role.not_actions),
                                 "dataActions": list(role.data_actions),
                                 "notDataActions": list(role.not_data_actions)}],
                # Built-in roles are Microsoft's, with no creator in the tenant (the recorded
                # Reader: created 2015-02-02, createdBy null); a custom role was made by the
                # estate's operator.
                "createdOn": _BUILT_IN_CREATED if not role.custom else self.t.started,
                "updatedOn": _BUILT_IN_CREATED if not role.custom else self.t.started,
                "createdBy": self.t.names.get(self.t.operator) if role.custom else None,
                "updatedBy": self.t.names.get(self.t.operator) if role.custom else None,
            },
        }

    async def list_role_definitions(self, call: Call) -> Response:
        scope = call.params["scope"]
        flt = call.query.get("$filter", "")
        m = re.search(r"roleName\s+eq\s+'([^']*)'", flt, re.IGNORECASE)
        # Roles that apply at the scope: every built-in one, and the custom roles assignable
        # at the scope or above it.
        roles = [r for r in self.t.role_definitions.values()
                 if (m is None or r.name.lower() == m.group(1).lower())
                 and any(scope_covers(a, scope or "/") for a in r.assignable_scopes)]
        return _json({"value": [self.role_definition_json(r, scope) for r in roles]})

    async def get_role_definition(self, call: Call) -> Response:
        role = self.t.role_definitions.get(call.params["name"].lower())
        if role is None:
            raise SimError(404, "RoleDefinitionDoesNotExist",
                           f"The specified role definition with ID '{call.params['name']}' "
                           "does not exist.")
        return _json(self.role_definition_json(role, call.params["scope"]))

    async def list_permissions(self, call: Call) -> Response:
        """What the caller may do at a scope: one entry per role assignment of its own at the
        scope or above, with that role's actions (Permissions - List For Resource Group / For
        Resource, learn.microsoft.com/rest/api/authorization/permissions, api-version
        2022-04-01; ARM serves the same at a subscription). An action is allowed when some
        entry lists it in `actions` and that same entry does not list it in `notActions`
        (azure-docs, "Resource Manager list permissions" in the guide to apps that manage a
        customer's subscriptions, with the response `{"value":[{"actions":["*"],
        "notActions":[...]},{"actions":["*/read"],"notActions":[]}]}`). Anyone may ask about
        themselves, so the call needs no role."""
        scope = call.params["scope"].rstrip("/")
        sub = _sub_of(scope)
        if not sub or sub["sub"].lower() not in self.t.subscriptions:
            raise SimError(404, "SubscriptionNotFound",
                           f"The subscription '{sub.get('sub', '')}' could not be found.")
        rg = re.match(r"/subscriptions/[^/]+/resourceGroups/([^/]+)", scope, re.IGNORECASE)
        groups = self.t.subscriptions[sub["sub"].lower()].resource_groups
        if rg and rg.group(1).lower() not in groups:
            raise SimError(404, "ResourceGroupNotFound",
                           f"Resource group '{rg.group(1)}' could not be found.")
        out = []
        for a in sorted(self.t.assignments_of(call.caller.object_id), key=lambda a: a.name):
            role = self.t.role_definitions.get(a.role_definition_id)
            if role is None or not scope_covers(a.scope, scope):
                continue
            out.append({"actions": list(role.actions), "notActions": list(role.not_actions),
                        "dataActions": list(role.data_actions),
                        "notDataActions": list(role.not_data_actions)})
        return self.page(call, out)

    def assignment_json(self, ra: RoleAssignment, *, put_answer: bool = False
                        ) -> dict[str, Any]:
        """As Microsoft.Authorization answers (Azure/azure-cli role recordings
        test_role_assignment_no_graph, test_role_assignment_create_update): who wrote it, and
        when; the answer to a PUT (creating or editing one) names no creator."""
        sub = re.match(r"/subscriptions/[^/]+", ra.scope, re.IGNORECASE)
        prefix = sub.group(0) if sub else ""
        created = ra.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        updated = (ra.updated or ra.created).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        # The estate's own assignments were made by its operator, before the simulator began.
        operator = self.t.names.get(self.t.operator, "")
        return {
            "id": ra.id, "name": ra.name, "type": "Microsoft.Authorization/roleAssignments",
            "properties": {
                "roleDefinitionId": (f"{prefix}/providers/Microsoft.Authorization/"
                                     f"roleDefinitions/{ra.role_definition_id}"),
                "principalId": ra.principal_id, "principalType": ra.principal_type,
                "scope": ra.scope, "condition": ra.condition,
                "conditionVersion": ra.condition_version,
                "createdOn": created, "updatedOn": updated,
                "createdBy": None if put_answer else (ra.created_by or operator),
                "updatedBy": ra.updated_by or operator,
                "delegatedManagedIdentityResourceId": None,
                "description": ra.description,
            },
        }

    async def list_role_assignments(self, call: Call) -> Response:
        scope = call.params["scope"].rstrip("/")
        self.authorize(call, "Microsoft.Authorization/roleAssignments/read", scope or "/")
        sub = _sub_of(scope)
        if sub and sub["sub"].lower() not in self.t.subscriptions:
            raise SimError(404, "SubscriptionNotFound",
                           f"The subscription '{sub['sub']}' could not be found.")
        flt = call.query.get("$filter", "")
        principal = re.search(r"principalId\s+eq\s+'([^']+)'", flt, re.IGNORECASE)
        assigned_to = re.search(r"assignedTo\('([^']+)'\)", flt, re.IGNORECASE)
        at_scope = re.search(r"atScope\(\)", flt, re.IGNORECASE) is not None
        who = (principal or assigned_to)
        low = scope.lower()
        out = []
        for ra in self.t.role_assignments.values():
            s = ra.scope.rstrip("/").lower()
            above = low == s or low.startswith(s + "/") or s == ""
            below = s.startswith(low + "/")
            if not (above or (below and not at_scope)):
                continue
            if who is not None and ra.principal_id.lower() != who.group(1).lower():
                continue
            out.append(self.assignment_json(ra))
        return self.page(call, sorted(out, key=lambda a: str(a["id"])))

    async def get_role_assignment(self, call: Call) -> Response:
        scope = call.params["scope"] or "/"
        self.authorize(call, "Microsoft.Authorization/roleAssignments/read", scope)
        ra = self.t.role_assignments.get(call.params["name"].lower())
        if ra is None or ra.scope.lower().rstrip("/") != call.params["scope"].lower().rstrip("/"):
            raise SimError(404, "RoleAssignmentNotFound",
                           f"The role assignment '{call.params['name']}' is not found.")
        return _json(self.assignment_json(ra))

    async def put_role_assignment(self, call: Call) -> Response:
        scope = call.params["scope"]
        self.authorize(call, "Microsoft.Authorization/roleAssignments/write", scope or "/")
        name = call.params["name"].lower()
        props = (await call.body()).get("properties") or {}
        role = self.t.role_named(str(props.get("roleDefinitionId", "")))
        if role is None:
            raise SimError(400, "RoleDefinitionDoesNotExist", (
                f"The specified role definition with ID '{props.get('roleDefinitionId')}' "
                "does not exist."))
        principal_id = str(props.get("principalId", "")).lower()
        principal_type = props.get("principalType")
        if self.t.visible_sp(principal_id) is None and not principal_type:
            raise SimError(400, "PrincipalNotFound", (
                f"Principal {principal_id.replace('-', '')} does not exist in the directory "
                f"{self.t.id}. Check that you have the correct principal ID. If you are "
                "creating this principal and then immediately assigning a role, this error "
                "might be related to a replication delay. In this case, set the role "
                "assignment principalType property to a value, such as ServicePrincipal, "
                "User, or Group.  See https://aka.ms/docs-principaltype"))
        condition = props.get("condition") or None
        version = props.get("conditionVersion") or None
        description = str(props["description"]) if props.get("description") else None
        if condition is not None and version is None:
            version = "2.0"  # the default when a condition comes without its version (docs)
        existing = self.t.role_assignments.get(name)
        if existing is not None:
            same = (existing.principal_id == principal_id
                    and existing.role_definition_id == role.id
                    and existing.scope.lower() == scope.lower())
            if not same:
                raise SimError(400, "RoleAssignmentUpdateNotPermitted", (
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be "
                    "updated."))
            # Only the condition, its version and the description can be edited.
            existing.condition, existing.condition_version = condition, version
            existing.description = description
            existing.updated_by, existing.updated = call.caller.object_id, utcnow()
            return _json(self.assignment_json(existing, put_answer=True), 201)
        duplicate = next((a for a in self.t.role_assignments.values()
                          if a.principal_id == principal_id and a.role_definition_id == role.id
                          and a.scope.lower() == scope.lower()), None)
        if duplicate is not None:
            raise SimError(409, "RoleAssignmentExists",
                           f"The role assignment already exists. The ID of the existing role "
                           f"assignment is {duplicate.name.replace('-', '')}.")
        ra = RoleAssignment(name, scope, role.id, principal_id,
                            str(principal_type or "ServicePrincipal"), utcnow(),
                            condition=condition, condition_version=version,
                            effective_at=time.monotonic() + self.t.rbac_delay,
                            description=description, created_by=call.caller.object_id,
                            updated_by=call.caller.object_id)
        self.t.role_assignments[name] = ra
        return _json(self.assignment_json(ra, put_answer=True), 201)

    async def delete_role_assignment(self, call: Call) -> Response:
        scope = call.params["scope"]
        self.authorize(call, "Microsoft.Authorization/roleAssignments/delete", scope or "/")
        ra = self.t.role_assignments.get(call.params["name"].lower())
        if ra is None or ra.scope.lower().rstrip("/") != scope.lower().rstrip("/"):
            return Response(status_code=204)
        del self.t.role_assignments[ra.name]
        return _json(self.assignment_json(ra), 200)

    # -- Microsoft.OperationalInsights

    def workspace_json(self, law: LogAnalyticsWorkspace) -> dict[str, Any]:
        """As Microsoft.OperationalInsights answers (Azure/azure-rest-api-specs, stable/
        2023-09-01/examples/WorkspacesGet.json): `properties.customerId` is the id queries
        name the workspace by; the provider writes its own id in lower case."""
        created = law.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return {
            "id": law.id.lower(), "name": law.name,
            "type": "Microsoft.OperationalInsights/workspaces", "location": law.location,
            "tags": {}, "etag": f'"{law.customer_id[:8]}-0000-0d00-0000-000000000000"',
            "properties": {
                "customerId": law.customer_id, "provisioningState": "Succeeded",
                "sku": {"name": "PerGB2018", "lastSkuUpdate": created},
                "retentionInDays": 30,
                "features": {"legacy": 0, "searchVersion": 1,
                             "enableLogAccessUsingOnlyResourcePermissions": True},
                "workspaceCapping": {"dailyQuotaGb": -1.0, "quotaNextResetTime": created,
                                     "dataIngestionStatus": "RespectQuota"},
                "publicNetworkAccessForIngestion": "Enabled",
                "publicNetworkAccessForQuery": "Enabled",
                "createdDate": created, "modifiedDate": created,
            },
        }

    async def get_workspace(self, call: Call) -> Response:
        scope = call.request.url.path.rstrip("/")
        self.authorize(call, "Microsoft.OperationalInsights/workspaces/read", scope)
        sid, rg = self.resource_group(call)
        rid = (f"/subscriptions/{sid}/resourceGroups/{rg}/providers/"
               f"Microsoft.OperationalInsights/workspaces/{call.params['workspace']}")
        law = self.t.workspaces.get(rid.lower())
        if law is None:
            raise self._not_found("Microsoft.OperationalInsights/workspaces",
                                  call.params["workspace"], rg)
        return _json(self.workspace_json(law))

    async def list_workspaces(self, call: Call) -> Response:
        """Subscription or resource group; Microsoft.OperationalInsights pages nothing: one
        `value` array without a nextLink."""
        sid = self.listable_subscription(call, "Microsoft.OperationalInsights/workspaces/read")
        rg = call.params.get("rg")
        if rg is not None:
            self.resource_group(call)
        found = [w for w in self.t.workspaces.values() if w.subscription_id == sid
                 and (rg is None or w.resource_group.lower() == rg.lower())
                 and self.t.can(call.caller.object_id,
                                "Microsoft.OperationalInsights/workspaces/read", w.id)]
        return _json({"value": [self.workspace_json(w)
                                for w in sorted(found, key=lambda w: w.id.lower())]})

    # -- generic resources (KeyVaultManagementClient.vaults.list uses this)

    async def list_resources(self, call: Call) -> Response:
        sid = self.listable_subscription(call, "Microsoft.Resources/subscriptions/resources/read")
        flt = call.query.get("$filter", "")
        m = re.search(r"resourceType\s+eq\s+'([^']+)'", flt, re.IGNORECASE)
        rtype = m.group(1).lower() if m else None
        oid = call.caller.object_id
        out: list[dict[str, Any]] = []
        if rtype in (None, "microsoft.keyvault/vaults"):
            out += [{"id": kv.id, "name": kv.name, "type": "Microsoft.KeyVault/vaults",
                     "location": kv.location, "tags": {}}
                    for kv in self.t.vaults.values() if kv.subscription_id == sid
                    and self.t.can(oid, "Microsoft.KeyVault/vaults/read", kv.id)]
        if rtype in (None, "microsoft.operationalinsights/workspaces"):
            out += [{"id": w.id, "name": w.name, "type": "Microsoft.OperationalInsights/workspaces",
                     "location": w.location, "tags": {}}
                    for w in self.t.workspaces.values() if w.subscription_id == sid
                    and self.t.can(oid, "Microsoft.OperationalInsights/workspaces/read", w.id)]
        if rtype in (None, "microsoft.web/sites"):
            out += [{"id": a.id, "name": a.site_name, "type": "Microsoft.Web/sites",
                     "kind": a.kind, "location": a.location}
                    for a in self.t.sites.values() if a.subscription_id == sid
                    and self.t.can(oid, "Microsoft.Web/sites/read", a.id)]
        return self.page(call, sorted(out, key=lambda r: str(r["id"])))


def _sub_of(scope: str) -> dict[str, str]:
    m = re.match(r"/subscriptions/([^/]+)", scope, re.IGNORECASE)
    return {"sub": m.group(1)} if m else {}


def _policy(object_id: str, perms: dict[str, Any]) -> AccessPolicy:
    return AccessPolicy(object_id, list(perms.get("secrets") or []),
                        list(perms.get("keys") or []), list(perms.get("certificates") or []),
                        list(perms.get("storage") or []))


# The resource type each route belongs to, for the api-versions ARM accepts (api_versions.py).
SUBS, RGS, RES = ("Microsoft.Resources/subscriptions", "Microsoft.Resources/resourceGroups",
                  "Microsoft.Resources/resources")
WEB, KV = "Microsoft.Web/sites", "Microsoft.KeyVault/vaults"
MSI = "Microsoft.ManagedIdentity/userAssignedIdentities"
LAW = "Microsoft.OperationalInsights/workspaces"
PERM, RD, RA = ("Microsoft.Authorization/permissions", "Microsoft.Authorization/roleDefinitions",
                "Microsoft.Authorization/roleAssignments")


def _table(arm: Arm) -> list[tuple[str, str, re.Pattern[str], Handler]]:
    rows: list[tuple[str, str, str, Handler]] = [
        (SUBS, "GET", r"/subscriptions", arm.list_subscriptions),
        (SUBS, "GET", SUB, arm.get_subscription),
        (RES, "GET", SUB + r"/resources", arm.list_resources),
        (RGS, "GET", RG, arm.get_resource_group),
        (WEB, "GET", SUB + r"/providers/Microsoft\.Web/sites", arm.list_sites),
        (WEB, "GET", RG + r"/providers/Microsoft\.Web/sites", arm.list_sites),
        (WEB, "GET", SITE, arm.get_site),
        (WEB, "PATCH", SITE, arm.update_site),
        (WEB, "PUT", SITE, arm.update_site),
        (WEB, "GET", SITE + r"/slots", arm.list_slots),
        (WEB, "GET", SITE + r"/config/web", arm.get_site_config),
        (WEB, "POST", SITE + r"/config/appsettings/list", arm.list_app_settings),
        (WEB, "PUT", SITE + r"/config/appsettings", arm.put_app_settings),
        (WEB, "POST", SITE + r"/config/connectionstrings/list", arm.list_connection_strings),
        (WEB, "PUT", SITE + r"/config/connectionstrings", arm.put_connection_strings),
        (WEB, "GET", SITE + r"/config/slotConfigNames", arm.get_slot_config_names),
        (WEB, "PUT", SITE + r"/config/slotConfigNames", arm.put_slot_config_names),
        (WEB, "POST", SITE + r"/restart", arm.restart),
        (KV, "GET", SUB + r"/providers/Microsoft\.KeyVault/vaults", arm.list_vaults),
        (KV, "GET", RG + r"/providers/Microsoft\.KeyVault/vaults", arm.list_vaults),
        (KV, "GET", VAULT, arm.get_vault),
        (KV, "PUT", VAULT + r"/accessPolicies/(?P<kind>[^/]+)", arm.access_policies),
        (MSI, "GET", SUB + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities",
         arm.list_uais),
        (MSI, "GET", RG + r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities",
         arm.list_uais),
        (MSI, "GET", UAI, arm.get_uai),
        (MSI, "PUT", UAI, arm.put_uai),
        (MSI, "PATCH", UAI, arm.put_uai),
        (MSI, "DELETE", UAI, arm.delete_uai),
        (LAW, "GET", SUB + r"/providers/Microsoft\.OperationalInsights/workspaces",
         arm.list_workspaces),
        (LAW, "GET", RG + r"/providers/Microsoft\.OperationalInsights/workspaces",
         arm.list_workspaces),
        (LAW, "GET", WORKSPACE, arm.get_workspace),
        (PERM, "GET", AUTHZ + r"/permissions", arm.list_permissions),
        (RD, "GET", AUTHZ + r"/roleDefinitions", arm.list_role_definitions),
        (RD, "GET", AUTHZ + r"/roleDefinitions/(?P<name>[^/]+)", arm.get_role_definition),
        (RA, "GET", AUTHZ + r"/roleAssignments", arm.list_role_assignments),
        (RA, "GET", AUTHZ + r"/roleAssignments/(?P<name>[^/]+)", arm.get_role_assignment),
        (RA, "PUT", AUTHZ + r"/roleAssignments/(?P<name>[^/]+)", arm.put_role_assignment),
        (RA, "DELETE", AUTHZ + r"/roleAssignments/(?P<name>[^/]+)", arm.delete_role_assignment),
    ]
    return [(t, m, re.compile(p + r"/?", re.IGNORECASE), h) for t, m, p, h in rows]


_BUILT_IN_CREATED = "2015-02-02T21:55:09.8806423Z"


def as_azure_writes(resource_id: str) -> str:
    """A resource id as Microsoft.ManagedIdentity and Microsoft.Web write it back: with a
    lower-case `resourcegroups` segment, whatever casing it was created with (Azure/azure-cli
    recordings test_identity_management, test_functionapp_assign_user_identity)."""
    return re.sub("/resourcegroups/", "/resourcegroups/", resource_id, flags=re.IGNORECASE)


def routes(ctx: SimContext) -> list[BaseRoute]:
    arm = Arm(ctx)
    table = _table(arm)

    async def dispatch(request: Request) -> Response:
        path = request.url.path
        try:
            matches = [(t, m, rx.fullmatch(path), h) for t, m, rx, h in table]
            found = [(t, m, mt, h) for t, m, mt, h in matches if mt is not None]
            if not found:
                raise SimError(404, "InvalidResourceType" if path.startswith("/subscriptions")
                               else "NotFound", f"No route for '{path}' in the simulator.")
            handler_match = next(((t, mt, h) for t, m, mt, h in found if m == request.method),
                                 None)
            if handler_match is None:
                raise SimError(405, "MethodNotAllowed",
                               f"The {request.method} method is not supported for '{path}'.")
            if "api-version" not in request.query_params:
                raise SimError(400, "MissingApiVersionParameter", (
                    "The api-version query parameter (?api-version=) is required for all "
                    "requests."))
            resource_type, mt, handler = handler_match
            api_version = request.query_params["api-version"]
            ctx.api_versions_seen.add((resource_type, api_version))
            if ctx.api_versions is not None:
                refused = ctx.api_versions.refusal(resource_type, api_version)
                if refused is not None:
                    raise refused
            caller = ctx.arm_caller(request)
            params = {k: v for k, v in mt.groupdict().items() if v is not None}
            call = Call(request, caller, params, dict(request.query_params),
                        await request.body())
            with ctx.tenant.lock:
                response = await handler(call)
        except SimError as err:
            return arm_error(err)
        response.headers.setdefault("x-ms-request-id", request_id())
        return with_arm_headers(response)

    return [Route("/{path:path}", dispatch,
                  methods=["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"])]
