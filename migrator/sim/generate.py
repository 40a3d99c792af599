"""Large, realistic estates for benchmarks and load tests (`migrator sim generate`).

Hand-written estates stop at a dozen sites; the scanner, the planner and the simulator must also
hold up against a tenant of thousands of apps spread over many subscriptions, where a few
principals are shared across subscriptions, some secrets hide in Microsoft.Identity.Web or
Functions connection settings or SQL connection strings, and a few principals are expired or
disabled. This module writes such an estate from a handful of numbers.

Two promises make the output usable as a benchmark input:

* Deterministic: the same arguments give byte-identical YAML. Every random choice comes from one
  `random.Random(seed)`, ids are left out (the simulator derives them with uuid5), and the YAML is
  rendered by one fixed dumper.
* No secret text: every client secret is written `{}` so the simulator mints it at load, and the
  few Key Vault secret values are obvious placeholders. The file can be committed, attached to a
  bug or logged without leaking anything that looks like a credential.

Each secret-holding site's `needs` are exactly rights its principal holds in the site's resource
group (a data-plane role, and optionally a Key Vault access policy, a Graph app role and a SQL
database user), so with its secret every site is healthy, except those whose principal is
(deliberately) disabled or whose only secret expired. Where the secret sits decides `code`: the
azure-identity trio is read by DefaultAzureCredential (`default-credential`), while
Microsoft.Identity.Web's `AzureAd__*` settings and a hard-wired ClientSecretCredential are
`client-secret` (moving them off the secret needs a code change).
"""

from __future__ import annotations

import functools
import random
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from migrator.sim.estate import EstateSpec, check_references, gc_paused

OPERATOR = "migrator-operator"
OPERATOR_GRAPH_ROLES = ("Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All")
EXPIRED = date(2020, 1, 1)

# Shares of the estate that are not arguments: small, fixed, so that estates of different sizes
# look alike. Principal shares count the non-operator principals.
SITES_PER_RESOURCE_GROUP = (15, 25)  # ~20
EXPIRED_SHARE = 0.03  # the principal's only secret expired: its sites are broken already
DISABLED_SHARE = 0.02  # the principal is disabled: its sites are broken already
ROTATION_LEFTOVER_SHARE = 0.10  # a current secret plus an expired one nobody removed
KEY_VAULT_SHARE = 0.40  # principal has an access policy on its resource group's vault
GRAPH_SHARE = 0.20  # principal holds a Graph application permission
SQL_SHARE = 0.15  # secret-holding site also opens Azure SQL with the principal's secret
FUNCTIONS_CONNECTION_SHARE = 0.50  # secret-holding function app's trigger uses the secret too
MANAGED_SHARE = 0.25  # plain site already runs on a system-assigned identity
MANAGED_WITH_ROLE_SHARE = 0.50  # ... of which holds a role and needs it

_DOMAINS = (
    "orders", "billing", "payments", "catalog", "inventory", "shipping", "search", "identity",
    "reports", "crm", "hr", "pricing", "loyalty", "notify", "audit", "media",
)
_LOCATIONS = ("westeurope", "northeurope", "uksouth", "eastus2")
_KINDS = ("app", "app,linux", "functionapp", "functionapp,linux")
_KIND_WEIGHTS = (45, 25, 15, 15)
_APP_ROLES = ("api", "web", "portal", "svc", "gateway")
_FUNCTION_ROLES = ("fn", "jobs", "worker", "ingest")
_VAULT_SECRETS = ("db-password", "api-key", "signing-key", "partner-token")
_SECONDARY_GRAPH_ROLES = ("Group.Read.All", "Mail.Send", "Sites.Read.All")
_FUNCTIONS_CONNECTIONS = ("ServiceBusConnection", "MyConn", "EventsConnection")
_WORKER_RUNTIMES = ("dotnet-isolated", "python", "node", "java")

_BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
_QUEUE_READ = "Microsoft.Storage/storageAccounts/queueServices/queues/messages/read"
_BUS_RECEIVE = "Microsoft.ServiceBus/namespaces/messages/receive/action"


@dataclass(frozen=True)
class _Right:
    """A data-plane role a principal holds at its resource group, and the action it allows."""

    role: str
    action: str


