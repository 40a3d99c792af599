"""A role assignment's ABAC condition is copied verbatim, and the copy grants exactly what the
old principal had (issue 12).

The old principal reads blobs only in the container `reports` (Storage Blob Data Reader on
the storage account, under Microsoft's documented container-name condition). A copy without
the condition would let the app's identity read every container of the account, `payroll`
included: a privilege escalation. The simulator evaluates the condition, so the test can
show that the identity reads `reports` and not `payroll`, like the principal it replaces.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from rich.console import Console

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan.model import RoleAssignment, Stage
from migrator.plan.planner import PlanOptions, build_plan
from migrator.report import plan_terminal
from migrator.scan import Scanner

if TYPE_CHECKING:
    from conftest import Sim

READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
CONDITION = ("((!(ActionMatches{'" + READ + "'})) OR "
             "(@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] "
             "StringEquals 'reports'))")
ACCOUNT = "/resourceGroups/rg-apps/providers/Microsoft.Storage/storageAccounts/stapps"


def estate(tmp_path: Path) -> Path:
    path = tmp_path / "abac.yaml"
    path.write_text(f"""
tenant: {{id: {uuid.uuid4()}, domain: abac.onmicrosoft.com}}
operator: migrator-operator
principals:
  - name: migrator-operator
    secrets: [{{}}]
    graph_app_roles: [Application.ReadWrite.All, AppRoleAssignment.ReadWrite.All]
  - name: reports-sp
    secrets: [{{}}]
subscriptions:
  - name: prod
    resource_groups:
      - name: rg-apps
        sites:
          - name: reports-app
            app_settings:
              AZURE_CLIENT_ID: "@reports-sp.app_id"
              AZURE_TENANT_ID: "@tenant.id"
              AZURE_CLIENT_SECRET: "@reports-sp.secrets[0]"
            needs:
              - {{role_action: {READ},
                 scope: "/subscriptions/prod{ACCOUNT}/blobServices/default/containers/reports"}}
role_assignments:
  - {{principal: migrator-operator, role: Owner, scope: /subscriptions/prod}}
  - principal: reports-sp
    role: Storage Blob Data Reader
    scope: /subscriptions/prod{ACCOUNT}
    condition: "{CONDITION}"
    condition_version: "2.0"
""", encoding="utf-8")
    return path


@pytest.fixture
def sim(start_sim: Callable[[Path], Sim], tmp_path: Path) -> Sim:
    return start_sim(estate(tmp_path))


def _container(sim: Sim, name: str) -> str:
    return (f"/subscriptions/{sim.subscription_id_of('prod')}{ACCOUNT}"
            f"/blobServices/default/containers/{name}")


def test_the_simulator_enforces_the_condition_as_azure_does(sim: Sim) -> None:
    principal = sim.tenant.names["reports-sp"]
    assert sim.tenant.can(principal, READ, _container(sim, "reports"), data=True)
    assert not sim.tenant.can(principal, READ, _container(sim, "payroll"), data=True)
    # and ARM shows the condition with the assignment, as it was written
    with sim.http() as http:
        token = sim.credential().get_token("https://management.azure.com/.default").token
        listed = http.get(f"/subscriptions/{sim.subscription_id_of('prod')}/providers/"
                          "Microsoft.Authorization/roleAssignments",
                          params={"api-version": "2022-04-01",
                                  "$filter": f"principalId eq '{principal}'"},
                          headers={"Authorization": f"Bearer {token}"}).json()
    (assignment,) = listed["value"]
    assert assignment["properties"]["condition"] == CONDITION
    assert assignment["properties"]["conditionVersion"] == "2.0"


def test_the_copy_carries_the_condition_and_grants_no_more(sim: Sim, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    inventory = Scanner(sim.factory(), workers=4).run()
    (principal,) = [p for p in inventory.principals if p.name == "reports-sp"]
    (grant,) = principal.role_assignments
    assert (grant.role_name, grant.condition, grant.condition_version) == (
        "Storage Blob Data Reader", CONDITION, "2.0")

    plan = build_plan(inventory, PlanOptions(name="abac", tool_version="test"))
    (app,) = plan.apps
    (stage,) = [s for s in app.stages if s.stage is Stage.GRANT]
    (step,) = [s for s in stage.steps if isinstance(s.params, RoleAssignment)]
    assert isinstance(step.params, RoleAssignment)
    assert step.params.condition == CONDITION and step.params.condition_version == "2.0"
    assert CONDITION in step.title  # the approver sees what is copied, literally
    shown = StringIO()
    plan_terminal.render(plan, Console(file=shown, width=1000, color_system=None), detail=True)
    assert CONDITION in shown.getvalue()  # its brackets are not taken for Rich markup

    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "stash.key"))
    with SqliteJournal(tmp_path / "abac.journal.sqlite") as journal:
        engine = Engine(plan, journal, FileStash(tmp_path / "abac.stash", tmp_path / "stash.key"),
                        CloudChanges(sim.factory()), sleep=lambda s: None)
        outcomes = engine.apply(ApplyOptions(
            apps=("reports-app",), stages=(Stage.IDENTITY, Stage.GRANT, Stage.SWAP),
            soak=timedelta(0), health_timeout=20, replication_timeout=30))
    assert [(o.app, o.outcome) for o in outcomes] == [("reports-app", "done")], outcomes
    site = sim.tenant.webapp("reports-app")
    assert site is not None and site.identity.system_principal_id
    identity = site.identity.system_principal_id
    assert sim.tenant.can(identity, READ, _container(sim, "reports"), data=True)
    assert not sim.tenant.can(identity, READ, _container(sim, "payroll"), data=True)
    (copied,) = [a for a in sim.tenant.role_assignments.values() if a.principal_id == identity]
    assert (copied.condition, copied.condition_version) == (CONDITION, "2.0")


def test_a_grant_that_finds_another_condition_stops_instead_of_widening(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Someone gave the identity the role under another condition meanwhile: the grant stops
    with that said, and verify never takes another condition for the planned one."""
    inventory = Scanner(sim.factory(), workers=4).run()
    plan = build_plan(inventory, PlanOptions(name="abac", tool_version="test"))
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "stash.key"))
    changes = CloudChanges(sim.factory())
    with SqliteJournal(tmp_path / "abac.journal.sqlite") as journal:
        engine = Engine(plan, journal, FileStash(tmp_path / "abac.stash", tmp_path / "stash.key"),
                        changes, sleep=lambda s: None)
        options = ApplyOptions(apps=("reports-app",), soak=timedelta(0), health_timeout=20,
                               replication_timeout=30)
        list(engine.apply(ApplyOptions(apps=("reports-app",), stages=(Stage.IDENTITY,),
                                       soak=timedelta(0), replication_timeout=30)))
        site = sim.tenant.webapp("reports-app")
        assert site is not None and site.identity.system_principal_id
        identity = site.identity.system_principal_id
        other = CONDITION.replace("'reports'", "'everything-else'")
        # made by hand, under another name than the tool's
        role = next(a for a in sim.tenant.role_assignments.values()
                    if a.principal_id == sim.tenant.names["reports-sp"])
        scope = role.scope
        with sim.tenant.lock:
            from migrator.sim.state import RoleAssignment as SimAssignment

            name = str(uuid.uuid4())
            sim.tenant.role_assignments[name] = SimAssignment(
                name, scope, role.role_definition_id, identity, condition=other,
                condition_version="2.0")
        (outcome,) = engine.apply(options)
    assert outcome.outcome == "failed"
    assert "under another condition" in outcome.message
    assert not sim.tenant.can(identity, READ, _container(sim, "reports"), data=True)
