"""The staged engine: runs a plan's steps per app and stage, journals each one before it
writes, verifies, restores a failed swap at once, rolls back and resumes.

The journal is the only memory: every decision here (is this stage done, when did the swap
finish, what did the app look like before) is read back from it, so a crashed run and a new
one see the same thing. A step is recorded `started` with its before-state before it writes to
Azure and `done` after it has been verified; a step found `started` on the next run is verified
against Azure and either recorded done or done again (every step is idempotent).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, TypeVar

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from migrator import calllog
from migrator.cloud.changes import CloudChanges
from migrator.cloud.errors import (
    AzureCallError,
    CloudError,
    PrincipalNotReplicated,
    SignInError,
)
from migrator.detect import ConnectionStringValue, SiteSettings, settings_fingerprint
from migrator.execute.journal import Journal, JournalEntry, JournalError, StepState
from migrator.execute.rewrite import RewriteError
from migrator.execute.rights import RightsReader
from migrator.execute.stash import Stash, StashError
from migrator.execute.steps import (
    HANDLERS,
    IdentityFacts,
    NeedsConfirmation,
    StepContext,
    StepError,
    minted_stash_key,
    while_replicating,
)
from migrator.plan import evidence
from migrator.plan.model import (
    STAGES,
    AppPlan,
    AppStatus,
    AssignUserAssignedIdentity,
    EnableSystemIdentity,
    Plan,
    PrincipalPlan,
    RemovePasswordCredential,
    RoleAssignment,
    Stage,
    StagePlan,
    Step,
    UpdateAppSettings,
    UpdateConnectionStrings,
    VerifyHealth,
    verify_health_title,
)
from migrator.plan.preflight import (
    Need,
    Verdict,
    describe,
    drift_check_needs,
    judge,
    step_needs,
    unchecked_lines,
)

T = TypeVar("T")
DEFAULT_SOAK = timedelta(hours=24)
DEFAULT_RBAC_PROPAGATION = 600.0  # seconds; Azure documents up to 10 minutes (AZURE-FACTS)
TRANSIENT_ATTEMPTS = 8
DEFAULT_SIGN_IN_DELAY = timedelta(minutes=15)
_DONE = (StepState.DONE, StepState.CONFIRMED)
_FAILURES = (CloudError, StepError, RewriteError, StashError)


def parse_duration(text: str) -> timedelta:
    """A soak period as operators write it: `24h`, `90m`, `30s`, `2d` or plain seconds.
    ValueError (saying what to write) for anything else."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise ValueError(f"{text!r}: use e.g. 24h, 90m, 30s or 2d")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


class EngineError(Exception):
    """Bad input to the engine (an unknown app, a stage name): one line, nothing changed."""


class MissingRights(EngineError):
    """The operator lacks permissions some chosen step needs: refused before any change,
    every missing permission named with its step."""

    def __init__(self, what: str, missing: Sequence[Need]) -> None:
        items = describe(missing)
        self.lines = (
            f"{what} refused before any change: the signed-in operator lacks {len(items)} "
            f"permission{'s' if len(items) != 1 else ''} the chosen steps need:",
            *(f"  - {line}" for line in items),
            "grant them (or run as an operator that holds them) and run the command again",
            *(["the stages before the revoke need none of these: `--stage swap` moves the "
               "apps now, and leaves their old secrets for an operator who may remove them"]
              if what == "apply" and all(n.stage is Stage.REVOKE for n in missing) else []))
        super().__init__("\n".join(self.lines))
        self.missing = tuple(missing)


@dataclass(frozen=True)
class ApplyOptions:
    apps: tuple[str, ...] = ()  # empty: every migratable app
    stages: tuple[Stage, ...] = STAGES
    soak: timedelta = DEFAULT_SOAK
    confirm_sql: bool = False
    health_timeout: float | None = None  # None: the plan's
    replication_timeout: float = 300.0
    # How long a new role assignment may take to reach data-plane authorization (Azure
    # documents up to 10 minutes): the health check after a swap waits at least this long
    # after the app's last new role assignment before it calls the swap a failure.
    rbac_propagation: float = DEFAULT_RBAC_PROPAGATION
    # Entra's sign-in logs arrive minutes late (Microsoft: typically 2-5 minutes, up to 15 or
    # more): a revoke judged on the logs waits this long after the swap, and a sign-in counts
    # as quiet only this long after it would have shown.
    sign_in_delay: timedelta = DEFAULT_SIGN_IN_DELAY


Outcome = Literal["done", "refused", "failed", "rolled-back", "waiting"]


@dataclass(frozen=True)
class AppOutcome:
    app: str
    outcome: Outcome
    stages_done: tuple[str, ...]  # stages completed (now or before)
    message: str = ""
    script: str | None = None  # T-SQL the operator must run (never a secret)
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class EngineEvent:
    kind: Literal["stage", "step", "step-done", "step-failed", "undo", "undone", "note"]
    app: str
    text: str


@dataclass(frozen=True)
class StageProgress:
    stage: str
    state: Literal["done", "partial", "failed", "rolled-back", "pending"]
    at: datetime | None
    message: str


@dataclass(frozen=True)
class AppProgress:
    app: str
    status: str  # the plan's status: migratable, blocked, advisory
    reached: str  # last stage done, or "-"
    stages: tuple[StageProgress, ...]
    next: str  # what an operator can do next, in words


