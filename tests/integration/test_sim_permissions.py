"""Custom role definitions and application owners in the estate, and ARM's effective-permissions
endpoint (issue 12).

Real tenants grant apps custom roles ("Orders blob reader") as often as built-in ones; the
estate declares them (`role_definitions:`), ARM lists and enforces them, and the planner copies
an assignment of one by its id like any other. `{scope}/providers/Microsoft.Authorization/
permissions` answers what the caller may do there, from the same RBAC model the simulator
authorizes by: the operator's preflight reads it. An operator holding only Graph's
Application.ReadWrite.OwnedBy manages the credentials of the applications it owns (`owners:`),
and no other.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from conftest import Sim

from migrator.cloud.changes import CloudChanges
from migrator.cloud.errors import AzureCallError
from migrator.cloud.rights import RightsAdapter
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan
from migrator.plan.model import RoleAssignment
from migrator.plan.preflight import allows
from migrator.scan import Scanner
from migrator.sim.estate import EstateError, custom_role_id, parse_estate

pytestmark = pytest.mark.integration

BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
ESTATE = """\
tenant: {id: 6f1c3b0e-0000-4000-8000-0000000000c5}
operator: op
principals:
  - name: op
    secrets: [{}]
    graph_app_roles: [Application.ReadWrite.All, AppRoleAssignment.ReadWrite.All]
  - name: app-sp
    secrets: [{}]
  - name: settings-writer
    secrets: [{}]
subscriptions:
  - name: prod
    resource_groups:
      - name: rg
        sites:
          - name: web
            app_settings:
              AZURE_CLIENT_ID: "@app-sp.app_id"
              AZURE_TENANT_ID: "@tenant.id"
              AZURE_CLIENT_SECRET: "@app-sp.secrets[0]"
            needs:
              - {role_action: BLOB_READ_ACTION, scope: /subscriptions/prod/resourceGroups/rg}
  - name: dev
