"""A principal's app roles survive Graph's `$expand` limit, and the estate's own APIs have app
roles of their own (issue 12).

Graph answers `$expand=appRoleAssignments` with at most 20 of a principal's grants and no next
link (known issue 13635), so a scanner that trusts the expansion copies 20 of 45 roles and the
app breaks once its old principal is gone. Here a principal holds 45 app roles across three
resource applications: Microsoft Graph and two internal APIs whose own app roles the app's code
is authorized by (as a real API checks the `roles` claim of the caller's token).
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan.model import AppStatus, GraphAppRole, Stage, VerifyRights
from migrator.plan.planner import PlanOptions, build_plan
from migrator.scan import Scanner
from migrator.sim.graph import EXPAND_LIMIT, EXPAND_PAGE_SIZE

if TYPE_CHECKING:
    from conftest import Sim

ORDERS_ROLES = [f"Orders.Scope{i:02d}" for i in range(20)]
BILLING_ROLES = [f"Billing.Scope{i:02d}" for i in range(15)]
GRAPH_ROLES = ["Application.Read.All", "Directory.Read.All", "Files.Read.All", "Group.Read.All",
               "GroupMember.Read.All", "Mail.Send", "Organization.Read.All", "Sites.Read.All",
               "User.Read.All", "User.ReadWrite.All"]
WANTED = len(ORDERS_ROLES) + len(BILLING_ROLES) + len(GRAPH_ROLES)


def _entra_secret() -> str:
    alphabet = string.ascii_letters + string.digits + "_~.-"
    return ("".join(secrets.choice(string.ascii_letters) for _ in range(3))
            + str(secrets.randbelow(10)) + "Q~"
            + "".join(secrets.choice(alphabet) for _ in range(34)))


def estate(tmp_path: Path) -> Path:
    api_roles = ([f"orders-api/{value}" for value in ORDERS_ROLES]
                 + [f"billing-api/{value}" for value in BILLING_ROLES])
    path = tmp_path / "grants.yaml"
    path.write_text(f"""
tenant: {{id: {uuid.uuid4()}, domain: grants.onmicrosoft.com}}
operator: migrator-operator
principals:
  - name: migrator-operator
    secrets: [{{}}]
    graph_app_roles: [Application.ReadWrite.All, AppRoleAssignment.ReadWrite.All]
  - name: orders-api
    app_roles: {ORDERS_ROLES}
  - name: billing-api
    app_roles: {BILLING_ROLES}
  - name: busy-sp
    secrets: [{{value: "{_entra_secret()}"}}]
    graph_app_roles: {GRAPH_ROLES}
    api_app_roles: {api_roles}
subscriptions:
  - name: prod
    resource_groups:
      - name: rg-apps
        sites:
          - name: busy-app
            app_settings:
              AZURE_CLIENT_ID: "@busy-sp.app_id"
              AZURE_TENANT_ID: "@tenant.id"
              AZURE_CLIENT_SECRET: "@busy-sp.secrets[0]"
            needs:
              - {{app_role: orders-api/Orders.Scope19}}
              - {{app_role: billing-api/Billing.Scope00}}
              - {{graph_app_role: User.Read.All}}
role_assignments:
  - {{principal: migrator-operator, role: Owner, scope: /subscriptions/prod}}
""", encoding="utf-8")
    return path


@pytest.fixture
def sim(start_sim: Callable[[Path], Sim], tmp_path: Path) -> Sim:
    return start_sim(estate(tmp_path))


def _get(sim: Sim, path: str, **params: str) -> httpx.Response:
    token = sim.credential().get_token(sim.profile.graph_scope).token
    with sim.http() as http:
        return http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def test_the_simulator_expands_at_most_20_grants_and_100_principals_a_page(sim: Sim) -> None:
    busy = sim.tenant.service_principals[sim.tenant.names["busy-sp"]]
    expanded = _get(sim, "/v1.0/servicePrincipals", **{
        "$filter": f"appId in ('{busy.app_id}')", "$expand": "appRoleAssignments",
        "$top": "999"})
    assert expanded.status_code == 200
    (principal,) = expanded.json()["value"]
    assert len(principal["appRoleAssignments"]) == EXPAND_LIMIT == 20
    assert "appRoleAssignments@odata.nextLink" not in principal
    # the relationship itself pages, and holds them all
    direct = _get(sim, f"/v1.0/servicePrincipals/{busy.object_id}/appRoleAssignments")
    assert len(direct.json()["value"]) == WANTED == 45
    # a page of an expanded list holds at most 100 principals whatever $top says
    page = _get(sim, "/v1.0/servicePrincipals",
                **{"$expand": "appRoleAssignments", "$top": "999"}).json()
    plain = _get(sim, "/v1.0/servicePrincipals", **{"$top": "999"}).json()
    assert EXPAND_PAGE_SIZE == 100
    assert len(page["value"]) == min(len(plain["value"]), EXPAND_PAGE_SIZE)


def test_an_app_role_of_an_estate_api_is_served_like_graphs(sim: Sim) -> None:
    api = sim.tenant.service_principals[sim.tenant.names["orders-api"]]
    found = _get(sim, f"/v1.0/servicePrincipals/{api.object_id}").json()
    assert sorted(role["value"] for role in found["appRoles"]) == ORDERS_ROLES
    assert all(role["allowedMemberTypes"] == ["Application"] for role in found["appRoles"])


def test_45_app_roles_across_three_apis_are_copied_and_verified(sim: Sim, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    inventory = Scanner(sim.factory(), workers=4).run()
    assert inventory.complete
    (busy,) = [p for p in inventory.principals if p.name == "busy-sp"]
    held = {(g.resource_name, g.app_role_value) for g in busy.graph_roles}
    assert len(held) == WANTED
    assert {name for name, _ in held} == {"Microsoft Graph", "orders-api", "billing-api"}

    plan = build_plan(inventory, PlanOptions(name="grants", tool_version="test"))
    (app,) = [a for a in plan.apps if a.name == "busy-app"]
    assert app.status is AppStatus.MIGRATABLE
    (grant,) = [s for s in app.stages if s.stage is Stage.GRANT]
    roles = [s.params for s in grant.steps if isinstance(s.params, GraphAppRole)]
    verify = [s.params for s in grant.steps if isinstance(s.params, VerifyRights)]
    assert len(roles) == WANTED
    assert [v.graph_app_roles for v in verify] == [WANTED]

    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "stash.key"))
    with SqliteJournal(tmp_path / "grants.journal.sqlite") as journal:
        engine = Engine(plan, journal, FileStash(tmp_path / "grants.stash",
                                                 tmp_path / "stash.key"),
                        CloudChanges(sim.factory()), sleep=lambda s: None)
        outcomes = list(engine.apply(ApplyOptions(
            apps=("busy-app",), stages=(Stage.IDENTITY, Stage.GRANT, Stage.SWAP, Stage.REVOKE),
            soak=timedelta(0), health_timeout=20, replication_timeout=30)))
    assert [(o.app, o.outcome) for o in outcomes] == [("busy-app", "done")], outcomes
    with sim.http() as http:
        assert http.get("/_sites/busy-app/healthz").status_code == 200
    site = sim.tenant.webapp("busy-app")
    assert site is not None and site.identity.system_principal_id
    identity = site.identity.system_principal_id
    copied = {(sim.tenant.service_principals[a.resource_id].display_name, a.app_role_id)
              for a in sim.tenant.app_role_assignments.values() if a.principal_id == identity}
    assert len(copied) == WANTED
