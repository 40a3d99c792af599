"""The scanner: builds the inventory (`migrator.inventory`) of every site and slot that holds
a credential, and what its principal can do.

Reads the estate through `cloud/` adapters, concurrently (a bounded thread pool; ARM calls are
paced per subscription by the client factory's pacing policy), runs the pure detector on each
site's settings, then resolves each principal once in Graph, matches the secret each app holds
to the principal's exact password credential by `hint`, and collects the principal's rights:
ARM role assignments, Key Vault access policies, Graph app roles. Whatever the operator cannot
read becomes a `Gap` in the inventory: a scan with gaps is incomplete and says so.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeVar

from migrator import calllog
from migrator.cloud.errors import AzureCallError, CloudError
from migrator.cloud.factory import ClientFactory
from migrator.cloud.graph import IN_FILTER_LIMIT, GraphAdapter
from migrator.cloud.records import (
    PasswordCredentialRecord,
    PrincipalRecord,
    RoleAssignmentRecord,
    RoleDataActions,
    SettingsRecord,
    SiteRecord,
    SubscriptionRecord,
    VaultRecord,
)
from migrator.cloud.rights import RightsAdapter
from migrator.cloud.signins import SignInRecord, SignInsUnavailable, sign_ins_from
from migrator.cloud.web import WebAdapter
from migrator.cloud.whoami import signed_in
from migrator.detect import Note, detect, settings_fingerprint
from migrator.detect.findings import (
    ConnectionStringValue,
    SecretFinding,
    SettingRef,
    SiteSettings,
)
from migrator.detect.values import guid
from migrator.inventory import (
    UNREAD_PRINCIPAL,
    AddressUse,
    AppInventory,
    CredentialMatch,
    CredentialSignIns,
    Gap,
    Inventory,
    PrincipalInventory,
    RoleGrant,
    ScanStats,
    SignInEvidence,
    Usage,
    VaultGrant,
    VaultWriteAccess,
)
from migrator.scheduling import FairPool

T = TypeVar("T")
DEFAULT_WORKERS = 16
DEFAULT_SIGN_IN_DAYS = 30  # the lookback of the sign-in evidence


SET_SECRET_ACTION = "Microsoft.KeyVault/vaults/secrets/setSecret/action"


@dataclass(frozen=True)
class ScanScope:
    """What to scan: all readable subscriptions, or the named ones; optionally some RGs."""

    subscriptions: tuple[str, ...] = ()  # ids or display names; empty: every readable one
    resource_groups: tuple[str, ...] = ()

    def wants(self, site: SiteRecord) -> bool:
        return not self.resource_groups or site.resource_group.lower() in {
            g.lower() for g in self.resource_groups}


@dataclass(frozen=True)
class ScanEvent:
    """Progress, for the CLI's bar or the runbook's log: never a setting value."""

    kind: Literal["subscription", "sites-found", "site-done", "principal-done", "gap"]
    subject: str
    count: int = 1


Progress = Callable[[ScanEvent], None]


class _GraphLookups:
    """Looks principals up in Graph while ARM is still being read: a chunk of IN_FILTER_LIMIT
    new app ids goes out as soon as the detector has found them, so the Graph phase no longer
    follows the slowest subscription. Each app id is looked up once."""

    def __init__(self, pool: ThreadPoolExecutor,
                 lookup: Callable[[list[str]], dict[str, PrincipalRecord]]) -> None:
        self._pool = pool
        self._lookup = lookup
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._sent: list[tuple[list[str], Future[dict[str, PrincipalRecord]]]] = []

    def add(self, app_ids: Iterable[str]) -> None:
        with self._lock:
            for app_id in app_ids:
                if app_id not in self._seen:
                    self._seen.add(app_id)
                    self._pending.append(app_id)
            while len(self._pending) >= IN_FILTER_LIMIT:
                self._send(IN_FILTER_LIMIT)

    def _send(self, count: int) -> None:
        chunk, self._pending = self._pending[:count], self._pending[count:]
        self._sent.append((chunk, self._pool.submit(self._lookup, chunk)))

    def finish(self) -> list[tuple[list[str], Future[dict[str, PrincipalRecord]]]]:
        """Send what is left; every chunk with its (possibly still running) look-up."""
        with self._lock:
            if self._pending:
                self._send(len(self._pending))
            return list(self._sent)


@dataclass(frozen=True)
class _ValueOnly:
    """A secret no client id setting pairs with, and the app's settings that hold GUIDs: one
    of them may be its application id (issue: RELAY_TOKEN beside RELAY_APP)."""

    site_id: str
    finding: SecretFinding
    candidates: tuple[tuple[SettingRef, str], ...]  # (setting, lower-case GUID)


def _guid_settings(settings: SiteSettings) -> list[tuple[SettingRef, str]]:
    """Every setting of an app whose whole value is a GUID."""
    out = [(SettingRef(n, "app_setting", n in settings.sticky_app_settings), g)
           for n, v in settings.app_settings.items() if (g := guid(v))]
    out += [(SettingRef(n, "connection_string", n in settings.sticky_connection_strings), g)
            for n, c in settings.connection_strings.items() if (g := guid(c.value))]
    return out


def _with_note(finding: SecretFinding, note: Note) -> str:
    return "; ".join(part for part in (finding.note, note.value) if part)


@dataclass
class _State:
    value_only: list[_ValueOnly] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    apps: list[AppInventory] = field(default_factory=list)
    assignments: dict[str, list[RoleAssignmentRecord]] = field(default_factory=dict)
    role_names: dict[str, str] = field(default_factory=dict)
    vaults: list[VaultRecord] = field(default_factory=list)
    resource_groups: set[str] = field(default_factory=set)  # lower case, from the site lists
    lock: threading.Lock = field(default_factory=threading.Lock)


class Scanner:
    """One scan of one tenant. `run()` returns an Inventory; it raises only when nothing at
    all could be read (sign-in failure); everything else becomes a Gap."""

    def __init__(self, factory: ClientFactory, *, workers: int = DEFAULT_WORKERS,
                 progress: Progress = lambda _: None, salt: bytes | None = None,
                 sign_in_days: int = DEFAULT_SIGN_IN_DAYS,
                 sign_in_workspace: str | None = None) -> None:
        self.factory = factory
        self.sign_in_days = sign_in_days
        self.sign_in_workspace = sign_in_workspace  # None: Graph
        self.web = WebAdapter(factory)
        self.rights = RightsAdapter(factory)
        self.graph = GraphAdapter(factory)
        self.workers = workers
        def logged(e: ScanEvent) -> None:
            if e.kind in ("subscription", "sites-found"):
                calllog.event("scan", kind=e.kind, subject=e.subject, count=e.count)
            progress(e)

        self.progress = logged
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.settings_salt = secrets.token_bytes(16)
        self._state = _State()
        self._lookups: _GraphLookups | None = None

    # -- helpers

    def _gap(self, scope: str, exc: CloudError) -> None:
        status = exc.status if isinstance(exc, AzureCallError) else None
        code = exc.code if isinstance(exc, AzureCallError) else None
        operation = exc.what if isinstance(exc, AzureCallError) else "call"
        with self._state.lock:
            self._state.gaps.append(Gap(scope, operation, status, code, str(exc)))
        self.progress(ScanEvent("gap", scope))

    def _guarded(self, scope: str, call: Callable[[], T]) -> T | None:
        try:
            return call()
        except AzureCallError as exc:
            self._gap(scope, exc)
            return None

    # -- phases

    def _subscriptions(self, scope: ScanScope) -> list[SubscriptionRecord]:
        visible = self.web.subscriptions()
        if not scope.subscriptions:
            return visible
        chosen = []
        for wanted in scope.subscriptions:
            match = [s for s in visible if wanted.lower() in (s.id.lower(), s.name.lower())]
            if match:
                chosen += [m for m in match if m not in chosen]
            else:
                with self._state.lock:
                    self._state.gaps.append(Gap(
                        f"/subscriptions/{wanted}", "read subscription", 404,
                        "SubscriptionNotFound",
                        f"subscription {wanted} is not visible to the operator (no role in it, "
                        "or it does not exist)"))
                self.progress(ScanEvent("gap", wanted))
        return chosen

    def _scan_site(self, site: SiteRecord, pool: FairPool,
                   sticky: tuple[frozenset[str], frozenset[str]] | None = None) -> None:
        settings = self._guarded(site.id, lambda: self.web.settings(site, sticky))
        if settings is not None:
            self._detect(site, settings)
        self.progress(ScanEvent("site-done", site.display))
        if site.slot is None:
            known = (None if settings is None else
                     (settings.sticky_app_settings, settings.sticky_connection_strings))
            slots = self._guarded(site.id, lambda: self.web.slots(site)) or []
            if slots:
                self.progress(ScanEvent("sites-found", site.name, len(slots)))
            for slot in slots:
                pool.submit(slot.subscription_id,
                            functools.partial(self._scan_site, slot, pool, known))

    def _detect(self, site: SiteRecord, settings: SettingsRecord) -> None:
        site_settings = SiteSettings(
            app_settings=settings.app_settings,
            connection_strings={k: ConnectionStringValue(t, v)
                                for k, (t, v) in settings.connection_strings.items()},
            sticky_app_settings=settings.sticky_app_settings,
            sticky_connection_strings=settings.sticky_connection_strings,
        )
        findings = detect(site_settings, salt=self.salt)
        stamp = settings_fingerprint(site_settings, self.settings_salt)
        guids = _guid_settings(site_settings)
        value_only = [
            _ValueOnly(site.id, f, tuple(
                (ref, g) for ref, g in guids
                if (ref.name, ref.source) != (f.secret.name, f.secret.source)))
            for f in findings if f.outbound and not f.client_id and f.hint]
        value_only = [v for v in value_only if v.candidates]
        with self._state.lock:
            self._state.apps.append(AppInventory(site, tuple(findings), stamp))
            self._state.value_only += value_only
        if self._lookups is not None:
            self._lookups.add([f.client_id.lower() for f in findings
                               if f.outbound and f.client_id]
                              + [g for v in value_only for _, g in v.candidates])

    def _scan_subscription(self, sub: SubscriptionRecord, scope: ScanScope,
                           pool: FairPool) -> None:
        self.progress(ScanEvent("subscription", sub.name))
        where = f"/subscriptions/{sub.id}"
        sites = self._guarded(where, lambda: self.web.site_list(sub.id))
        if sites is not None:
            with self._state.lock:
                self._state.resource_groups.update(s.resource_group.lower() for s in sites)
            wanted = [s for s in sites if scope.wants(s)]
            self.progress(ScanEvent("sites-found", sub.name, len(wanted)))
            for site in wanted:
                pool.submit(sub.id, functools.partial(self._scan_site, site, pool))
        assignments = self._guarded(where, lambda: self.rights.role_assignments(sub.id))
        names = self._guarded(where, lambda: self.rights.role_names(sub.id))
        vaults = self._guarded(where, lambda: self.rights.vaults(sub.id))
        with self._state.lock:
            for a in assignments or []:
                self._state.assignments.setdefault(a.principal_id, []).append(a)
            self._state.role_names.update(names or {})
            self._state.vaults += vaults or []

    def run(self, scope: ScanScope | None = None) -> Inventory:
        scope = scope or ScanScope()
        began = time.monotonic()
        subscriptions = self._subscriptions(scope)
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="scan") as pool:
            # msgraph-sdk takes seconds to import and sign in: do it while ARM is being read.
            warm = pool.submit(self.graph.warm)

            def lookup(chunk: list[str]) -> dict[str, PrincipalRecord]:
                warm.exception()  # sign in once, before the first look-up
                return self.graph.principals(chunk)

            self._lookups = _GraphLookups(pool, lookup)
            with FairPool(self.workers, self.factory.pacer.ready_in, "scan-arm") as arm:
                for sub in subscriptions:
                    arm.submit(sub.id, functools.partial(self._scan_subscription, sub, scope,
                                                         arm))
                arm.join()
            self._unknown_resource_groups(scope, subscriptions)
            self._guarded("graph", warm.result)
            principals = self._principals(pool, self._lookups.finish())
        state = self._state
        apps = tuple(sorted(state.apps, key=lambda a: (a.site.subscription_id,
                                                       a.site.id.lower())))
        vault_access = self._vault_access(apps)
        sign_ins = self._sign_ins(principals, apps)
        for gap in state.gaps:
            calllog.event("gap", "warning", scope=gap.scope, operation=gap.operation,
                          status=gap.status, code=gap.code, message=gap.message)
        return Inventory(
            tenant_id=self.factory.profile.tenant_id or next(
                (s.tenant_id for s in subscriptions if s.tenant_id), None),
            scanned_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            subscriptions=tuple(subscriptions), apps=apps, principals=principals,
            gaps=tuple(sorted(state.gaps, key=lambda g: (g.scope, g.operation))),
            settings_salt=self.settings_salt.hex(), vault_access=vault_access,
            sign_ins=sign_ins,
            stats=ScanStats(
                seconds=round(time.monotonic() - began, 3),
                sites=sum(1 for a in apps if a.site.slot is None),
                slots=sum(1 for a in apps if a.site.slot is not None),
                arm_throttled=self.factory.pacer.throttled_count,
                pacing_wait_seconds=round(self.factory.pacer.waited(), 3),
            ),
        )

    def _sign_ins(self, principals: tuple[PrincipalInventory, ...],
                  apps: tuple[AppInventory, ...]) -> SignInEvidence | None:
        """The sign-in logs of every principal an app signs in as, over the lookback window:
        who else uses each credential. Logs that cannot be read are no gap in the inventory
        (nothing the plan copies is missing), but the evidence says why it is absent, and the
        revokes then wait for the soak timer alone."""
        if self.sign_in_days <= 0:
            return None
        now = datetime.now(timezone.utc).replace(microsecond=0)
        since = now - timedelta(days=self.sign_in_days)
        window = (since.isoformat(), now.isoformat())
        workspace = self.sign_in_workspace
        source: Literal["graph", "log-analytics"] = (
            "graph" if workspace is None else "log-analytics")
        found = [p for p in principals if p.principal is not None]
        if not found:
            return SignInEvidence(source, *window, None, workspace=workspace)
        try:
            records = sign_ins_from(self.factory, self.graph, workspace).read(
                [p.app_id for p in found], since)
        except (SignInsUnavailable, AzureCallError) as exc:
            calllog.event("sign-ins", "warning", message=str(exc))
            return SignInEvidence("none", *window, str(exc), workspace=workspace)
        return SignInEvidence(source, *window, None, credential_sign_ins(found, apps, records),
                              workspace=workspace)

    def _vault_access(self, apps: tuple[AppInventory, ...]) -> tuple[VaultWriteAccess, ...]:
        """For each vault an app's outbound secret is referenced from: may the operator write
        a new version there? Read only when some app has such a reference."""
        wanted = sorted({f.key_vault.vault.lower() for a in apps for f in a.findings
                         if f.key_vault is not None and f.outbound})
        if not wanted:
            return ()
        vaults = {v.name.lower(): v for v in self._state.vaults}
        try:
            operator = signed_in(self.factory).object_id
        except CloudError:
            operator = None
        definitions: dict[str, dict[str, RoleDataActions] | None] = {}
        out = []
        for name in wanted:
            vault = vaults.get(name)
            if vault is None:
                out.append(VaultWriteAccess(name, None, None, None, None,
                                            f"vault {name} is not in the scanned subscriptions"))
                continue
            sub = vault.subscription_id
            if vault.rbac and sub not in definitions:
                definitions[sub] = self._guarded(
                    f"/subscriptions/{sub}",
                    functools.partial(self.rights.role_data_actions, sub))
            can, reason = vault_write_access(
                vault, operator, self._state.assignments.get((operator or "").lower(), []),
                definitions.get(sub) if vault.rbac else {})
            out.append(VaultWriteAccess(name, vault.id, vault.uri, vault.rbac, can, reason))
        return tuple(out)

    def _unknown_resource_groups(self, scope: ScanScope,
                                 subscriptions: list[SubscriptionRecord]) -> None:
        """A resource group asked for (`-g`) that holds no site is looked up: one that is in
        none of the scanned subscriptions is a gap (a typo must not read as "Complete, no
        finding"), an empty one is not."""
        if not subscriptions:
            return  # the subscriptions' own gaps say why nothing was read
        for name in scope.resource_groups:
            if name.lower() in self._state.resource_groups:
                continue
            refused: list[str] = []
            for sub in subscriptions:
                try:
                    if self.web.resource_group_exists(sub.id, name):
                        break
                except AzureCallError as exc:
                    refused.append(f"{sub.name}: {exc.status or ''} {exc.code or ''}".strip())
            else:
                where = ", ".join(s.name for s in subscriptions)
                with self._state.lock:
                    self._state.gaps.append(Gap(
                        f"/resourceGroups/{name}", "read resource group", 404,
                        "ResourceGroupNotFound",
                        f"resource group {name} is in none of the scanned subscriptions "
                        f"({where}): check the name" + (
                            f"; the operator could not read it in {'; '.join(refused)}"
                            if refused else "")))
                self.progress(ScanEvent("gap", name))

    # -- principals

    def _principals(self, pool: ThreadPoolExecutor,
                    lookups: list[tuple[list[str], Future[dict[str, PrincipalRecord]]]]
                    ) -> tuple[PrincipalInventory, ...]:
        records: dict[str, PrincipalRecord | None] = {}
        unread: set[str] = set()  # app ids whose look-up failed: unknown, not "not found"
        for chunk, future in lookups:
            found_records = self._guarded("graph:/servicePrincipals", future.result)
            if found_records is None:
                unread.update(chunk)
            for app_id in chunk:
                records[app_id] = (found_records or {}).get(app_id)
        self._pair_by_value(records)
        uses: dict[str, list[tuple[AppInventory, SecretFinding]]] = {}
        for app in self._state.apps:
            for finding in app.findings:
                if finding.outbound and finding.client_id:
                    uses.setdefault(finding.client_id.lower(), []).append((app, finding))
        futures = {app_id: pool.submit(self._principal, app_id, found, records[app_id],
                                       app_id in unread)
                   for app_id, found in uses.items()}
        out = [f.result() for f in futures.values()]
        return tuple(sorted(out, key=lambda p: (p.name.lower(), p.app_id)))

    def _pair_by_value(self, records: dict[str, PrincipalRecord | None]) -> None:
        """A secret no setting name pairs with gets the application id another setting of its
        app holds, when exactly one such id has a valid credential with the secret's hint;
        its note says it was paired so (or why it was not). Such an app is then known to use
        that credential, so no other app's revoke removes it from under it."""
        state = self._state
        replaced: dict[tuple[str, SecretFinding], SecretFinding] = {}
        for item in state.value_only:
            hits = [(ref, g) for ref, g in item.candidates
                    if (record := records.get(g)) is not None
                    and match_credential(item.finding, record).status == "matched"]
            if len(hits) == 1:
                ref, app_id = hits[0]
                replaced[(item.site_id, item.finding)] = dataclasses.replace(
                    item.finding, client_id=app_id, client_id_setting=ref,
                    note=_with_note(item.finding, Note.PAIRED_BY_VALUE))
            elif len({g for _, g in hits}) > 1:
                replaced[(item.site_id, item.finding)] = dataclasses.replace(
                    item.finding, note=_with_note(item.finding, Note.PAIRED_AMBIGUOUS))
        if replaced:
            with state.lock:
                state.apps = [dataclasses.replace(a, findings=tuple(
                    replaced.get((a.site.id, f), f) for f in a.findings))
                    if any((a.site.id, f) in replaced for f in a.findings) else a
                    for a in state.apps]

    def _principal(self, app_id: str, found: list[tuple[AppInventory, SecretFinding]],
                   record: PrincipalRecord | None, unread: bool = False) -> PrincipalInventory:
        self.progress(ScanEvent("principal-done", record.display_name if record else app_id))
        usages = tuple(sorted(
            (Usage(app.site.display, app.site.id, f.secret.name, f.kind.value, f.secret.sticky,
                   UNREAD_PRINCIPAL if unread else match_credential(f, record))
             for app, f in found),
            key=lambda u: (u.app, u.setting)))
        if record is None:
            return PrincipalInventory(app_id, None, (), (), (), usages)
        state = self._state
        with state.lock:
            assignments = list(state.assignments.get(record.object_id.lower(), []))
            names = dict(state.role_names)
            vaults = list(state.vaults)
        roles = tuple(sorted(
            {RoleGrant(a.scope, a.role_definition_id,
                       names.get(a.role_definition_id, a.role_definition_id),
                       a.condition, a.condition_version)
             for a in assignments},
            key=lambda g: (g.scope.lower(), g.role_name)))
        policies = tuple(
            VaultGrant(v.id, v.name, v.rbac, p.secrets, p.keys, p.certificates)
            for v in sorted(vaults, key=lambda v: v.id.lower())
            for p in v.access_policies if p.object_id == record.object_id.lower())
        return PrincipalInventory(app_id, record, roles, policies, record.app_role_grants,
                                  usages)


def credential_sign_ins(principals: Iterable[PrincipalInventory],
                        apps: Iterable[AppInventory],
                        records: Iterable[SignInRecord]) -> tuple[CredentialSignIns, ...]:
    """Per credential of these principals: its sign-ins, from where, to what. Every password
    credential gets an entry, so one with no sign-in in the window says so (a candidate to
    remove, whether or not an app holds it). An address is attributed to the scanned apps
    that may call out from it (their outbound addresses)."""
    callers: dict[str, set[str]] = {}
    for app in apps:
        for ip in app.site.outbound_ips:
            callers.setdefault(ip, set()).add(app.site.display)
    by_key: dict[tuple[str, str], list[SignInRecord]] = {}
    for record in records:
        if record.key_id:
            by_key.setdefault((record.app_id, record.key_id), []).append(record)
    keys = {(p.app_id.lower(), c.key_id.lower()) for p in principals if p.principal
            for c in p.principal.password_credentials}
    out = []
    for app_id, key_id in sorted(keys | set(by_key)):
        events = sorted(by_key.get((app_id, key_id), []), key=lambda r: r.created)
        ok = [e for e in events if e.succeeded]
        ips: dict[str, list[SignInRecord]] = {}
        resources: dict[str, list[SignInRecord]] = {}
        for event in ok:
            ips.setdefault(event.ip, []).append(event)
            resources.setdefault(event.resource_id, []).append(event)
        ranked = sorted(resources.items(), key=lambda kv: (-len(kv[1]), kv[1][0].resource_name))
        out.append(CredentialSignIns(
            app_id=app_id, key_id=key_id, sign_ins=len(ok), failures=len(events) - len(ok),
            last=ok[-1].created.isoformat() if ok else None,
            addresses=tuple(
                AddressUse(ip, len(uses), uses[-1].created.isoformat(),
                           tuple(sorted(callers.get(ip, ()))))
                for ip, uses in sorted(ips.items(), key=lambda kv: (-len(kv[1]), kv[0]))),
            resources=tuple(uses[0].resource_name for _, uses in ranked),
            resource_ids=tuple(rid for rid, _ in ranked)))
    return tuple(out)


def vault_write_access(vault: VaultRecord, operator: str | None,
                       assignments: list[RoleAssignmentRecord],
                       definitions: dict[str, RoleDataActions] | None
                       ) -> tuple[bool | None, str]:
    """Whether the operator may set secrets in the vault, and why: on an access-policy vault
    its policy's secret permissions (`set`, in any case); on an RBAC vault a role assigned at
    the vault or above whose data actions allow setSecret. Pure, so it is unit-tested."""
    if operator is None:
        return None, "the operator's object id is not known (its token does not say)"
    if not vault.rbac:
        policy = next((p for p in vault.access_policies
                       if p.object_id.lower() == operator.lower()),
                      None)
        if policy is not None and "set" in {x.lower() for x in policy.secrets}:
            return True, "the operator's access policy allows secret set"
        return False, (f"no access policy of vault {vault.name} lets the operator set secrets "
                       "(it needs the 'set' secret permission)")
    if definitions is None:
        return None, (f"vault {vault.name} uses Azure RBAC and its subscription's role "
                      "definitions could not be read")
    vault_id = vault.id.lower().rstrip("/")
    for a in assignments:
        scope = a.scope.lower().rstrip("/")
        if vault_id != scope and not vault_id.startswith(scope + "/"):
            continue
        role = definitions.get(a.role_definition_id.lower())
        if role is None:
            continue
        if any(fnmatch.fnmatchcase(SET_SECRET_ACTION.lower(), d.lower())
               for d in role.data_actions) and not any(
                fnmatch.fnmatchcase(SET_SECRET_ACTION.lower(), n.lower())
                for n in role.not_data_actions):
            return True, f"a role assigned at {a.scope} allows {SET_SECRET_ACTION}"
    return False, (f"vault {vault.name} uses Azure RBAC and no role of the operator at it or "
                   f"above allows {SET_SECRET_ACTION} (e.g. Key Vault Secrets Officer)")


def match_credential(finding: SecretFinding, principal: PrincipalRecord | None,
                     now: datetime | None = None) -> CredentialMatch:
    """Entra shows each password credential's first three characters (`hint`): the app's secret
    is the credential with the same hint that is still valid. Pure, so it is unit-tested."""
    if principal is None:
        return CredentialMatch("no-match", None, (), "the principal was not found in Graph")
    if Note.MALFORMED_REFERENCE.value in finding.note.split("; "):
        return CredentialMatch("not-checked", None, (),
                               "the setting holds a platform reference App Service cannot "
                               "parse, so the app signs in with no secret from it; fix or "
                               "remove the reference first")
    now = now or datetime.now(timezone.utc)
    creds = principal.password_credentials
    valid = [c for c in creds if not _expired(c, now)]
    if finding.hint is None:
        if len(valid) == 1:
            return CredentialMatch("matched", valid[0].key_id, (valid[0].key_id,),
                                   "the secret's text is not visible here (e.g. held in Key "
                                   "Vault); the principal has exactly one valid credential")
        return CredentialMatch("not-checked", None, tuple(c.key_id for c in valid),
                               "the secret's text is not visible here (e.g. held in Key Vault)"
                               f" and the principal has {len(valid)} valid credentials")
    same = [c for c in creds if c.hint == finding.hint]
    live = [c for c in same if not _expired(c, now)]
    if len(live) == 1:
        return CredentialMatch("matched", live[0].key_id, (live[0].key_id,),
                               "one valid credential has the secret's hint")
    if len(live) > 1:
        return CredentialMatch("ambiguous", None, tuple(c.key_id for c in live),
                               f"{len(live)} valid credentials share the secret's hint")
    if same:
        return CredentialMatch("expired", same[0].key_id, tuple(c.key_id for c in same),
                               "the only credential with the secret's hint has expired: the "
                               "app cannot be signing in with it")
    return CredentialMatch("no-match", None, (),
                           "no credential of the principal has the secret's hint (removed, "
                           "or the secret belongs to another principal)")


def _expired(cred: PasswordCredentialRecord, now: datetime) -> bool:
    if not cred.end:
        return False
    try:
        end = datetime.fromisoformat(cred.end)
    except ValueError:
        return False
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return end <= now
