"""Simulated app runtimes: the independent witness that says whether a migrated app still works.

Each site and slot resolves its credential from its *current* settings the way its code would:
`default-credential` code follows azure-identity's DefaultAzureCredential (the environment trio
first, and a configured trio that fails to sign in stops the chain; then the managed identity,
with `AZURE_CLIENT_ID` taken as a user-assigned client id); `client-secret` code insists on a
client id and secret pair in its settings. Key Vault references resolve through the identity
named by `keyVaultReferenceIdentity`; SQL connection strings honour `Authentication=`. The health
route answers 200 only when every need of the app succeeds with the credential it resolved.

Sign-in logs: each probe is a run of the app, which signs in as a real one does when it
refreshes its tokens: one token request per resource its needs touch (Key Vault, ARM or
Storage, Graph, an estate API; ARM when it has none), from the site's first outbound address
(`WebApp.outbound_ips`), logged by Entra as service-principal sign-ins (with the keyId of the
secret it used) or as managed-identity sign-ins.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from migrator.sim.estate import NeedSpec
from migrator.sim.rbac import is_data_action
from migrator.sim.signins import (
    ARM_RESOURCE,
    GRAPH_RESOURCE,
    KEYVAULT_RESOURCE,
    SQL_RESOURCE,
    STORAGE_RESOURCE,
)
from migrator.sim.state import ServicePrincipal, SimError, Tenant, WebApp

KV_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\((?P<body>.*)\)\s*$", re.IGNORECASE)
SECRET_URI = re.compile(
    r"^https://(?P<vault>[^./]+)\.vault\.[^/]+/secrets/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?/?$",
    re.IGNORECASE,
)
TRIO = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")

Resource = tuple[str, str]  # (app id, display name) of what a token is for
# A further token request with the credential an app resolved, for another resource.
Again = Callable[[Resource], None]


@dataclass(frozen=True)
class NeedResult:
    need: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Health:
    """One probe of an app: which credential it ended up with and how each need fared."""

    app: str
    credential: str  # a description, never a secret
    principal_id: str | None
    needs: tuple[NeedResult, ...] = field(default_factory=tuple)

    @property
    def healthy(self) -> bool:
        """Every need succeeds. Needs that use the app's own credential fail without one; an
        app that only reads platform-resolved Key Vault references needs none."""
        return all(n.ok for n in self.needs)

    def as_json(self) -> dict[str, object]:
        return {
            "app": self.app, "status": "healthy" if self.healthy else "unhealthy",
            "credential": self.credential, "principalId": self.principal_id,
            "needs": [{"need": n.need, "ok": n.ok, "detail": n.detail} for n in self.needs],
            "failing": [f"{n.need}: {n.detail}" for n in self.needs if not n.ok],
        }


class CredentialFailure(Exception):
    """The app's code could not get a token; the message says why, without secret text."""


def parse_kv_reference(value: str) -> tuple[str, str] | None:
    """(vault, secret) of an App Service Key Vault reference, in either documented syntax."""
    found = parse_kv_reference_version(value)
    return None if found is None else (found[0], found[1])


def parse_kv_reference_version(value: str) -> tuple[str, str, str | None] | None:
    """(vault, secret, version or None) of an App Service Key Vault reference: a reference
    that names a version resolves to that version, not to the secret's current one."""
    m = KV_REFERENCE.match(value.strip())
    if m is None:
        return None
    body = m.group("body").strip()
    if body.lower().startswith("secreturi="):
        uri = SECRET_URI.match(body.split("=", 1)[1].strip())
        return (uri.group("vault"), uri.group("name"), uri.group("version") or None) \
            if uri else None
    parts = {
        k.strip().lower(): v.strip()
        for k, _, v in (p.partition("=") for p in body.split(";") if "=" in p)
    }
    if parts.get("vaultname") and parts.get("secretname"):
        return parts["vaultname"], parts["secretname"], parts.get("secretversion") or None
    return None