role_definitions:
  - name: Orders blob reader
    description: Reads the order blobs, nothing else
    data_actions: [BLOB_READ_ACTION]
    assignable_scopes: [/subscriptions/prod]
  - name: Site settings writer
    actions: [Microsoft.Web/sites/read, Microsoft.Web/sites/config/*]
    not_actions: [Microsoft.Web/sites/config/list/action]
    assignable_scopes: [/subscriptions/prod/resourceGroups/rg]
role_assignments:
  - {principal: op, role: Owner, scope: /subscriptions/prod}
  - {principal: app-sp, role: Orders blob reader, scope: /subscriptions/prod/resourceGroups/rg}
  - {principal: settings-writer, role: Site settings writer,
     scope: /subscriptions/prod/resourceGroups/rg}
""".replace("BLOB_READ_ACTION", BLOB_READ)


@pytest.fixture
def estate_path(tmp_path: Path) -> Path:
    path = tmp_path / "custom-roles.yaml"
    path.write_text(ESTATE, encoding="utf-8")
    return path


def _rg(sim: Sim) -> str:
    return f"/subscriptions/{sim.subscription_id}/resourceGroups/rg"


def test_custom_roles_are_listed_where_they_are_assignable(sim: Sim) -> None:
    prod = f"/subscriptions/{sim.subscription_id}"
    auth = sim.factory().authorization(sim.subscription_id)
    (reader,) = list(auth.role_definitions.list(prod, filter="roleName eq 'Orders blob reader'"))
    assert reader.name == custom_role_id("Orders blob reader")
    assert reader.role_type == "CustomRole"
    assert reader.assignable_scopes == [prod]
    assert reader.permissions[0].data_actions == [BLOB_READ]
    # assignable at the resource group only: not a role of the subscription, but of the group
    assert not list(auth.role_definitions.list(prod, filter="roleName eq 'Site settings writer'"))
    assert list(auth.role_definitions.list(_rg(sim), filter="roleName eq 'Site settings writer'"))


def test_a_custom_role_is_enforced_with_its_not_actions(sim: Sim) -> None:
    web = sim.factory("settings-writer").web(sim.subscription_id)
    with pytest.raises(HttpResponseError) as refused:
        web.web_apps.list_application_settings("rg", "web")  # config/list/action: excluded
    assert refused.value.status_code == 403
    assert web.web_apps.get_configuration("rg", "web") is not None  # config/read: allowed


def test_effective_permissions_at_every_kind_of_scope(sim: Sim) -> None:
    site = f"{_rg(sim)}/providers/Microsoft.Web/sites/web"
    writer = RightsAdapter(sim.factory("settings-writer"))
    at_site = writer.permissions(site)
    assert len(at_site) == 1  # one entry per role held at or above the scope
    assert allows(at_site, "Microsoft.Web/sites/config/write")
    assert not allows(at_site, "Microsoft.Web/sites/config/list/action")  # its notActions
    assert writer.permissions(f"/subscriptions/{sim.subscription_id}") == ()  # held below only
    # the SDK's own operations parse the same answer
    auth = sim.factory("settings-writer").authorization(sim.subscription_id)
    (entry,) = list(auth.permissions.list_for_resource_group("rg"))
    assert entry.not_actions == ["Microsoft.Web/sites/config/list/action"]
    (entry,) = list(auth.permissions.list_for_resource("rg", "Microsoft.Web", "", "sites", "web"))
    assert "Microsoft.Web/sites/config/*" in (entry.actions or [])
    operator = RightsAdapter(sim.factory()).permissions(site)
    assert allows(operator, "Microsoft.Authorization/roleAssignments/write")  # Owner
    with pytest.raises(AzureCallError) as missing:
        RightsAdapter(sim.factory()).permissions(
            f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-nowhere")
    assert "ResourceGroupNotFound" in str(missing.value)


def test_a_custom_role_is_copied_by_its_id_and_the_app_stays_healthy(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = build_plan(Scanner(sim.factory(), workers=2).run(),
                      PlanOptions(name="custom", tool_version="test"))
    (app,) = plan.apps
    grants = [s.params for st in app.stages for s in st.steps
              if isinstance(s.params, RoleAssignment)]
    assert [(g.role_definition_id, g.role_name) for g in grants] == [
        (custom_role_id("Orders blob reader"), "Orders blob reader")]
    engine = Engine(plan, SqliteJournal(tmp_path / "j.sqlite"),
                    FileStash(tmp_path / "s.stash", tmp_path / "keys" / "stash.key"),
                    CloudChanges(sim.factory()), sleep=lambda _: None)
    (outcome,) = engine.apply(ApplyOptions(soak=timedelta(0), health_timeout=30))
    assert outcome.outcome == "done", outcome
    identity = sim.tenant.sites["web"].identity.system_principal_id
    assert identity is not None
    assert sim.tenant.can(identity, BLOB_READ, _rg(sim), data=True)


@pytest.mark.parametrize(("change", "expected"), [
    (("name: Orders blob reader", "name: Owner"),
     r"role_definitions\[0\].name: a role named 'Owner' exists already"),
    (("assignable_scopes: [/subscriptions/prod]\n", "assignable_scopes: [/subscriptions/qa]\n"),
     r"role_definitions\[0\].assignable_scopes\[0\]: scope '/subscriptions/qa' names an "
     "unknown subscription"),
    (("role: Orders blob reader", "role: Orders blob writer"),
     r"role_assignments\[1\].role: unknown role 'Orders blob writer'"),
])
def test_bad_custom_roles_are_one_line_errors(change: tuple[str, str], expected: str) -> None:
    import re

    with pytest.raises(EstateError) as info:
        parse_estate(ESTATE.replace(*change), "estate.yaml")
    assert "\n" not in str(info.value) and re.search(expected, str(info.value)), info.value


OWNED = """\
tenant: {id: 6f1c3b0e-0000-4000-8000-0000000000c6}
operator: op
principals:
  - name: op
    secrets: [{}]
    graph_app_roles: [Application.ReadWrite.OwnedBy]
  - name: mine
    secrets: [{}]
    owners: [op]
  - name: theirs
    secrets: [{}]
"""


def test_owned_by_manages_the_passwords_of_owned_applications_only(
        start_sim: Any, tmp_path: Path) -> None:
    path = tmp_path / "owned.yaml"
    path.write_text(OWNED, encoding="utf-8")
    sim = start_sim(path)
    token = sim.credential().get_token(sim.profile.graph_scope).token
    headers = {"Authorization": f"Bearer {token}"}
    mine = sim.tenant.app_by_app_id(sim.client_id("mine"))
    theirs = sim.tenant.app_by_app_id(sim.client_id("theirs"))
    assert mine is not None and theirs is not None
    with sim.http() as http:
        owners = http.get(f"/v1.0/applications/{mine.object_id}/owners", headers=headers)
        assert owners.status_code == 200
        (owner,) = owners.json()["value"]
        assert owner["@odata.type"] == "#microsoft.graph.servicePrincipal"
        assert owner["id"] == sim.object_id("op")
        added = http.post(f"/v1.0/applications/{mine.object_id}/addPassword", headers=headers,
                          json={"passwordCredential": {"displayName": "rotated"}})
        assert added.status_code == 200
        removed = http.post(f"/v1.0/applications/{mine.object_id}/removePassword",
                            headers=headers, json={"keyId": added.json()["keyId"]})
        assert removed.status_code == 204
        for path_ in (f"/v1.0/applications/{theirs.object_id}/owners",
                      f"/v1.0/applications/{theirs.object_id}/addPassword"):
            refused = http.request("POST" if path_.endswith("Password") else "GET", path_,
                                   headers=headers, json={"passwordCredential": {}})
            assert refused.status_code == 403, path_
            assert refused.json()["error"]["code"] == "Authorization_RequestDenied"
        # OwnedBy reads no other application: listing them all needs Application.Read.All
        assert http.get("/v1.0/applications", headers=headers).status_code == 403
    assert len(theirs.passwords) == 1
