"""The operator's own rights, checked before anything changes (issue 12).

An operator who lacks one permission used to find out at step N of a wave, with a 403, after
the first apps were half-moved. Now `apply`, `rollback` and the cleanup ask ARM for the
operator's effective permissions at every scope the chosen steps act on
(`{scope}/providers/Microsoft.Authorization/permissions`, which the simulator serves from the
same RBAC model it authorizes by) and read the Graph roles in its token, and refuse up front,
naming each missing permission with its step, exit 1.

The plan is made as the estate's operator (Owner); then its rights are cut down in the tenant,
as when another operator, or the runbook's identity, applies the plan.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Sim
from test_execute_crash_wide import shape
from typer.testing import CliRunner

from migrator.cli import app as cli_app
from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine, MissingRights
from migrator.execute.journal import SqliteJournal
from migrator.execute.rights import with_operator_rights
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan, dump_plan, load_plan
from migrator.plan.integrity import parse_plan as load_plan_text
from migrator.plan.model import Plan, Stage, StagePlan
from migrator.plan.model import RoleAssignment as PlannedRole
from migrator.scan import Scanner
from migrator.sim.catalog import GRAPH_APP_ROLES
from migrator.sim.rbac import ROLES_BY_NAME, RoleDefinition
from migrator.sim.state import AppRoleAssignment, RoleAssignment

pytestmark = pytest.mark.integration

ESTATE = Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"
CUSTOM_ROLE_ID = "5d1f4c1e-0000-4000-8000-00000000c0de"


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


def _state(sim: Sim) -> dict[str, Any]:
    with sim.http() as http:
        state: dict[str, Any] = http.get("/_sim/state").json()
    return state


def _secrets(sim: Sim) -> set[str]:
    return {p.secret for a in sim.tenant.applications.values() for p in a.passwords}


def _plan(sim: Sim) -> Plan:
    return build_plan(Scanner(sim.factory(), workers=2).run(),
                      PlanOptions(name="rights", tool_version="test"))


def _engine(sim: Sim, plan: Plan, tmp_path: Path) -> Engine:
    return Engine(plan, SqliteJournal(tmp_path / "j.sqlite"),
                  FileStash(tmp_path / "s.stash", tmp_path / "keys" / "stash.key"),
                  CloudChanges(sim.factory()), sleep=lambda _: None)


def _operator_role(sim: Sim, *, actions: list[str], not_actions: list[str] = ()) -> None:
    """Replace the operator's Owner role at the subscription by a custom role."""
    t = sim.tenant
    operator = sim.object_id(t.operator)
    scope = f"/subscriptions/{sim.subscription_id}"
    with t.lock:
        for a in list(t.assignments_of(operator)):
            del t.role_assignments[a.name]
        t.add_role_definition(RoleDefinition(
            CUSTOM_ROLE_ID, "Migration operator (test)", "", actions=tuple(actions),
            not_actions=tuple(not_actions), custom=True, assignable_scopes=(scope,)))
        t.role_assignments["0c0de000-0000-4000-8000-000000000001"] = RoleAssignment(
            "0c0de000-0000-4000-8000-000000000001", scope, CUSTOM_ROLE_ID, operator)


def _drop_graph_role(sim: Sim, role: str) -> None:
    t = sim.tenant
    operator = sim.object_id(t.operator)
    with t.lock:
        for key, a in list(t.app_role_assignments.items()):
            if a.principal_id == operator and a.app_role_id == GRAPH_APP_ROLES[role]:
                del t.app_role_assignments[key]


ALL_STAGES = ApplyOptions(soak=timedelta(0), health_timeout=30)


