"""What the operator must be allowed to do for the steps of a plan, and what it lacks.

Pure: steps in, the permissions each needs out, and, given what Azure says the operator holds,
the ones it lacks. The executor asks before it changes anything (so a missing permission is a
refusal up front, not a 403 at step N of a wave), and `plan` asks too, as a warning.

ARM: each step names the actions Azure authorizes it by and the scope it acts on; the
operator's effective permissions at a scope come from `GET {scope}/providers/
Microsoft.Authorization/permissions`, one entry per role it holds there, and an action is
allowed when some entry lists it in `actions` and that same entry does not list it in
`notActions` (learn.microsoft.com/rest/api/authorization/permissions). Graph: the application
permissions in the operator's token (`roles`), against the least privileged ones Graph documents
per call (learn.microsoft.com/graph/api/application-removepassword,
serviceprincipal-post-approleassignments, serviceprincipal-delete-approleassignments).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from migrator.cloud.records import Permission
from migrator.plan.model import (
    AppPlan,
    AppStatus,
    AssignUserAssignedIdentity,
    EnableSystemIdentity,
    EnsureUserAssignedIdentity,
    GraphAppRole,
    MissingRight,
    Plan,
    RemoveGraphAppRole,
    RemovePasswordCredential,
    RemoveRoleAssignment,
    RemoveVaultAccessPolicy,
    RoleAssignment,
    Stage,
    Step,
    UpdateAppSettings,
    UpdateConnectionStrings,
    UpdateSlotConfig,
    VaultAccessPolicy,
)
from migrator.plan.model import OperatorRights as OperatorRightsModel

GRAPH = "Microsoft Graph"
_WEB = "Microsoft.Web/sites"
_UAI = "Microsoft.ManagedIdentity/userAssignedIdentities"
_ROLE_ASSIGNMENTS = "Microsoft.Authorization/roleAssignments"
ACCESS_POLICIES_WRITE = "Microsoft.KeyVault/vaults/accessPolicies/write"

# Graph application permissions, each need a set of which one role suffices.
_READ = frozenset({"Application.Read.All", "Application.ReadWrite.All", "Directory.Read.All",
                   "Directory.ReadWrite.All"})
_ASSIGN = frozenset({"AppRoleAssignment.ReadWrite.All"})
_APPLICATION_WRITE = frozenset({"Application.ReadWrite.All", "Directory.ReadWrite.All"})
OWNED_BY = "Application.ReadWrite.OwnedBy"
GRAPH_APP_ROLE_GRANT = (_ASSIGN, _READ)
GRAPH_PASSWORD_WRITE = (_APPLICATION_WRITE,)

_SLOT = re.compile(r"/slots/[^/]+/?$", re.IGNORECASE)


@dataclass(frozen=True)
class Need:
    """One permission one step needs: an ARM action at a scope, or Graph roles."""

    app: str
    stage: Stage
    step: str  # the step's title
    plane: Literal["arm", "graph"]
    scope: str  # ARM scope; GRAPH for Graph
    action: str = ""  # ARM
    roles: tuple[frozenset[str], ...] = ()  # Graph: one role of each set
    application: str = ""  # Graph: the application whose credentials it manages (OwnedBy)

    @property
    def wanted(self) -> str:
        if self.plane == "arm":
            return f"{self.action} on {self.scope}"
        roles = " and ".join(" or ".join(sorted(r)) for r in self.roles)
        if self.application:
            roles += f", or {OWNED_BY} as an owner of application {self.application}"
        return roles + " on Microsoft Graph"


@dataclass(frozen=True)
class HeldRights:
    """What Azure said the operator may do: effective permissions per ARM scope (lowercase),
    or why they could not be read; and the Graph roles in its token (None: the token has
    none to show, e.g. a user's delegated token, whose rights come from directory roles)."""

    arm: Mapping[str, tuple[Permission, ...] | str]
    graph_roles: frozenset[str] | None
    graph_unknown_reason: str = ""
    # For an operator holding only Application.ReadWrite.OwnedBy: per application object id
    # (lowercase), whether it owns it, or why its owners could not be read.
    owns: Mapping[str, bool | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    missing: tuple[Need, ...]
    unchecked: tuple[tuple[Need, str], ...]  # a need, and why it could not be checked


def _site(site_id: str, action: str) -> tuple[str, str]:
    """A site action at a site or slot id: slots have their own actions."""
    if _SLOT.search(site_id):
        return site_id, action.replace(_WEB + "/", _WEB + "/slots/", 1)
    return site_id, action


def _production(site_id: str) -> str:
    return _SLOT.sub("", site_id)


def _arm_actions(step: Step, *, undo: bool) -> list[tuple[str, str]]:
    """(scope, action) pairs a step, or its undo, is authorized by in ARM."""
    p = step.params
    if isinstance(p, EnableSystemIdentity):
        return [_site(p.site_id, f"{_WEB}/write")]
    if isinstance(p, EnsureUserAssignedIdentity):
        return [(p.resource_id, f"{_UAI}/delete" if undo else f"{_UAI}/write")]
    if isinstance(p, AssignUserAssignedIdentity):
        # ARM checks the linked identity too (LinkedAuthorizationFailed without it).
        site = _site(p.site_id, f"{_WEB}/write")
        return [site] if undo else [site, (p.resource_id, f"{_UAI}/assign/action")]
    if isinstance(p, RoleAssignment | RemoveRoleAssignment):
        adds = isinstance(p, RoleAssignment) != undo
        return [(p.scope, f"{_ROLE_ASSIGNMENTS}/{'write' if adds else 'delete'}")]
    if isinstance(p, VaultAccessPolicy | RemoveVaultAccessPolicy):
        return [(p.vault_id, ACCESS_POLICIES_WRITE)]
    if isinstance(p, UpdateAppSettings | UpdateConnectionStrings):
        # The settings are read (a POST: not covered by */read) and written back whole.
        return [_site(p.site_id, f"{_WEB}/config/list/action"),
                _site(p.site_id, f"{_WEB}/config/write")]
    if isinstance(p, UpdateSlotConfig):  # slotConfigNames lives on the production site
        return [(_production(p.site_id), f"{_WEB}/config/write")]
    return []


def _graph_roles(step: Step) -> tuple[frozenset[str], ...]:
    p = step.params
    if isinstance(p, GraphAppRole | RemoveGraphAppRole):
        return GRAPH_APP_ROLE_GRANT
    if isinstance(p, RemovePasswordCredential):  # removePassword, and addPassword to undo it
        return GRAPH_PASSWORD_WRITE
    return ()


def step_needs(app: str, stage: Stage, step: Step, *, undo: bool = False) -> list[Need]:
    """The permissions running `step` (or its undo) needs."""
    needs = [Need(app, stage, step.title, "arm", scope, action=action)
             for scope, action in _arm_actions(step, undo=undo)]
    roles = _graph_roles(step)
    if roles:
        owned = step.params.application_object_id \
            if isinstance(step.params, RemovePasswordCredential) else ""
        needs.append(Need(app, stage, step.title, "graph", GRAPH, roles=roles,
                          application=owned))
    return needs


def owned_applications(needs: Iterable[Need], graph_roles: frozenset[str] | None) -> list[str]:
    """The applications whose owners must be read: those of password needs, when the
    operator's only way to manage credentials is Application.ReadWrite.OwnedBy."""
    if graph_roles is None or OWNED_BY not in graph_roles or graph_roles & _APPLICATION_WRITE:
        return []
    return list(dict.fromkeys(n.application.lower() for n in needs if n.application))


def drift_check_needs(app: AppPlan, stage: Stage) -> list[Need]:
    """Before a stage the executor reads the app's settings to see they have not drifted."""
    scope, action = _site(app.site_id, f"{_WEB}/config/list/action")
    return [Need(app.name, stage, f"check that {app.name}'s settings have not changed since "
                 "the plan", "arm", scope, action=action)]


@functools.lru_cache(maxsize=4096)
def _pattern(pattern: str) -> re.Pattern[str]:
    """Azure's action wildcards: `*` spans any text, slashes included, and a whole `*`
    segment may also be empty (`…/userAssignedIdentities/*/assign/action` covers
    `…/userAssignedIdentities/assign/action`). Matching ignores case, as ARM does.
    migrator.sim.rbac has its own copy on purpose: the simulator, the oracle the product is
    tested against, imports nothing of the product."""
    parts = pattern.lower().split("/")
    out = ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "*":
            out += ".*" if last else "(?:.*/)?"
        else:
            out += ".*".join(re.escape(p) for p in part.split("*")) + ("" if last else "/")
    return re.compile(out)


def action_matches(pattern: str, action: str) -> bool:
    return _pattern(pattern).fullmatch(action.lower()) is not None


def allows(permissions: Iterable[Permission], action: str) -> bool:
    """Whether one entry allows `action` and that same entry does not exclude it."""
    return any(any(action_matches(a, action) for a in p.actions)
               and not any(action_matches(n, action) for n in p.not_actions)
               for p in permissions)


def arm_scopes(needs: Iterable[Need]) -> list[str]:
    """The distinct ARM scopes to ask about (lowercase), in first-seen order."""
    return list(dict.fromkeys(n.scope.lower() for n in needs if n.plane == "arm"))


def judge(needs: Sequence[Need], rights: HeldRights) -> Verdict:
    missing: list[Need] = []
    unchecked: list[tuple[Need, str]] = []
    for need in dict.fromkeys(needs):
        if need.plane == "arm":
            held = rights.arm.get(need.scope.lower())
            if held is None or isinstance(held, str):
                unchecked.append((need, held or "its permissions were not read"))
            elif not allows(held, need.action):
                missing.append(need)
            continue
        if rights.graph_roles is None:
            unchecked.append((need, rights.graph_unknown_reason or "the token lists no roles"))
        elif not all(rights.graph_roles & want for want in need.roles):
            owns = rights.owns.get(need.application.lower()) \
                if need.application and OWNED_BY in rights.graph_roles else False
            if owns is None:
                unchecked.append((need, f"the operator holds {OWNED_BY}; whether it owns "
                                        f"application {need.application} was not read"))
            elif isinstance(owns, str):
                unchecked.append((need, owns))
            elif not owns:
                missing.append(need)
    return Verdict(tuple(missing), tuple(unchecked))


def unchecked_lines(verdict: Verdict) -> list[str]:
    """One line per reason something could not be checked, with how many needs it covers."""
    out = []
    for reason in dict.fromkeys(why for _, why in verdict.unchecked):
        needs = [n for n, why in verdict.unchecked if why == reason]
        out.append(f"{len(needs)} step permission{'s' if len(needs) != 1 else ''} (e.g. "
                   f"{needs[0].wanted}, for {needs[0].app}) not checked up front: {reason}")
    return out


def describe(missing: Sequence[Need]) -> list[str]:
    """One line per step and permission it lacks: `app stage: step: needs …`."""
    return [f"{n.app} {n.stage.value}: {n.step}: needs {n.wanted}" for n in missing]


def plan_needs(plan: Plan) -> list[Need]:
    """Every permission the plan's migratable apps need, through all their stages."""
    needs: list[Need] = []
    for app in plan.apps:
        if app.status is not AppStatus.MIGRATABLE:
            continue
        if app.stages:
            needs += drift_check_needs(app, app.stages[0].stage)
        for stage in app.stages:
            for step in stage.steps:
                needs += step_needs(app.name, stage.stage, step)
    return needs


def with_rights(plan: Plan, verdict: Verdict, checked_as: str | None) -> Plan:
    """The plan, sealed again, saying what the operator who made it lacks for its steps.

    A credential it may not remove holds that app's revoke stage, with the reason, and
    nothing else: the migration (identity, grant, swap) still goes ahead, and the secret is
    removed later by a plan made as an operator who may."""
    from migrator.plan.integrity import seal

    rights = OperatorRightsModel(
        checked_as=checked_as,
        missing=tuple(MissingRight(app=n.app, stage=n.stage, step=n.step, needs=n.wanted)
                      for n in verdict.missing),
        unchecked=tuple(unchecked_lines(verdict)))
    revokes: dict[str, list[str]] = {}
    for n in verdict.missing:
        if n.stage is Stage.REVOKE:
            revokes.setdefault(n.app, []).append(
                f"the operator who made the plan may not do this: {n.step} needs {n.wanted} "
                "(the migration goes ahead; plan again as an operator who may, to revoke)")
    apps = tuple(_hold(app, Stage.REVOKE, revokes[app.name]) if app.name in revokes else app
                 for app in plan.apps)
    return seal(plan.model_copy(update={"operator_rights": rights, "apps": apps}))


def _hold(app: AppPlan, stage: Stage, reasons: Sequence[str]) -> AppPlan:
    stages = tuple(
        s.model_copy(update={"held": tuple(dict.fromkeys((*s.held, *reasons)))})
        if s.stage is stage else s for s in app.stages)
    return app.model_copy(update={"stages": stages})
