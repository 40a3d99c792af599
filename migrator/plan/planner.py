"""Inventory in, Plan out: every decision the migration makes, with its reason, before any write.

Pure: no I/O, no clock unless none is given, no randomness. The same inventory and options give
the same plan, so plans can be diffed and golden-tested.

The decisions (each written into the plan where it applies):
- an app whose principal no other (migratable) app uses gets its own system-assigned identity;
  apps linked by a shared principal get one user-assigned identity, created by the plan;
- the identity gets the principals' rights: role assignments scope for scope, Key Vault access
  policies on access-policy vaults, Graph app roles, and SQL database users as an operator-run
  T-SQL step;
- settings are rewritten only where a documented mechanism reads them (azure-identity's
  environment trio, Functions identity-based connections, SQL connection strings); a secret
  the app's own code reads is a code change first, so that app is blocked;
- revoke removes only the matched credential, held while another app still needs it; the
  principal's rights are removed only when nothing is known to use it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar

from migrator.detect.findings import FindingKind, SecretFinding, SettingRef
from migrator.inventory import (
    UNREAD_PRINCIPAL,
    AppInventory,
    Inventory,
    PrincipalInventory,
    RoleGrant,
    Usage,
)
from migrator.plan.evidence import evidence_plan
from migrator.plan.integrity import seal
from migrator.plan.model import (
    IDENTITY_CLIENT_ID,
    IDENTITY_NAME,
    IDENTITY_PRINCIPAL_ID,
    AppPlan,
    AppStatus,
    AssignUserAssignedIdentity,
    Blocked,
    BlockedCode,
    ConnectionStringEdit,
    Credential,
    Decision,
    EnableSystemIdentity,
    EnsureUserAssignedIdentity,
    Finding,
    Gap,
    GraphAppRole,
    IdentityChoice,
    IdentityPlan,
    Plan,
    PrincipalPlan,
    RemoveGraphAppRole,
    RemovePasswordCredential,
    RemoveRoleAssignment,
    RemoveVaultAccessPolicy,
    RoleAssignment,
    SettingEdit,
    SqlUser,
    Stage,
    StagePlan,
    Step,
    StepParams,
    Summary,
    Undo,
    UpdateAppSettings,
    UpdateConnectionStrings,
    UpdateSlotConfig,
    VaultAccessPolicy,
    VaultSecret,
    VerifyHealth,
    VerifyRights,
    verify_health_title,
)

# Rules whose setting a documented mechanism reads, so a settings swap replaces the secret.
AZURE_IDENTITY_ENV = "azure-identity-env"
FUNCTIONS_CONNECTION = "functions-connection-secret"
SQL_SERVICE_PRINCIPAL = "sql-service-principal"
SWAPPABLE_RULES = frozenset({AZURE_IDENTITY_ENV, FUNCTIONS_CONNECTION, SQL_SERVICE_PRINCIPAL})

_T = TypeVar("_T")

_WHY_NOT_SWAPPABLE = {
    "arm-env": "ARM_CLIENT_SECRET is read by the app's own tooling (Terraform-style), not by "
               "azure-identity",
    "container-registry-principal": "the image is pulled with registry credentials: switch the "
                                    "site to acrUseManagedIdentityCreds by hand",
    "entra-secret-format": "the value is an Entra secret under a name no SDK reads: the app's "
                           "code uses it directly",
}
_WHY_CODE = ("the app's code reads this secret itself; change it to DefaultAzureCredential "
             "(or ManagedIdentityCredential) first, then plan again")


@dataclass(frozen=True)
class PlanOptions:
    name: str
    tool_version: str
    accept_gaps: tuple[str, ...] = ()  # gap scopes (or parts of them) the operator accepts
    created_at: datetime | None = None
    health_timeout_seconds: int = 300


def build_plan(inventory: Inventory, options: PlanOptions) -> Plan:
    """The whole plan for one inventory."""
    return _Planner(inventory, options).plan()


def _segments(path: str) -> list[str]:
    return [p for p in path.lower().replace("graph:", "graph/").split("/") if p]


def gap_accepted(scope: str, accept: str, inventory: Inventory) -> bool:
    """Whether one `--accept-gap` value covers a gap's scope. `graph` covers Graph's gaps; a
    subscription's name is read as its id; otherwise the value's path segments must appear in
    the scope's whole and in order, so `rg-a` covers `.../resourceGroups/rg-a/...` but not
    `rg-ab`, and a stray letter covers nothing."""
    by_name = {s.name.lower(): s.id for s in inventory.subscriptions}
    want = _segments(by_name.get(accept.strip().lower(), accept))
    have = _segments(scope)
    return bool(want) and any(have[i:i + len(want)] == want
                              for i in range(len(have) - len(want) + 1))


def unmatched_accepts(inventory: Inventory, accepts: Sequence[str]) -> list[str]:
    """The `--accept-gap` values that cover no gap of the scan: a typo there must not read as
    an accepted risk, so the caller refuses them."""
    return [a for a in accepts
            if not any(gap_accepted(g.scope, a, inventory) for g in inventory.gaps)]


# --- helpers --------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "app"


def _edits_key(edit: SettingEdit) -> str:
    return edit.name.lower()


class _Groups:
    """Union-find over apps: apps linked by a principal end up with one identity."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.parent = {k: k for k in keys}

    def find(self, key: str) -> str:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class _AppDraft:
    key: str
    app: AppInventory
    outbound: list[SecretFinding]
    principals: list[str]  # app ids, lower case, sorted
    blocked: list[Blocked]
    status: AppStatus
    credentials: list[Credential]
    decisions: list[Decision]