def test_a_missing_arm_permission_is_refused_before_anything_changes(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    owner = ROLES_BY_NAME["owner"]
    _operator_role(sim, actions=list(owner.actions),
                   not_actions=["Microsoft.Authorization/roleAssignments/write"])
    secrets = _secrets(sim)
    before = shape(_state(sim), secrets)
    engine = _engine(sim, plan, tmp_path)

    with pytest.raises(MissingRights) as refused:
        engine.apply(ALL_STAGES)

    text = str(refused.value)
    assert text.startswith("apply refused before any change")
    rg_orders = f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-orders"
    # every role-assignment step is named, with its scope; nothing else is missing
    grants = list(refused.value.missing)
    assert grants and all(n.action == "Microsoft.Authorization/roleAssignments/write"
                          for n in grants)
    assert any(n.scope.lower() == rg_orders.lower() and n.app == "solo-api"
               and "Storage Blob Data Reader" in n.step for n in grants)
    assert f"needs Microsoft.Authorization/roleAssignments/write on {rg_orders}" in text
    # nothing was written: no identity, no grant, no settings change, no journal row
    assert shape(_state(sim), secrets) == before
    assert engine.journal.last_states(plan.name) == {}


def test_a_missing_graph_role_is_refused_and_named(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    _drop_graph_role(sim, "AppRoleAssignment.ReadWrite.All")
    before = shape(_state(sim), _secrets(sim))
    with pytest.raises(MissingRights) as refused:
        _engine(sim, plan, tmp_path).apply(ALL_STAGES)
    missing = refused.value.missing
    assert {n.plane for n in missing} == {"graph"}
    assert all("AppRoleAssignment.ReadWrite.All" in n.wanted for n in missing)
    assert "on Microsoft Graph" in str(refused.value)
    # the revoke's removePassword is still allowed (Application.ReadWrite.All): not listed
    assert not any(n.stage.value == "revoke" for n in missing)
    assert shape(_state(sim), _secrets(sim)) == before


def test_what_the_check_asks_for_is_enough_to_migrate_and_roll_back(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other direction: an operator holding exactly the actions the check names (and
    reads) migrates every app through every stage, and rolls them back, against the
    simulator's own authorization. A step whose permission the check forgot would fail
    here with a 403."""
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    probe = _engine(sim, plan, tmp_path / "probe")
    apps = tuple(a.name for a in plan.apps if a.status.value == "migratable")
    needed = {n.action for n in probe.rights_needed(ALL_STAGES) if n.plane == "arm"}
    undo = {"Microsoft.Authorization/roleAssignments/delete",
            "Microsoft.ManagedIdentity/userAssignedIdentities/delete"}
    _operator_role(sim, actions=["*/read", *sorted(needed | undo)])
    engine = _engine(sim, plan, tmp_path)

    outcomes = engine.apply(ALL_STAGES)
    waiting = {o.app for o in outcomes if o.outcome == "waiting"}  # the operator-run T-SQL
    assert all(o.outcome == "done" for o in outcomes if o.app not in waiting), outcomes
    assert waiting <= {"sql-api"}
    for name in apps:
        assert engine.rollback(name, options=ApplyOptions(health_timeout=30)).outcome == \
            "rolled-back", name


def test_rollback_is_refused_up_front_when_an_undo_is_not_allowed(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    engine = _engine(sim, plan, tmp_path)
    grant = ApplyOptions(apps=("solo-api",), health_timeout=30,
                         stages=tuple(s for s in ALL_STAGES.stages
                                      if s.value in ("identity", "grant")))
    assert [o.outcome for o in engine.apply(grant)] == ["done"]
    _operator_role(sim, actions=list(ROLES_BY_NAME["owner"].actions),
                   not_actions=["Microsoft.Authorization/roleAssignments/delete"])
    applied = shape(_state(sim), _secrets(sim))
    with pytest.raises(MissingRights) as refused:
        _engine(sim, plan, tmp_path).rollback("solo-api")
    assert str(refused.value).startswith("rollback refused before any change")
    assert "roleAssignments/delete" in str(refused.value)
    assert shape(_state(sim), _secrets(sim)) == applied  # not half rolled back


def test_the_cli_refuses_before_its_prompt_with_exit_1(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    env = {**sim.endpoints.environment(), "COLUMNS": "200",
           "MIGRATOR_STASH_KEY_FILE": str(tmp_path / "keys" / "stash.key")}
    path = tmp_path / "rights.json"
    path.write_text(dump_plan(_plan(sim)), encoding="utf-8")
    _operator_role(sim, actions=["*/read"])  # a Reader: may plan, may not apply
    before = shape(_state(sim), _secrets(sim))
    # No --yes and no terminal: the prompt would refuse with exit 2; the rights come first.
    result = CliRunner().invoke(cli_app, ["apply", str(path), "--app", "solo-api"], env=env)
    assert result.exit_code == 1, result.output
    assert "apply refused before any change" in result.output
    assert "Microsoft.Web/sites/write on /subscriptions/" in result.output
    assert "Traceback" not in result.output and "pass --yes" not in result.output
    assert "\\x0a" not in result.output  # one permission per line, not escaped breaks
    assert shape(_state(sim), _secrets(sim)) == before


def test_the_plan_warns_of_what_its_operator_lacks_in_every_report(
        sim: Sim, tmp_path: Path) -> None:
    env = {**sim.endpoints.environment(), "COLUMNS": "200"}
    runner = CliRunner()
    owner = runner.invoke(cli_app, ["plan", "--name", "full", "--dir", str(tmp_path)], env=env)
    assert owner.exit_code == 0, owner.output
    full = json.loads((tmp_path / "full.json").read_text())
    assert full["operator_rights"]["missing"] == []
    assert full["operator_rights"]["checked_as"] == sim.object_id(sim.tenant.operator)
    assert "The operator who made this plan" not in owner.output

    owner_actions = list(ROLES_BY_NAME["owner"].actions)
    _operator_role(sim, actions=owner_actions,
                   not_actions=["Microsoft.Web/sites/config/write"])
    made = runner.invoke(cli_app, ["plan", "--name", "cut", "--dir", str(tmp_path)], env=env)
    assert made.exit_code == owner.exit_code, made.output  # a warning, not a failed plan
    plan = load_plan(tmp_path / "cut.json")  # sealed again: it loads
    assert plan.operator_rights is not None
    missing = plan.operator_rights.missing
    assert missing and {m.stage.value for m in missing} == {"swap"}
    assert all("Microsoft.Web/sites/config/write on " in m.needs
               or "Microsoft.Web/sites/slots/config/write on " in m.needs for m in missing)
    first = f"{missing[0].app} swap"
    markdown = (tmp_path / "cut.md").read_text()
    html = (tmp_path / "cut.html").read_text()
    assert "## The operator's own rights" in markdown
    assert 'id="operator-rights"' in html
    for text in (made.output, markdown, html):
        assert "The operator who made this plan lacks" in text
        assert "Microsoft.Web/sites/config/write" in text
        assert first in text


def _owned_by_only(sim: Sim, owns: str) -> None:
    """The operator keeps its ARM rights, and in Graph may read applications, grant app
    roles, and manage the credentials of the one application it owns."""
    t = sim.tenant
    operator = sim.object_id(t.operator)
    _drop_graph_role(sim, "Application.ReadWrite.All")
    with t.lock:
        for role in ("Application.Read.All", "Application.ReadWrite.OwnedBy"):
            grant_id = f"owned-by-test-{role}"
            t.app_role_assignments[grant_id] = AppRoleAssignment(
                grant_id, operator, t.graph_sp.object_id, GRAPH_APP_ROLES[role])
        app = t.app_by_app_id(sim.client_id(owns))
        assert app is not None
        app.owners = [operator]


def test_owned_by_covers_the_applications_the_operator_owns_and_no_other(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    _owned_by_only(sim, owns="solo-sp")
    engine = _engine(sim, plan, tmp_path)
    (solo,) = engine.apply(ApplyOptions(apps=("solo-api",), soak=timedelta(0),
                                        health_timeout=30))
    assert solo.outcome == "done" and "revoke" in solo.stages_done, solo  # it owns solo-sp
    solo_app = sim.tenant.app_by_app_id(sim.client_id("solo-sp"))
    assert solo_app is not None and solo_app.passwords == []

    before = shape(_state(sim), _secrets(sim))
    with pytest.raises(MissingRights) as refused:
        engine.apply(ApplyOptions(apps=("shared-a",), soak=timedelta(0), health_timeout=30))
    (need,) = refused.value.missing
    assert need.stage.value == "revoke"
    assert "Application.ReadWrite.OwnedBy as an owner of application" in str(refused.value)
    assert "`--stage swap` moves the apps now" in str(refused.value)
    assert shape(_state(sim), _secrets(sim)) == before
    # as the message says: the migration itself goes ahead without the revoke
    swap = tuple(s for s in ALL_STAGES.stages if s.value != "revoke")
    (moved,) = engine.apply(ApplyOptions(apps=("shared-a",), stages=swap, health_timeout=30))
    assert moved.outcome == "done", moved


def test_rollback_does_not_ask_to_delete_what_the_identity_had_before_the_plan(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A role the new identity already held when the grant ran (someone assigned it by hand
    between the identity and grant stages) is kept by the undo, so the rollback must not be
    refused for lacking roleAssignments/delete, which it will not use."""
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = _plan(sim)
    engine = _engine(sim, plan, tmp_path)

    def stages(*names: str) -> ApplyOptions:
        return ApplyOptions(apps=("solo-api",), health_timeout=30,
                            stages=tuple(s for s in ALL_STAGES.stages if s.value in names))

    assert [o.outcome for o in engine.apply(stages("identity"))] == ["done"]
    site = sim.tenant.webapp("solo-api")
    assert site is not None and site.identity.system_principal_id
    principal = site.identity.system_principal_id
    (app,) = [a for a in plan.apps if a.name == "solo-api"]
    (grant,) = [s for s in app.stages if s.stage.value == "grant"]
    roles = [s.params for s in grant.steps if isinstance(s.params, PlannedRole)]
    assert roles
    with sim.tenant.lock:
        for n, role in enumerate(roles):
            name = f"0c0de000-0000-4000-8000-0000000001{n:02d}"
            sim.tenant.role_assignments[name] = RoleAssignment(
                name, role.scope, role.role_definition_id.rsplit("/", 1)[-1], principal)
    assert [o.outcome for o in engine.apply(stages("grant"))] == ["done"]
    _operator_role(sim, actions=list(ROLES_BY_NAME["owner"].actions),
                   not_actions=["Microsoft.Authorization/roleAssignments/delete"])
    held = {a.name for a in sim.tenant.role_assignments.values() if a.principal_id == principal}

    outcome = _engine(sim, plan, tmp_path).rollback("solo-api", to_stage=Stage.IDENTITY,
                                                    options=ApplyOptions(health_timeout=30))

    assert outcome.outcome == "rolled-back", outcome
    # the hand-made assignments are still there: the undo kept them
    assert held == {a.name for a in sim.tenant.role_assignments.values()
                    if a.principal_id == principal}


def test_a_plan_made_by_an_operator_who_may_not_revoke_holds_the_revoke_not_the_migration(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan names, per credential, that its operator may not remove it, and holds that
    app's revoke stage with the reason; `apply` then migrates the app and leaves the secret,
    instead of refusing the whole run."""
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    _owned_by_only(sim, owns="solo-sp")
    plan, problem = with_operator_rights(sim.factory(), _plan(sim))
    assert problem is None
    assert load_plan_text(dump_plan(plan)) == plan  # sealed again: it loads

    def revoke(name: str) -> StagePlan:
        (app,) = [a for a in plan.apps if a.name == name]
        return next(s for s in app.stages if s.stage is Stage.REVOKE)

    assert revoke("solo-api").held == ()  # it owns solo-sp
    (reason,) = revoke("shared-a").held
    assert "the operator who made the plan may not do this" in reason
    assert "shared-sp" in reason and "Application.ReadWrite.OwnedBy as an owner" in reason
    assert "the migration goes ahead" in reason
    shared_secrets = {p.secret for p in sim.tenant.app_by_app_id(
        sim.client_id("shared-sp")).passwords}  # type: ignore[union-attr]

    engine = _engine(sim, plan, tmp_path)
    (moved,) = engine.apply(ApplyOptions(apps=("shared-a",), soak=timedelta(0),
                                         health_timeout=30))

    assert moved.outcome == "waiting", moved
    assert "revoke is held: the operator who made the plan may not do this" in moved.message
    assert "swap" in moved.stages_done and "revoke" not in moved.stages_done
    still = {p.secret for p in sim.tenant.app_by_app_id(
        sim.client_id("shared-sp")).passwords}  # type: ignore[union-attr]
    assert still == shared_secrets  # the credential stays, as the plan said