_RIGHTS = (
    _Right("Storage Blob Data Reader", _BLOB_READ),
    _Right("Storage Queue Data Reader", _QUEUE_READ),
    _Right("Azure Service Bus Data Receiver", _BUS_RECEIVE),
)
_RIGHT_WEIGHTS = (60, 20, 20)


@dataclass
class _Group:
    """A resource group: ~20 sites and one key vault."""

    subscription: str
    name: str
    location: str
    domain: str
    vault: str
    vault_secrets: tuple[str, ...]
    sites: list[_Site] = field(default_factory=list)
    access_policies: list[str] = field(default_factory=list)  # principal names, in order
    sql_users: list[str] = field(default_factory=list)

    @property
    def scope(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.name}"

    @property
    def sql_server(self) -> str:
        return f"sql-{self.vault.removeprefix('kv-')}"


@dataclass
class _Site:
    index: int
    name: str
    subscription: int
    group: _Group
    kind: str
    principal: _Principal | None = None


@dataclass
class _Principal:
    name: str
    right: _Right
    key_vault: bool
    graph_roles: list[str]
    secrets: list[dict[str, Any]]
    enabled: bool
    sites: list[_Site] = field(default_factory=list)


def generate_estate(*, subscriptions: int, apps: int, secret_share: float = 0.6,
                    shared_principals: int = 0, slots: float = 0.1, seed: int = 0) -> EstateSpec:
    """A validated estate of `apps` sites over `subscriptions` subscriptions.

    `secret_share` of the sites hold a service principal's secret; `shared_principals` of those
    principals are each used by several sites in different subscriptions (the case that needs a
    user-assigned identity); `slots` of the sites have a `staging` slot. Raises ValueError for
    arguments no estate can meet (e.g. more shared principals than pairs of secret holders).
    """
    with gc_paused():
        document = _document(subscriptions=subscriptions, apps=apps, secret_share=secret_share,
                             shared_principals=shared_principals, slots=slots, seed=seed)
        spec = EstateSpec.model_validate(document)
        problem = check_references(spec)
    if problem is not None:  # a bug here, not bad input: say where
        raise AssertionError(f"generated estate is invalid at {problem[0]}: {problem[1]}")
    return spec


def render_estate_yaml(*, subscriptions: int, apps: int, secret_share: float = 0.6,
                       shared_principals: int = 0, slots: float = 0.1, seed: int = 0) -> str:
    """The YAML text of `generate_estate(...)`: what `migrator sim generate` prints."""
    return dump_estate(generate_estate(
        subscriptions=subscriptions, apps=apps, secret_share=secret_share,
        shared_principals=shared_principals, slots=slots, seed=seed))


def dump_estate(estate: EstateSpec | Mapping[str, Any]) -> str:
    """Estate YAML in one fixed layout, so that equal estates give equal bytes.

    Values equal to the format's defaults are left out, as a person would write the file.
    """
    with gc_paused():
        if not isinstance(estate, EstateSpec):
            estate = EstateSpec.model_validate(estate)
        document = estate.model_dump(mode="python", exclude_defaults=True)
        return _HEADER + _yaml_text(document)


_HEADER = ("# Generated by migrator.sim.generate. No secret text: the simulator makes every "
           "secret.\n")


def write_estate(estate: EstateSpec | Mapping[str, Any], path: Path) -> int:
    """Write an estate file (UTF-8, LF); returns its size in bytes."""
    data = dump_estate(estate).encode("utf-8")
    path.write_bytes(data)
    return len(data)


# --- building the document ---------------------------------------------------------------------


