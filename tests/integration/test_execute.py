"""The executor end to end, through the real SDKs against the simulator: each stage and its
undo, the shared principal, an unhealthy swap restored at once, a revoke rolled back with a new
secret, resume after a failure, and never a secret in the journal, the logs or the output.

The simulator's health endpoint is the oracle: an app is fine only when every access it needs
succeeds with the credential its current settings resolve to."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine, EngineEvent
from migrator.execute.journal import SqliteJournal, StepState
from migrator.execute.stash import FileStash
from migrator.plan import Plan, PlanOptions, build_plan
from migrator.plan.model import Stage
from migrator.scan import Scanner

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"
NOW = ApplyOptions(soak=timedelta(0), health_timeout=20, replication_timeout=30)


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "execute_estate.yaml"


@pytest.fixture(autouse=True)
def stash_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "keys" / "stash.key"
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(key))
    return key


class Run:
    """A plan of the tenant and an engine over it, as `migrator apply` would build them."""

    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        self.sim = sim
        # Every secret the tenant holds before anything runs: a revoke deletes the one the run
        # handles, and that one above all must never be shown.
        self.initial_secrets = frozenset(self.secrets())
        self.events: list[EngineEvent] = []
        self.shown: list[str] = []  # what the engine's outcomes said
        inventory = Scanner(sim.factory(), workers=4).run()
        self.plan: Plan = build_plan(inventory, PlanOptions(name="e2e", tool_version="test"))
        self.journal_path = tmp_path / "e2e.journal.sqlite"
        self.stash_path = tmp_path / "e2e.stash"
        self.journal = SqliteJournal(self.journal_path)
        self.engine = Engine(self.plan, self.journal,
                             FileStash(self.stash_path, tmp_path / "keys" / "stash.key"),
                             CloudChanges(sim.factory()), events=self.events.append,
                             sleep=lambda s: __import__("time").sleep(min(s, 0.2)))

    def apply(self, *apps: str, stages: tuple[Stage, ...] | None = None,
              **kw: Any) -> dict[str, Any]:
        # The simulator's RBAC delay is seconds here (conftest): a short propagation window.
        options = ApplyOptions(apps=apps, soak=kw.pop("soak", timedelta(0)),
                               health_timeout=kw.pop("health_timeout", 20),
                               rbac_propagation=kw.pop("rbac_propagation", 10),
                               replication_timeout=30, **kw)
        if stages is not None:
            options = dataclasses.replace(options, stages=stages)
        outcomes = list(self.engine.apply(options))
        self.shown += [text for o in outcomes for text in (o.message, o.script or "", *o.notes)]
        return {o.app: o for o in outcomes}

    def healthy(self, name: str) -> bool:
        site, _, slot = name.partition("/")
        path = f"/_sites/{site}" + (f"/slots/{slot}" if slot else "") + "/healthz"
        with self.sim.http() as http:
            return bool(http.get(path).status_code == 200)

    def state(self) -> dict[str, Any]:
        with self.sim.http() as http:
            state: dict[str, Any] = http.get("/_sim/state").json()
        for site in state["sites"]:
            site.pop("restarts", None)
        return state

    def site(self, name: str) -> dict[str, Any]:
        (found,) = [s for s in self.state()["sites"] if s["name"] == name]
        return found

    def secrets(self) -> list[str]:
        """The tenant's secrets now (a revoke removes one, a rollback mints one)."""
        with self.sim.tenant.lock:
            return [p.secret for a in self.sim.tenant.applications.values() for p in a.passwords]

    def searched_secrets(self) -> set[str]:
        """Every secret a leak check looks for: those held before the run, and those since."""
        return set(self.initial_secrets) | set(self.secrets())