class Runtime:
    """Evaluates apps against the tenant's current state; callers hold `tenant.lock`."""

    def __init__(self, tenant: Tenant) -> None:
        self.t = tenant

    # -- settings as the running process sees them

    def effective_settings(self, app: WebApp) -> dict[str, str]:
        """App settings with Key Vault references resolved by the platform (unresolved ones
        stay as the literal reference, as App Service leaves them)."""
        resolved = dict(app.app_settings)
        for key, value in app.app_settings.items():
            ref = parse_kv_reference_version(value)
            if ref is None:
                continue
            try:
                identity = self.reference_identity(app)
                resolved[key] = self.read_secret(identity, *ref)
            except CredentialFailure:
                continue
        return resolved

    def reference_identity(self, app: WebApp) -> ServicePrincipal:
        """The identity App Service uses for Key Vault references (`keyVaultReferenceIdentity`)."""
        kvri = app.key_vault_reference_identity
        if kvri.lower() == "systemassigned":
            if not app.identity.system_principal_id:
                raise CredentialFailure("Key Vault reference: no system-assigned identity")
            return self._visible(app.identity.system_principal_id)
        if kvri.lower() not in {r.lower() for r in app.identity.user_assigned}:
            raise CredentialFailure(f"Key Vault reference identity {kvri} is not assigned")
        return self._assigned(app, kvri)

    def _assigned(self, app: WebApp, resource_id: str) -> ServicePrincipal:
        """The principal of a user-assigned identity as the site holds it: none if the identity
        was deleted, or deleted and made anew, since it was assigned (the site's ids are the
        old ones until it is assigned again)."""
        uai = self.t.identities.get(resource_id.lower())
        held = app.identity.assigned_ids.get(resource_id.lower())
        if uai is None or (held is not None and held[0] != uai.principal_id):
            raise CredentialFailure(
                f"ManagedIdentityCredential: the user-assigned identity {resource_id} assigned "
                f"to {app.display} no longer exists (deleted, or re-created with new ids since "
                "it was assigned)")
        return self._visible(uai.principal_id)

    def _visible(self, object_id: str) -> ServicePrincipal:
        sp = self.t.service_principals.get(object_id)
        if sp is None:
            raise CredentialFailure(f"identity {object_id} does not exist")
        if not self.t.is_visible(sp):
            raise CredentialFailure(f"identity {object_id} is not yet replicated")
        return sp

    # -- credentials

    def sign_in_with_secret(self, client_id: str, secret: str, *, ip: str = "",
                            resource: Resource | None = None) -> ServicePrincipal:
        try:
            return self.t.check_client_secret(client_id, secret, ip=ip, resource=resource)
        except SimError as err:
            raise CredentialFailure(err.message.split(" Ensure")[0]) from None

    def _again_with_secret(self, client_id: str, secret: str, ip: str) -> Again:
        def again(resource: Resource) -> None:
            # A refusal is logged as a failed sign-in; the need that wanted it fails alone.
            with contextlib.suppress(SimError):
                self.t.check_client_secret(client_id, secret, ip=ip, resource=resource)
        return again

    def _again_with_identity(self, app: WebApp, sp: ServicePrincipal, ip: str) -> Again:
        def again(resource: Resource) -> None:
            self.t.record_managed_identity_sign_in(sp, ip=ip, resource=resource,
                                                   host_id=app.id)
        return again

    def managed_identity(self, app: WebApp, client_id: str | None) -> ServicePrincipal:
        if client_id:
            for rid in app.identity.user_assigned:
                uai = self.t.identities.get(rid.lower())
                held = app.identity.held(rid, uai)
                if held is not None and held[1] == client_id.lower():
                    return self._assigned(app, rid)
            raise CredentialFailure(
                f"ManagedIdentityCredential: no user-assigned identity with client id "
                f"{client_id} on {app.display} (AZURE_CLIENT_ID is taken as one)")
        if not app.identity.system_principal_id:
            raise CredentialFailure(
                f"ManagedIdentityCredential: {app.display} has no system-assigned identity")
        return self._visible(app.identity.system_principal_id)

    def default_credential(self, settings: dict[str, str], app: WebApp, *,
                           resource: Resource = ARM_RESOURCE
                           ) -> tuple[ServicePrincipal, str, Again]:
        """DefaultAzureCredential: EnvironmentCredential when the trio is complete (its failure
        ends the chain), else ManagedIdentityCredential(client_id=AZURE_CLIENT_ID). Its first
        token is for `resource`; `Again` asks for one more."""
        ip = app.outbound_ips[0]
        if all(settings.get(k) for k in TRIO):
            tenant = settings["AZURE_TENANT_ID"].strip().lower()
            if tenant not in (self.t.id.lower(), self.t.domain.lower()):
                raise CredentialFailure(
                    f"EnvironmentCredential: AADSTS90002: Tenant '{tenant}' not found")
            client_id, secret = settings["AZURE_CLIENT_ID"], settings["AZURE_CLIENT_SECRET"]
            sp = self.sign_in_with_secret(client_id, secret, ip=ip, resource=resource)
            return (sp, f"EnvironmentCredential (client secret of {sp.display_name})",
                    self._again_with_secret(client_id, secret, ip))
        mi_client_id = settings.get("AZURE_CLIENT_ID") or None
        sp = self.managed_identity(app, mi_client_id)
        kind = "user-assigned" if mi_client_id else "system-assigned"
        again = self._again_with_identity(app, sp, ip)
        again(resource)
        return sp, f"ManagedIdentityCredential ({kind} {sp.display_name})", again

    def client_secret_code(self, settings: dict[str, str], app: WebApp, *,
                           resource: Resource = ARM_RESOURCE
                           ) -> tuple[ServicePrincipal, str, Again]:
        """Code hard-wired to ClientSecretCredential: it reads some `…ClientSecret` setting and
        the `…ClientId` beside it; without them it cannot start."""
        ip = app.outbound_ips[0]
        for key, secret in sorted(settings.items()):
            m = re.match(r"^(?P<stem>.*?)(client_?secret|password)$", key, re.IGNORECASE)
            if m is None or not secret:
                continue
            stem = m.group("stem").lower()
            ids = [k for k in sorted(settings) if k.lower().startswith(stem)
                   and re.sub(r"[_:.]", "", k[len(stem):]).lower() in ("clientid", "appid")]
            if ids:
                client_id = settings[ids[0]]
                sp = self.sign_in_with_secret(client_id, secret, ip=ip, resource=resource)
                return (sp, f"ClientSecretCredential in code (secret of {sp.display_name})",
                        self._again_with_secret(client_id, secret, ip))
        raise CredentialFailure("the code needs a client id and client secret in its settings")

    def credential(self, app: WebApp, settings: dict[str, str], *,
                   resource: Resource = ARM_RESOURCE) -> tuple[ServicePrincipal, str, Again]:
        """The credential the app's code resolves, its first token for `resource`."""
        if app.code == "client-secret":
            return self.client_secret_code(settings, app, resource=resource)
        return self.default_credential(settings, app, resource=resource)

    def resources_of(self, app: WebApp) -> list[Resource]:
        """What the app's own credential gets tokens for, in the order of its needs (ARM when
        none does): its sign-ins at each probe."""
        out: list[Resource] = []
        for need in app.needs:
            found = self._resource_of(need)
            if found is not None and found not in out:
                out.append(found)
        return out or [ARM_RESOURCE]

    def _resource_of(self, need: NeedSpec) -> Resource | None:
        if need.key_vault_secret is not None:
            return KEYVAULT_RESOURCE
        if need.role_action is not None:
            if is_data_action(need.role_action):
                provider = need.role_action.split("/", 1)[0].lower()
                if provider == "microsoft.storage":
                    return STORAGE_RESOURCE
                if provider == "microsoft.keyvault":
                    return KEYVAULT_RESOURCE
            return ARM_RESOURCE
        if need.graph_app_role is not None:
            return GRAPH_RESOURCE
        if need.app_role is not None:
            api = need.app_role.partition("/")[0]
            sp = self.t.service_principals.get(self.t.names.get(api, ""))
            return (sp.app_id, sp.display_name) if sp else None
        return None  # sql signs in on its own (check_sql); settings are the platform's

    # -- needs

    def read_secret(self, sp: ServicePrincipal, vault_name: str, secret: str,
                    version: str | None = None) -> str:
        kv = self.t.vaults.get(vault_name.lower())
        if kv is None:
            raise CredentialFailure(f"vault {vault_name} not found")
        if kv.rbac:
            action = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
            if not self.t.can(sp.object_id, action, f"{kv.id}/secrets/{secret}", data=True):
                raise CredentialFailure(
                    f"Forbidden: {sp.display_name} lacks {action} on {vault_name} (RBAC vault)")
        else:
            policy = next((p for p in kv.access_policies if p.object_id == sp.object_id), None)
            if policy is None or "get" not in {s.lower() for s in policy.secrets}:
                raise CredentialFailure(
                    f"Forbidden: no access policy grants {sp.display_name} secret get on "
                    f"{vault_name}")
        value = kv.secret_value(secret, version)
        if value is None:
            raise CredentialFailure(f"SecretNotFound: {vault_name}/{secret}"
                                    + (f"/{version}" if version else ""))
        return value

    def check_sql(self, app: WebApp, settings: dict[str, str], name: str,
                  default_sp: ServicePrincipal | None) -> str:
        conn = app.connection_strings.get(name)
        text = conn.value if conn is not None else settings.get(name, "")
        parts = {k.strip().lower(): v.strip() for k, _, v in
                 (p.partition("=") for p in text.split(";") if "=" in p)}
        server = parts.get("server") or parts.get("data source") or parts.get("address") or ""
        server = server.removeprefix("tcp:").split(",")[0].split(".")[0].lower()
        database = (parts.get("database") or parts.get("initial catalog") or "").lower()
        srv = self.t.sql_servers.get(server)
        if srv is None:
            raise CredentialFailure(f"SQL server {server or '?'} not found")
        db = srv.databases.get(database)
        if db is None:
            raise CredentialFailure(f"database {database or '?'} not found on {srv.name}")
        auth = parts.get("authentication", "").lower().replace("  ", " ")
        user = parts.get("user id") or parts.get("uid") or parts.get("user") or ""
        if auth in ("active directory service principal",):
            password = parts.get("password") or parts.get("pwd") or ""
            sp = self.sign_in_with_secret(user, password, ip=app.outbound_ips[0],
                                          resource=SQL_RESOURCE)
        elif auth in ("active directory managed identity", "active directory msi"):
            sp = self.managed_identity(app, user or None)
        elif auth == "active directory default":
            if default_sp is None:
                raise CredentialFailure("Active Directory Default: no credential available")
            sp = default_sp
        elif not auth:
            return "SQL authentication (login and password)"
        else:
            raise CredentialFailure(f"unsupported Authentication={parts.get('authentication')}")
        if sp.object_id not in db.users:
            raise CredentialFailure(
                f"Login failed for user '<token-identified principal>': {sp.display_name} has "
                f"no user in {srv.name}/{db.name}")
        return f"{sp.display_name} in {srv.name}/{db.name} as {', '.join(db.users[sp.object_id])}"

    def probe(self, app: WebApp) -> Health:
        settings = self.effective_settings(app)
        resources = self.resources_of(app)
        sp: ServicePrincipal | None
        try:
            sp, description, again = self.credential(app, settings, resource=resources[0])
        except CredentialFailure as exc:
            sp, description = None, f"no credential: {exc}"
        else:
            for resource in resources[1:]:
                again(resource)
        results: list[NeedResult] = []
        for need in app.needs:
            label, ok, detail = self._need(app, settings, need, sp)
            results.append(NeedResult(label, ok, detail))
        return Health(app.display, description, sp.object_id if sp else None, tuple(results))

    def _need(self, app: WebApp, settings: dict[str, str], need: object,
              sp: ServicePrincipal | None) -> tuple[str, bool, str]:
        from migrator.sim.estate import NeedSpec

        assert isinstance(need, NeedSpec)
        if need.sql is not None:
            label = f"sql {need.sql}"
            try:
                return label, True, self.check_sql(app, settings, need.sql, sp)
            except CredentialFailure as exc:
                return label, False, str(exc)
        if need.setting is not None:
            label = f"setting {need.setting}"
            value = settings.get(need.setting, "")
            ref = parse_kv_reference_version(value)
            if ref is not None:  # still the literal reference: the platform could not read it
                try:
                    self.read_secret(self.reference_identity(app), *ref)
                except CredentialFailure as exc:
                    if str(exc).startswith("Forbidden"):
                        return label, False, "Key Vault reference unresolved: access denied"
                    return label, False, f"Key Vault reference unresolved: {exc}"
                return label, False, "Key Vault reference unresolved"
            return label, bool(value), "resolved" if value else "empty"
        if sp is None:
            return _need_label(need), False, "no credential"
        if need.key_vault_secret is not None:
            vault, secret = need.key_vault_secret.split("/")
            try:
                self.read_secret(sp, vault, secret)
            except CredentialFailure as exc:
                return _need_label(need), False, str(exc)
            return _need_label(need), True, f"read as {sp.display_name}"
        if need.role_action is not None and need.scope is not None:
            scope = _resolve_scope(self.t, need.scope)
            ok = self.t.can(sp.object_id, need.role_action, scope,
                            data=is_data_action(need.role_action))
            return _need_label(need), ok, (f"allowed for {sp.display_name}" if ok else
                                           f"AuthorizationFailed for {sp.display_name}")
        if need.graph_app_role is not None:
            ok = need.graph_app_role in self.t.graph_roles_of(sp.object_id)
            return _need_label(need), ok, (
                f"granted to {sp.display_name}" if ok else
                f"Authorization_RequestDenied: {sp.display_name} lacks {need.graph_app_role}")
        if need.app_role is not None:
            # An API authorizes a caller by the `roles` claim of its token, which holds the
            # app roles of that API granted to the caller's principal.
            api, _, value = need.app_role.partition("/")
            api_id = self.t.names.get(api, "")
            ok = value in self.t.app_roles_of(sp.object_id, api_id)
            return _need_label(need), ok, (
                f"{api} accepts {sp.display_name}" if ok else
                f"403 from {api}: the token of {sp.display_name} has no role {value}")
        return _need_label(need), False, "unknown need"


def _need_label(need: object) -> str:
    from migrator.sim.estate import NeedSpec

    assert isinstance(need, NeedSpec)
    if need.key_vault_secret:
        return f"key vault secret {need.key_vault_secret}"
    if need.role_action:
        return f"{need.role_action} on {need.scope}"
    if need.graph_app_role:
        return f"graph {need.graph_app_role}"
    if need.app_role:
        return f"app role {need.app_role}"
    return "need"


def _resolve_scope(tenant: Tenant, scope: str) -> str:
    """Needs may name the subscription by its estate name."""
    m = re.match(r"^/subscriptions/([^/]+)", scope, re.IGNORECASE)
    if m:
        for sub in tenant.subscriptions.values():
            if sub.name == m.group(1):
                return f"/subscriptions/{sub.id}{scope[m.end():]}"
    return scope
