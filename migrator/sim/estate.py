"""The estate file: a YAML description of a tenant that the simulator serves.

The format is a contract (../shared/DESIGN.md): extend it, keep it loading. This module only
parses and validates, references between names included (`check_references`, with
`EstateNames`, what each name refers to); `migrator.sim.state` turns a valid estate into a live
tenant. Every error names the file, the place (a YAML path and line) and the problem, in one
line, so an operator can fix a hand-written estate without reading a traceback.
"""

from __future__ import annotations

import gc
import ipaddress
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from migrator.sim.catalog import GRAPH_APP_ROLES, derive_id, generate_client_secret
from migrator.sim.conditions import ConditionError
from migrator.sim.conditions import parse as parse_condition
from migrator.sim.rbac import ROLES_BY_ID, ROLES_BY_NAME


class EstateError(Exception):
    """An estate file that cannot be loaded; the message is one line, fit for an operator."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantSpec(_Spec):
    id: UUID
    domain: str = "contoso.onmicrosoft.com"
    # Graph's throttling quota depends on the tenant's size: S under 50 users, M up to 500,
    # L above. S, the smallest quota, unless the estate says otherwise.
    size: Literal["S", "M", "L"] = "S"
    # The Entra ID licence: Graph serves sign-in logs only to a P1 or P2 tenant.
    licence: Literal["free", "P1", "P2"] = "P2"


class SecretSpec(_Spec):
    # Left out, the simulator makes a fresh Entra-format secret at every load, so sample and
    # generated estates need hold no secret text at all.
    value: str | None = Field(default=None, min_length=1)
    expires: date | None = None
    start: date | None = None
    key_id: UUID | None = None
    display_name: str | None = None


class PrincipalSpec(_Spec):
    name: str
    app_id: UUID | None = None
    object_id: UUID | None = None  # the service principal's object id
    app_object_id: UUID | None = None  # the application object's id
    secrets: list[SecretSpec] = []
    graph_app_roles: list[str] = []
    # The app roles this application exposes, as an API registration other principals call
    # (values such as "Orders.Read"); their ids are derived from the name and the value.
    app_roles: list[str] = []
    # App roles of the estate's own APIs granted to this principal: "api-principal/Role.Value".
    api_app_roles: list[str] = []
    # Principals that own this app registration (Entra "Owners"): one holding only
    # Application.ReadWrite.OwnedBy may add and remove its passwords.
    owners: list[str] = []
    enabled: bool = True


class AccessPolicySpec(_Spec):
    principal: str
    secrets: list[str] = []
    keys: list[str] = []
    certificates: list[str] = []


class KeyVaultSpec(_Spec):
    name: str
    rbac: bool = False
    access_policies: list[AccessPolicySpec] = []
    secrets: dict[str, str] = {}


class NeedSpec(_Spec):
    """One thing the running app must be able to do; exactly one kind per entry."""

    key_vault_secret: str | None = None  # "vault/secret"
    role_action: str | None = None  # an ARM action or data action
    scope: str | None = None  # with role_action
    graph_app_role: str | None = None  # e.g. User.Read.All
    app_role: str | None = None  # "api-principal/Role.Value": the app calls that estate API
    sql: str | None = None  # name of the connection string (or app setting) the app opens
    setting: str | None = None  # an app setting that must resolve (e.g. a Key Vault reference)

    @model_validator(mode="after")
    def _exactly_one(self) -> NeedSpec:
        kinds = [
            k
            for k in ("key_vault_secret", "role_action", "graph_app_role", "app_role", "sql",
                      "setting")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a need names exactly one of key_vault_secret, role_action, graph_app_role, "
                f"app_role, sql, setting (got {', '.join(kinds) or 'none'})"
            )
        if self.role_action is not None and self.scope is None:
            raise ValueError("role_action needs a scope")
        if self.key_vault_secret is not None and self.key_vault_secret.count("/") != 1:
            raise ValueError("key_vault_secret is written 'vault/secret'")
        return self


class ConnectionStringSpec(_Spec):
    type: Literal[
        "SQLAzure", "SQLServer", "MySql", "PostgreSQL", "Custom", "ServiceBus", "EventHub",
        "DocDb", "RedisCache", "ApiHub", "NotificationHub",
    ] = "Custom"
    value: str


IdentitySpec = Literal["none", "system", "both"] | list[str]
CodeSpec = Literal["default-credential", "client-secret"]


class SlotSpec(_Spec):
    name: str
    identity: IdentitySpec = "none"
    code: CodeSpec | None = None  # defaults to the site's
    health_path: str | None = None
    app_settings: dict[str, str] = {}
    connection_strings: dict[str, ConnectionStringSpec] = {}
    needs: list[NeedSpec] = []
    key_vault_reference_identity: str | None = None


class SiteSpec(_Spec):
    name: str
    kind: str = "app"
    location: str | None = None
    identity: IdentitySpec = "none"
    code: CodeSpec = "default-credential"
    # The health check path set in config/web; null for an app with none (Azure's default),
    # whose root the health probe then asks.
    health_path: str | None = "/healthz"
    app_settings: dict[str, str] = {}
    slot_settings: list[str] = []
    connection_strings: dict[str, ConnectionStringSpec] = {}
    needs: list[NeedSpec] = []
    slots: list[SlotSpec] = []
    key_vault_reference_identity: str | None = None  # a user-assigned identity name

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        parts = [p.strip() for p in v.split(",")]
        if parts[0] not in ("app", "functionapp") or not set(parts[1:]) <= {"linux"}:
            raise ValueError("kind is app or functionapp, optionally followed by ',linux'")
        return ",".join(parts)

    @field_validator("health_path")
    @classmethod
    def _health(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("health_path starts with '/'")
        return v


class SqlUserSpec(_Spec):
    principal: str  # a principal, user-assigned identity, or "site[/slot]" (system identity)
    roles: list[str] = ["db_datareader"]


class SqlDatabaseSpec(_Spec):
    name: str
    users: list[SqlUserSpec] = []


class SqlServerSpec(_Spec):
    name: str
    databases: list[SqlDatabaseSpec] = []


class AutomationAccountSpec(_Spec):
    """An Automation account with a system-assigned identity: where the runbook runs. Role
    assignments and access policies may name it like a principal."""

    name: str
    graph_app_roles: list[str] = []


_WORKSPACE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]")


class LogAnalyticsWorkspaceSpec(_Spec):
    """A Log Analytics workspace. `id` is its customer id (the "Workspace ID" queries name it
    by), derived from the name when left out. `sign_in_logs: true`: the tenant's Entra
    diagnostic settings send service-principal sign-ins to it (AADServicePrincipalSignInLogs);
    without, the workspace has no such table."""

    name: str
    id: UUID | None = None
    sign_in_logs: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        # Microsoft.OperationalInsights' rule: 4-63 letters, digits and hyphens, starting and
        # ending with a letter or digit.
        if not _WORKSPACE_NAME.fullmatch(v):
            raise ValueError(f"workspace name {v!r} is not 4-63 letters, digits and hyphens "
                             "starting and ending with a letter or digit")
        return v


class ResourceGroupSpec(_Spec):
    name: str
    location: str = "westeurope"
    user_assigned_identities: list[str] = []
    key_vaults: list[KeyVaultSpec] = []
    sites: list[SiteSpec] = []
    sql_servers: list[SqlServerSpec] = []
    automation_accounts: list[AutomationAccountSpec] = []
    log_analytics_workspaces: list[LogAnalyticsWorkspaceSpec] = []


class SubscriptionSpec(_Spec):
    name: str
    id: UUID | None = None
    resource_groups: list[ResourceGroupSpec] = []


class RoleAssignmentSpec(_Spec):
    principal: str
    role: str
    scope: str
    # An ABAC condition (the subset sim.conditions evaluates), e.g. blob reads in one container.
    condition: str | None = None
    condition_version: Literal["2.0"] | None = None


def custom_role_id(name: str) -> str:
    """The id of a custom role the estate gives none: uuid5 of its name."""
    return derive_id("role-definition", name)


class RoleDefinitionSpec(_Spec):
    """A custom role, as `az role definition create` takes one: its permissions and the scopes
    it may be assigned at (subscription names allowed, as in every scope of the estate). The id
    is derived from the name when left out. Azure refuses a custom role named like a built-in
    one, and so does the estate."""

    name: str = Field(min_length=1)
    id: UUID | None = None
    description: str = ""
    actions: list[str] = []
    not_actions: list[str] = []
    data_actions: list[str] = []
    not_data_actions: list[str] = []
    assignable_scopes: list[str] = Field(min_length=1)


# What an external caller may sign in to besides an estate API (a principal's name).
CALLER_RESOURCES = ("graph", "arm", "keyvault", "storage", "sql")


class ExternalCallerSpec(_Spec):
    """Something outside App Service (a CI pipeline, a script on a VM) that signs in with a
    principal's secret every `every` seconds from `ip`: what only Entra's sign-in logs reveal,
    and what a migration that revokes the secret would break."""

    name: str = Field(min_length=1)
    principal: str
    secret: int = Field(default=0, ge=0)  # index into the principal's `secrets`
    ip: str
    every: float = Field(default=300.0, gt=0)  # seconds between sign-ins
    resource: str = "arm"  # graph | arm | keyvault | storage | sql | an estate API's name
    active: bool = True
    history_days: float = Field(default=0.0, ge=0, le=3650)  # sign-ins before the tenant began

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            return str(ipaddress.ip_address(v.strip()))
        except ValueError:
            raise ValueError(f"ip {v!r} is not an IP address") from None


class EstateSpec(_Spec):
    tenant: TenantSpec
    operator: str
    principals: list[PrincipalSpec] = []
    subscriptions: list[SubscriptionSpec] = []
    role_definitions: list[RoleDefinitionSpec] = []
    role_assignments: list[RoleAssignmentSpec] = []
    external_callers: list[ExternalCallerSpec] = []


# --- YAML with line numbers -------------------------------------------------------------------

Loc = tuple[str | int, ...]


def _compose(text: str) -> tuple[Any, dict[Loc, int]]:
    """Parse YAML safely, keeping the line of every mapping key and sequence item."""
    # libyaml's parser when PyYAML has it (7x faster on big estates); marks keep line numbers.
    node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    lines: dict[Loc, int] = {}

    loader = yaml.SafeLoader("")

    def walk(n: yaml.Node | None, loc: Loc) -> Any:
        if n is None:
            return None
        lines[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for k, v in n.value:
                key = loader.construct_object(k, deep=True)
                if key in out:
                    raise EstateError(f"line {k.start_mark.line + 1}: key {key!r} given twice")
                here = (*loc, key)
                out[key] = walk(v, here)
                lines[here] = k.start_mark.line + 1
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*loc, i)) for i, v in enumerate(n.value)]
        return loader.construct_object(n, deep=True)

    try:
        return walk(node, ()), lines
    finally:
        loader.dispose()


def _place(loc: Loc, lines: dict[Loc, int]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    line = None
    probe = loc
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return f"line {line}, {path or '<top>'}" if line else (path or "<top>")


_REF = re.compile(r"@([A-Za-z0-9][A-Za-z0-9_.-]*?)\.(app_id|object_id|app_object_id|client_id|"
                  r"principal_id|id|domain|uri|fqdn|secrets\[(\d+)\])(?![\w\[])")


def iter_references(value: str) -> Iterator[re.Match[str]]:
    """Every `@name.field` reference inside a setting value."""
    return _REF.finditer(value)


def load_estate(path: Path) -> EstateSpec:
    """Read and validate an estate file, or raise EstateError naming file, place and problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise EstateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_estate(text, str(path))


