"""What a plan report says, decided once for every format.

The Markdown, HTML, terminal and JSON renderers only lay out what these pure helpers return, so
the four formats cannot drift apart on the facts: the same summary figures, the same wording
for a blocked reason, the same list of what cannot be undone, the same held stages.

Nothing here reads a setting's value: a plan holds none. The views carry names, ids, Entra's
3-character `hint`, placeholders such as `{identity.client_id}` and the fixed words a plan may
set (`managedidentity`), all of which the plan itself already shows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from migrator.plan import evidence
from migrator.plan.model import (
    BLOCKED_TITLES,
    STAGES,
    AppPlan,
    AppStatus,
    BlockedCode,
    Decision,
    Gap,
    Plan,
    RemovePasswordCredential,
    SqlUser,
    Stage,
    StagePlan,
    Step,
    UpdateAppSettings,
    UpdateConnectionStrings,
    UpdateSlotConfig,
)

DRY_RUN_NOTE = ("Dry run: this report describes a plan. Nothing has been changed in Azure; "
                "the apply command carries the plan out, stage by stage, once approved.")
IRREVERSIBLE_NOTE = (
    "Removing a password credential cannot be undone. The secret is deleted in Entra ID; the "
    "step's undo mints a new secret on the application and swaps it into the app's settings, "
    "it does not bring the old one back. Anything outside this plan that still holds the old "
    "secret stops signing in.")
SECRETS_NOTE = ("No secret value appears in a plan or in this report: only setting names, ids "
                "and Entra's hint (a secret's first three characters, which Entra shows "
                "anyway).")

_STAGE_TITLES: dict[Stage, str] = {
    Stage.IDENTITY: "Identity: give the app a managed identity",
    Stage.GRANT: "Grant: copy the principal's rights to the identity",
    Stage.SWAP: "Swap: point the app's settings at the identity",
    Stage.REVOKE: "Revoke: remove the old secret",
    Stage.CLEANUP: "Cleanup (optional): remove the principal's own rights",
}
_STATUS_LABELS: dict[AppStatus, str] = {
    AppStatus.MIGRATABLE: "migratable",
    AppStatus.BLOCKED: "blocked",
    AppStatus.ADVISORY: "advisory (shared keys only)",
}
_SOURCE_LABELS = {"app_setting": "app setting", "connection_string": "connection string"}


# --- small labels ------------------------------------------------------------------------------


def blocked_title(code: BlockedCode | str) -> str:
    """The human title of a blocked reason; an unknown code (a newer plan) reads as itself."""
    try:
        return BLOCKED_TITLES[BlockedCode(code)]
    except ValueError:
        return str(code)


def status_label(status: AppStatus) -> str:
    """"advisory" alone would not tell a reader that nothing is migrated there."""
    return _STATUS_LABELS[status]


def stage_title(stage: Stage) -> str:
    """A stage's name with what it is for, since reviewers do not know the executor's words."""
    return _STAGE_TITLES[stage]


def stage_number(stage: Stage) -> int:
    """Stages run in this order for each app: 1 identity … 4 revoke (a principal's cleanup,
    after every app's revoke, is 5)."""
    return STAGES.index(stage) + 1 if stage in STAGES else len(STAGES) + 1


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 app", "2 apps": counts read as sentences in every format."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


# --- the summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SummaryRow:
    """One figure of the summary, with the line that says what it counts."""

    key: str
    label: str
    value: int
    note: str = ""


def summary_rows(plan: Plan) -> tuple[SummaryRow, ...]:
    """The figures a reviewer reads first, in the order they are read."""
    s = plan.summary
    system = sum(1 for a in plan.apps
                 if a.identity is not None and a.identity.type == "system-assigned")
    distinct = len(irreversible_changes(plan))
    accepted = sum(1 for g in plan.gaps if g.accepted)
    return (
        SummaryRow("apps_found", "Apps found", s.apps_found,
                   "sites and slots holding a credential"),
        SummaryRow("migratable", "Migratable", s.migratable, "planned in four stages"),
        SummaryRow("blocked", "Blocked", s.blocked, "not migrated: see the reasons"),
        SummaryRow("advisory", "Advisory", s.advisory,
                   "shared keys only: a passwordless candidate, nothing to migrate"),
        SummaryRow("secrets_to_remove", "Secrets to remove", s.secrets_to_remove,
                   "password credentials deleted in Entra ID: irreversible"),
        SummaryRow("rights_to_grant", "Rights to grant", s.rights_to_grant,
                   "role assignments, access policies, app roles and SQL users"),
        SummaryRow("shared_principals", "Shared principals", s.shared_principals,
                   "principals used by more than one app"),
        SummaryRow("identities_to_create", "Identities to create", s.identities_to_create,
                   "user-assigned, one per group of apps sharing a principal"),
        SummaryRow("system_identities", "System-assigned identities to enable", system,
                   "one per app whose principal no other app uses"),
        SummaryRow("irreversible_steps", "Irreversible steps", s.irreversible_steps,
                   f"{plural(distinct, 'distinct change')}: a credential shared by several "
                   "apps is one change" if distinct != s.irreversible_steps else
                   "cannot be undone, only compensated"),
        SummaryRow("gaps", "Scan gaps", len(plan.gaps),
                   "the scan read everything in scope" if not plan.gaps else
                   f"{accepted} accepted by the operator, {len(plan.gaps) - accepted} not"),
    )


@dataclass(frozen=True)
class ReasonLine:
    """How many apps one reason blocks, and which."""

    code: str
    title: str
    count: int
    apps: tuple[str, ...]


def blocked_by_reason(plan: Plan) -> tuple[ReasonLine, ...]:
    """Blocked apps grouped by reason. An app blocked for two reasons counts under both."""
    apps: dict[str, list[str]] = {}
    for app in plan.apps:
        for code in dict.fromkeys(b.code.value for b in app.blocked):
            apps.setdefault(code, []).append(app.name)
    codes = list(plan.summary.blocked_by_reason) + [c for c in apps
                                                    if c not in plan.summary.blocked_by_reason]
    return tuple(ReasonLine(code=code, title=blocked_title(code),
                            count=plan.summary.blocked_by_reason.get(code, len(apps.get(code, []))),
                            apps=tuple(apps.get(code, ())))
                 for code in codes)


# --- steps, stages, apps -----------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    id: str
    title: str
    kind: str
    undo: str
    undo_action: str
    reversible: bool
    shared_with: tuple[str, ...]
    details: tuple[str, ...]
    script: str | None = None  # T-SQL an operator runs (SQL user steps)
    undo_script: str | None = None


def step_details(step: Step) -> tuple[str, ...]:
    """What a step's title leaves out: each setting edit, each connection-string rewrite."""
    params = step.params
    if isinstance(params, UpdateAppSettings):
        return tuple(
            (f"set {e.name} = {e.value}" if e.action == "set" and e.value is not None else
             f"{e.action} {e.name}") + (" (slot setting)" if e.sticky else "")
            for e in params.edits)
    if isinstance(params, UpdateConnectionStrings):
        return tuple(
            f"{e.name} ({_SOURCE_LABELS[e.source]}): Authentication=Active Directory Managed "
            "Identity" + (f"; User Id={e.client_id}" if e.client_id else "")
            for e in params.edits)
    if isinstance(params, UpdateSlotConfig):
        return tuple(f"slot setting {name}" for name in params.add_app_setting_names)
    if isinstance(params, RemovePasswordCredential):
        lines = [f"credential {params.key_id}"
                 + (f", hint {params.hint}" if params.hint else "")
                 + f", application object {params.application_object_id}"]
        if params.also_used_by:
            lines.append("also held by " + ", ".join(params.also_used_by)
                         + ": each is swapped before the credential goes")
        return tuple(lines)
    if isinstance(params, SqlUser):
        return (f"run by an operator on {params.server}, database {params.database}, "
                "and confirmed",)
    return ()


def undo_text(step: Step) -> str:
    """The undo's description without a leading "irreversible:", which every format already
    says with its own marker from `Undo.reversible`."""
    description = step.undo.description
    if not step.undo.reversible and description.lower().startswith("irreversible:"):
        description = description[len("irreversible:"):].strip()
    return description


def step_view(step: Step) -> StepView:
    """A step as every format shows it: title, details, id, and an undo with its caveat."""
    script = step.params.script if isinstance(step.params, SqlUser) else None
    undo_script = step.params.undo_script if isinstance(step.params, SqlUser) else None
    return StepView(id=step.id, title=step.title, kind=step.params.kind,
                    undo=undo_text(step), undo_action=step.undo.action,
                    reversible=step.undo.reversible, shared_with=step.shared_with,
                    details=step_details(step), script=script, undo_script=undo_script)


@dataclass(frozen=True)
class StageView:
    stage: str
    number: int
    title: str
    held: tuple[str, ...]
    steps: tuple[StepView, ...]


def stage_view(stage: StagePlan) -> StageView:
    """A stage with its number and human title, its holds and its steps."""
    return StageView(stage=stage.stage.value, number=stage_number(stage.stage),
                     title=stage_title(stage.stage), held=stage.held,
                     steps=tuple(step_view(s) for s in stage.steps))


@dataclass(frozen=True)
class BlockedLine:
    code: str
    title: str
    message: str


@dataclass(frozen=True)
class FindingLine:
    """A credential the scan found, by setting name."""

    setting: str
    where: str
    kind: str
    rule: str
    principal: str | None
    hint: str | None
    key_vault: str | None
    note: str


@dataclass(frozen=True)
class CredentialLine:
    principal: str
    key_id: str
    hint: str | None
    display_name: str | None
    expires: str | None


@dataclass(frozen=True)
class AppSection:
    """Everything one app's section shows."""

    anchor: str
    name: str
    status: str
    status_label: str
    kind: str
    site_id: str
    subscription_id: str
    resource_group: str
    blocked: tuple[BlockedLine, ...]
    identity: str | None
    identity_reason: str | None
    principals: tuple[str, ...]
    findings: tuple[FindingLine, ...]
    credentials: tuple[CredentialLine, ...]
    decisions: tuple[Decision, ...]
    stages: tuple[StageView, ...]
    irreversible: int
    digest: str

    @property
    def outcome(self) -> str:
        """One line for the index: why an app has no steps, or what it will sign in as."""
        if self.blocked:
            return "; ".join(dict.fromkeys(b.title for b in self.blocked))
        if not self.stages:
            return next((d.reason for d in self.decisions), "nothing to migrate")
        return f"signs in as {self.identity}" if self.identity else ""


def principal_names(plan: Plan) -> dict[str, str]:
    """App id (lower case) to the principal's display name, from the plan alone."""
    names = {p.app_id.lower(): p.name for p in plan.principals}
    for app in plan.apps:
        for c in app.credentials:
            names.setdefault(c.app_id.lower(), c.principal_name)
    return names


def principal_label(app_id: str, names: dict[str, str]) -> str:
    """`name (app id)`: people know the name, Entra and the audit log the app id."""
    name = names.get(app_id.lower())
    return f"{name} ({app_id})" if name and name != app_id else app_id


def _identity_line(app: AppPlan, identity_names: dict[str, str]) -> str | None:
    if app.identity is None:
        return None
    if app.identity.type == "system-assigned":
        return "its own system-assigned identity"
    key = app.identity.identity or "?"
    return f"the user-assigned identity {identity_names.get(key, key)}"


def app_sections(plan: Plan) -> tuple[AppSection, ...]:
    """One section per app in plan order: blocked and advisory apps included, never dropped."""
    names = principal_names(plan)
    identity_names = {i.key: i.name for i in plan.identities}
    out = []
    for number, app in enumerate(plan.apps, start=1):
        out.append(AppSection(
            anchor=f"app-{number}", name=app.name, status=app.status.value,
            status_label=status_label(app.status), kind=app.kind, site_id=app.site_id,
            subscription_id=app.subscription_id, resource_group=app.resource_group,
            blocked=tuple(BlockedLine(b.code.value, blocked_title(b.code), b.message)
                          for b in app.blocked),
            identity=_identity_line(app, identity_names),
            identity_reason=app.identity.reason if app.identity else None,
            principals=tuple(principal_label(p, names) for p in app.principals),
            findings=tuple(FindingLine(
                setting=f.setting,
                where=_SOURCE_LABELS[f.source] + (", slot setting" if f.sticky else ""),
                kind=f.kind, rule=f.rule,
                principal=principal_label(f.client_id, names) if f.client_id else None,
                hint=f.hint, key_vault=f.key_vault, note=f.note) for f in app.findings),
            credentials=tuple(CredentialLine(c.principal_name, c.key_id, c.hint,
                                             c.display_name, c.expires)
                              for c in app.credentials),
            decisions=app.decisions + evidence_decisions(plan, app),
            stages=tuple(stage_view(s) for s in app.stages),
            irreversible=sum(1 for st in app.stages for s in st.steps if not s.undo.reversible),
            digest=app.digest))
    return tuple(out)


# --- what cannot be undone, what waits ---------------------------------------------------------


@dataclass(frozen=True)
class OwnedStep:
    """A step with whose plan it is in: an app's name, or `principal <name>` for cleanup."""

    owner: str
    stage: Stage
    step: Step


def all_steps(plan: Plan) -> Iterator[OwnedStep]:
    """Every step of the plan, the principals' cleanups included, so a question such as
    "what cannot be undone" misses none."""
    for app in plan.apps:
        for stage in app.stages:
            for step in stage.steps:
                yield OwnedStep(app.name, stage.stage, step)
    for principal in plan.principals:
        for step in principal.cleanup.steps:
            yield OwnedStep(f"principal {principal.name}", principal.cleanup.stage, step)


@dataclass(frozen=True)
class IrreversibleChange:
    """One change that cannot be undone, however many apps' plans hold its step."""

    what: str
    principal: str | None
    key_id: str | None
    hint: str | None
    owners: tuple[str, ...]
    step_ids: tuple[str, ...]
    undo: str


def irreversible_changes(plan: Plan) -> tuple[IrreversibleChange, ...]:
    """Every step whose undo is not a true undo, grouped by what it destroys: a password
    credential shared by two apps is in both apps' revoke stages, but is removed once."""
    names = principal_names(plan)
    groups: dict[tuple[str, ...], list[OwnedStep]] = {}
    for owned in all_steps(plan):
        if owned.step.undo.reversible:
            continue
        params = owned.step.params
        key = (("credential", params.app_id.lower(), params.key_id)
               if isinstance(params, RemovePasswordCredential) else ("step", owned.step.id))
        groups.setdefault(key, []).append(owned)
    out = []
    for owned_steps in groups.values():
        first = owned_steps[0].step
        params = first.params
        if isinstance(params, RemovePasswordCredential):
            principal = principal_label(params.app_id, names)
            what = (f"Remove the password credential {params.key_id}"
                    + (f" (hint {params.hint})" if params.hint else "") + f" of {principal}")
            out.append(IrreversibleChange(
                what=what, principal=principal, key_id=params.key_id, hint=params.hint,
                owners=tuple(dict.fromkeys(o.owner for o in owned_steps)),
                step_ids=tuple(o.step.id for o in owned_steps), undo=undo_text(first)))
        else:
            out.append(IrreversibleChange(
                what=first.title, principal=None, key_id=None, hint=None,
                owners=tuple(dict.fromkeys(o.owner for o in owned_steps)),
                step_ids=tuple(o.step.id for o in owned_steps), undo=undo_text(first)))
    return tuple(out)


@dataclass(frozen=True)
class HeldStage:
    """A stage that cannot run yet, beyond its own order, and why."""

    owner: str
    stage: str
    reasons: tuple[str, ...]
    cleanup: bool  # a principal's optional cleanup rather than an app's stage


def held_stages(plan: Plan) -> tuple[HeldStage, ...]:
    """Every stage that waits on something outside its app, in one list, so a reviewer sees
    what this plan will not finish on its own: a hold of the plan's, or sign-in evidence of
    someone else using the secret the revoke removes."""
    out = []
    for app in plan.apps:
        for s in app.stages:
            reasons = s.held
            if s.stage is Stage.REVOKE:
                reasons += tuple(line for use in evidence.for_app(plan.sign_ins, app)
                                 if (line := evidence.outside_line(use)))
            if reasons:
                out.append(HeldStage(app.name, s.stage.value, reasons, cleanup=False))
    out += [HeldStage(f"principal {p.name}", "cleanup", p.cleanup.held, cleanup=True)
            for p in plan.principals if p.cleanup.held]
    return tuple(out)


@dataclass(frozen=True)
class RightsWarning:
    """What the operator who made the plan lacks for its steps, in words."""

    title: str
    lines: tuple[str, ...]  # one per step and permission it lacks
    unchecked: tuple[str, ...]


def rights_warning(plan: Plan) -> RightsWarning | None:
    """None when the operator's rights were not checked, or nothing is missing or unchecked."""
    rights = plan.operator_rights
    if rights is None or not (rights.missing or rights.unchecked):
        return None
    if rights.missing:
        count = plural(len(rights.missing), "permission")
        title = (f"The operator who made this plan lacks {count} its steps need: apply "
                 "refuses those steps, before it changes anything, until they are granted "
                 "(or another operator holding them applies the plan).")
    else:
        title = "The operator holds every permission that could be checked for this plan's steps."
    return RightsWarning(title, tuple(m.line for m in rights.missing), rights.unchecked)


# --- identities, principals, gaps ----------------------------------------------------------------


@dataclass(frozen=True)
class IdentityView:
    name: str
    resource_group: str
    subscription_id: str
    location: str
    resource_id: str
    used_by: tuple[str, ...]
    principals: tuple[str, ...]
    reason: str


def shared_identities(plan: Plan) -> tuple[IdentityView, ...]:
    """The user-assigned identities the plan creates, one per group of apps sharing a
    principal."""
    names = principal_names(plan)
    return tuple(IdentityView(
        name=i.name, resource_group=i.resource_group, subscription_id=i.subscription_id,
        location=i.location, resource_id=i.resource_id, used_by=i.used_by,
        principals=tuple(principal_label(p, names) for p in i.principals), reason=i.reason)
        for i in plan.identities)


@dataclass(frozen=True)
class PrincipalView:
    name: str
    app_id: str
    object_id: str | None
    used_by: tuple[str, ...]
    shared: bool
    credentials_removed: tuple[str, ...]  # "key id (hint abc)"
    other_valid_credentials: tuple[str, ...]
    cleanup: StageView


def principal_views(plan: Plan) -> tuple[PrincipalView, ...]:
    """Each principal the plan moves apps away from, and what happens to it afterwards."""
    hints = {(c.app_id.lower(), c.key_id): c.hint for a in plan.apps for c in a.credentials}
    out = []
    for p in plan.principals:
        removed = tuple(
            key + (f" (hint {hint})" if (hint := hints.get((p.app_id.lower(), key))) else "")
            for key in p.credentials_removed)
        cleanup = stage_view(p.cleanup)
        out.append(PrincipalView(
            name=p.name, app_id=p.app_id, object_id=p.object_id, used_by=p.used_by,
            shared=len(p.used_by) > 1, credentials_removed=removed,
            other_valid_credentials=tuple(_with_use(plan, p.app_id, c)
                                          for c in p.other_valid_credentials),
            cleanup=StageView(stage="cleanup", number=0,
                              title="Cleanup (optional): remove the principal's own rights",
                              held=cleanup.held, steps=cleanup.steps)))
    return tuple(out)


def _with_use(plan: Plan, app_id: str, credential: str) -> str:
    """A kept credential with what the sign-in logs say of it: one nothing used in the window
    is a candidate to remove."""
    evidence = plan.sign_ins
    if evidence is None or not evidence.read:
        return credential
    use = evidence.of(app_id, credential.split(" ", 1)[0])
    if use is None:
        return credential
    if use.sign_ins == 0:
        return f"{credential}: no sign-in in the window, a candidate to remove"
    return f"{credential}: last sign-in {use.last}"


def gap_line(gap: Gap) -> str:
    """One line per gap for plain-text formats, saying whether the operator accepted it."""
    return (f"{gap.scope}: {gap.operation}: {gap.message} "
            f"({'accepted' if gap.accepted else 'not accepted'})")


@dataclass(frozen=True)
class Fact:
    """One line of the report's header; `is_id` marks a value to show as an identifier."""

    label: str
    value: str
    is_id: bool = False


def sign_in_fact(plan: Plan) -> str:
    """What decides the revokes: the sign-in logs, or the soak timer alone (and why)."""
    found = plan.sign_ins
    if found is None:
        return "not read: revokes wait for the soak period only"
    if found.source == "none":
        return (f"unavailable ({found.unavailable}): revokes wait for the soak period only, "
                "with no evidence of other users of a secret")
    used = sum(1 for c in found.credentials if c.sign_ins)
    outside = sum(1 for c in found.credentials if c.outside)
    where = (f"Log Analytics workspace {found.workspace}" if found.workspace else
             "Microsoft Graph")
    return (f"Entra sign-in logs ({where}) from {found.since} to {found.until}: "
            f"{plural(len(found.credentials), 'credential')} read, {used} signed in, "
            f"{outside} used from outside the scanned apps; apply reads them again before "
            "each revoke")


def evidence_decisions(plan: Plan, app: AppPlan) -> tuple[Decision, ...]:
    """The sign-in evidence of the app's credentials, as lines of its section."""
    out = []
    for use in evidence.for_app(plan.sign_ins, app):
        if use.sign_ins == 0:
            seen = "no sign-in in the window"
        else:
            where = ", ".join(f"{a.ip} ({', '.join(a.apps) if a.apps else 'outside'})"
                              for a in use.addresses[:5])
            seen = (f"{plural(use.sign_ins, 'sign-in')}, last {use.last}, from {where}"
                    f"{' and more' if len(use.addresses) > 5 else ''}"
                    f"{' to ' + ', '.join(use.resources[:3]) if use.resources else ''}")
        held = evidence.outside_line(use)
        out.append(Decision(topic="sign-in evidence", choice=(
            "revoke held" if held else "in use by its apps only" if use.sign_ins else
            "unused"), reason=f"credential {use.key_id}: {seen}"))
        if (warning := evidence.uncovered_line(use)) is not None:
            out.append(Decision(topic="grant", choice="warning", reason=warning))
    return tuple(out)


def plan_facts(plan: Plan) -> tuple[Fact, ...]:
    """Where the plan comes from, for the report's header."""
    return (
        Fact("Plan", plan.name, is_id=True),
        Fact("Created", plan.created_at),
        Fact("Tool version", plan.tool_version),
        Fact("Tenant", plan.tenant_id or "unknown", is_id=plan.tenant_id is not None),
        Fact("Scan", "complete" if plan.scan_complete else
             f"incomplete: {plural(len(plan.gaps), 'gap')}"),
        Fact("Sign-in evidence", sign_in_fact(plan)),
        Fact("Plan digest", plan.digest or "not sealed", is_id=bool(plan.digest)),
    )