class Engine:
    """One plan, its journal and stash, and the cloud it changes."""

    def __init__(self, plan: Plan, journal: Journal, stash: Stash, cloud: CloudChanges, *,
                 events: Callable[[EngineEvent], None] = lambda _: None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.plan = plan
        self.journal = journal
        self.stash = stash
        self.cloud = cloud

        def logged(e: EngineEvent) -> None:
            calllog.event("engine", plan=plan.name, kind=e.kind, app=e.app, text=e.text)
            events(e)

        self.events = logged
        self.now = now
        self.sleep = sleep
        self._apps = {a.name: a for a in plan.apps}
        self._identity_cache: dict[str, IdentityFacts] = {}
        self._rights = RightsReader(cloud, self._patient)  # read once per run
        self._said: set[str] = set()
        self._last()  # refuses, now, a journal that holds another plan's steps
        # What the engine is doing right now, in words, for an operator who pressed Ctrl-C:
        # (the command to resume with, the app, the step's title); None between operations.
        self.activity: tuple[str, str, str] | None = None

    # -- journal reads

    def _last(self) -> dict[str, JournalEntry]:
        last = self.journal.last_states(self.plan.name)
        for entry in last.values():
            if entry.plan_digest != self.plan.digest:
                where = getattr(self.journal, "path", None) or "the journal"
                raise JournalError(
                    f"{where} holds the steps of another plan named {self.plan.name!r} "
                    f"(digest {entry.plan_digest[:12]}, last step {entry.at:%Y-%m-%d %H:%M} "
                    f"UTC); this plan (digest {self.plan.digest[:12]}) was made anew under the "
                    "same name: use the plan that journal belongs to, or move the journal away")
        return last

    def _started_before(self, owner: str, step: Step) -> dict[str, Any]:
        """The before-state of the step's current attempt: its latest `started` entry."""
        before: dict[str, Any] = {}
        for entry in self.journal.entries(self.plan.name, owner):
            if entry.step_id == step.id and entry.state is StepState.STARTED:
                before = dict(entry.before)
        return before

    def _stage_done(self, app: AppPlan, stage: Stage, last: dict[str, JournalEntry]) -> bool:
        steps = _stage(app, stage).steps
        return all((e := last.get(s.id)) is not None and e.state in _DONE for s in steps)

    def _stage_touched(self, app: AppPlan, stage: Stage, last: dict[str, JournalEntry]) -> bool:
        return any((e := last.get(s.id)) is not None and e.state is not StepState.UNDONE
                   for s in _stage(app, stage).steps)

    def _done_at(self, app: AppPlan, stage: Stage, last: dict[str, JournalEntry]
                 ) -> datetime | None:
        times = [e.at for s in _stage(app, stage).steps if (e := last.get(s.id)) is not None
                 and e.state in _DONE]
        return max(times) if times else None

    # -- selection and checks

    def app(self, name: str) -> AppPlan:
        found = self._apps.get(name) or next(
            (a for a in self.plan.apps if a.site_id.lower() == name.lower()), None)
        if found is None:
            names = ", ".join(a.name for a in self.plan.apps) or "none"
            raise EngineError(f"unknown app {name!r}; the plan's apps are: {names}")
        return found

    def targets(self, names: Sequence[str]) -> list[AppPlan]:
        if names:
            return [self.app(n) for n in names]
        return [a for a in self.plan.apps if a.status is AppStatus.MIGRATABLE]

    def preview(self, options: ApplyOptions) -> list[tuple[str, Stage, Step]]:
        """Every step `apply` would run with these options (done ones left out)."""
        last = self._last()
        out = []
        for app in self.targets(options.apps):
            if app.status is not AppStatus.MIGRATABLE:
                continue
            for stage in STAGES:
                if stage not in options.stages or self._stage_done(app, stage, last):
                    continue
                out += [(app.name, stage, shown(s, app, options.health_timeout,
                                                options.rbac_propagation))
                        for s in _stage(app, stage).steps
                        if (e := last.get(s.id)) is None or e.state not in _DONE]
        return out

    def check_tenant(self) -> None:
        """Refuse, before any step, to run a plan in a tenant other than the one it was made
        in: its ids would name nothing there (every step fails), or worse, something else."""
        if not self.plan.tenant_id:
            return
        signed_in = self._patient(self.cloud.signed_in_tenant)
        if signed_in is not None and signed_in.lower() != self.plan.tenant_id.lower():
            raise EngineError(
                f"the plan {self.plan.name!r} was made in tenant {self.plan.tenant_id}, but "
                f"the operator is signed in to tenant {signed_in}: sign in to the plan's "
                f"tenant (AZURE_TENANT_ID, az login --tenant {self.plan.tenant_id})")

    def rights_needed(self, options: ApplyOptions) -> list[Need]:
        """Every permission the steps `apply` would run need, with the settings reads of the
        drift check before each app's stages. A held stage will not run (it waits), so what
        it would need is not asked for."""
        apps = {a.name: a for a in self.targets(options.apps)}
        needs: list[Need] = []
        checked: set[str] = set()  # apps whose drift-check read is counted
        for name, stage, step in self.preview(options):
            if _stage(apps[name], stage).held:
                continue
            if name not in checked:
                checked.add(name)
                needs += drift_check_needs(apps[name], stage)
            needs += step_needs(name, stage, step)
        return needs

    def check_rights(self, needs: Sequence[Need], what: str = "apply") -> Verdict:
        """Ask Azure what the operator may do where the steps act, and refuse (MissingRights)
        if it lacks any permission they need: before anything changes, not with a 403 at
        step N. What cannot be checked (a scope whose permissions cannot be read, a user's
        Graph token) is said in a note and left to each step."""
        verdict = judge(needs, self._rights.read(needs))
        if verdict.missing:
            raise MissingRights(what, verdict.missing)
        for line in unchecked_lines(verdict):
            if line not in self._said:  # once per run: the CLI checks before its prompt
                self._said.add(line)
                self.events(EngineEvent("note", what, f"{line}; each step is still "
                                                      "authorized by Azure as it runs"))
        return verdict

    def _drifted(self, app: AppPlan) -> bool:
        """Whether the app's settings changed since the plan was made (names, values,
        stickiness), by the plan's salted fingerprint."""
        site = app.site_id
        settings = self.cloud.app_settings(site)
        strings = self.cloud.connection_strings(site)
        sticky, sticky_strings = self.cloud.slot_config_names(site)
        now = settings_fingerprint(SiteSettings(
            app_settings=settings,
            connection_strings={k: ConnectionStringValue(t, v) for k, (t, v) in strings.items()},
            sticky_app_settings=sticky, sticky_connection_strings=sticky_strings),
            bytes.fromhex(self.plan.settings_salt))
        return now != app.settings_fingerprint

    def _refusal(self, app: AppPlan, stage: Stage, options: ApplyOptions,
                 last: dict[str, JournalEntry]) -> tuple[Outcome, str] | None:
        earlier = [s for s in STAGES[:STAGES.index(stage)]
                   if not self._stage_done(app, s, last)]
        if earlier:
            return "refused", (f"{app.name}: stage {stage.value} needs {earlier[0].value} done "
                               f"first (apply --stage {earlier[0].value})")
        plan_stage = _stage(app, stage)
        if plan_stage.held:
            return "waiting", f"{app.name}: {stage.value} is held: {plan_stage.held[0]}"
        if stage is Stage.REVOKE:
            for step in plan_stage.steps:
                if isinstance(step.params, RemovePasswordCredential):
                    for other in step.params.also_used_by:
                        other_app = self._apps.get(other)
                        if other_app is None or not self._stage_done(other_app, Stage.SWAP,
                                                                     last):
                            return "waiting", (f"{app.name}: revoke waits until {other}, which "
                                               "holds the same credential, is swapped too")
            gate = self._sign_in_gate(app, plan_stage, options, last)
            if gate is not None:
                return gate
            swapped = self._done_at(app, Stage.SWAP, last)
            if swapped is not None and self.now() - swapped < options.soak:
                left = options.soak - (self.now() - swapped)
                return "waiting", (f"{app.name}: revoke waits for the soak period "
                                   f"({_duration(options.soak)} after the swap): "
                                   f"{_duration(left)} left (--soak to change it)")
        if stage is not Stage.IDENTITY:
            stale = self._patient(lambda: self._stale_identity(app))
            if stale is not None:
                return "refused", stale
        if stage in (Stage.IDENTITY, Stage.GRANT, Stage.SWAP) and not self._stage_touched(
                app, Stage.SWAP, last) and self._patient(lambda: self._drifted(app)):
            return "refused", (f"{app.name}: its settings changed since the plan was made "
                               "(fingerprint mismatch); make a new plan")
        return None

    def _sign_in_gate(self, app: AppPlan, stage: StagePlan, options: ApplyOptions,
                      last: dict[str, JournalEntry]) -> tuple[Outcome, str] | None:
        """The revoke's evidence: nothing may have signed in with the credential since the last
        app holding it was swapped, or not for a soak period (plus the logs' ingestion delay)
        since; a sign-in seen refuses the revoke at once, naming its address, time and
        resource. Read afresh each time; unreadable logs hold the revoke (the plan was made
        with them, so it does not go ahead blind), and with none seen it waits until the logs
        cover the time since the swap. Without evidence in the plan the soak timer alone
        decides, as the plan says."""
        evidence = self.plan.sign_ins
        removals = [s.params for s in stage.steps
                    if isinstance(s.params, RemovePasswordCredential)]
        if evidence is None or not evidence.read or not removals:
            return None
        holders = [app] + [a for p in removals for n in p.also_used_by
                           if (a := self._apps.get(n)) is not None]
        swaps = [t for h in holders if (t := self._done_at(h, Stage.SWAP, last)) is not None]
        if not swaps:
            return None  # swapped before this journal knew (the order check says)
        swapped, now = max(swaps), self.now()
        try:
            records = self._patient(lambda: self.cloud.sign_ins(
                {p.app_id for p in removals}, swapped, workspace=evidence.workspace))
        except CloudError as exc:
            return "waiting", (f"{app.name}: revoke waits: the sign-in logs cannot be read "
                               f"now ({exc}), and the plan was made with them")
        for p in removals:
            # After the swap was done and verified: the app signs in as its identity by then.
            after = [r for r in records if r.succeeded and r.app_id == p.app_id.lower()
                     and r.key_id == p.key_id.lower() and r.created > swapped]
            if not after:
                continue
            newest = max(after, key=lambda r: r.created)
            if now - newest.created >= options.soak + options.sign_in_delay:
                continue
            whose = [h.name for h in holders if newest.ip in self._outbound(h)]
            source = (f"an address of {', '.join(whose)}" if whose
                      else "an address none of the apps holding it calls out from")
            return "refused", (
                f"{app.name}: revoke refused: credential {p.key_id} ({p.hint or 'no hint'}…) "
                f"signed in {len(after)} time{'s' if len(after) != 1 else ''} since the swap, "
                f"last at {newest.created.isoformat(timespec='seconds')} from {newest.ip} "
                f"({source}) to {newest.resource_name}: something still uses it, and removing "
                "it would break that; nothing was removed. Stop that use; the revoke goes "
                f"ahead once nothing has signed in with it for {_duration(options.soak)} "
                "(--soak)")
        covered = swapped + options.sign_in_delay
        if now < covered:
            return "waiting", (
                f"{app.name}: revoke waits until the sign-in logs cover the time since the swap "
                f"(they arrive up to {_duration(options.sign_in_delay)} late): "
                f"{_duration(covered - now)} left (--sign-in-delay to change it)")
        return None

    def _outbound(self, app: AppPlan) -> tuple[str, ...]:
        """The app's outbound addresses as Azure gives them now (none when unreadable)."""
        try:
            return self.cloud.site(app.site_id).record.outbound_ips
        except CloudError:
            return ()

    def _stale_identity(self, app: AppPlan) -> str | None:
        """Why the user-assigned identity the identity stage gave the app no longer works, or
        None. Deleting one leaves the site's entry for it (with the old ids); one made again
        under the same name is another principal, which the site does not have until it is
        assigned again. Rights granted to it now would go to a principal the app cannot use."""
        for stage in app.stages:
            for step in stage.steps:
                p = step.params
                if not isinstance(p, AssignUserAssignedIdentity):
                    continue
                held = self.cloud.site(p.site_id).record.identity.held_principal(p.resource_id)
                if held is None:
                    return None  # not assigned (yet): the identity stage's steps say
                found = self.cloud.user_assigned_identity(p.resource_id)
                now = "no longer exists" if found is None else (
                    f"was re-created since it was assigned (principal {found.principal_id})"
                    if found.principal_id.lower() != held.lower() else None)
                if now is None:
                    return None
                return (f"{app.name}: the user-assigned identity {p.identity} {now}, but the "
                        f"app still holds the old one (principal {held}), which cannot sign "
                        f"in: roll the app back (`migrator rollback <plan> --app {app.name}`) "
                        "and apply again, which assigns the identity anew")
        return None

    # -- identity

    def _identity(self, app: AppPlan) -> IdentityFacts:
        cached = self._identity_cache.get(app.name)
        if cached is not None:
            return cached
        facts: IdentityFacts | None = None
        for stage in app.stages:
            for step in stage.steps:
                p = step.params
                if isinstance(p, EnableSystemIdentity):
                    facts = self._system_identity(app, p.site_id)
                elif isinstance(p, AssignUserAssignedIdentity):
                    found = self.cloud.user_assigned_identity(p.resource_id)
                    if found is None:
                        raise StepError(f"{app.name}: identity {p.identity} does not exist yet")
                    facts = IdentityFacts(found.principal_id, found.client_id, found.id,
                                          found.name)
        if facts is None:
            raise StepError(f"{app.name}: the plan names no identity")
        self._identity_cache[app.name] = facts
        return facts

    def _system_identity(self, app: AppPlan, site_id: str) -> IdentityFacts:
        site = self.cloud.site(site_id).record
        principal = site.identity.principal_id
        if not principal:
            raise StepError(f"{app.name}: has no system-assigned identity yet (stage identity)")
        record = self.cloud.service_principal_by_object_id(principal)
        if record is None:
            raise PrincipalNotReplicated("read the new identity in Graph", 404, "NotFound",
                                         f"{app.name}'s identity is not in Graph yet")
        return IdentityFacts(principal, record.app_id, site_id, record.display_name)

    def _twins(self, step: Step) -> list[tuple[str, str]]:
        """(app, step id) of the same step in the other apps that share it (one identity, one
        grant): the steps whose journal entries say whether it is still needed, and what was
        there before the plan."""
        out = []
        for other_name in step.shared_with:
            other = self._apps.get(other_name)
            if other is not None:
                out += [(other_name, s.id) for stage in other.stages for s in stage.steps
                        if s.params == step.params]
        return out

    def _shared_before(self, step: Step) -> dict[str, Any] | None:
        """For a step another app of the plan shares, the state before the *first* of them
        ran: what was there before the plan. A snapshot taken now would find the other app's
        identity or grant and call it pre-existing, so that rolling back the apps in plan
        order left both keeping it (the first "still needed by" the second, the second "had it
        before the plan"): an identity with rights no app uses."""
        for other_name, step_id in self._twins(step):
            for entry in self.journal.entries(self.plan.name, other_name):
                if entry.step_id == step_id and entry.state is StepState.STARTED:
                    return dict(entry.before)  # entries come oldest first
        return None

    def _still_needed(self, app: AppPlan) -> Callable[[Step], list[str]]:
        def needed(step: Step) -> list[str]:
            last = self._last()
            return sorted({other_name for other_name, step_id in self._twins(step)
                           if (e := last.get(step_id)) is not None
                           and e.state is not StepState.UNDONE})
        return needed

    def _context(self, app: AppPlan, options: ApplyOptions, notes: list[str]) -> StepContext:
        return StepContext(
            plan=self.plan, app=app, cloud=self.cloud, stash=self.stash,
            identity=lambda: self._identity_with_retry(app, options),
            still_needed=self._still_needed(app), confirmed_sql=options.confirm_sql,
            replication_timeout=options.replication_timeout,
            health_timeout=options.health_timeout, sleep=self.sleep, notes=notes,
            rbac_propagation=options.rbac_propagation,
            rights_granted_at=lambda: self._rights_granted_at(app),
            say=lambda text: self.events(EngineEvent("note", app.name, text)))

    def _rights_granted_at(self, app: AppPlan) -> datetime | None:
        """When the app's grant stage last made a role assignment the identity did not hold
        before (from the journal, so a resumed run knows it too); None if it made none."""
        kinds = {step.id: step.params.kind for stage in app.stages for step in stage.steps}
        made: set[str] = set()
        latest: datetime | None = None
        for entry in self.journal.entries(self.plan.name, owner=app.name):
            if entry.stage != Stage.GRANT.value or kinds.get(entry.step_id) != "role-assignment":
                continue
            if entry.state is StepState.STARTED and not entry.before.get("existed"):
                made.add(entry.step_id)
            elif entry.state is StepState.DONE and entry.step_id in made:
                latest = entry.at if latest is None else max(latest, entry.at)
        return latest

    def _identity_with_retry(self, app: AppPlan, options: ApplyOptions) -> IdentityFacts:
        return while_replicating(lambda: self._identity(app),
                                 timeout=options.replication_timeout, sleep=self.sleep,
                                 max_wait=10)

    # -- running steps

    def _record(self, app: AppPlan | str, stage: Stage, step: Step, state: StepState, *,
                before: dict[str, Any] | None = None, result: dict[str, Any] | None = None,
                message: str = "") -> None:
        owner = app if isinstance(app, str) else app.name
        self.journal.record(plan=self.plan.name, plan_digest=self.plan.digest, owner=owner,
                            stage=stage.value, step_id=step.id, state=state, before=before,
                            result=result, message=message)

    def _patient(self, call: Callable[[], T]) -> T:
        """A call retried while Azure answers with transient errors (429, 5xx, a dropped
        connection) beyond the SDK's own retries: an unattended migration must not stop for
        a throttled minute. Bounded: the error surfaces after TRANSIENT_ATTEMPTS."""
        for attempt in Retrying(
                retry=retry_if_exception(
                    lambda e: isinstance(e, (AzureCallError, SignInError)) and e.transient
                    and not isinstance(e, PrincipalNotReplicated)),
                stop=stop_after_attempt(TRANSIENT_ATTEMPTS),
                wait=wait_exponential(multiplier=0.5, max=20), sleep=self.sleep, reraise=True):
            with attempt:
                return call()
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_step(self, ctx: StepContext, stage: Stage, step: Step) -> None:
        app = ctx.owner or ctx.app.name
        handler = HANDLERS[step.params.kind]
        last = self._last().get(step.id)
        if last is not None and last.state in _DONE:
            return
        step = shown(step, ctx.app, ctx.health_timeout, ctx.rbac_propagation)
        self.activity = ("apply", app, step.title)
        self.events(EngineEvent("step", app, step.title))
        if last is not None and last.state in (StepState.STARTED, StepState.FAILED):
            before = self._started_before(app, step)
            if step.params.kind != "sql-user" and self._patient(
                    lambda: handler.verify(ctx, step, before)):
                self._record(app, stage, step, StepState.DONE, result={"resumed": True})
                self.events(EngineEvent("step-done", app, step.title))
                return
        else:
            shared = self._shared_before(step)
            before = shared if shared is not None else self._patient(
                lambda: handler.snapshot(ctx, step))
            self._record(app, stage, step, StepState.STARTED, before=before)
        try:
            result = self._patient(lambda: handler.do(ctx, step, before))
            if not self._patient(lambda: handler.verify(ctx, step, before)):
                raise StepError(f"{app}: {step.title}: not in place when read back")
        except _FAILURES as exc:
            self._record(app, stage, step, StepState.FAILED, message=_one_line(exc))
            self.events(EngineEvent("step-failed", app, _one_line(exc)))
            raise
        state = StepState.CONFIRMED if step.params.kind == "sql-user" else StepState.DONE
        self._record(app, stage, step, state, result=result)
        self.events(EngineEvent("step-done", app, step.title))

    def _undo_step(self, ctx: StepContext, stage: Stage, step: Step,
                   last: dict[str, JournalEntry], failures: list[str]) -> bool:
        """Undo one step if the journal says it may have happened; False (with the reason in
        `failures`) when the undo failed."""
        entry = last.get(step.id)
        if entry is None or entry.state is StepState.UNDONE:
            return True
        handler = HANDLERS[step.params.kind]
        owner = ctx.owner or ctx.app.name
        before = self._started_before(owner, step)
        self.activity = ("rollback", owner, step.title)
        self.events(EngineEvent("undo", owner, step.title))
        self._record(owner, stage, step, StepState.UNDO_STARTED)
        try:
            done = _done_result(self.journal.entries(self.plan.name, owner), step)
            result = dict(self._patient(lambda: handler.undo(ctx, step, before, done)))
        except _FAILURES as exc:
            self._record(owner, stage, step, StepState.UNDO_FAILED, message=_one_line(exc))
            self.events(EngineEvent("step-failed", owner, _one_line(exc)))
            failures.append(f"undoing {step.title!r} failed: {_one_line(exc)}")
            return False
        self._record(owner, stage, step, StepState.UNDONE, result=result)
        self.events(EngineEvent("undone", owner, step.title))
        return True

    # -- public operations

    def apply(self, options: ApplyOptions) -> list[AppOutcome]:
        """Run the chosen stages of the chosen apps, in order; one outcome per app.

        Apps that share a credential wait for each other (a revoke waits until every app
        holding the credential is swapped), so apps left waiting are tried again while the
        previous pass moved something forward."""
        targets = self.targets(options.apps)
        self.check_tenant()
        self.stash.require()  # a stash written with another key is refused before any step
        self.check_rights(self.rights_needed(options))
        outcomes = {app.name: self._apply_app(app, options) for app in targets}
        self._apply_again(targets, outcomes, options)
        self.activity = None  # left set when interrupted: the CLI says where
        return [outcomes[app.name] for app in targets]

    def _apply_again(self, targets: list[AppPlan], outcomes: dict[str, AppOutcome],
                     options: ApplyOptions) -> None:
        for _ in range(len(targets)):
            waiting = [a for a in targets if outcomes[a.name].outcome == "waiting"
                       and outcomes[a.name].script is None]
            moved = False
            for app in waiting:
                again = self._apply_app(app, options)
                moved |= again.stages_done != outcomes[app.name].stages_done
                outcomes[app.name] = again
            if not moved:
                break

    def _apply_app(self, app: AppPlan, options: ApplyOptions) -> AppOutcome:
        if app.status is not AppStatus.MIGRATABLE:
            reasons = "; ".join(b.message for b in app.blocked) or app.status.value
            return AppOutcome(app.name, "refused", (), f"{app.name} is {app.status.value}: "
                              f"{reasons}")
        notes: list[str] = []
        self._identity_cache.pop(app.name, None)  # a rollback may have replaced it
        ctx = self._context(app, options, notes)
        try:
            for stage in STAGES:
                last = self._last()
                if stage not in options.stages or self._stage_done(app, stage, last):
                    continue
                refusal = self._refusal(app, stage, options, last)
                if refusal is not None:
                    return self._outcome(app, refusal[0], refusal[1], notes)
                self.events(EngineEvent("stage", app.name, stage.value))
                if stage is Stage.GRANT:  # what the plan's evidence says the grant misses
                    notes += [line for use in evidence.for_app(self.plan.sign_ins, app)
                              if (line := evidence.uncovered_line(use)) is not None]
                try:
                    for step in _stage(app, stage).steps:
                        self._run_step(ctx, stage, step)
                except NeedsConfirmation as exc:
                    return self._outcome(app, "waiting", str(exc), notes, script=exc.script)
                except _FAILURES as exc:
                    if stage is Stage.SWAP:
                        failures: list[str] = []
                        self._undo_stage(ctx, stage, failures)
                        self._prune_stash(app)
                        extra = ("; restoring also failed: " + "; ".join(failures)
                                 if failures else "")
                        return self._outcome(
                            app, "rolled-back" if not failures else "failed",
                            f"{_one_line(exc)}; the swap was rolled back: the app's settings "
                            f"are as they were{extra}", notes)
                    return self._outcome(app, "failed", f"{_one_line(exc)} (apply again to "
                                         "retry, or rollback)", notes)
        except _FAILURES as exc:  # a read in a check failed: nothing was written for it
            return self._outcome(app, "failed", _one_line(exc), notes)
        return self._outcome(app, "done", "", notes)

    def _outcome(self, app: AppPlan, outcome: Outcome, message: str, notes: list[str], *,
                 script: str | None = None) -> AppOutcome:
        last = self._last()
        done = tuple(s.value for s in STAGES if self._stage_done(app, s, last))
        for note in notes:
            self.events(EngineEvent("note", app.name, note))
        calllog.event("outcome", "info" if outcome != "failed" else "warning",
                      plan=self.plan.name, app=app.name, outcome=outcome, stages_done=done,
                      message=message)
        return AppOutcome(app.name, outcome, done, message, script, tuple(notes))

    def _undo_stage(self, ctx: StepContext, stage: Stage, failures: list[str]) -> bool:
        """Undo a stage's steps, latest first, stopping at the first undo that fails: the
        steps before it stay in place (undoing a grant under a swap that could not be undone
        would leave the app with neither its secret nor its identity's rights)."""
        last = self._last()
        return all(self._undo_step(ctx, stage, step, last, failures)
                   for step in reversed(_stage(ctx.app, stage).steps))

    def rollback(self, name: str, to_stage: Stage | None = None,
                 options: ApplyOptions | None = None) -> AppOutcome:
        """Undo the app's done steps, latest first, down to (not including) `to_stage`'s
        successors: `to_stage=identity` keeps the identity; None undoes everything.

        Before it changes anything it checks the tenant and that the stash holds, readable
        with the key at hand, every entry the undos will need; the first undo that fails stops
        the rollback there. The outcome comes from the app's health check, as apply's does."""
        app = self.app(name)
        options = options or ApplyOptions()
        keep = STAGES.index(to_stage) + 1 if to_stage is not None else 0
        self.check_tenant()
        stages = [s for s in reversed(STAGES[keep:]) if self._stage_touched(app, s, self._last())]
        if not stages:
            return self._outcome(app, "rolled-back", "nothing to roll back: the journal holds "
                                 f"no step of {app.name} in the stages chosen", [])
        if any(s in (Stage.SWAP, Stage.REVOKE) for s in stages):
            self.stash.require(self._stash_needed(app, stages))
        last, needed = self._last(), self._still_needed(app)

        def undo_acts(step: Step) -> bool:
            """False when the undo will keep what the step found: the identity, role or app
            role existed before the plan, or another app still needs it."""
            entry = last.get(step.id)
            return (entry is not None and entry.state is not StepState.UNDONE
                    and not needed(step)
                    and self._started_before(app.name, step).get("existed") is not True)

        self.check_rights([  # a rollback that stops half-way for a 403 is worse than none
            n for stage in stages for step in _stage(app, stage).steps if undo_acts(step)
            for n in step_needs(app.name, stage, step, undo=True)], "rollback")
        notes: list[str] = []
        self._identity_cache.pop(app.name, None)
        ctx = self._context(app, options, notes)
        failures: list[str] = []
        for stage in stages:
            self.events(EngineEvent("stage", app.name, f"rollback {stage.value}"))
            if not self._undo_stage(ctx, stage, failures):
                break
        self.activity = None
        self._prune_stash(app)
        if failures:
            return self._outcome(app, "failed", f"{failures[0]}; the rollback stopped there, so "
                                 "the earlier stages are still in place (fix the cause and roll "
                                 "back again)", notes)
        unhealthy = self._health_after_rollback(ctx, app)
        if unhealthy:
            return self._outcome(app, "failed", f"rolled back, but {unhealthy}", notes)
        return self._outcome(app, "rolled-back", "", notes)

    def _stash_needed(self, app: AppPlan, stages: Sequence[Stage]) -> list[str]:
        """The stash entries the undos of these stages will read: the settings each swap
        step saved before it wrote."""
        last = self._last()
        needed = []
        for stage in stages:
            for step in _stage(app, stage).steps:
                entry = last.get(step.id)
                if entry is None or entry.state is StepState.UNDONE:
                    continue
                key = self._started_before(app.name, step).get("stash")
                if isinstance(key, str):
                    needed.append(key)
        return needed

    def _prune_stash(self, app: AppPlan) -> None:
        """Forget the stash entries nothing can need any more: the saved settings of this
        app's undone swap steps, and a minted secret once every app holding the credential it
        replaced has its swap undone (the secret is then in their settings, and only there)."""
        last = self._last()

        def swap_undone(other: AppPlan) -> bool:
            return all((e := last.get(s.id)) is None or e.state is StepState.UNDONE
                       for s in _stage(other, Stage.SWAP).steps)

        for step in _stage(app, Stage.SWAP).steps:
            entry = last.get(step.id)
            if entry is not None and entry.state is StepState.UNDONE and isinstance(
                    step.params, (UpdateAppSettings, UpdateConnectionStrings)):
                key = self._started_before(app.name, step).get("stash")
                if isinstance(key, str):
                    self.stash.delete(key)
        for cred in app.credentials:
            holders = [a for a in self.plan.apps if any(
                c.app_id.lower() == cred.app_id.lower() and c.key_id == cred.key_id
                for c in a.credentials)]
            if all(swap_undone(h) for h in holders):
                self.stash.delete(minted_stash_key(self.plan.name, cred.app_id, cred.key_id))

    def _health_after_rollback(self, ctx: StepContext, app: AppPlan) -> str | None:
        """Why the app is not healthy after a rollback (None when it is): a rollback is done
        when the app works again, not when the steps ran."""
        check = next((s for s in _stage(app, Stage.SWAP).steps
                      if isinstance(s.params, VerifyHealth)), None)
        if check is None:
            return None
        # Back on its old principal, the app does not wait for the identity's new rights.
        ctx = dataclasses.replace(ctx, rbac_propagation=0.0)
        try:
            self._patient(lambda: HANDLERS[check.params.kind].do(ctx, check, {}))
        except _FAILURES as exc:
            return _one_line(exc)
        return None

    # -- a principal's cleanup: its own rights, once nothing uses it

    def _principal(self, name: str) -> PrincipalPlan:
        key = name.removeprefix("principal/").lower()
        for p in self.plan.principals:
            if key in (p.app_id.lower(), p.name.lower()):
                return p
        names = ", ".join(p.name for p in self.plan.principals) or "none"
        raise EngineError(f"unknown principal {name!r}; the plan's principals are: {names}")

    def _cleanup_context(self, principal: PrincipalPlan, options: ApplyOptions,
                         notes: list[str]) -> StepContext:
        host = next((self._apps[u] for u in principal.used_by if u in self._apps),
                    self.plan.apps[0])
        ctx = self._context(host, options, notes)
        ctx.owner = f"principal/{principal.app_id}"
        return ctx

    def cleanup(self, options: ApplyOptions) -> list[AppOutcome]:
        """Remove the rights of every principal nothing uses any more: each app that used it
        has been revoked, and the plan holds nothing back (other valid credentials, blocked
        users). Optional and separate from `apply`: the operator asks for it."""
        outcomes = []
        last = self._last()
        self.check_tenant()
        for principal in self.plan.principals:
            owner = f"principal/{principal.app_id}"
            if not principal.cleanup.steps:
                continue
            if principal.cleanup.held:
                outcomes.append(AppOutcome(owner, "waiting", (), f"{principal.name}: "
                                           f"cleanup is held: {principal.cleanup.held[0]}"))
                continue
            pending = [u for u in principal.used_by if u not in self._apps
                       or not self._stage_done(self._apps[u], Stage.REVOKE, last)]
            if pending:
                outcomes.append(AppOutcome(owner, "waiting", (), f"{principal.name}: cleanup "
                                           f"waits until {', '.join(pending)} is revoked"))
                continue
            try:
                self.check_rights([n for step in principal.cleanup.steps
                                   for n in step_needs(owner, Stage.CLEANUP, step)], "cleanup")
            except MissingRights as exc:
                outcomes.append(AppOutcome(owner, "refused", (), str(exc)))
                continue
            notes: list[str] = []
            ctx = self._cleanup_context(principal, options, notes)
            try:
                for step in principal.cleanup.steps:
                    self._run_step(ctx, Stage.CLEANUP, step)
            except _FAILURES as exc:
                outcomes.append(AppOutcome(owner, "failed", (), _one_line(exc), None,
                                           tuple(notes)))
                continue
            outcomes.append(AppOutcome(owner, "done", ("cleanup",), "", None, tuple(notes)))
        return outcomes

    def rollback_cleanup(self, name: str) -> AppOutcome:
        """Give a principal back the rights its cleanup removed."""
        principal = self._principal(name)
        notes: list[str] = []
        ctx = self._cleanup_context(principal, ApplyOptions(), notes)
        failures: list[str] = []
        last = self._last()
        self.check_tenant()
        self.check_rights([n for step in principal.cleanup.steps if step.id in last
                           for n in step_needs(f"principal/{principal.app_id}", Stage.CLEANUP,
                                               step, undo=True)], "rollback")
        for step in reversed(principal.cleanup.steps):
            if not self._undo_step(ctx, Stage.CLEANUP, step, last, failures):
                break
        self.activity = None
        owner = f"principal/{principal.app_id}"
        if failures:
            return AppOutcome(owner, "failed", (), "; ".join(failures), None, tuple(notes))
        return AppOutcome(owner, "rolled-back", (), "", None, tuple(notes))

    def status(self) -> list[AppProgress]:
        last = self._last()
        return [self._progress(app, last) for app in self.plan.apps]

    def old_secret_use(self, now: datetime | None = None) -> dict[str, str]:
        """Per migratable app: the last sign-in with the credential its revoke removes, over
        the plan's lookback window, as one line; empty when the plan has no evidence."""
        evidence = self.plan.sign_ins
        if evidence is None or not evidence.read:
            return {}
        removals = {a.name: [s.params for st in a.stages for s in st.steps
                             if isinstance(s.params, RemovePasswordCredential)]
                    for a in self.plan.apps if a.status is AppStatus.MIGRATABLE}
        wanted = {p.app_id for ps in removals.values() for p in ps}
        if not wanted:
            return {}
        since = (now or self.now()) - timedelta(days=30)
        try:
            records = self._patient(lambda: self.cloud.sign_ins(
                wanted, since, workspace=evidence.workspace))
        except CloudError as exc:
            return dict.fromkeys(removals, f"sign-in logs unreadable: {exc}")
        out = {}
        for name, params in removals.items():
            keys = {(p.app_id.lower(), p.key_id.lower()) for p in params}
            used = [r for r in records if r.succeeded and (r.app_id, r.key_id) in keys]
            newest = max(used, key=lambda r: r.created) if used else None
            out[name] = ("no sign-in in 30 days" if newest is None else
                         f"{newest.created:%Y-%m-%d %H:%M} from {newest.ip} to "
                         f"{newest.resource_name}")
        return out

    def _progress(self, app: AppPlan, last: dict[str, JournalEntry]) -> AppProgress:
        if app.status is not AppStatus.MIGRATABLE:
            return AppProgress(app.name, app.status.value, "-", (), "nothing: " + (
                app.blocked[0].message if app.blocked else "no principal secret"))
        stages = []
        reached = "-"
        for stage in STAGES:
            entries = [last.get(s.id) for s in _stage(app, stage).steps]
            known = [e for e in entries if e is not None]
            if known and all(e.state in _DONE for e in entries if e is not None) and \
                    len(known) == len(entries):
                stages.append(StageProgress(stage.value, "done", max(e.at for e in known), ""))
                reached = stage.value
            elif any(e.state in (StepState.FAILED, StepState.UNDO_FAILED) for e in known):
                failed = next(e for e in known
                              if e.state in (StepState.FAILED, StepState.UNDO_FAILED))
                stages.append(StageProgress(stage.value, "failed", failed.at, failed.message))
            elif known and all(e.state is StepState.UNDONE for e in known):
                stages.append(StageProgress(stage.value, "rolled-back",
                                            max(e.at for e in known), ""))
            elif known:
                stages.append(StageProgress(stage.value, "partial", max(e.at for e in known),
                                            "started; apply again to finish, or rollback"))
            else:
                held = _stage(app, stage).held
                stages.append(StageProgress(stage.value, "pending", None,
                                            f"held: {held[0]}" if held else ""))
        pending = next((s for s in stages if s.state != "done"), None)
        next_step = ("nothing: migrated" if pending is None else
                     f"apply --app {app.name} --stage {pending.stage}")
        return AppProgress(app.name, app.status.value, reached, tuple(stages), next_step)


def shown(step: Step, app: AppPlan, health_timeout: float | None,
          rbac_propagation: float = 0.0) -> Step:
    """The step as this run will carry it out: a health check's title says the timeout the
    operator chose (`--health-timeout`), not the plan's, and how long it may wait for new
    role assignments to take effect (`--rbac-propagation`)."""
    p = step.params
    if not isinstance(p, VerifyHealth):
        return step
    timeout = health_timeout if health_timeout is not None else p.timeout_seconds
    grants_roles = any(isinstance(s.params, RoleAssignment)
                       for stage in app.stages if stage.stage is Stage.GRANT
                       for s in stage.steps)
    if grants_roles and rbac_propagation > timeout:
        title = (f"{verify_health_title(app.name, timeout)}, but not before its new role "
                 f"assignments are {rbac_propagation:g} s old (they take that long to take "
                 "effect)")
        return step.model_copy(update={"title": title})
    if timeout != p.timeout_seconds:
        return step.model_copy(update={"title": verify_health_title(app.name, timeout)})
    return step


def _stage(app: AppPlan, stage: Stage) -> StagePlan:
    for s in app.stages:
        if s.stage is stage:
            return s
    return StagePlan(stage=stage)


def _done_result(entries: list[JournalEntry], step: Step) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for e in entries:
        if e.step_id == step.id and e.state in _DONE:
            result = dict(e.result)
    return result


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _duration(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {seconds % 60} s"


__all__ = ["DEFAULT_SOAK", "AppOutcome", "AppProgress", "ApplyOptions", "Engine", "EngineError",
           "EngineEvent", "JournalError", "StageProgress"]