def parse_estate(text: str, source: str = "<estate>") -> EstateSpec:
    """Validate estate YAML text; `source` names it in errors."""
    with gc_paused():
        return _parse_estate(text, source)


def _parse_estate(text: str, source: str) -> EstateSpec:
    try:
        raw, lines = _compose(text)
    except EstateError as exc:
        raise EstateError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EstateError(f"{source}: {where}bad YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise EstateError(f"{source}: the estate is a YAML mapping with tenant, operator, ...")
    try:
        spec = EstateSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise EstateError(f"{source}: {_place(tuple(err['loc']), lines)}: {msg}{more}") from None
    problem = check_references(spec)
    if problem is not None:
        loc, msg = problem
        raise EstateError(f"{source}: {_place(loc, lines)}: {msg}")
    return spec


# --- what the names refer to, and the references between them ------------------------------

# What Entra takes as an app role's value: no spaces, at most 120 characters.
_APP_ROLE_VALUE = re.compile(r"[A-Za-z0-9._:-]{1,120}")
# A scope's subscription segment, which an estate may give as a subscription's name.
SUB_IN_SCOPE = re.compile(r"^/subscriptions/([^/]+)", re.IGNORECASE)


class EstateNames:
    """What each estate name refers to, for `@name.field` and principal references."""

    def __init__(self, spec: EstateSpec) -> None:
        self.spec = spec
        self.subscriptions = {s.name: str(s.id or derive_id("subscription", s.name))
                              for s in spec.subscriptions}
        self.principals = {p.name: p for p in spec.principals}
        self._secret_values: dict[tuple[str, int], str] = {}
        self.uais: dict[str, tuple[str, str, str]] = {}  # name -> (sub id, rg, location)
        self.vaults: dict[str, tuple[str, str]] = {}
        self.vault_secrets: dict[str, set[str]] = {}
        self.sites: dict[str, SiteSpec] = {}
        self.slots: dict[str, SlotSpec] = {}
        self.sql_servers: dict[str, tuple[str, ...]] = {}
        self.automation: set[str] = set()
        for sub in spec.subscriptions:
            sid = self.subscriptions[sub.name]
            for rg in sub.resource_groups:
                for uai in rg.user_assigned_identities:
                    self.uais[uai] = (sid, rg.name, rg.location)
                for kv in rg.key_vaults:
                    self.vaults[kv.name] = (sid, rg.name)
                    self.vault_secrets[kv.name] = set(kv.secrets)
                for site in rg.sites:
                    self.sites[site.name] = site
                    for slot in site.slots:
                        self.slots[f"{site.name}/{slot.name}"] = slot
                for server in rg.sql_servers:
                    self.sql_servers[server.name] = tuple(d.name for d in server.databases)
                self.automation.update(a.name for a in rg.automation_accounts)

    def secret_value(self, name: str, index: int) -> str:
        """The estate's secret text, or one made on first use (the same within one load)."""
        key = (name, index)
        if key not in self._secret_values:
            given = self.principals[name].secrets[index].value
            self._secret_values[key] = given or generate_client_secret()
        return self._secret_values[key]

    def workspace_customer_id(self, subscription: str, resource_group: str, name: str) -> str:
        """A workspace's customer id: the estate's, else uuid5 of its place and name."""
        for sub in self.spec.subscriptions:
            for rg in sub.resource_groups:
                for law in rg.log_analytics_workspaces:
                    if (sub.name, rg.name, law.name) == (subscription, resource_group, name) \
                            and law.id is not None:
                        return str(law.id).lower()
        return derive_id("log-analytics-workspace", f"{subscription}/{resource_group}/{name}")

    def app_id(self, name: str) -> str:
        p = self.principals[name]
        return str(p.app_id or derive_id("app", name))

    def sp_object_id(self, name: str) -> str:
        p = self.principals[name]
        return str(p.object_id or derive_id("sp", name))

    def app_object_id(self, name: str) -> str:
        p = self.principals[name]
        return str(p.app_object_id or derive_id("application", name))

    def uai_resource_id(self, name: str) -> str:
        sid, rg, _ = self.uais[name]
        return (f"/subscriptions/{sid}/resourceGroups/{rg}"
                f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}")

    def site_resource_id(self, name: str) -> str:
        site_name, _, slot = name.partition("/")
        for sub in self.spec.subscriptions:
            for rg in sub.resource_groups:
                if any(s.name == site_name for s in rg.sites):
                    base = (f"/subscriptions/{self.subscriptions[sub.name]}/resourceGroups/"
                            f"{rg.name}/providers/Microsoft.Web/sites/{site_name}")
                    return f"{base}/slots/{slot}" if slot else base
        raise KeyError(name)

    def scope(self, scope: str) -> str:
        """Scopes may name a subscription by its estate name."""
        m = SUB_IN_SCOPE.match(scope)
        if m and m.group(1) in self.subscriptions:
            return f"/subscriptions/{self.subscriptions[m.group(1)]}{scope[m.end():]}"
        return scope

    def app_role_problem(self, grant: str) -> str | None:
        """Why "api-principal/Role.Value" names no app role of an estate API, if it does not."""
        api, _, value = grant.partition("/")
        if api not in self.principals:
            return f"{grant!r} is not 'api-principal/Role.Value' of a principal in the estate"
        if value not in self.principals[api].app_roles:
            return f"principal {api!r} exposes no app role {value!r}"
        return None

    def principal_ref_problem(self, name: str) -> str | None:
        if name in self.principals or name in self.uais or name in self.automation:
            return None
        if name in self.sites or name in self.slots:
            target = self.sites.get(name) or self.slots[name]
            if target.identity == "none":
                return f"{name!r} has no system-assigned identity (identity: none)"
            return None
        return f"unknown principal {name!r} (not a principal, identity, site or slot)"

    def field_value(self, name: str, fld: str, index: str | None) -> str | None:
        """The value of `@name.field`, or None when the reference is unknown."""
        if name == "tenant":
            return {"id": str(self.spec.tenant.id), "domain": self.spec.tenant.domain}.get(fld)
        if name in self.principals:
            if index is not None:
                i = int(index)
                return self.secret_value(name, i) if i < len(self.principals[name].secrets) \
                    else None
            return {"app_id": self.app_id(name), "client_id": self.app_id(name),
                    "object_id": self.sp_object_id(name),
                    "app_object_id": self.app_object_id(name)}.get(fld)
        if name in self.uais:
            rid = self.uai_resource_id(name).lower()
            return {"client_id": derive_id("uai-client", rid),
                    "principal_id": derive_id("uai-principal", rid),
                    "object_id": derive_id("uai-principal", rid),
                    "id": self.uai_resource_id(name)}.get(fld)
        if name in self.vaults:
            return {"uri": f"https://{name}.vault.azure.net/"}.get(fld)
        if name in self.sql_servers:
            return {"fqdn": f"{name}.database.windows.net"}.get(fld)
        return None

    def substitute(self, value: str) -> str:
        out, last = [], 0
        for m in iter_references(value):
            resolved = self.field_value(m.group(1), m.group(2).split("[")[0], m.group(3))
            if resolved is None:
                continue
            out += [value[last:m.start()], resolved]
            last = m.end()
        out.append(value[last:])
        return "".join(out)


def check_references(spec: EstateSpec) -> tuple[Loc, str] | None:
    """The first dangling reference, duplicate name or unknown role in an estate, if any."""
    seen: dict[str, Loc] = {}

    def dup(kind: str, name: str, loc: Loc) -> tuple[Loc, str] | None:
        key = f"{kind}:{name.lower()}"
        if key in seen:
            return loc, f"duplicate {kind} name {name!r}"
        seen[key] = loc
        return None

    for i, p in enumerate(spec.principals):
        if (problem := dup("principal", p.name, ("principals", i, "name"))):
            return problem
        for j, role in enumerate(p.graph_app_roles):
            if role not in GRAPH_APP_ROLES:
                return ("principals", i, "graph_app_roles", j), f"unknown Graph app role {role!r}"
        exposed: set[str] = set()
        for j, value in enumerate(p.app_roles):
            if not _APP_ROLE_VALUE.fullmatch(value):
                return ("principals", i, "app_roles", j), (
                    f"app role value {value!r} is not 1-120 letters, digits and . - _ :")
            if value in exposed:
                return ("principals", i, "app_roles", j), f"duplicate app role {value!r}"
            exposed.add(value)
    names = EstateNames(spec)
    for i, p in enumerate(spec.principals):
        for j, owner in enumerate(p.owners):
            if owner not in names.principals:
                return ("principals", i, "owners", j), f"unknown principal {owner!r}"
        for j, grant in enumerate(p.api_app_roles):
            if (msg := names.app_role_problem(grant)):
                return ("principals", i, "api_app_roles", j), msg
    if spec.operator not in names.principals:
        return ("operator",), f"operator {spec.operator!r} is not one of the principals"
    for si, sub in enumerate(spec.subscriptions):
        if (problem := dup("subscription", sub.name, ("subscriptions", si, "name"))):
            return problem
        for ri, rg in enumerate(sub.resource_groups):
            base: Loc = ("subscriptions", si, "resource_groups", ri)
            if (problem := dup(f"resource group in {sub.name}", rg.name, (*base, "name"))):
                return problem
            for ui, uai in enumerate(rg.user_assigned_identities):
                if (problem := dup("user-assigned identity", uai,
                                   (*base, "user_assigned_identities", ui))):
                    return problem
            for ai, account in enumerate(rg.automation_accounts):
                where: Loc = (*base, "automation_accounts", ai)
                if (problem := dup("automation account", account.name, (*where, "name"))):
                    return problem
                for j, role in enumerate(account.graph_app_roles):
                    if role not in GRAPH_APP_ROLES:
                        return (*where, "graph_app_roles", j), f"unknown Graph app role {role!r}"
            for wi, law in enumerate(rg.log_analytics_workspaces):
                wloc: Loc = (*base, "log_analytics_workspaces", wi)
                if (problem := dup(f"Log Analytics workspace in {sub.name}/{rg.name}", law.name,
                                   (*wloc, "name"))):
                    return problem
                customer_id = names.workspace_customer_id(sub.name, rg.name, law.name)
                if (problem := dup("Log Analytics workspace id", customer_id,
                                   (*wloc, "id" if law.id is not None else "name"))):
                    return (problem[0], f"workspace id {customer_id} is another workspace's")
            for ki, kv in enumerate(rg.key_vaults):
                if (problem := dup("key vault", kv.name, (*base, "key_vaults", ki, "name"))):
                    return problem
                for name, value in kv.secrets.items():
                    for m in iter_references(value):
                        if names.field_value(m.group(1), m.group(2).split("[")[0],
                                             m.group(3)) is None:
                            return (*base, "key_vaults", ki, "secrets", name), (
                                f"unknown reference @{m.group(1)}.{m.group(2)}")
                for pi, pol in enumerate(kv.access_policies):
                    if (msg := names.principal_ref_problem(pol.principal)):
                        return (*base, "key_vaults", ki, "access_policies", pi, "principal"), msg
            for qi, server in enumerate(rg.sql_servers):
                if (problem := dup("SQL server", server.name,
                                   (*base, "sql_servers", qi, "name"))):
                    return problem
                for di, db in enumerate(server.databases):
                    for ui, user in enumerate(db.users):
                        if (msg := names.principal_ref_problem(user.principal)):
                            return (*base, "sql_servers", qi, "databases", di, "users", ui,
                                    "principal"), msg
            for ti, site in enumerate(rg.sites):
                sbase: Loc = (*base, "sites", ti)
                if (problem := dup("site", site.name, (*sbase, "name"))):
                    return problem
                targets: list[tuple[Loc, SiteSpec | SlotSpec]] = [(sbase, site)] + [
                    ((*sbase, "slots", k), slot) for k, slot in enumerate(site.slots)
                ]
                slot_names: set[str] = set()
                for k, slot in enumerate(site.slots):
                    if slot.name.lower() in slot_names:
                        return (*sbase, "slots", k, "name"), f"duplicate slot name {slot.name!r}"
                    slot_names.add(slot.name.lower())
                for loc, target in targets:
                    if (msg := _identity_problem(target.identity, names)):
                        return (*loc, "identity"), msg
                    kvri = target.key_vault_reference_identity
                    if kvri is not None and kvri not in names.uais:
                        return (*loc, "key_vault_reference_identity"), (
                            f"unknown user-assigned identity {kvri!r}")
                    values = [((*loc, "app_settings", k), v)
                              for k, v in target.app_settings.items()]
                    values += [((*loc, "connection_strings", k, "value"), c.value)
                               for k, c in target.connection_strings.items()]
                    for vloc, value in values:
                        for m in iter_references(value):
                            fld = m.group(2).split("[")[0]
                            if names.field_value(m.group(1), fld, m.group(3)) is None:
                                return vloc, f"unknown reference @{m.group(1)}.{m.group(2)}"
                    for ni, need in enumerate(target.needs):
                        if (msg := _need_problem(need, names, target)):
                            return (*loc, "needs", ni), msg
    custom: set[str] = set()
    for di, rd in enumerate(spec.role_definitions):
        loc = ("role_definitions", di)
        if rd.name.lower() in ROLES_BY_NAME or rd.name.lower() in custom:
            return (*loc, "name"), (
                f"a role named {rd.name!r} exists already (role names are unique in a tenant)")
        custom |= {rd.name.lower(), str(rd.id or custom_role_id(rd.name))}
        for si, scope in enumerate(rd.assignable_scopes):
            if scope != "/" and (msg := _scope_problem(names.scope(scope), names)):
                return (*loc, "assignable_scopes", si), msg
    for ai, ra in enumerate(spec.role_assignments):
        loc = ("role_assignments", ai)
        if (msg := names.principal_ref_problem(ra.principal)):
            return (*loc, "principal"), msg
        known = (ROLES_BY_NAME, ROLES_BY_ID, custom)
        if not any(ra.role.lower() in k for k in known):
            return (*loc, "role"), f"unknown role {ra.role!r}"
        if (msg := _scope_problem(names.scope(ra.scope), names)):
            return (*loc, "scope"), msg
        if ra.condition is not None:
            try:
                parse_condition(ra.condition)
            except ConditionError as exc:
                return (*loc, "condition"), str(exc)
    for ci, caller in enumerate(spec.external_callers):
        loc = ("external_callers", ci)
        if (problem := dup("external caller", caller.name, (*loc, "name"))):
            return problem
        if caller.principal not in names.principals:
            return (*loc, "principal"), f"unknown principal {caller.principal!r}"
        held = len(names.principals[caller.principal].secrets)
        if caller.secret >= held:
            return (*loc, "secret"), (
                f"principal {caller.principal!r} has {held} secret(s): no secret {caller.secret}")
        if caller.resource not in CALLER_RESOURCES and caller.resource not in names.principals:
            return (*loc, "resource"), (
                f"resource {caller.resource!r} is not one of {', '.join(CALLER_RESOURCES)} "
                "or a principal of the estate")
    return None


def _identity_problem(identity: IdentitySpec, names: EstateNames) -> str | None:
    if isinstance(identity, list):
        for name in identity:
            if name != "system" and name not in names.uais:
                return f"unknown user-assigned identity {name!r}"
    return None


def _need_problem(need: NeedSpec, names: EstateNames, target: SiteSpec | SlotSpec) -> str | None:
    if need.key_vault_secret is not None:
        vault, secret = need.key_vault_secret.split("/")
        if vault not in names.vaults:
            return f"unknown key vault {vault!r}"
        if secret not in names.vault_secrets[vault]:
            return f"key vault {vault!r} has no secret {secret!r}"
    if need.role_action is not None and need.scope is not None:
        return _scope_problem(names.scope(need.scope), names)
    if need.graph_app_role is not None and need.graph_app_role not in GRAPH_APP_ROLES:
        return f"unknown Graph app role {need.graph_app_role!r}"
    if need.app_role is not None:
        return names.app_role_problem(need.app_role)
    if need.sql is not None and need.sql not in target.connection_strings \
            and need.sql not in target.app_settings:
        return f"no connection string or app setting named {need.sql!r}"
    if need.setting is not None and need.setting not in target.app_settings:
        return f"no app setting named {need.setting!r}"
    return None


def _scope_problem(scope: str, names: EstateNames) -> str | None:
    m = SUB_IN_SCOPE.match(scope)
    if not scope.startswith("/subscriptions/") or m is None:
        return f"scope {scope!r} does not start with /subscriptions/<name or id>"
    if m.group(1) not in names.subscriptions.values():
        return f"scope {scope!r} names an unknown subscription"
    return None


class gc_paused:
    """Pause the cyclic garbage collector while building millions of acyclic objects: its full
    passes dominated loading a 10,000-app estate (7.4 s of a 9 s build)."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.was_enabled:
            gc.enable()
