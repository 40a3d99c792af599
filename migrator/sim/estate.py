"""The estate file: a YAML description of a tenant that the simulator serves.

The format is a contract (../shared/DESIGN.md): extend it, keep it loading. This module only
parses and validates; `migrator.sim.state` turns a valid estate into a live tenant. Every error
names the file, the place (a YAML path and line) and the problem, in one line, so an operator
can fix a hand-written estate without reading a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class EstateError(Exception):
    """An estate file that cannot be loaded; the message is one line, fit for an operator."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantSpec(_Spec):
    id: UUID
    domain: str = "contoso.onmicrosoft.com"


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
    sql: str | None = None  # name of the connection string (or app setting) the app opens
    setting: str | None = None  # an app setting that must resolve (e.g. a Key Vault reference)

    @model_validator(mode="after")
    def _exactly_one(self) -> NeedSpec:
        kinds = [
            k
            for k in ("key_vault_secret", "role_action", "graph_app_role", "sql", "setting")
            if getattr(self, k) is not None
        ]
        if len(kinds) != 1:
            raise ValueError(
                "a need names exactly one of key_vault_secret, role_action, graph_app_role, "
                f"sql, setting (got {', '.join(kinds) or 'none'})"
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
    health_path: str = "/healthz"
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
    def _health(cls, v: str) -> str:
        if not v.startswith("/"):
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


class ResourceGroupSpec(_Spec):
    name: str
    location: str = "westeurope"
    user_assigned_identities: list[str] = []
    key_vaults: list[KeyVaultSpec] = []
    sites: list[SiteSpec] = []
    sql_servers: list[SqlServerSpec] = []
    automation_accounts: list[AutomationAccountSpec] = []


class SubscriptionSpec(_Spec):
    name: str
    id: UUID | None = None
    resource_groups: list[ResourceGroupSpec] = []


class RoleAssignmentSpec(_Spec):
    principal: str
    role: str
    scope: str


class EstateSpec(_Spec):
    tenant: TenantSpec
    operator: str
    principals: list[PrincipalSpec] = []
    subscriptions: list[SubscriptionSpec] = []
    role_assignments: list[RoleAssignmentSpec] = []


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
    from migrator.sim.state import gc_paused

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
    from migrator.sim.state import check_references  # local: state imports this module

    problem = check_references(spec)
    if problem is not None:
        loc, msg = problem
        raise EstateError(f"{source}: {_place(loc, lines)}: {msg}")
    return spec