def _document(*, subscriptions: int, apps: int, secret_share: float, shared_principals: int,
              slots: float, seed: int) -> dict[str, Any]:
    if subscriptions < 1:
        raise ValueError("an estate has at least one subscription")
    if apps < 0:
        raise ValueError("apps cannot be negative")
    for label, share in (("secret_share", secret_share), ("slots", slots)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{label} is a fraction between 0 and 1 (got {share})")
    holders_wanted = round(secret_share * apps)
    if shared_principals < 0 or 2 * shared_principals > holders_wanted:
        raise ValueError(
            f"{shared_principals} shared principals need at least {2 * shared_principals} "
            f"secret-holding sites; this estate has {holders_wanted}")

    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    tenant_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    sub_names = [f"sub-{i:03d}" for i in range(subscriptions)]
    width = max(5, len(str(apps)))
    groups, sites = _layout(rng, sub_names, apps, width)

    holder_indexes = sorted(rng.sample(range(apps), holders_wanted))
    principals = _principals(rng, sites, holder_indexes, shared_principals, subscriptions)
    slot_indexes = set(rng.sample(range(apps), round(slots * apps)))

    role_assignments: list[dict[str, Any]] = [
        {"principal": OPERATOR, "role": "Owner", "scope": f"/subscriptions/{name}"}
        for name in sub_names
    ]
    for p in principals:
        for group in _distinct_groups(p.sites):
            role_assignments.append(
                {"principal": p.name, "role": p.right.role, "scope": group.scope})
            if p.key_vault:
                group.access_policies.append(p.name)

    site_docs = {s.index: _site(rng, s, s.index in slot_indexes, role_assignments)
                 for s in sites}

    return {
        "tenant": {"id": tenant_id},
        "operator": OPERATOR,
        "principals": [
            {"name": OPERATOR, "secrets": [{}], "graph_app_roles": list(OPERATOR_GRAPH_ROLES)},
            *(_principal_doc(p) for p in principals),
        ],
        "subscriptions": [
            {"name": name, "resource_groups": [
                _group_doc(g, site_docs) for g in groups if g.subscription == name]}
            for name in sub_names
        ],
        "role_assignments": role_assignments,
    }


def _layout(rng: random.Random, sub_names: list[str], apps: int,
            width: int) -> tuple[list[_Group], list[_Site]]:
    """Sites spread evenly over the subscriptions, in resource groups of about twenty."""
    groups: list[_Group] = []
    sites: list[_Site] = []
    per_sub, extra = divmod(apps, len(sub_names))
    low, high = SITES_PER_RESOURCE_GROUP
    for si, sub in enumerate(sub_names):
        remaining = per_sub + (1 if si < extra else 0)
        location = rng.choice(_LOCATIONS)
        gi = 0
        while remaining > 0 or gi == 0:
            if remaining <= high:
                size = remaining
            elif remaining < high + low:  # two groups of about equal size, no stub at the end
                size = remaining // 2
            else:
                size = rng.randint(low, high)
            domain = rng.choice(_DOMAINS)
            # Vault names are global in Azure (3-24 characters): unique by position.
            group = _Group(
                subscription=sub, name=f"rg-{domain}-{gi:03d}", location=location,
                domain=domain, vault=f"kv-{si:03d}-{gi:03d}",
                vault_secrets=tuple(rng.sample(_VAULT_SECRETS, rng.randint(1, 3))),
            )
            groups.append(group)
            for _ in range(size):
                kind = rng.choices(_KINDS, weights=_KIND_WEIGHTS)[0]
                role = rng.choice(_FUNCTION_ROLES if kind.startswith("function") else _APP_ROLES)
                site = _Site(len(sites), f"{domain}-{role}-{len(sites):0{width}d}", si, group,
                             kind)
                group.sites.append(site)
                sites.append(site)
            remaining -= size
            gi += 1
    return groups, sites


def _principals(rng: random.Random, sites: list[_Site], holder_indexes: list[int],
                shared: int, subscriptions: int) -> list[_Principal]:
    """Shared principals first (each on 2-6 sites in different subscriptions), then one each."""
    by_sub: list[list[_Site]] = [[] for _ in range(subscriptions)]
    for i in holder_indexes:
        by_sub[sites[i].subscription].append(sites[i])
    for bucket in by_sub:
        rng.shuffle(bucket)
    # Round robin over the subscriptions: neighbours in this list are in different ones.
    interleaved = [b[k] for k in range(max(map(len, by_sub), default=0)) for b in by_sub
                   if k < len(b)]

    principals: list[_Principal] = []
    taken = 0
    for k in range(shared):
        size = min(rng.randint(2, 6), len(interleaved) - taken - 2 * (shared - k - 1))
        members = interleaved[taken:taken + size]
        taken += size
        principals.append(_new_principal(rng, f"shared-{members[0].group.domain}-{k:03d}-sp",
                                         members))
    shared_sites = {s.index for s in interleaved[:taken]}
    for i in holder_indexes:
        if i not in shared_sites:
            principals.append(_new_principal(rng, f"{sites[i].name}-sp", [sites[i]]))
    return principals


def _new_principal(rng: random.Random, name: str, members: list[_Site]) -> _Principal:
    right = rng.choices(_RIGHTS, weights=_RIGHT_WEIGHTS)[0]
    key_vault = rng.random() < KEY_VAULT_SHARE
    graph_roles: list[str] = []
    if rng.random() < GRAPH_SHARE:
        graph_roles.append("User.Read.All" if rng.random() < 0.8
                           else rng.choice(_SECONDARY_GRAPH_ROLES))
    fate = rng.random()
    secrets: list[dict[str, Any]] = [{}]
    if fate < EXPIRED_SHARE:
        secrets = [{"expires": EXPIRED}]
    elif fate < EXPIRED_SHARE + ROTATION_LEFTOVER_SHARE:
        secrets = [{}, {"expires": EXPIRED}]
    enabled = rng.random() >= DISABLED_SHARE
    principal = _Principal(name, right, key_vault, graph_roles, secrets, enabled, list(members))
    for site in members:
        site.principal = principal
    return principal


def _distinct_groups(members: list[_Site]) -> list[_Group]:
    seen: dict[int, _Group] = {}
    for s in members:
        seen.setdefault(id(s.group), s.group)
    return list(seen.values())


def _principal_doc(p: _Principal) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": p.name, "secrets": [dict(s) for s in p.secrets]}
    if p.graph_roles:
        doc["graph_app_roles"] = list(p.graph_roles)
    if not p.enabled:
        doc["enabled"] = False
    return doc


def _group_doc(group: _Group, site_docs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": group.name,
        "location": group.location,
        "key_vaults": [{
            "name": group.vault,
            "access_policies": [{"principal": p, "secrets": ["get", "list"]}
                                for p in group.access_policies],
            "secrets": {name: f"placeholder-{name}-not-a-secret"
                        for name in group.vault_secrets},
        }],
        "sites": [site_docs[s.index] for s in group.sites],
    }
    if group.sql_users:
        doc["sql_servers"] = [{"name": group.sql_server, "databases": [{
            "name": "appdb",
            "users": [{"principal": p, "roles": ["db_datareader", "db_datawriter"]}
                      for p in group.sql_users],
        }]}]
    return doc


# --- one site --------------------------------------------------------------------------------


def _site(rng: random.Random, site: _Site, with_slot: bool,
          role_assignments: list[dict[str, Any]]) -> dict[str, Any]:
    function = site.kind.startswith("functionapp")
    doc: dict[str, Any] = {"name": site.name, "kind": site.kind}
    settings = _harmless_settings(rng, site)
    connection_strings: dict[str, dict[str, str]] = {}
    needs: list[dict[str, str]] = []
    sticky: list[str] = []
    p = site.principal
    if p is not None:
        style = rng.choices(("environment", "identity-web", "hard-wired"),
                            weights=(65, 0 if function else 20, 15))[0]
        secret_setting = _credential_settings(style, p.name, settings)
        if style != "environment":
            doc["code"] = "client-secret"
        if function and rng.random() < FUNCTIONS_CONNECTION_SHARE:
            prefix = rng.choice(_FUNCTIONS_CONNECTIONS)
            settings[f"{prefix}__fullyQualifiedNamespace"] = (
                f"sb-{site.group.domain}-{site.subscription:03d}.servicebus.windows.net")
            settings[f"{prefix}__tenantId"] = "@tenant.id"
            settings[f"{prefix}__clientId"] = f"@{p.name}.app_id"
            settings[f"{prefix}__clientSecret"] = f"@{p.name}.secrets[0]"
        if rng.random() < SQL_SHARE:
            connection_strings["Db"] = {"type": "SQLAzure", "value": (
                f"Server=tcp:@{site.group.sql_server}.fqdn,1433;Database=appdb;"
                f"Authentication=Active Directory Service Principal;"
                f"User Id=@{p.name}.app_id;Password=@{p.name}.secrets[0]")}
            if p.name not in site.group.sql_users:
                site.group.sql_users.append(p.name)
        needs.append({"role_action": p.right.action, "scope": site.group.scope})
        if p.key_vault:
            secret = rng.choice(site.group.vault_secrets)
            needs.append({"key_vault_secret": f"{site.group.vault}/{secret}"})
        needs += [{"graph_app_role": role} for role in p.graph_roles]
        if connection_strings:
            needs.append({"sql": "Db"})
        if with_slot and rng.random() < 0.5:
            sticky.append(secret_setting)
    elif rng.random() < MANAGED_SHARE:
        doc["identity"] = "system"
        if rng.random() < MANAGED_WITH_ROLE_SHARE:
            role_assignments.append({"principal": site.name, "role": "Storage Blob Data Reader",
                                     "scope": site.group.scope})
            needs.append({"role_action": _BLOB_READ, "scope": site.group.scope})
    if function and rng.random() < 0.5:
        doc["health_path"] = "/api/health"
    doc["app_settings"] = settings
    if with_slot and "APPINSIGHTS_INSTRUMENTATIONKEY" in settings and rng.random() < 0.5:
        sticky.append("APPINSIGHTS_INSTRUMENTATIONKEY")
    if sticky:
        doc["slot_settings"] = sticky
    if connection_strings:
        doc["connection_strings"] = connection_strings
    if needs:
        doc["needs"] = needs
    if with_slot:
        # The staging slot runs the same code with its own copy of the settings: the same
        # principal's secret, its own telemetry key. It has no identity of its own.
        slot_settings = dict(settings)
        if "APPINSIGHTS_INSTRUMENTATIONKEY" in slot_settings:
            slot_settings["APPINSIGHTS_INSTRUMENTATIONKEY"] = _guid(rng)
        slot: dict[str, Any] = {"name": "staging", "app_settings": slot_settings}
        if connection_strings:
            slot["connection_strings"] = {k: dict(v) for k, v in connection_strings.items()}
        if p is not None:
            slot["needs"] = [dict(n) for n in needs]
        doc["slots"] = [slot]
    return doc


def _credential_settings(style: str, principal: str, settings: dict[str, str]) -> str:
    """Put the principal's credential into `settings`; returns the name of the secret setting."""
    if style == "identity-web":  # Microsoft.Identity.Web reads these itself: a code change
        settings["AzureAd__Instance"] = "https://login.microsoftonline.com/"
        settings["AzureAd__TenantId"] = "@tenant.id"
        settings["AzureAd__ClientId"] = f"@{principal}.app_id"
        settings["AzureAd__ClientSecret"] = f"@{principal}.secrets[0]"
        return "AzureAd__ClientSecret"
    # "environment": DefaultAzureCredential picks the trio up; "hard-wired": the code builds a
    # ClientSecretCredential from the same three settings.
    settings["AZURE_CLIENT_ID"] = f"@{principal}.app_id"
    settings["AZURE_TENANT_ID"] = "@tenant.id"
    settings["AZURE_CLIENT_SECRET"] = f"@{principal}.secrets[0]"
    return "AZURE_CLIENT_SECRET"


def _harmless_settings(rng: random.Random, site: _Site) -> dict[str, str]:
    """Settings every real site has and no scanner should flag."""
    settings: dict[str, str] = {}
    if rng.random() < 0.8:
        settings["WEBSITE_RUN_FROM_PACKAGE"] = "1"
    if rng.random() < 0.7:
        settings["APPINSIGHTS_INSTRUMENTATIONKEY"] = _guid(rng)
    if site.kind.startswith("functionapp"):
        settings["FUNCTIONS_EXTENSION_VERSION"] = "~4"
        settings["FUNCTIONS_WORKER_RUNTIME"] = rng.choice(_WORKER_RUNTIMES)
        settings["AzureWebJobsStorage__accountName"] = (
            f"st{site.group.domain}{site.subscription:03d}")
    elif site.kind.endswith("linux"):
        settings["WEBSITES_PORT"] = rng.choice(("8080", "8000", "3000"))
    else:
        settings["ASPNETCORE_ENVIRONMENT"] = rng.choice(("Production", "Production", "Staging"))
    if rng.random() < 0.3:
        settings["FeatureFlags__NewCheckout"] = rng.choice(("true", "false"))
    return settings


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --- YAML layout -----------------------------------------------------------------------------
# A small emitter of our own: PyYAML's pure-Python emitter takes ~15 s for 10,000 sites, and
# libyaml's layout depends on whether the C extension is installed, which would break "same
# arguments, same bytes" between machines. Estates are plain trees of mappings, lists and
# scalars, so block style with short leaf collections on one line is all that is needed.

_LINE_WIDTH = 100
_INDENT = "  "
_PLAIN = re.compile(r"[A-Za-z0-9_$(./~][A-Za-z0-9_$()./~=;:+ -]*")


def _implicitly_typed(text: str) -> bool:
    """True when YAML would read plain `text` as something else than a string (1, true, ~)."""
    table = yaml.resolver.Resolver.yaml_implicit_resolvers
    candidates = table.get(text[:1], []) + table.get(None, [])
    return any(pattern.match(text) for _tag, pattern in candidates)


def _yaml_text(document: Mapping[str, Any]) -> str:
    lines: list[str] = []
    _block(document, "", lines)
    return "\n".join(lines) + "\n"


def _block(value: Mapping[str, Any] | list[Any], indent: str, lines: list[str],
           first_prefix: str | None = None) -> None:
    """Write a collection as block lines; the first starts with `first_prefix` if given."""
    if isinstance(value, Mapping):
        for n, (key, item) in enumerate(value.items()):
            lead = first_prefix if (n == 0 and first_prefix is not None) else indent
            head = f"{lead}{_scalar(key)}:"
            flow = _flow(item, _LINE_WIDTH - len(head) - 1)
            if flow is None:
                lines.append(head)
                _block(item, indent + _INDENT, lines)
            else:
                lines.append(f"{head} {flow}")
        return
    for item in value:
        flow = _flow(item, _LINE_WIDTH - len(indent) - 2)
        if flow is None and isinstance(item, Mapping):
            _block(item, indent + _INDENT, lines, first_prefix=f"{indent}- ")
        elif flow is None:
            lines.append(f"{indent}-")
            _block(item, indent + _INDENT, lines)
        else:
            lines.append(f"{indent}- {flow}")


def _flow(value: Any, budget: int) -> str | None:
    """`value` on one line (flow style), or None for a collection wider than `budget`.

    A scalar is always returned: a long one still goes on its key's line.
    """
    if not isinstance(value, (Mapping, list, tuple)):
        return _scalar(value)
    if not value:
        return "{}" if isinstance(value, Mapping) else "[]"
    pairs = value.items() if isinstance(value, Mapping) else ((None, v) for v in value)
    budget -= 2  # the brackets
    parts: list[str] = []
    for key, item in pairs:
        key_text = "" if key is None else f"{_scalar(key)}: "
        budget -= len(key_text) + (2 if parts else 0)
        text = _flow(item, budget)
        if text is None or len(text) > budget:
            return None
        budget -= len(text)
        parts.append(key_text + text)
    body = ", ".join(parts)
    return "{" + body + "}" if isinstance(value, Mapping) else "[" + body + "]"


@functools.lru_cache(maxsize=65536, typed=True)
def _scalar(value: object) -> str:
    """A scalar that reads back as the same value, plain when that is safe."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, date):
        return value.isoformat()
    text = str(value)  # str, UUID
    if (_PLAIN.fullmatch(text) and not text.endswith((" ", ":")) and ": " not in text
            and not _implicitly_typed(text)):
        return text
    return '"' + "".join(_ESCAPES.get(ch) or _escape(ch) for ch in text) + '"'


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(ch: str) -> str:
    """`ch` inside a double-quoted YAML scalar: itself when printable, else an escape."""
    code = ord(ch)
    printable = (0x20 <= code <= 0x7E or 0xA0 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD
                 or code >= 0x10000) and code not in (0x2028, 0x2029, 0xFEFF)
    if printable:
        return ch
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"
