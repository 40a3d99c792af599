"""The scanner against a mixed tenant, through the real SDKs: exactly the expected findings,
principals, matched credentials, rights and gaps, and never a secret in any output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.detect.findings import FindingKind
from migrator.inventory import Inventory
from migrator.report.json_output import render_inventory
from migrator.scan import Scanner, ScanScope
from migrator.sim.catalog import derive_id

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "scan_estate.yaml"


@pytest.fixture
def inventory(sim: Sim) -> Inventory:
    return Scanner(sim.factory(), workers=8).run()


def _findings(inventory: Inventory) -> set[tuple[str, str, FindingKind, bool]]:
    return {(a.site.display, f.secret.name, f.kind, f.secret.sticky)
            for a in inventory.apps for f in a.findings}


def test_finds_exactly_the_expected_credentials(inventory: Inventory) -> None:
    assert _findings(inventory) == {
        ("orders-api", "AZURE_CLIENT_SECRET", FindingKind.CLIENT_SECRET, True),
        ("orders-api", "Storage", FindingKind.SHARED_KEY, False),
        ("orders-api/staging", "AZURE_CLIENT_SECRET", FindingKind.CLIENT_SECRET, True),
        ("shared-web", "AZURE_CLIENT_SECRET", FindingKind.CLIENT_SECRET, False),
        ("vaulted-api", "AZURE_CLIENT_SECRET", FindingKind.KEY_VAULT_REFERENCE, False),
        ("portal", "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET", FindingKind.INBOUND, False),
        ("shared-worker", "AZURE_CLIENT_SECRET", FindingKind.CLIENT_SECRET, False),
        ("shared-worker", "ServiceBus", FindingKind.SHARED_KEY, False),
        ("legacy-job", "Legacy__ClientSecret", FindingKind.CLIENT_SECRET, False),
    }
    scanned = {a.site.display for a in inventory.apps}
    assert scanned == {"orders-api", "orders-api/staging", "shared-web", "vaulted-api",
                       "portal", "plain-app", "shared-worker", "legacy-job"}
    assert "hidden-app" not in scanned  # its subscription is invisible to the operator
    assert inventory.complete, inventory.gaps


def test_resolves_principals_matches_credentials_and_reads_rights(
        sim: Sim, inventory: Inventory) -> None:
    by_name = {p.name: p for p in inventory.principals}
    assert set(by_name) == {"orders-sp", "shared-sp", "vaulted-sp", "legacy-sp"}

    orders = by_name["orders-sp"]
    assert {u.app for u in orders.used_by} == {"orders-api", "orders-api/staging"}
    current = derive_id("secret", "orders-sp#1")  # the second secret, the one in use
    assert {(u.match.status, u.match.key_id) for u in orders.used_by} == {("matched", current)}
    rg = f"/subscriptions/{sim.subscription_id_of('prod')}/resourceGroups/rg-orders"
    assert {(r.role_name, r.scope) for r in orders.role_assignments} == {
        ("Storage Blob Data Reader", rg)}
    assert [(v.vault_name, set(v.secrets)) for v in orders.vault_policies] == [
        ("kv-orders", {"get", "list"})]
    assert [g.app_role_value for g in orders.graph_roles] == ["User.Read.All"]
    assert orders.principal is not None
    assert orders.principal.object_id == sim.object_id("orders-sp")

    shared = by_name["shared-sp"]
    assert {u.app for u in shared.used_by} == {"shared-web", "shared-worker"}
    assert {(r.role_name, r.scope) for r in shared.role_assignments} == {
        ("Storage Blob Data Contributor", f"/subscriptions/{sim.subscription_id_of('dev')}"),
        ("Reader", rg)}

    vaulted = by_name["vaulted-sp"]
    (use,) = vaulted.used_by
    assert use.kind == FindingKind.KEY_VAULT_REFERENCE.value
    assert use.match.status == "matched"  # by elimination: its only valid credential
    assert use.match.key_id == derive_id("secret", "vaulted-sp#0")

    (legacy_use,) = by_name["legacy-sp"].used_by
    assert legacy_use.match.status == "expired"


def test_a_subscription_the_operator_cannot_read_is_a_gap(sim: Sim) -> None:
    hidden = sim.subscription_id_of("secret-sub")
    inventory = Scanner(sim.factory()).run(ScanScope(subscriptions=("prod", hidden)))
    assert not inventory.complete
    (gap,) = inventory.gaps
    assert hidden in gap.scope
    assert {a.site.display for a in inventory.apps} >= {"orders-api", "shared-web"}
    assert not any(a.site.subscription_id == hidden for a in inventory.apps)


def test_a_403_inside_a_subscription_is_a_gap_not_silence(sim: Sim) -> None:
    """reader-only access to settings: the site is listed, its settings are not readable."""
    factory = sim.factory()
    auth = factory.authorization(sim.subscription_id_of("prod"))
    names = {a.name for a in auth.role_assignments.list_for_subscription()
             if a.principal_id == sim.object_id("migrator-operator")
             and (a.role_definition_id or "").endswith("de139f84-1756-47ae-9be6-808fbbe84772")}
    prod_scope = f"/subscriptions/{sim.subscription_id_of('prod')}"
    owner = sim.factory()  # the operator cannot delete assignments: do it as the tenant does
    with sim.tenant.lock:
        for name in names:
            del sim.tenant.role_assignments[name]
    del owner
    inventory = Scanner(factory).run(ScanScope(subscriptions=("prod",)))
    assert not inventory.complete
    assert any(g.status == 403 and g.scope.startswith(prod_scope) for g in inventory.gaps)
    assert "orders-api" not in {a.site.display for a in inventory.apps}


def test_resource_group_filter(sim: Sim) -> None:
    inventory = Scanner(sim.factory()).run(ScanScope(resource_groups=("rg-dev",)))
    assert {a.site.display for a in inventory.apps} == {"shared-worker", "legacy-job"}


def test_a_resource_group_in_no_subscription_is_a_gap(sim: Sim) -> None:
    # A typo in -g must not read as "Complete, no finding": ARM's 404 ResourceGroupNotFound
    # for every scanned subscription makes the scan incomplete, with the name to check.
    inventory = Scanner(sim.factory()).run(ScanScope(resource_groups=("rg-dve",)))
    assert inventory.apps == ()
    assert not inventory.complete
    [gap] = inventory.gaps
    assert (gap.status, gap.code) == (404, "ResourceGroupNotFound")
    assert "rg-dve" in gap.message and "check the name" in gap.message


def test_an_existing_resource_group_without_sites_is_no_gap(sim: Sim) -> None:
    # rg-network holds no site: looked up, found, and the scan is complete and empty.
    inventory = Scanner(sim.factory()).run(ScanScope(resource_groups=("RG-Network",)))
    assert inventory.apps == ()
    assert inventory.complete, inventory.gaps


def test_cli_scan_of_a_mistyped_resource_group_exits_1(sim: Sim,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sim.endpoints.environment().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["scan", "-g", "rg-dve"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "Incomplete" in result.output and "rg-dve" in result.output


def _all_secrets(sim: Sim) -> list[str]:
    return [p.secret for a in sim.tenant.applications.values() for p in a.passwords]


def test_cli_scan_json_and_table_show_no_secret(sim: Sim, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    for name, value in sim.endpoints.environment().items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    as_json = runner.invoke(app, ["scan", "--output", "json"], env={"COLUMNS": "200"})
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.stdout)
    assert document["complete"] is True
    assert {p["principal"]["display_name"] for p in document["principals"]} == {
        "orders-sp", "shared-sp", "vaulted-sp", "legacy-sp"}
    table = runner.invoke(app, ["scan"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "orders-api/staging" in table.output
    assert "Complete" in table.output
    for secret in _all_secrets(sim):
        assert secret not in as_json.output
        assert secret not in table.output
        assert secret[:8] not in as_json.output


def test_cli_scan_incomplete_exit_code(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sim.endpoints.environment().items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["scan", "--subscription", "prod", "--subscription",
                                      sim.subscription_id_of("secret-sub")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "Incomplete" in result.output


def test_cli_scan_bad_credentials_exit_2(sim: Sim, monkeypatch: pytest.MonkeyPatch,
                                         quiet_identity_warnings: None) -> None:
    for name, value in sim.endpoints.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "not-the-secret")
    result = CliRunner().invoke(app, ["scan"], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "AADSTS7000215" in result.output


def test_json_report_has_no_fingerprint_or_value(inventory: Inventory, sim: Sim) -> None:
    text = render_inventory(inventory)
    assert "fingerprint" not in text
    for secret in _all_secrets(sim):
        assert secret not in text
