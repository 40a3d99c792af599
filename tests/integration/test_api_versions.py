"""ARM refuses api-versions it has not published, and so does the simulator.

An SDK upgrade that moves a client to a new api-version must fail here, where someone reads
what changed in that version's REST spec, rather than pass against answers nobody checked. The
messages follow ARM's (Azure/azure-cli#28496, #28038; see migrator/sim/api_versions.py).
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from typer.testing import CliRunner

from migrator.cli import app as cli_app
from migrator.sim.api_versions import ApiVersions, published

if TYPE_CHECKING:
    from conftest import Sim

RG = "rg-orders"


def _get(sim: Sim, path: str, api_version: str) -> tuple[int, dict[str, str]]:
    token = sim.credential().get_token(sim.profile.arm_scope).token
    with sim.http() as http:
        answer = http.get(f"{sim.base_url}{path}", params={"api-version": api_version},
                          headers={"Authorization": f"Bearer {token}"})
    error = answer.json().get("error", {}) if answer.status_code >= 400 else {}
    return answer.status_code, error


def test_a_version_azure_never_published_is_refused_as_arm_refuses_it(sim: Sim) -> None:
    site = (f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}/providers/"
            "Microsoft.Web/sites/orders-api")
    status, error = _get(sim, site, "2099-01-01")
    assert status == 400
    assert error["code"] == "NoRegisteredProviderFound"
    assert "API version '2099-01-01' for type 'sites'" in error["message"]
    assert "2025-05-01" in error["message"]  # the supported list is spelled out

    assignments = f"/subscriptions/{sim.subscription_id}/providers/Microsoft.Authorization/" \
                  "roleAssignments"
    # ARM refused exactly this one (Azure/azure-quickstart-templates#8013).
    status, error = _get(sim, assignments, "2015-06-15")
    assert status == 400
    assert error["code"] == "NoRegisteredProviderFound"
    assert "for type 'roleAssignments'" in error["message"]
    assert error["message"].endswith("The supported locations are ''.")  # a global provider

    # ARM's own types, and a version that is not a date, are InvalidApiVersionParameter.
    status, error = _get(sim, "/subscriptions", "2099-01-01")
    assert (status, error["code"]) == (400, "InvalidApiVersionParameter")
    assert error["message"].startswith("The api-version '2099-01-01' is invalid.")
    status, error = _get(sim, site, "latest")
    assert (status, error["code"]) == (400, "InvalidApiVersionParameter")

    # Published versions are accepted, old and new, in any letter case of a preview suffix.
    assert _get(sim, site, "2025-05-01")[0] == 200
    assert _get(sim, site, "2016-08-01")[0] == 200
    status, _ = _get(sim, f"/subscriptions/{sim.subscription_id}/providers/"
                     "Microsoft.Authorization/roleDefinitions", "2018-01-01-PREVIEW")
    assert status == 200


def test_every_api_version_the_product_sends_is_one_the_simulator_accepts(
        sim: Sim, tmp_path: Path) -> None:
    env = {**sim.endpoints.environment(), "COLUMNS": "200",
           "MIGRATOR_STASH_KEY_FILE": str(tmp_path / "keys" / "stash.key")}
    plan = str(tmp_path / "p.json")
    commands = [(["scan", "--resource-group", "rg-none"], 1),  # a group with no site is read
                (["plan", "--name", "p", "--dir", str(tmp_path)], 0),
                (["apply", plan, "--app", "orders-api", "--stage", "swap", "--yes"], 0),
                (["rollback", plan, "--app", "orders-api", "--yes"], 0),
                (["apply", plan, "--app", "orders-api", "--soak", "0", "--yes"], 0)]
    for command, exit_code in commands:
        result = CliRunner().invoke(cli_app, command, env=env)
        assert result.exit_code == exit_code, (command, result.output)
        assert "NoRegisteredProviderFound" not in result.output

    seen = sim.server.ctx.api_versions_seen
    table = published()
    for resource_type, api_version in sorted(seen):
        assert table.refusal(resource_type, api_version) is None, (
            f"the product sent api-version {api_version} for {resource_type} (SDKs: "
            f"{_sdks()}), which the simulator refuses: read what that version changed in "
            "Azure/azure-rest-api-specs, model it, and add it to migrator/sim/api_versions.json")
    # Every kind of resource the product touches was part of the run, so none went unchecked.
    # (A Log Analytics workspace is served for ARM clients; the product names it by its
    # workspace id to the query API and never reads it through ARM.)
    untouched = {"Microsoft.Resources/resources", "Microsoft.OperationalInsights/workspaces"}
    assert set(table.published) - untouched - {t for t, _ in seen} == set()


def _sdks() -> str:
    return ", ".join(f"{p} {version(p)}" for p in (
        "azure-mgmt-web", "azure-mgmt-keyvault", "azure-mgmt-msi", "azure-mgmt-authorization",
        "azure-mgmt-resource-subscriptions"))


def test_an_sdk_on_an_unpublished_version_is_a_gap_that_names_it(sim: Sim) -> None:
    # As if azure-mgmt-web moved to a version Azure does not serve: drop the one it sends.
    sent = sim.factory().web(sim.subscription_id)._config.api_version
    table = published().published
    sim.server.ctx.api_versions = ApiVersions({
        **table, "Microsoft.Web/sites": tuple(v for v in table["Microsoft.Web/sites"]
                                              if v != sent)})
    env = {**sim.endpoints.environment(), "COLUMNS": "200"}
    result = CliRunner().invoke(cli_app, ["scan"], env=env)
    assert result.exit_code == 1, result.output  # incomplete: the sites could not be read
    assert "NoRegisteredProviderFound" in result.output
    assert "Traceback" not in result.output


def test_any_api_version_turns_the_check_off(sim: Sim) -> None:
    sim.server.ctx.api_versions = None
    site = (f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}/providers/"
            "Microsoft.Web/sites/orders-api")
    assert _get(sim, site, "2099-01-01")[0] == 200
