"""The planner on a mixed tenant, scanned through the real SDKs: every decision the plan makes,
its integrity and schema, the CLI, and never a secret in a plan or a report."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from conftest import running_sim
from typer.testing import CliRunner

from migrator.cli import app
from migrator.cloud.web import WebAdapter
from migrator.detect import ConnectionStringValue, SiteSettings, settings_fingerprint
from migrator.inventory import Inventory
from migrator.plan import Plan, PlanError, PlanOptions, build_plan, dump_plan, parse_plan
from migrator.plan.model import (
    IDENTITY_CLIENT_ID,
    AppPlan,
    AppStatus,
    AssignUserAssignedIdentity,
    BlockedCode,
    EnableSystemIdentity,
    GraphAppRole,
    RemovePasswordCredential,
    RoleAssignment,
    SqlUser,
    Stage,
    StagePlan,
    UpdateAppSettings,
    UpdateConnectionStrings,
    UpdateSlotConfig,
    VaultAccessPolicy,
)
from migrator.plan.schema import SCHEMA_PATH, plan_schema, schema_text
from migrator.scan import Scanner, ScanScope

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"
ESTATE = FIXTURES / "plan_estate.yaml"


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sim, Inventory, Plan]]:
    with running_sim(ESTATE, tmp_path_factory.mktemp("sim")) as sim:
        inventory = Scanner(sim.factory(), workers=8).run()
        yield sim, inventory, build_plan(inventory, PlanOptions(name="t", tool_version="test"))


@pytest.fixture(scope="module")
def sim(planned: tuple[Sim, Inventory, Plan]) -> Sim:
    return planned[0]


@pytest.fixture(scope="module")
def plan(planned: tuple[Sim, Inventory, Plan]) -> Plan:
    return planned[2]


def _app(plan: Plan, name: str) -> AppPlan:
    (found,) = [a for a in plan.apps if a.name == name]
    return found


def _stage(app_plan: AppPlan, stage: Stage) -> StagePlan:
    (found,) = [s for s in app_plan.stages if s.stage is stage]
    return found


def _params(app_plan: AppPlan, stage: Stage, kind: type[Any]) -> list[Any]:
    return [s.params for s in _stage(app_plan, stage).steps if isinstance(s.params, kind)]


def _settings_edits(app_plan: AppPlan) -> dict[str, tuple[str, str | None, bool]]:
    (update,) = _params(app_plan, Stage.SWAP, UpdateAppSettings)
    return {e.name: (e.action, e.value, e.sticky) for e in update.edits}


def test_every_app_with_a_finding_is_in_the_plan_with_its_status(plan: Plan) -> None:
    assert {a.name: a.status for a in plan.apps} == {
        "bus-fn": AppStatus.MIGRATABLE,
        "expired-api": AppStatus.BLOCKED,
        "files-app": AppStatus.ADVISORY,
        "ghost-api": AppStatus.BLOCKED,
        "held-api": AppStatus.MIGRATABLE,
        "held-legacy": AppStatus.BLOCKED,
        "mixed-up-api": AppStatus.BLOCKED,
        "orders-api": AppStatus.MIGRATABLE,
        "orders-api/staging": AppStatus.MIGRATABLE,
        "orphan-secret-api": AppStatus.BLOCKED,
        "portal": AppStatus.BLOCKED,
        "shared-web": AppStatus.MIGRATABLE,
        "shared-worker": AppStatus.MIGRATABLE,
        "sql-api": AppStatus.MIGRATABLE,
        "vaulted-api": AppStatus.MIGRATABLE,
    }
    s = plan.summary
    assert (s.apps_found, s.migratable, s.blocked, s.advisory) == (15, 8, 6, 1)
    assert s.blocked_by_reason == {"code-needs-secret": 1, "credential-unmatched": 2,
                                   "inbound-credential": 1, "principal-not-found": 1,
                                   "principal-unknown": 1}
    assert s.identities_to_create == 2
    assert s.shared_principals == 3  # orders-sp, shared-sp, held-sp
    assert s.secrets_to_remove == 6  # one credential per migratable principal


@pytest.mark.parametrize(("name", "code", "words"), [
    ("held-legacy", BlockedCode.CODE_NEEDS_SECRET, "Partner__ClientSecret"),
    ("portal", BlockedCode.INBOUND_CREDENTIAL, "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET"),
    ("expired-api", BlockedCode.CREDENTIAL_UNMATCHED, "expired"),
    ("mixed-up-api", BlockedCode.CREDENTIAL_UNMATCHED, "no credential of the principal"),
    ("ghost-api", BlockedCode.PRINCIPAL_NOT_FOUND, "0b9c2a4e-1f3d-4c5b-8a7e-9d6f0e1c2b3a"),
    ("orphan-secret-api", BlockedCode.PRINCIPAL_UNKNOWN, "no client id"),
])
def test_each_blocked_reason(plan: Plan, name: str, code: BlockedCode, words: str) -> None:
    app_plan = _app(plan, name)
    assert [b.code for b in app_plan.blocked] == [code]
    assert words in app_plan.blocked[0].message
    assert app_plan.stages == ()  # nothing will be done to a blocked app
    assert app_plan.findings  # but what was found is reported


def test_cli_refuses_an_accept_gap_that_matches_no_gap(sim: Sim, tmp_path: Path) -> None:
    hidden = "00000000-dead-4bad-8000-000000000000"
    env = {**sim.endpoints.environment(), "COLUMNS": "200"}
    scope = ["plan", "--dir", str(tmp_path), "-s", "prod", "-s", hidden]
    typo = CliRunner().invoke(app, [*scope, "--name", "typo", "--accept-gap", "00000000-deda"],
                              env=env)
    assert typo.exit_code == 2, typo.output
    assert "matches no gap of this scan" in typo.output and hidden in typo.output
    assert "Traceback" not in typo.output
    assert list(tmp_path.iterdir()) == []  # nothing written for a refused plan
    named = CliRunner().invoke(app, [*scope, "--name", "ok", "--accept-gap", hidden], env=env)
    assert named.exit_code == 1, named.output  # written; the scan is still incomplete
    assert (tmp_path / "ok.json").exists()


def test_rights_unknown_when_the_scan_has_a_gap_unless_accepted(sim: Sim) -> None:
    hidden = "00000000-dead-4bad-8000-000000000000"
    inventory = Scanner(sim.factory(), workers=4).run(ScanScope(subscriptions=("prod", hidden)))
    assert not inventory.complete
    strict = build_plan(inventory, PlanOptions(name="t", tool_version="test"))
    held = _app(strict, "held-api")
    assert held.status is AppStatus.BLOCKED
    assert [b.code for b in held.blocked] == [BlockedCode.RIGHTS_UNKNOWN]
    assert hidden in held.blocked[0].message and "--accept-gap" in held.blocked[0].message
    lenient = build_plan(inventory, PlanOptions(name="t", tool_version="test",
                                                accept_gaps=(hidden,)))
    assert _app(lenient, "held-api").status is AppStatus.MIGRATABLE
    assert [g.accepted for g in lenient.gaps] == [True]
    assert not lenient.scan_complete


def test_single_user_gets_system_identity_and_loses_the_whole_trio(plan: Plan) -> None:
    """AZURE-FACTS: DefaultAzureCredential passes AZURE_CLIENT_ID to ManagedIdentityCredential
    as a user-assigned id, so a system-assigned swap must remove it with the secret."""
    sql = _app(plan, "sql-api")
    assert sql.identity is not None and sql.identity.type == "system-assigned"
    (enable,) = _params(sql, Stage.IDENTITY, EnableSystemIdentity)
    assert enable.current_type == "None"
    assert _settings_edits(sql) == {
        "AZURE_CLIENT_ID": ("remove", None, False),
        "AZURE_CLIENT_SECRET": ("remove", None, False),
        "AZURE_TENANT_ID": ("remove", None, False),
    }
    vaulted = _app(plan, "vaulted-api")  # a Key Vault reference in the secret's place
    (keep,) = _params(vaulted, Stage.IDENTITY, EnableSystemIdentity)
    assert keep.current_type == "SystemAssigned"
    assert "already enabled" in _stage(vaulted, Stage.IDENTITY).steps[0].title


def test_shared_principal_gets_one_user_assigned_identity_across_subscriptions(
        plan: Plan) -> None:
    web, worker = _app(plan, "shared-web"), _app(plan, "shared-worker")
    assert web.subscription_id != worker.subscription_id
    assert web.identity is not None and worker.identity is not None
    assert web.identity.type == worker.identity.type == "user-assigned"
    assert web.identity.identity == worker.identity.identity
    (identity,) = [i for i in plan.identities if i.key == web.identity.identity]
    assert identity.used_by == ("shared-web", "shared-worker")
    assigned = {a.resource_id for p in (web, worker)
                for a in _params(p, Stage.IDENTITY, AssignUserAssignedIdentity)}
    assert assigned == {identity.resource_id}
    for p in (web, worker):
        assert _settings_edits(p) == {"AZURE_CLIENT_ID": ("set", IDENTITY_CLIENT_ID, False),
                                      "AZURE_CLIENT_SECRET": ("remove", None, False)}
    grants = [{(r.scope, r.role_name) for r in _params(p, Stage.GRANT, RoleAssignment)}
              for p in (web, worker)]
    assert grants[0] == grants[1] == {
        (f"/subscriptions/{worker.subscription_id}", "Storage Blob Data Contributor"),
        (f"/subscriptions/{web.subscription_id}/resourceGroups/rg-orders", "Reader")}


def test_rights_are_copied_scope_for_scope_and_role_for_role(sim: Sim, plan: Plan) -> None:
    orders = _app(plan, "orders-api")
    roles = _params(orders, Stage.GRANT, RoleAssignment)
    assert [(r.scope, r.role_name, r.principal_type) for r in roles] == [
        (f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-orders",
         "Storage Blob Data Reader", "ServicePrincipal")]
    (policy,) = _params(orders, Stage.GRANT, VaultAccessPolicy)
    assert (policy.vault_name, policy.secrets, policy.keys) == ("kv-orders", ("get", "list"), ())
    (app_role,) = _params(orders, Stage.GRANT, GraphAppRole)
    assert app_role.app_role_value == "User.Read.All"
    assert any(d.topic == "vault kv-rbac" and "RBAC" in d.reason for d in orders.decisions)
    # a step's parameters never name the old principal as grantee, only where it came from
    assert all(r.copied_from == sim.client_id("orders-sp") for r in roles)


def test_sql_user_is_an_operator_confirmed_script_and_the_string_is_rewritten(
        plan: Plan) -> None:
    sql = _app(plan, "sql-api")
    (user,) = _params(sql, Stage.GRANT, SqlUser)
    assert (user.server, user.database, user.copied_from_user) == (
        "sql-tailspin.database.windows.net", "sales", "sql-sp")
    assert user.requires_confirmation
    assert re.search(r"CREATE USER \[\{identity.name\}\] FROM EXTERNAL PROVIDER", user.script)
    assert "DROP USER" in user.undo_script
    (strings,) = _params(sql, Stage.SWAP, UpdateConnectionStrings)
    assert [(e.name, e.rewrite, e.client_id) for e in strings.edits] == [
        ("Sales", "sql-managed-identity", None)]


def test_functions_connection_becomes_identity_based_and_stays_sticky(plan: Plan) -> None:
    bus = _app(plan, "bus-fn")
    assert _settings_edits(bus) == {
        "Bus__clientId": ("remove", None, False),
        "Bus__clientSecret": ("remove", None, True),
        "Bus__credential": ("set", "managedidentity", True),
        "Bus__tenantId": ("remove", None, False),
    }
    (slot_config,) = _params(bus, Stage.SWAP, UpdateSlotConfig)
    assert slot_config.add_app_setting_names == ("Bus__credential",)


def test_slot_and_site_share_one_identity_and_sticky_settings_stay_sticky(plan: Plan) -> None:
    site, slot = _app(plan, "orders-api"), _app(plan, "orders-api/staging")
    assert site.identity is not None and slot.identity is not None
    assert site.identity.identity == slot.identity.identity
    assert _settings_edits(site)["AZURE_CLIENT_ID"] == ("set", IDENTITY_CLIENT_ID, True)
    assert any(d.topic == "slot settings" for d in site.decisions)


def test_revoke_removes_only_the_matched_credential(sim: Sim, plan: Plan) -> None:
    orders = _app(plan, "orders-api")
    (remove,) = _params(orders, Stage.REVOKE, RemovePasswordCredential)
    app_obj = sim.tenant.app_by_app_id(sim.client_id("orders-sp"))
    assert app_obj is not None
    old, current = app_obj.passwords
    assert remove.key_id == current.key_id != old.key_id
    assert remove.also_used_by == ("orders-api/staging",)
    assert not _stage(orders, Stage.REVOKE).steps[0].undo.reversible
    (principal,) = [p for p in plan.principals if p.name == "orders-sp"]
    assert principal.credentials_removed == (current.key_id,)
    assert principal.other_valid_credentials == (old.key_id,)
    assert any("other valid credential" in h for h in principal.cleanup.held)


def test_revoke_is_held_while_an_unmigratable_app_uses_the_credential(plan: Plan) -> None:
    held = _app(plan, "held-api")
    revoke = _stage(held, Stage.REVOKE)
    assert revoke.steps and revoke.held
    assert "held-legacy" in revoke.held[0]
    assert any(d.topic == "identity" and "held-legacy" in d.reason for d in held.decisions)
    (principal,) = [p for p in plan.principals if p.name == "held-sp"]
    assert any("held-legacy" in h for h in principal.cleanup.held)
    shared = _stage(_app(plan, "shared-web"), Stage.REVOKE)
    assert shared.held == ()  # waits for shared-worker's swap, which the executor checks


def test_principal_rights_removed_only_when_nothing_uses_it(plan: Plan) -> None:
    (shared,) = [p for p in plan.principals if p.name == "shared-sp"]
    assert len(shared.cleanup.steps) == 2
    assert shared.cleanup.held == ()  # runs once both apps are revoked
    assert shared.cleanup.steps[0].id.startswith(f"principal/{shared.app_id}/cleanup/01-")


def test_settings_fingerprint_matches_the_settings_until_they_change(
        sim: Sim, plan: Plan) -> None:
    web = WebAdapter(sim.factory())
    orders = _app(plan, "sql-api")
    (site,) = [s for s in web.sites(orders.subscription_id) if s.id == orders.site_id]
    salt = bytes.fromhex(plan.settings_salt)

    def now() -> str:
        record = web.settings(site)
        return settings_fingerprint(SiteSettings(
            app_settings=record.app_settings,
            connection_strings={k: ConnectionStringValue(t, v)
                                for k, (t, v) in record.connection_strings.items()},
            sticky_app_settings=record.sticky_app_settings,
            sticky_connection_strings=record.sticky_connection_strings), salt)

    assert now() == orders.settings_fingerprint
    client = sim.factory().web(orders.subscription_id)
    settings = client.web_apps.list_application_settings(orders.resource_group, "sql-api")
    settings.properties["FEATURE_FLAG"] = "on"
    client.web_apps.update_application_settings(orders.resource_group, "sql-api", settings)
    assert now() != orders.settings_fingerprint


def test_plan_validates_against_the_published_schema(plan: Plan) -> None:
    assert SCHEMA_PATH.read_text() == schema_text(), \
        "plans/plan.schema.json is stale: run `python -m migrator.plan.schema`"
    jsonschema.validate(json.loads(dump_plan(plan)), plan_schema())
    assert parse_plan(dump_plan(plan)) == plan  # round trip


def test_edited_or_broken_plans_are_refused(plan: Plan) -> None:
    document = json.loads(dump_plan(plan))
    sql = next(a for a in document["apps"] if a["name"] == "sql-api")
    sql["stages"][1]["steps"][0]["params"]["database"] = "master"
    with pytest.raises(PlanError, match="app sql-api: its steps were edited after planning"):
        parse_plan(json.dumps(document), "p.json")
    broken = json.loads(dump_plan(plan))
    broken["apps"][0]["status"] = "maybe"
    with pytest.raises(PlanError, match=r"does not match the plan schema at apps\.0\.status"):
        parse_plan(json.dumps(broken), "p.json")
    with pytest.raises(PlanError, match="not JSON"):
        parse_plan("{", "p.json")
    with pytest.raises(PlanError, match="schema_version '9'"):
        parse_plan(json.dumps({**json.loads(dump_plan(plan)), "schema_version": "9"}))


def _all_secrets(sim: Sim) -> list[str]:
    found = [p.secret for a in sim.tenant.applications.values() for p in a.passwords]
    assert len(found) >= 10
    return found


def test_cli_plan_and_report_never_show_a_secret(sim: Sim, tmp_path: Path) -> None:
    env = {"MIGRATOR_CLOUD_PROFILE": str(sim.endpoints.profile_path), "COLUMNS": "160",
           **sim.endpoints.environment()}
    runner = CliRunner()
    made = runner.invoke(app, ["plan", "--name", "mixed", "--dir", str(tmp_path)], env=env)
    assert made.exit_code == 1, made.output  # some apps are blocked
    assert "held-legacy" in made.output
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["mixed.html", "mixed.json", "mixed.md"]
    again = runner.invoke(app, ["plan", "--name", "mixed", "--dir", str(tmp_path)], env=env)
    assert again.exit_code == 2 and "exists already" in again.output
    outputs = [made.output, *((tmp_path / f).read_text() for f in files)]
    for fmt in ("terminal", "markdown", "html", "json"):
        shown = runner.invoke(app, ["report", str(tmp_path / "mixed.json"), "--format", fmt],
                              env={"COLUMNS": "160"})
        assert shown.exit_code == 0, shown.output
        assert "held-api" in shown.output
        outputs.append(shown.output)
    for secret in _all_secrets(sim):
        for text in outputs:
            assert secret not in text
            assert secret[4:16] not in text


def test_cli_report_refuses_an_edited_plan_in_one_line(plan: Plan, tmp_path: Path) -> None:
    document = json.loads(dump_plan(plan))
    document["apps"][0]["name"] = "someone-else"
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(app, ["report", str(path)])
    assert result.exit_code == 2
    assert "edited after planning" in result.output
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output


# --- golden files ---------------------------------------------------------------------------

GOLDEN = Path(__file__).parents[1] / "golden"
UPDATE = "MIGRATOR_UPDATE_GOLDEN"


def _normalise(text: str, plan: Plan) -> str:
    """Replace what differs from run to run: secrets are generated at each load (so their
    hints differ), and the settings salt (so fingerprints and digests differ)."""
    hints = {c.hint for a in plan.apps for c in a.credentials if c.hint}
    hints |= {f.hint for a in plan.apps for f in a.findings if f.hint}
    for hint in sorted(hints, key=len, reverse=True):
        text = re.sub(rf"(?<=hint ){re.escape(hint)}\b", "<hint>", text)
        text = text.replace(f'"hint": "{hint}"', '"hint": "<hint>"')
        text = text.replace(f"`{hint}`", "`<hint>`")
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<digest>", text)
    text = re.sub(r'("settings_(?:fingerprint|salt)": )"[0-9a-f]+"', r'\1"<salted>"', text)
    text = re.sub(r"https://127\.0\.0\.1:\d+/", "https://127.0.0.1:<port>/", text)
    # the sign-in logs' window ends when the scan read them
    text = re.sub(r'("(?:since|until)": )"[^"]+"', r'\1"<scan time>"', text)
    return text


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get(UPDATE):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden file {path}: run with {UPDATE}=1 once, then review it"
    assert text == path.read_text(encoding="utf-8"), \
        f"{name} differs from its golden file; if the change is intended, rerun with {UPDATE}=1"


@pytest.fixture(scope="module")
def golden_plan(planned: tuple[Sim, Inventory, Plan]) -> Plan:
    _, inventory, _ = planned
    return build_plan(inventory, PlanOptions(
        name="mixed", tool_version="golden",
        created_at=datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)))


def test_plan_json_golden(sim: Sim, golden_plan: Plan) -> None:
    text = _normalise(dump_plan(golden_plan), golden_plan)
    _check_golden("plan_mixed.json", text)
    for secret in _all_secrets(sim):
        assert secret not in text


def test_markdown_report_golden(sim: Sim, golden_plan: Plan) -> None:
    from migrator.report import plan_markdown

    text = _normalise(plan_markdown.render(golden_plan), golden_plan)
    _check_golden("report_mixed.md", text)
    for secret in _all_secrets(sim):
        assert secret not in text