@pytest.fixture
def run(sim: Sim, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> Iterator[Run]:
    caplog.set_level(logging.DEBUG)
    r = Run(sim, tmp_path)
    try:
        yield r
        captured = capsys.readouterr()
        _no_secret_anywhere(r, captured.out, captured.err, caplog.text,
                            *(m.getMessage() for m in caplog.records))
    finally:
        r.journal.close()


def _no_secret_anywhere(run: Run, *texts: str, extra: tuple[str, ...] = ()) -> None:
    """No secret the tenant held at the start or holds now is in the journal (its WAL), the
    stash file (encrypted), the events, the outcomes, or the texts given."""
    files = [run.journal_path, run.journal_path.with_name(run.journal_path.name + "-wal"),
             run.stash_path]
    blobs = {p.name: p.read_bytes() for p in files if p.exists()}
    shown = "\n".join([*texts, *run.shown, *(e.text for e in run.events)])
    for secret in run.searched_secrets() | set(extra):
        leaked = secret in shown or secret in "".join(shown.split())
        assert not leaked, f"a secret (hint {secret[:3]}) was shown"
        for name, blob in blobs.items():
            leaked = secret.encode() in blob
            assert not leaked, f"a secret (hint {secret[:3]}) is in {name}"


def test_single_app_migrates_and_stays_healthy(run: Run) -> None:
    handled = run.sim.secret("solo-sp")
    assert run.healthy("solo-api")
    outcome = run.apply("solo-api")["solo-api"]
    assert outcome.outcome == "done", outcome.message
    assert outcome.stages_done == ("identity", "grant", "swap", "revoke")
    assert run.healthy("solo-api")
    site = run.site("solo-api")
    assert site["identity"]["type"] == "SystemAssigned"
    assert not {"AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"} & set(
        site["appSettings"])
    assert site["appSettings"]["WEBSITE_RUN_FROM_PACKAGE"] == "1"  # the rest is untouched
    principal = site["identity"]["principalId"]
    assert any(r["principalId"] == principal and r["principalType"] == "ServicePrincipal"
               for r in run.state()["roleAssignments"])
    solo = run.sim.tenant.app_by_app_id(run.sim.client_id("solo-sp"))
    assert solo is not None and solo.passwords == []  # the one credential is gone
    # the secret the run handled is gone from the tenant, yet still looked for
    covered = handled not in run.secrets() and handled in run.searched_secrets()
    assert covered, "the revoked secret is not among those searched"  # no value printed
    _no_secret_anywhere(run)


def test_apply_again_changes_nothing(run: Run) -> None:
    run.apply("solo-api")
    before = run.state()
    again = run.apply("solo-api")["solo-api"]
    assert again.outcome == "done"
    assert run.state() == before


def test_each_stage_can_be_rolled_back_to_the_exact_former_state(run: Run) -> None:
    before = run.state()
    run.apply("solo-api", stages=(Stage.IDENTITY, Stage.GRANT, Stage.SWAP))
    assert run.healthy("solo-api")
    assert run.state() != before
    result = run.engine.rollback("solo-api", Stage.GRANT)
    assert result.outcome == "rolled-back", result.message
    assert run.healthy("solo-api")
    assert run.site("solo-api")["appSettings"] == next(
        s for s in before["sites"] if s["name"] == "solo-api")["appSettings"]
    assert run.engine.rollback("solo-api").outcome == "rolled-back"
    assert run.state() == before


def test_shared_principal_uses_one_identity_and_revokes_after_the_last_app(run: Run) -> None:
    first = run.apply("shared-a")["shared-a"]
    assert first.outcome == "waiting" and "shared-b" in first.message
    assert first.stages_done == ("identity", "grant", "swap")
    assert run.healthy("shared-a") and run.healthy("shared-b")
    shared = run.sim.tenant.app_by_app_id(run.sim.client_id("shared-sp"))
    assert shared is not None and len(shared.passwords) == 1  # still used by shared-b
    second = run.apply("shared-b")["shared-b"]
    assert second.outcome == "done", second.message
    assert run.apply("shared-a")["shared-a"].outcome == "done"
    assert shared.passwords == []
    a, b = run.site("shared-a"), run.site("shared-b")
    assert a["identity"]["userAssignedIdentities"] == b["identity"]["userAssignedIdentities"]
    assert len(a["identity"]["userAssignedIdentities"]) == 1
    uai = next(u for u in run.state()["userAssignedIdentities"]
               if u["id"] == a["identity"]["userAssignedIdentities"][0])
    assert a["appSettings"]["AZURE_CLIENT_ID"] == uai["clientId"]
    assert run.healthy("shared-a") and run.healthy("shared-b")


def test_an_unhealthy_swap_is_rolled_back_at_once(run: Run) -> None:
    before = run.site("solo-api")
    run.apply("solo-api", stages=(Stage.IDENTITY, Stage.GRANT))
    principal = run.site("solo-api")["identity"]["principalId"]
    with run.sim.tenant.lock:  # someone removes the grant behind the tool's back
        for name, ra in list(run.sim.tenant.role_assignments.items()):
            if ra.principal_id == principal:
                del run.sim.tenant.role_assignments[name]
    outcome = run.apply("solo-api", stages=(Stage.IDENTITY, Stage.GRANT, Stage.SWAP),
                        health_timeout=3)["solo-api"]
    assert outcome.outcome in ("rolled-back", "failed")
    assert outcome.stages_done == ("identity", "grant")
    assert run.site("solo-api")["appSettings"] == before["appSettings"]
    assert run.healthy("solo-api")


def test_revoke_then_rollback_leaves_the_app_healthy_with_a_new_secret(run: Run) -> None:
    handled = run.sim.secret("solo-sp")
    before = run.site("solo-api")
    assert run.apply("solo-api")["solo-api"].outcome == "done"
    solo = run.sim.tenant.app_by_app_id(run.sim.client_id("solo-sp"))
    assert solo is not None and solo.passwords == []
    result = run.engine.rollback("solo-api")
    assert result.outcome == "rolled-back", result.message
    assert any("minted a new secret" in n for n in result.notes)
    assert len(solo.passwords) == 1
    new_secret = solo.passwords[0].secret
    after = run.site("solo-api")
    assert after["appSettings"]["AZURE_CLIENT_SECRET"] == new_secret
    assert {k: v for k, v in after["appSettings"].items() if k != "AZURE_CLIENT_SECRET"} == {
        k: v for k, v in before["appSettings"].items() if k != "AZURE_CLIENT_SECRET"}
    assert after["identity"] == before["identity"]
    assert run.healthy("solo-api")
    covered = {handled, new_secret} <= run.searched_secrets()  # the revoked one, the minted one
    assert covered, "the revoked or the minted secret is not among those searched"
    _no_secret_anywhere(run, result.message, *result.notes, extra=(new_secret,))


def test_revoke_waits_for_the_soak_period(run: Run) -> None:
    outcome = run.apply("solo-api", soak=timedelta(hours=24))["solo-api"]
    assert outcome.outcome == "waiting" and "soak" in outcome.message
    assert outcome.stages_done == ("identity", "grant", "swap")


def test_sql_step_waits_for_the_operator_then_completes(run: Run) -> None:
    waiting = run.apply("sql-api")["sql-api"]
    assert waiting.outcome == "waiting" and waiting.script
    assert "CREATE USER" in waiting.script and "{identity" not in waiting.script
    # the operator runs the script (the simulator's T-SQL subset, as the plan's role copy)
    name = waiting.script.split("[", 1)[1].split("]", 1)[0]
    with run.sim.http() as http:
        answer = http.post("/_sim/sql", json={
            "server": "sql-woodgrove", "database": "sales",
            "script": f"CREATE USER [{name}] FROM EXTERNAL PROVIDER; "
                      f"ALTER ROLE db_datareader ADD MEMBER [{name}];"})
        assert answer.status_code == 200, answer.text
    done = run.apply("sql-api", confirm_sql=True)["sql-api"]
    assert done.outcome == "done", done.message
    assert run.healthy("sql-api")
    strings = run.site("sql-api")["connectionStrings"]["Sales"]["value"]
    assert "Active Directory Managed Identity" in strings and "Password" not in strings


def test_a_drifted_app_is_refused(run: Run) -> None:
    client = run.sim.factory().web(run.sim.subscription_id)
    settings = client.web_apps.list_application_settings("rg-orders", "solo-api")
    settings.properties["NEW_SETTING"] = "x"
    client.web_apps.update_application_settings("rg-orders", "solo-api", settings)
    outcome = run.apply("solo-api")["solo-api"]
    assert outcome.outcome == "refused" and "changed since the plan" in outcome.message
    assert run.site("solo-api")["identity"]["type"] in ("None", None)


def test_stages_run_in_order_only(run: Run) -> None:
    outcome = run.apply("solo-api", stages=(Stage.SWAP,))["solo-api"]
    assert outcome.outcome == "refused" and "identity done first" in outcome.message


def test_status_reports_each_stage(run: Run) -> None:
    run.apply("solo-api", soak=timedelta(hours=24))
    progress = {p.app: p for p in run.engine.status()}
    solo = progress["solo-api"]
    assert solo.reached == "swap"
    assert [s.state for s in solo.stages] == ["done", "done", "done", "pending"]
    assert "revoke" in solo.next
    assert progress["orders-api"].reached == "-"


def test_journal_records_before_state_before_each_write(run: Run) -> None:
    run.apply("solo-api", stages=(Stage.IDENTITY, Stage.GRANT, Stage.SWAP))
    entries = run.journal.entries("e2e", "solo-api")
    by_step: dict[str, list[StepState]] = {}
    for e in entries:
        by_step.setdefault(e.step_id, []).append(e.state)
    assert all(states[:1] == [StepState.STARTED] and states[-1] is StepState.DONE
               for states in by_step.values()), by_step
    swap = next(e for e in entries if e.step_id.endswith("update-app-settings")
                and e.state is StepState.STARTED)
    assert swap.before["stash"] and "AZURE_CLIENT_SECRET" in swap.before["names"]
    assert "AZURE_CLIENT_SECRET" not in json.dumps(dict(swap.before)).replace(
        '"AZURE_CLIENT_SECRET"', "")  # names only


def test_site_and_slot_move_to_one_identity_with_vault_and_graph_rights(run: Run) -> None:
    assert run.healthy("orders-api") and run.healthy("orders-api/staging")
    outcomes = run.apply("orders-api", "orders-api/staging")
    # the site's revoke waits for the slot's swap, later in the same run: both finish
    assert outcomes["orders-api"].outcome == "done", outcomes["orders-api"].message
    assert outcomes["orders-api/staging"].outcome == "done"
    site, slot = run.site("orders-api"), run.site("orders-api/staging")
    assert site["identity"]["userAssignedIdentities"] == slot["identity"][
        "userAssignedIdentities"]
    assert "AZURE_CLIENT_SECRET" not in site["appSettings"]
    assert site["slotSettingNames"] == ["AZURE_CLIENT_SECRET"]  # stickiness as it was
    assert site["appSettings"]["FEATURE_FLAGS"] == "checkout-v2"
    uai = next(u for u in run.state()["userAssignedIdentities"]
               if u["id"] == site["identity"]["userAssignedIdentities"][0])
    vault = next(v for v in run.state()["keyVaults"] if v["id"].endswith("kv-orders"))
    assert any(p["objectId"] == uai["principalId"] for p in vault["accessPolicies"])
    sp = next(s for s in run.state()["servicePrincipals"] if s["id"] == uai["principalId"])
    assert "User.Read.All" in sp["graphAppRoles"]
    assert run.healthy("orders-api") and run.healthy("orders-api/staging")
    orders = run.sim.tenant.app_by_app_id(run.sim.client_id("orders-sp"))
    assert orders is not None
    assert [p.display_name for p in orders.passwords] == ["old"]  # only the used one removed


def test_cleanup_removes_an_unused_principals_rights_and_can_be_undone(run: Run) -> None:
    solo_sp = run.sim.object_id("solo-sp")

    def rights() -> list[dict[str, Any]]:
        return [r for r in run.state()["roleAssignments"] if r["principalId"] == solo_sp]

    assert rights()
    early = {o.app: o for o in run.engine.cleanup(NOW)}
    assert early[f"principal/{run.sim.client_id('solo-sp')}"].outcome == "waiting"
    assert rights()  # not before its app is revoked
    assert run.apply("solo-api")["solo-api"].outcome == "done"
    done = {o.app: o for o in run.engine.cleanup(NOW)}
    assert done[f"principal/{run.sim.client_id('solo-sp')}"].outcome == "done"
    assert rights() == []
    assert run.healthy("solo-api")  # it signs in as its identity now
    orders = done[f"principal/{run.sim.client_id('orders-sp')}"]
    assert orders.outcome == "waiting"  # its "old" credential may be used outside the scan
    undone = run.engine.rollback_cleanup("solo-sp")
    assert undone.outcome == "rolled-back", undone.message
    assert len(rights()) == 1