class _Planner:
    def __init__(self, inventory: Inventory, options: PlanOptions) -> None:
        self.inv = inventory
        self.options = options
        self.principals = {p.app_id.lower(): p for p in inventory.principals}
        self.keys = _app_keys([a for a in inventory.apps if a.findings])
        self._by_key: dict[str, _AppDraft] = {}
        self.vault_access = {v.vault: v for v in inventory.vault_access}
        self.vault_secrets = self._vault_secrets()
        self.gaps = tuple(
            Gap(scope=g.scope, operation=g.operation, message=g.message,
                accepted=self._accepted(g.scope))
            for g in inventory.gaps)

    def _vault_secrets(self) -> dict[tuple[str, str], tuple[VaultSecret, ...]]:
        """(app id, key id) -> the Key Vault secrets that hold that credential's text, from
        every app whose setting is a Key Vault reference matched to it."""
        found: dict[tuple[str, str], dict[tuple[str, str, str | None], list[str]]] = \
            defaultdict(lambda: defaultdict(list))
        for app in self.inv.apps:
            for f in app.findings:
                if f.key_vault is None or not f.outbound or not f.client_id:
                    continue
                principal = self.principals.get(f.client_id.lower())
                usage = _usage_of(principal, app, f) if principal else None
                if usage is None or usage.match.key_id is None:
                    continue
                where = (f.key_vault.vault.lower(), f.key_vault.secret, f.key_vault.version)
                found[(f.client_id.lower(), usage.match.key_id)][where].append(
                    self.keys[app.site.id])
        out = {}
        for cred, secrets in found.items():
            out[cred] = tuple(
                VaultSecret(vault=vault, secret=secret, version=version,
                            vault_uri=(access.vault_uri if (access := self.vault_access.get(
                                vault)) else None),
                            referenced_by=tuple(sorted(set(apps))))
                for (vault, secret, version), apps in sorted(
                    secrets.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")))
        return out

    def _accepted(self, scope: str) -> bool:
        return any(gap_accepted(scope, a, self.inv) for a in self.options.accept_gaps if a)

    def _rights_gaps(self) -> list[Gap]:
        """Gaps that hide some principal's rights: a subscription's role assignments or
        vaults, or Graph. A single site's settings do not."""
        return [g for g in self.gaps if not g.accepted and (
            g.scope.lower().startswith("graph")
            or re.fullmatch(r"/subscriptions/[^/]+", g.scope) is not None)]

    # -- per app classification

    def _draft(self, app: AppInventory) -> _AppDraft:
        key = self.keys[app.site.id]
        outbound = [f for f in app.findings if f.outbound]
        inbound = [f for f in app.findings if f.kind is FindingKind.INBOUND]
        blocked: list[Blocked] = []
        decisions: list[Decision] = []
        credentials: dict[tuple[str, str], Credential] = {}
        principals = sorted({f.client_id.lower() for f in outbound if f.client_id})
        if not outbound:
            if inbound:
                blocked += [Blocked(code=BlockedCode.INBOUND_CREDENTIAL, message=(
                    f"{f.secret.name} is an inbound sign-in secret ({f.rule}): a managed "
                    "identity does not replace it; use a federated identity credential "
                    "(SignedAssertionFromManagedIdentity) on the app registration instead"))
                    for f in inbound]
                return _AppDraft(key, app, [], [], blocked, AppStatus.BLOCKED, [], decisions)
            return _AppDraft(key, app, [], [], [], AppStatus.ADVISORY, [], [Decision(
                topic="shared keys", choice="reported only",
                reason="the app holds shared keys, no principal's secret: a passwordless "
                       "(identity-based) connection is a candidate, outside this migration")])
        for f in inbound:
            decisions.append(Decision(
                topic=f"inbound {f.secret.name}", choice="left in place",
                reason="an inbound sign-in secret: the managed identity replaces only the "
                       "app's outbound credential"))
        for f in outbound:
            blocked += self._finding_blockers(app, f, credentials)
        if principals and self._rights_gaps():
            scopes = ", ".join(sorted({g.scope for g in self._rights_gaps()}))
            blocked.append(Blocked(code=BlockedCode.RIGHTS_UNKNOWN, message=(
                f"the scan could not read {scopes}: the principal may hold rights there that "
                "the identity would not get; grant the operator read access, or accept the "
                "gap with --accept-gap")))
        status = AppStatus.BLOCKED if blocked else AppStatus.MIGRATABLE
        return _AppDraft(key, app, outbound, principals, _unique(blocked), status,
                         sorted(credentials.values(), key=lambda c: (c.app_id, c.key_id)),
                         decisions)

    def _finding_blockers(self, app: AppInventory, f: SecretFinding,
                          credentials: dict[tuple[str, str], Credential]) -> list[Blocked]:
        out: list[Blocked] = []
        if f.rule not in SWAPPABLE_RULES:
            why = _WHY_NOT_SWAPPABLE.get(f.rule, _WHY_CODE)
            out.append(Blocked(code=BlockedCode.CODE_NEEDS_SECRET,
                               message=f"{f.secret.name}: {why}"))
        if not f.client_id:
            out.append(Blocked(code=BlockedCode.PRINCIPAL_UNKNOWN, message=(
                f"{f.secret.name}: no client id setting pairs with it, so the principal (and "
                "its rights) is unknown")))
            return out
        principal = self.principals.get(f.client_id.lower())
        unread = principal is not None and principal.principal is None and any(
            u.match == UNREAD_PRINCIPAL for u in principal.used_by)
        if unread:
            out.append(Blocked(code=BlockedCode.RIGHTS_UNKNOWN, message=(
                f"{f.secret.name}: client id {f.client_id}: {UNREAD_PRINCIPAL.reason}")))
            return out
        if principal is None or principal.principal is None:
            out.append(Blocked(code=BlockedCode.PRINCIPAL_NOT_FOUND, message=(
                f"{f.secret.name}: client id {f.client_id} has no service principal in this "
                "tenant (deleted, or another tenant's)")))
            return out
        usage = _usage_of(principal, app, f)
        if usage is None or usage.match.status != "matched" or usage.match.key_id is None:
            reason = usage.match.reason if usage else "the scan recorded no use of it"
            status = usage.match.status if usage else "unknown"
            out.append(Blocked(code=BlockedCode.CREDENTIAL_UNMATCHED, message=(
                f"{f.secret.name}: {status}: {reason}")))
            return out
        record = principal.principal
        cred = next(c for c in record.password_credentials if c.key_id == usage.match.key_id)
        if record.application_object_id is None:
            out.append(Blocked(code=BlockedCode.PRINCIPAL_NOT_FOUND, message=(
                f"{f.secret.name}: the application object of {record.display_name} is not "
                "visible, so its credential cannot be removed")))
            return out
        credentials[(record.app_id.lower(), cred.key_id)] = Credential(
            app_id=record.app_id, principal_name=record.display_name,
            application_object_id=record.application_object_id, key_id=cred.key_id,
            hint=cred.hint, display_name=cred.display_name, expires=cred.end,
            vault_secrets=self.vault_secrets.get((record.app_id.lower(), cred.key_id), ()))
        return out

    # -- the plan

    def plan(self) -> Plan:
        apps = sorted((a for a in self.inv.apps if a.findings),
                      key=lambda a: (self.keys[a.site.id].lower(), a.site.id.lower()))
        drafts = [self._draft(a) for a in apps]
        by_key = self._by_key = {d.key: d for d in drafts}
        migratable = [d for d in drafts if d.status is AppStatus.MIGRATABLE]
        groups = _Groups(d.key for d in migratable)
        users: dict[str, list[str]] = defaultdict(list)  # principal -> migratable app keys
        for d in migratable:
            for p in d.principals:
                users[p].append(d.key)
        for keys in users.values():
            for other in keys[1:]:
                groups.union(keys[0], other)
        members: dict[str, list[str]] = defaultdict(list)
        for d in migratable:
            members[groups.find(d.key)].append(d.key)
        identities: dict[str, IdentityPlan] = {}
        app_identity: dict[str, IdentityPlan | None] = {}
        taken: set[str] = set()
        for root in sorted(members):
            keys = sorted(members[root])
            if len(keys) == 1:
                app_identity[keys[0]] = None
                continue
            identity = self._identity_for([by_key[k] for k in keys], taken)
            identities[identity.key] = identity
            for k in keys:
                app_identity[k] = identity
        app_plans = [self._app_plan(d, by_key, app_identity, members[groups.find(d.key)]
                                    if d.status is AppStatus.MIGRATABLE else [])
                     for d in drafts]
        principal_plans = self._principal_plans(drafts)
        summary = _summary(app_plans, principal_plans, identities)
        created = self.options.created_at or datetime.now(timezone.utc)
        plan = Plan(
            name=self.options.name,
            created_at=created.isoformat(timespec="seconds"),
            tool_version=self.options.tool_version,
            tenant_id=self.inv.tenant_id,
            scan_complete=self.inv.complete,
            gaps=self.gaps,
            settings_salt=self.inv.settings_salt,
            summary=summary,
            identities=tuple(identities[k] for k in sorted(identities)),
            principals=principal_plans,
            apps=tuple(app_plans),
            sign_ins=evidence_plan(self.inv, app_plans),
        )
        return seal(plan)

    def _identity_for(self, drafts: list[_AppDraft], taken: set[str]) -> IdentityPlan:
        principal_names = sorted({self._principal_name(p) for d in drafts for p in d.principals})
        base = f"id-{_slug(principal_names[0])}-migrated"
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        home = drafts[0].app.site
        resource_id = (f"/subscriptions/{home.subscription_id}/resourceGroups/"
                       f"{home.resource_group}/providers/Microsoft.ManagedIdentity/"
                       f"userAssignedIdentities/{name}")
        return IdentityPlan(
            key=name, name=name, subscription_id=home.subscription_id,
            resource_group=home.resource_group, location=home.location or "",
            resource_id=resource_id,
            used_by=tuple(d.key for d in drafts),
            principals=tuple(sorted({p for d in drafts for p in d.principals})),
            reason=(f"{len(drafts)} apps share {', '.join(principal_names)}: one user-assigned "
                    "identity gets the rights once, and every app that used the principal uses "
                    f"it; created in {home.resource_group} beside {drafts[0].key}"))

    def _principal_name(self, app_id: str) -> str:
        p = self.principals.get(app_id)
        return p.name if p else app_id

    # -- stages

    def _app_plan(self, d: _AppDraft, by_key: dict[str, _AppDraft],
                  app_identity: dict[str, IdentityPlan | None], group: list[str]) -> AppPlan:
        site = d.app.site
        findings = tuple(_finding(f) for f in d.app.findings)
        common = {
            "name": d.key, "site_id": site.id, "subscription_id": site.subscription_id,
            "resource_group": site.resource_group, "kind": site.kind, "status": d.status,
            "blocked": tuple(d.blocked), "findings": findings,
            "principals": tuple(self.principals[p].app_id if p in self.principals else p
                                for p in d.principals),
            "credentials": tuple(d.credentials),
            "settings_fingerprint": d.app.settings_fingerprint,
        }
        if d.status is not AppStatus.MIGRATABLE:
            return AppPlan(**common, decisions=tuple(d.decisions))
        identity = app_identity.get(d.key)
        others = tuple(k for k in sorted(group) if k != d.key)
        decisions = list(d.decisions)
        if identity is None:
            choice = IdentityChoice(type="system-assigned", reason=(
                "no other migratable app uses its principal: the app's own system-assigned "
                "identity, which lives and dies with the app"))
            unmigrated = sorted({self.keys.get(u.site_id, u.app) for p in d.principals
                                 if p in self.principals for u in self.principals[p].used_by
                                 if u.site_id != site.id})
            if unmigrated:
                decisions.append(Decision(
                    topic="identity", choice="system-assigned although the principal is shared",
                    reason=f"{', '.join(unmigrated)} also use(s) the principal but cannot be "
                           "migrated in this plan; a later plan gives them their own identity"))
        else:
            choice = IdentityChoice(type="user-assigned", identity=identity.key,
                                    reason=identity.reason)
        stages = (
            self._identity_stage(d, identity, others),
            self._grant_stage(d, identity, others, decisions),
            self._swap_stage(d, identity, decisions),
            self._revoke_stage(d, by_key),
        )
        return AppPlan(**common, identity=choice, decisions=tuple(decisions), stages=stages)

    def _identity_stage(self, d: _AppDraft, identity: IdentityPlan | None,
                        others: tuple[str, ...]) -> StagePlan:
        site = d.app.site
        steps = _Steps(d.key, Stage.IDENTITY)
        current = site.identity.type or "None"
        shown = "no identity" if current == "None" else current
        if identity is None:
            has_system = "systemassigned" in current.replace(" ", "").lower()
            steps.add(
                f"Enable the system-assigned identity of {d.key}" + (
                    " (already enabled: kept)" if has_system else
                    f" (keeping {shown})" if current != "None" else ""),
                EnableSystemIdentity(site_id=site.id, current_type=current),
                Undo(action="restore-identity", description=(
                    f"set the identity back to {shown}" + (
                        "" if has_system else "; this deletes the system-assigned identity "
                        "and every grant made to it"))))
        else:
            steps.add(
                f"Create the user-assigned identity {identity.name} in "
                f"{identity.resource_group} if it does not exist",
                EnsureUserAssignedIdentity(identity=identity.key, resource_id=identity.resource_id,
                                           location=identity.location),
                Undo(action="delete-identity-if-unused", description=(
                    f"delete {identity.name} if this plan created it and no app still has it")),
                shared_with=others)
            steps.add(
                f"Assign {identity.name} to {d.key}" + (
                    f" (keeping {shown})" if current != "None" else ""),
                AssignUserAssignedIdentity(
                    site_id=site.id, identity=identity.key, resource_id=identity.resource_id,
                    current_type=current,
                    key_vault_reference_identity=site.key_vault_reference_identity),
                Undo(action="restore-identity",
                     description=f"set the identity of {d.key} back to {shown}"))
        return steps.stage()

    def _rights(self, d: _AppDraft, identity: IdentityPlan | None
                ) -> list[PrincipalInventory]:
        ids = identity.principals if identity is not None else tuple(d.principals)
        return [self.principals[p] for p in sorted(ids) if p in self.principals]

    def _grant_stage(self, d: _AppDraft, identity: IdentityPlan | None,
                     others: tuple[str, ...], decisions: list[Decision]) -> StagePlan:
        steps = _Steps(d.key, Stage.GRANT)
        who = identity.name if identity else f"the identity of {d.key}"
        roles: dict[tuple[str, str], RoleAssignment] = {}
        policies: dict[str, VaultAccessPolicy] = {}
        app_roles: dict[tuple[str, str], GraphAppRole] = {}
        for p in self._rights(d, identity):
            for r in p.role_assignments:
                key = (r.scope.lower(), r.role_definition_id.lower())
                roles[key] = _merged_role(roles.get(key), r, p.app_id, decisions)
            for v in p.vault_policies:
                if v.rbac_vault:
                    decisions.append(Decision(
                        topic=f"vault {v.vault_name}", choice="access policy not copied",
                        reason=f"{v.vault_name} uses Azure RBAC, which ignores access policies: "
                               f"{p.name}'s access there comes from role assignments, copied "
                               "above"))
                    continue
                known = policies.get(v.vault_id.lower())
                policies[v.vault_id.lower()] = VaultAccessPolicy(
                    vault_id=v.vault_id, vault_name=v.vault_name,
                    secrets=_merge(known.secrets if known else (), v.secrets),
                    keys=_merge(known.keys if known else (), v.keys),
                    certificates=_merge(known.certificates if known else (), v.certificates),
                    copied_from=known.copied_from if known else p.app_id)
            for g in p.graph_roles:
                app_roles.setdefault((g.resource_id.lower(), g.app_role_id.lower()), GraphAppRole(
                    resource_id=g.resource_id, resource_name=g.resource_name,
                    app_role_id=g.app_role_id, app_role_value=g.app_role_value,
                    copied_from=p.app_id))
        for role_key in sorted(roles):
            role = roles[role_key]
            limited = f" under the condition {role.condition}" if role.condition else ""
            steps.add(f"Grant {who} {role.role_name} on {role.scope}{limited}", role,
                      Undo(action="remove-role-assignment",
                           description=f"remove that {role.role_name} assignment"),
                      shared_with=others)
        for vault_key in sorted(policies):
            policy = policies[vault_key]
            steps.add(f"Add an access policy for {who} on vault {policy.vault_name} "
                      f"({_permissions(policy.secrets, policy.keys, policy.certificates)})",
                      policy,
                      Undo(action="remove-vault-access-policy",
                           description=f"remove that access policy from {policy.vault_name}"),
                      shared_with=others)
        for app_role_key in sorted(app_roles):
            app_role = app_roles[app_role_key]
            steps.add(f"Grant {who} the app role {app_role.app_role_value or app_role.app_role_id}"
                      f" of {app_role.resource_name}", app_role,
                      Undo(action="remove-graph-app-role",
                           description="remove that app-role assignment"),
                      shared_with=others)
        for f in sorted(self._sql_findings(d, identity), key=lambda f: f.target or ""):
            server, _, database = (f.target or "").partition("/")
            owner = self._principal_name((f.client_id or "").lower())
            steps.add(
                f"Create a database user for {who} in {database} on {server}, with the roles "
                f"of {owner} (T-SQL, run and confirmed by an operator)",
                SqlUser(server=server, database=database, copied_from_user=owner,
                        script=_sql_script(owner), undo_script=_sql_undo()),
                Undo(action="run-sql", description="drop that database user (T-SQL)"),
                shared_with=others)
        if not (roles or policies or app_roles):
            decisions.append(Decision(
                topic="rights", choice="none to copy",
                reason="the scan found no role assignment, access policy or app role for the "
                       "principal"))
        steps.add(f"Read {who}'s rights back and compare them with this plan",
                  VerifyRights(role_assignments=len(roles), vault_policies=len(policies),
                               graph_app_roles=len(app_roles)),
                  Undo(action="none", description="nothing to undo: a read"))
        return steps.stage()

    def _sql_findings(self, d: _AppDraft, identity: IdentityPlan | None) -> list[SecretFinding]:
        """SQL users to create: each database the identity's apps reach, once."""
        drafts = [d] if identity is None else [self._by_key[k] for k in identity.used_by]
        seen: dict[str, SecretFinding] = {}
        for draft in drafts:
            for f in draft.outbound:
                if f.rule == SQL_SERVICE_PRINCIPAL and f.target:
                    seen.setdefault(f.target.lower(), f)
        return list(seen.values())

    def _swap_stage(self, d: _AppDraft, identity: IdentityPlan | None,
                    decisions: list[Decision]) -> StagePlan:
        site = d.app.site
        steps = _Steps(d.key, Stage.SWAP)
        client_id = IDENTITY_CLIENT_ID if identity is not None else None
        edits: dict[str, SettingEdit] = {}
        strings: list[ConnectionStringEdit] = []
        new_sticky: list[str] = []

        def edit(ref: SettingRef | None, action: str, value: str | None = None) -> None:
            if ref is None:
                return
            change = SettingEdit(name=ref.name, action="set" if action == "set" else "remove",
                                 value=value, sticky=ref.sticky)
            edits.setdefault(_edits_key(change), change)

        for f in d.outbound:
            if f.rule == AZURE_IDENTITY_ENV:
                edit(f.secret, "remove")
                if identity is None:
                    edit(f.client_id_setting, "remove")
                    edit(f.tenant_setting, "remove")
                else:
                    edit(f.client_id_setting, "set", IDENTITY_CLIENT_ID)
            elif f.rule == FUNCTIONS_CONNECTION:
                prefix = f.secret.name[:len(f.secret.name) - len("clientSecret")]
                edit(f.secret, "remove")
                edit(f.tenant_setting, "remove")
                if identity is None:
                    edit(f.client_id_setting, "remove")
                else:
                    edit(f.client_id_setting or SettingRef(f"{prefix}clientId",
                                                           sticky=f.secret.sticky),
                         "set", IDENTITY_CLIENT_ID)
                credential = SettingRef(f"{prefix}credential", sticky=f.secret.sticky)
                edit(credential, "set", "managedidentity")
                if f.secret.sticky:
                    new_sticky.append(credential.name)
                    if identity is not None and f.client_id_setting is None:
                        new_sticky.append(f"{prefix}clientId")
            elif f.rule == SQL_SERVICE_PRINCIPAL:
                strings.append(ConnectionStringEdit(
                    name=f.secret.name, source=f.secret.source, rewrite="sql-managed-identity",
                    client_id=client_id))
        if identity is not None and any(f.rule == AZURE_IDENTITY_ENV for f in d.outbound):
            decisions.append(Decision(
                topic="AZURE_CLIENT_ID", choice="set to the user-assigned identity's client id",
                reason="DefaultAzureCredential passes AZURE_CLIENT_ID to ManagedIdentityCredential "
                       "as a user-assigned client id; the tenant setting is kept"))
        elif any(f.rule == AZURE_IDENTITY_ENV for f in d.outbound):
            decisions.append(Decision(
                topic="AZURE_CLIENT_ID", choice="removed with the secret and the tenant",
                reason="left alone it would make DefaultAzureCredential ask for a user-assigned "
                       "identity that does not exist (Azure/azure-sdk-for-python#39864)"))
        if edits:
            ordered = tuple(edits[k] for k in sorted(edits))
            steps.add(f"Update the app settings of {d.key}: " + ", ".join(
                f"{'remove' if e.action == 'remove' else 'set'} {e.name}" for e in ordered),
                UpdateAppSettings(site_id=site.id, edits=ordered),
                Undo(action="restore-settings", description=(
                    "restore the app settings exactly as they were, from the encrypted stash")))
        if strings:
            steps.add(f"Rewrite {', '.join(s.name for s in strings)} to sign in as the managed "
                      "identity (Authentication=Active Directory Managed Identity, no password)",
                      UpdateConnectionStrings(site_id=site.id, edits=tuple(strings)),
                      Undo(action="restore-connection-strings", description=(
                          "restore the connection strings exactly as they were, from the "
                          "encrypted stash")))
        if new_sticky:
            steps.add(f"Keep {', '.join(new_sticky)} with the slot (slot setting)",
                      UpdateSlotConfig(site_id=site.id,
                                       add_app_setting_names=tuple(sorted(set(new_sticky)))),
                      Undo(action="restore-slot-config",
                           description="restore the slot-setting names as they were"))
        sticky = sorted({e.name for e in edits.values() if e.sticky and e.action == "set"})
        if sticky:
            decisions.append(Decision(
                topic="slot settings", choice=f"{', '.join(sticky)} stay slot settings",
                reason="a slot swap must not carry one slot's identity settings to the other"))
        steps.add(verify_health_title(d.key, self.options.health_timeout_seconds),
                  VerifyHealth(site_id=site.id,
                                              timeout_seconds=self.options.health_timeout_seconds),
                  Undo(action="none", description="nothing to undo: a read"))
        return steps.stage()

    def _revoke_stage(self, d: _AppDraft, by_key: dict[str, _AppDraft]) -> StagePlan:
        steps = _Steps(d.key, Stage.REVOKE)
        held: list[str] = []
        for cred in d.credentials:
            principal = self.principals[cred.app_id.lower()]
            sharing = sorted({self.keys.get(u.site_id, u.app) for u in principal.used_by
                              if u.match.key_id == cred.key_id and u.site_id != d.app.site.id})
            for other in sharing:
                draft = by_key.get(other)
                if draft is None or draft.status is not AppStatus.MIGRATABLE:
                    held.append(f"{other} still uses credential {cred.key_id} of "
                                f"{cred.principal_name} and is not migratable in this plan")
            held += self._vault_holds(cred)
            in_vaults = "; ".join(
                f"writes it as a new version of secret {v.secret} in Key Vault {v.vault}, "
                f"which the Key Vault reference of {', '.join(v.referenced_by)} reads"
                + (f" (the reference pins version {v.version}: it is repointed to the new one)"
                   if v.version else "") for v in cred.vault_secrets)
            steps.add(
                f"Remove the password credential {cred.key_id} (hint {cred.hint or '?'}) of "
                f"{cred.principal_name}" + (
                    f", after {', '.join(sharing)} {'has' if len(sharing) == 1 else 'have'} "
                    "been swapped too" if sharing else ""),
                RemovePasswordCredential(app_id=cred.app_id,
                                         application_object_id=cred.application_object_id or "",
                                         key_id=cred.key_id, hint=cred.hint,
                                         also_used_by=tuple(sharing)),
                Undo(action="mint-secret-and-swap-back", reversible=False, description=(
                    "irreversible: the removed secret is gone; undo mints a new secret on the "
                    "application and swaps it back into the app's settings"
                    + (f"; it also {in_vaults}" if in_vaults else ""))))
        return steps.stage(held=tuple(_unique(held)))

    def _vault_holds(self, cred: Credential) -> list[str]:
        """Why this credential's removal must wait: some Key Vault secret that holds its text
        could not receive the replacement on rollback, so the app would come back on a dead
        secret. The migration itself (identity, grant, swap) goes ahead."""
        out = []
        for v in cred.vault_secrets:
            access = self.vault_access.get(v.vault)
            if access is not None and access.can_set_secrets:
                continue
            reason = access.reason if access else f"vault {v.vault} was not examined"
            out.append(
                f"rolling back the removal of credential {cred.key_id} of "
                f"{cred.principal_name} would write the new secret to {v.secret} in Key Vault "
                f"{v.vault} (read by {', '.join(v.referenced_by)}), and the operator cannot: "
                f"{reason}; grant that right and plan again")
        return out

    # -- principals

    def _principal_plans(self, drafts: list[_AppDraft]) -> tuple[PrincipalPlan, ...]:
        by_principal: dict[str, list[_AppDraft]] = defaultdict(list)
        for d in drafts:
            for app_id in {f.client_id.lower() for f in d.outbound if f.client_id} | set(
                    d.principals):
                by_principal[app_id].append(d)
        out = []
        for app_id in sorted(by_principal, key=lambda a: (self._principal_name(a).lower(), a)):
            inv = self.principals.get(app_id)
            users = sorted({self.keys.get(u.site_id, u.app) for u in inv.used_by} if inv else
                           {d.key for d in by_principal[app_id]})
            removed = sorted({c.key_id for d in by_principal[app_id]
                              if d.status is AppStatus.MIGRATABLE
                              for c in d.credentials if c.app_id.lower() == app_id})
            record = inv.principal if inv else None
            held = {u.match.key_id for u in inv.used_by} if inv else set()
            other = sorted(c.key_id for c in (record.password_credentials if record else ())
                           if c.key_id not in held and not _expired(c.end, self._now))
            out.append(PrincipalPlan(
                app_id=record.app_id if record else app_id,
                name=self._principal_name(app_id), object_id=record.object_id if record else None,
                used_by=tuple(users), credentials_removed=tuple(removed),
                other_valid_credentials=tuple(other),
                cleanup=self._cleanup(inv, users, drafts, other)))
        return tuple(out)

    @property
    def _now(self) -> datetime:
        return self.options.created_at or datetime.now(timezone.utc)

    def _cleanup(self, inv: PrincipalInventory | None, users: list[str],
                 drafts: list[_AppDraft], other: list[str]) -> StagePlan:
        if inv is None or inv.principal is None:
            return StagePlan(stage=Stage.CLEANUP, held=("the principal was not found",))
        record = inv.principal
        status = {d.key: d.status for d in drafts}
        held = [f"{u} still uses {record.display_name} and is not migratable in this plan"
                for u in users if status.get(u) is not AppStatus.MIGRATABLE]
        if other:
            held.append(f"{record.display_name} has {len(other)} other valid credential(s) "
                        f"({', '.join(other)}) that no scanned app holds: something outside "
                        "the scan may use them, so its rights stay")
        steps = _Steps(f"principal/{record.app_id}", Stage.CLEANUP)
        for r in inv.role_assignments:
            steps.add(f"Remove {record.display_name}'s {r.role_name} on {r.scope}",
                      RemoveRoleAssignment(principal_id=record.object_id, scope=r.scope,
                                           role_definition_id=r.role_definition_id,
                                           role_name=r.role_name, condition=r.condition,
                                           condition_version=r.condition_version),
                      Undo(action="re-add-role-assignment",
                           description="assign the role to the principal again"))
        for v in inv.vault_policies:
            steps.add(f"Remove {record.display_name}'s access policy on {v.vault_name}",
                      RemoveVaultAccessPolicy(vault_id=v.vault_id, vault_name=v.vault_name,
                                              object_id=record.object_id, secrets=v.secrets,
                                              keys=v.keys, certificates=v.certificates),
                      Undo(action="re-add-vault-access-policy",
                           description="add the access policy again"))
        for g in inv.graph_roles:
            steps.add(f"Remove {record.display_name}'s app role "
                      f"{g.app_role_value or g.app_role_id} of {g.resource_name}",
                      RemoveGraphAppRole(principal_id=record.object_id, assignment_id=g.id,
                                         resource_id=g.resource_id,
                                         resource_name=g.resource_name,
                                         app_role_id=g.app_role_id,
                                         app_role_value=g.app_role_value),
                      Undo(action="re-add-graph-app-role",
                           description="grant the app role to the principal again"))
        return steps.stage(held=tuple(held))


class _Steps:
    """Numbers a stage's steps: `<app>/<stage>/<nn>-<kind>`, stable for the journal."""

    def __init__(self, owner: str, stage: Stage) -> None:
        self.owner, self.stage_name = owner, stage
        self.steps: list[Step] = []

    def add(self, title: str, params: StepParams, undo: Undo,
            shared_with: Sequence[str] = ()) -> None:
        number = len(self.steps) + 1
        self.steps.append(Step(
            id=f"{self.owner}/{self.stage_name.value}/{number:02d}-{params.kind}",
            title=title, params=params, undo=undo, shared_with=tuple(shared_with)))

    def stage(self, held: tuple[str, ...] = ()) -> StagePlan:
        return StagePlan(stage=self.stage_name, steps=tuple(self.steps), held=held)


# --- small pure helpers ------------------------------------------------------------------------


def _app_keys(apps: Sequence[AppInventory]) -> dict[str, str]:
    """Each app's name in the plan: `site` or `site/slot`, qualified by resource group (and
    subscription) only where two apps would otherwise share a name."""
    def names(level: int) -> dict[str, str]:
        out = {}
        for a in apps:
            parts = [a.site.subscription_id, a.site.resource_group][2 - level:] if level else []
            out[a.site.id] = "/".join([*parts, a.site.display])
        return out

    for level in range(3):
        keys = names(level)
        counts: dict[str, int] = defaultdict(int)
        for k in keys.values():
            counts[k.lower()] += 1
        if level == 2 or all(c == 1 for c in counts.values()):
            if level == 0:
                return keys
            short = names(0)
            short_counts: dict[str, int] = defaultdict(int)
            for k in short.values():
                short_counts[k.lower()] += 1
            return {i: short[i] if short_counts[short[i].lower()] == 1 else keys[i]
                    for i in short}
    return names(2)


def _usage_of(principal: PrincipalInventory, app: AppInventory,
              f: SecretFinding) -> Usage | None:
    return next((u for u in principal.used_by
                 if u.site_id == app.site.id and u.setting == f.secret.name), None)


def _finding(f: SecretFinding) -> Finding:
    return Finding(
        setting=f.secret.name, source=f.secret.source, sticky=f.secret.sticky, kind=f.kind.value,
        rule=f.rule, client_id=f.client_id, hint=f.hint,
        key_vault=f"{f.key_vault.vault}/{f.key_vault.secret}" if f.key_vault else None,
        note=f.note)


def _merged_role(known: RoleAssignment | None, grant: RoleGrant, app_id: str,
                 decisions: list[Decision]) -> RoleAssignment:
    """The assignment that gives the identity what each principal had of one role at one
    scope. ARM keeps one assignment per principal, role and scope, so two principals' grants
    become one: unconditioned if either was (it allows everything the other did), else the
    conditions joined with OR (either one's access, and no more); a condition is never
    dropped, since that would widen access."""
    if known is None:
        return RoleAssignment(scope=grant.scope, role_definition_id=grant.role_definition_id,
                              role_name=grant.role_name, copied_from=app_id,
                              condition=grant.condition,
                              condition_version=grant.condition_version if grant.condition
                              else None)
    if known.condition is None or grant.condition == known.condition:
        return known
    if grant.condition is None:
        return known.model_copy(update={"condition": None, "condition_version": None})
    decisions.append(Decision(
        topic=f"{grant.role_name} on {grant.scope}",
        choice="conditions joined with OR",
        reason="the principals sharing this identity hold the role there under different "
               "conditions; one assignment allows what either allowed"))
    return known.model_copy(update={
        "condition": f"({known.condition}) OR ({grant.condition})",
        "condition_version": known.condition_version or grant.condition_version or "2.0"})


def _merge(a: Iterable[str], b: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({x.lower() for x in (*a, *b)}))


def _permissions(secrets: Sequence[str], keys: Sequence[str], certs: Sequence[str]) -> str:
    parts = [f"{what}: {', '.join(p)}" for what, p in
             (("secrets", secrets), ("keys", keys), ("certificates", certs)) if p]
    return "; ".join(parts) or "no permissions"


def _unique(items: Iterable[_T]) -> list[_T]:
    seen: list[_T] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _expired(end: str | None, now: datetime) -> bool:
    if not end:
        return False
    try:
        when = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when <= now


def _sql_script(owner: str) -> str:
    quoted = owner.replace("'", "''")
    return (
        f"CREATE USER [{IDENTITY_NAME}] FROM EXTERNAL PROVIDER "
        f"WITH OBJECT_ID = '{IDENTITY_PRINCIPAL_ID}';\n"
        f"-- give it every database role that [{owner}] has today\n"
        "DECLARE @grants nvarchar(max) = N'';\n"
        "SELECT @grants += N'ALTER ROLE ' + QUOTENAME(r.name) + "
        f"N' ADD MEMBER [{IDENTITY_NAME}];'\n"
        "  FROM sys.database_role_members AS m\n"
        "  JOIN sys.database_principals AS r ON r.principal_id = m.role_principal_id\n"
        "  JOIN sys.database_principals AS u ON u.principal_id = m.member_principal_id\n"
        f" WHERE u.name = N'{quoted}';\n"
        "EXEC sp_executesql @grants;\n")


def _sql_undo() -> str:
    return f"DROP USER IF EXISTS [{IDENTITY_NAME}];\n"


def _summary(apps: Sequence[AppPlan], principals: Sequence[PrincipalPlan],
             identities: dict[str, IdentityPlan]) -> Summary:
    blocked: dict[str, int] = defaultdict(int)
    for a in apps:
        for code in sorted({b.code.value for b in a.blocked}):
            blocked[code] += 1
    secrets = {(s.params.app_id, s.params.key_id) for a in apps for st in a.stages
               for s in st.steps if isinstance(s.params, RemovePasswordCredential)}
    grants = {(a.identity.identity if a.identity and a.identity.identity else a.name,
               s.params.model_dump_json(exclude={"copied_from"}))
              for a in apps for st in a.stages if st.stage is Stage.GRANT for s in st.steps
              if not isinstance(s.params, VerifyRights)}
    irreversible = {s.id for a in apps for st in a.stages for s in st.steps
                    if not s.undo.reversible}
    return Summary(
        apps_found=len(apps),
        migratable=sum(1 for a in apps if a.status is AppStatus.MIGRATABLE),
        blocked=sum(1 for a in apps if a.status is AppStatus.BLOCKED),
        advisory=sum(1 for a in apps if a.status is AppStatus.ADVISORY),
        blocked_by_reason=dict(sorted(blocked.items())),
        secrets_to_remove=len(secrets),
        rights_to_grant=len(grants),
        shared_principals=sum(1 for p in principals if len(p.used_by) > 1),
        identities_to_create=len(identities),
        irreversible_steps=len(irreversible),
    )
