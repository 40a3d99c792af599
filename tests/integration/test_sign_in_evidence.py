"""Sign-in evidence before the irreversible step, end to end through the real SDKs: the plan
names a secret that a release pipeline outside App Service also uses, `apply` refuses its
revoke while the pipeline signs in with it and lets it through once the pipeline has been quiet
for the soak period; a tenant without a premium licence falls back to the soak timer and says
so. The simulator's Entra records every sign-in (the apps' own on each health probe, and the
pipeline's every second) and serves them late, as Entra does."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, AppOutcome, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import Plan, PlanOptions, build_plan
from migrator.plan.model import STAGES, Stage
from migrator.report import plan_markdown
from migrator.report.plan_view import (
    evidence_decisions,
    held_stages,
    principal_views,
    sign_in_fact,
)
from migrator.scan import Scanner
from migrator.sim.state import SHORT_DELAYS

if TYPE_CHECKING:
    from conftest import Sim

ESTATE = Path(__file__).parents[1] / "fixtures" / "signins_estate.yaml"
PIPELINE_IP = "203.0.113.7"
DELAY = timedelta(seconds=SHORT_DELAYS.sign_in_ingestion + 1)  # the logs' lag, with margin


@pytest.fixture(autouse=True)
def stash_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


def probe(sim: Sim, *apps: str) -> None:
    """The apps answer their health checks, signing in as a running app does, and the logs
    take their delay to show it."""
    with sim.http() as http:
        for app in apps:
            assert http.get(f"/_sites/{app}/healthz").status_code == 200
    time.sleep(SHORT_DELAYS.sign_in_ingestion + 0.5)


class Run:
    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        self.sim = sim
        self.secrets = frozenset(self.tenant_secrets())
        inventory = Scanner(sim.factory(), workers=4).run()
        self.plan: Plan = build_plan(inventory, PlanOptions(name="evidence", tool_version="t"))
        self.journal = SqliteJournal(tmp_path / "evidence.journal.sqlite")
        self.engine = Engine(self.plan, self.journal,
                             FileStash(tmp_path / "evidence.stash", tmp_path / "keys" / "stash.key"),
                             CloudChanges(sim.factory()),
                             sleep=lambda s: time.sleep(min(s, 0.2)))
        self.shown: list[str] = []

    def tenant_secrets(self) -> list[str]:
        with self.sim.tenant.lock:
            return [p.secret for a in self.sim.tenant.applications.values() for p in a.passwords]

    def key_ids(self, principal: str) -> set[str]:
        app = self.sim.tenant.app_by_app_id(self.sim.client_id(principal))
        assert app is not None
        return {p.key_id for p in app.passwords}

    def apply(self, app: str, *, stages: tuple[Stage, ...] = STAGES,
              soak: timedelta = timedelta(0)) -> AppOutcome:
        options = ApplyOptions(apps=(app,), stages=stages, soak=soak, health_timeout=20,
                               rbac_propagation=10, replication_timeout=30, sign_in_delay=DELAY)
        [outcome] = self.engine.apply(options)
        self.shown += [outcome.message, *outcome.notes]
        return outcome

    def apply_until(self, app: str, settled: Callable[[AppOutcome], bool], *,
                    soak: timedelta, within: float = 30.0) -> AppOutcome:
        """Apply the revoke again and again (as an operator or the runbook would) until its
        outcome is no longer the wait for the logs or the soak: bounded in time."""
        deadline = time.monotonic() + within
        while True:
            outcome = self.apply(app, soak=soak)
            if settled(outcome) or time.monotonic() > deadline:
                return outcome
            time.sleep(0.5)

    def assert_no_secret(self, *texts: str) -> None:
        shown = "\n".join([*texts, *self.shown])
        for secret in self.secrets:
            assert secret not in shown, f"a secret (hint {secret[:3]}) was shown"


@pytest.fixture
def run(sim: Sim, tmp_path: Path) -> Iterator[Run]:
    probe(sim, "web-a", "web-b", "solo-api")
    r = Run(sim, tmp_path)
    try:
        yield r
    finally:
        r.journal.close()


def test_the_plan_holds_the_revoke_of_a_secret_a_pipeline_also_uses(run: Run) -> None:
    evidence = run.plan.sign_ins
    assert evidence is not None and evidence.source == "graph", evidence
    shared = run.sim.client_id("shared-sp").lower()
    [use] = [u for u in evidence.credentials if u.app_id == shared]
    assert use.held_by == ("web-a", "web-b")
    assert [a.ip for a in use.outside] == [PIPELINE_IP]
    # the apps' own sign-ins are theirs: attributed by the sites' outbound addresses
    assert {app for a in use.addresses for app in a.apps} == {"web-a", "web-b"}
    held = {h.owner: h.reasons for h in held_stages(run.plan) if not h.cleanup}
    assert set(held) == {"web-a", "web-b"}
    assert PIPELINE_IP in held["web-a"][0]
    solo = run.sim.client_id("solo-sp").lower()
    solo_uses = {u.key_id: u for u in evidence.credentials if u.app_id == solo}
    assert len(solo_uses) == 2  # the spare credential too, unused
    assert sorted(u.sign_ins > 0 for u in solo_uses.values()) == [False, True]
    assert all(not u.outside for u in solo_uses.values())
    # the spare credential, which no app holds and nothing used, can go at cleanup
    [solo_view] = [p for p in principal_views(run.plan) if p.name == "solo-sp"]
    [spare] = solo_view.other_valid_credentials
    assert spare.endswith("no sign-in in the window, a candidate to remove")
    report = plan_markdown.render(run.plan)
    assert PIPELINE_IP in report and "used outside the scanned apps" in report
    run.assert_no_secret(report, run.plan.model_dump_json())


def test_a_revoke_is_refused_while_the_pipeline_signs_in_and_goes_through_once_it_stops(
        run: Run) -> None:
    soak = timedelta(seconds=4)
    shared_keys = run.key_ids("shared-sp")
    for app in ("web-a", "web-b"):
        assert run.apply(app, stages=STAGES[:3]).outcome == "done"
    refused = run.apply_until("web-a", lambda o: o.outcome != "waiting", soak=soak)
    assert refused.outcome == "refused", refused.message
    assert PIPELINE_IP in refused.message
    assert "none of the apps holding it" in refused.message
    assert run.key_ids("shared-sp") == shared_keys  # nothing removed
    with run.sim.http() as http:
        assert http.post("/_sim/callers/release-pipeline",
                         json={"active": False}).status_code == 200
    done = run.apply_until("web-a", lambda o: o.outcome not in ("waiting", "refused"),
                           soak=soak, within=soak.total_seconds() + 20)
    assert done.outcome == "done", done.message
    assert len(run.key_ids("shared-sp")) == len(shared_keys) - 1
    run.assert_no_secret()


def test_the_apps_own_sign_ins_before_the_swap_do_not_hold_its_revoke(run: Run) -> None:
    before = run.key_ids("solo-sp")
    first = run.apply("solo-api")
    assert first.outcome == "waiting" and "sign-in logs" in first.message, first.message
    done = run.apply_until("solo-api", lambda o: o.outcome != "waiting", soak=timedelta(0))
    assert done.outcome == "done", done.message
    assert len(run.key_ids("solo-sp")) == len(before) - 1
    assert run.engine.old_secret_use()["solo-api"] != "no sign-in in 30 days"


def test_without_a_licence_the_revoke_waits_for_the_timer_alone_and_the_plan_says_so(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    free = tmp_path / "free.yaml"
    free.write_text(ESTATE.read_text().replace("licence: P2", "licence: free"))
    sim = start_sim(free)
    probe(sim, "solo-api")
    run = Run(sim, tmp_path)
    try:
        evidence = run.plan.sign_ins
        assert evidence is not None and evidence.source == "none"
        assert "P1 or P2 licence" in (evidence.unavailable or "")
        fact = sign_in_fact(run.plan)
        assert "soak period only" in fact
        assert "Sign-in evidence" in plan_markdown.render(run.plan)
        assert not [h for h in held_stages(run.plan) if not h.cleanup]  # the timer decides
        before = run.key_ids("solo-sp")
        assert run.apply("solo-api").outcome == "done"  # soak 0: no wait for any log
        assert len(run.key_ids("solo-sp")) == len(before) - 1
        assert run.engine.old_secret_use() == {}
    finally:
        run.journal.close()


def test_an_operator_who_may_not_read_the_logs_is_told_why(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    blind = tmp_path / "blind.yaml"
    blind.write_text(ESTATE.read_text().replace(",\n                      AuditLog.Read.All]", "]"))
    sim = start_sim(blind)
    inventory = Scanner(sim.factory(), workers=2).run()
    assert inventory.complete  # nothing the plan copies is missing: not a gap
    assert inventory.sign_ins is not None and inventory.sign_ins.source == "none"
    assert "AuditLog.Read.All" in (inventory.sign_ins.unavailable or "")
    off = Scanner(sim.factory(), workers=2, sign_in_days=0).run()
    assert off.sign_ins is None
    plan = build_plan(off, PlanOptions(name="off", tool_version="t"))
    assert "not read" in sign_in_fact(plan)
    assert "sign_ins" not in plan.model_dump(mode="json")  # old plans keep their digests
    assert dataclasses.replace(off, sign_ins=None) == off


WORKSPACE = "6f1c3b0e-0000-4000-8000-00000000aa01"


def with_workspace(tmp_path: Path, *, reader: bool = True) -> Path:
    """The same tenant, its Entra sign-in logs also sent to a Log Analytics workspace in a
    security team's subscription, where the operator is Log Analytics Reader (or nothing)."""
    text = ESTATE.read_text().replace("\nrole_assignments:\n", (
        "\n  - name: security\n"
        "    resource_groups:\n"
        "      - name: rg-logs\n"
        f"        log_analytics_workspaces: [{{name: law-entra, id: {WORKSPACE}, "
        "sign_in_logs: true}]\n"
        "role_assignments:\n"), 1)
    if reader:
        text += ("  - {principal: migrator-operator, role: Log Analytics Reader, scope: "
                 "/subscriptions/security/resourceGroups/rg-logs/providers/"
                 "Microsoft.OperationalInsights/workspaces/law-entra}\n")
    path = tmp_path / f"workspace-{reader}.yaml"
    path.write_text(text)
    return path


def decisions(plan: Plan) -> tuple[object, ...]:
    evidence = plan.sign_ins
    assert evidence is not None
    return (tuple(sorted((u.key_id, u.held_by, tuple(a.ip for a in u.outside), u.sign_ins > 0,
                          u.uncovered) for u in evidence.credentials)),
            tuple(sorted((h.owner, h.stage) for h in held_stages(plan) if not h.cleanup)))


def test_a_log_analytics_workspace_gives_the_same_decisions_as_graph(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    sim = start_sim(with_workspace(tmp_path))
    probe(sim, "web-a", "web-b", "solo-api")
    time.sleep(max(0.0, SHORT_DELAYS.sign_in_ingestion))  # the workspace lags a little more
    # the operator reads nothing in the security subscription but the workspace: a gap there,
    # accepted (no app lives there)
    options = PlanOptions(name="p", tool_version="t",
                          accept_gaps=(sim.subscription_id_of("security"),))
    graph = build_plan(Scanner(sim.factory(), workers=4).run(), options)
    workspace = build_plan(Scanner(sim.factory(), workers=4, sign_in_workspace=WORKSPACE).run(),
                           options)
    assert workspace.sign_ins is not None
    assert (workspace.sign_ins.source, workspace.sign_ins.workspace) == ("log-analytics",
                                                                         WORKSPACE)
    assert decisions(workspace) == decisions(graph)
    assert decisions(graph)[1] == (("web-a", "revoke"), ("web-b", "revoke"))  # not vacuous
    assert "Log Analytics workspace" in sign_in_fact(workspace)
    # and apply judges the revoke on the workspace, as the plan was made
    run = Run.__new__(Run)
    run.sim, run.plan, run.shown = sim, workspace, []
    run.secrets = frozenset(run.tenant_secrets())
    run.journal = SqliteJournal(tmp_path / "ws.journal.sqlite")
    run.engine = Engine(workspace, run.journal,
                        FileStash(tmp_path / "ws.stash", tmp_path / "keys" / "stash.key"),
                        CloudChanges(sim.factory()), sleep=lambda s: time.sleep(min(s, 0.2)))
    try:
        for app in ("web-a", "web-b"):
            swapped = run.apply(app, stages=STAGES[:3])
            assert swapped.outcome == "done", swapped.message
        refused = run.apply_until("web-b", lambda o: o.outcome != "waiting",
                                  soak=timedelta(seconds=4))
        assert refused.outcome == "refused" and PIPELINE_IP in refused.message, refused.message
        run.assert_no_secret(workspace.model_dump_json())
    finally:
        run.journal.close()


def test_a_workspace_the_operator_may_not_read_is_said_and_the_timer_decides(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    sim = start_sim(with_workspace(tmp_path, reader=False))
    inventory = Scanner(sim.factory(), workers=2, sign_in_workspace=WORKSPACE).run()
    assert inventory.sign_ins is not None and inventory.sign_ins.source == "none"
    assert "Log Analytics Reader" in (inventory.sign_ins.unavailable or "")
    unknown = Scanner(sim.factory(), workers=2,
                      sign_in_workspace="6f1c3b0e-0000-4000-8000-00000000ffff").run()
    assert unknown.sign_ins is not None and unknown.sign_ins.source == "none"


def test_the_reader_keeps_to_graphs_reports_limit(sim: Sim) -> None:
    """Graph serves sign-ins at 5 requests per 10 seconds per app: a burst beyond it is a 429,
    and the reader, pacing itself, reads 60 principals (6 requests) without one."""
    import uuid

    from migrator.cloud.graph import GraphAdapter
    from migrator.cloud.reports_pacing import ReportsPacer
    from migrator.cloud.signins import SignInReader

    counts = sim.server.middleware.counts
    reader = SignInReader(GraphAdapter(sim.factory()), ReportsPacer())
    ids = [sim.client_id("shared-sp")] + [str(uuid.uuid4()) for _ in range(59)]
    records = reader.read(ids, datetime.now(timezone.utc) - timedelta(hours=1))
    assert {r.ip for r in records} >= {PIPELINE_IP}
    assert counts.get("graph:throttled", 0) == 0
    assert reader.pacer.waited > 0  # it did wait for the window
    token = sim.credential().get_token("https://graph.microsoft.com/.default").token
    with sim.http() as http:
        answers = [http.get("/beta/auditLogs/signIns?$top=1",
                            headers={"Authorization": f"Bearer {token}"}) for _ in range(6)]
    assert [a.status_code for a in answers].count(429) >= 1
    throttled = next(a for a in answers if a.status_code == 429)
    assert int(throttled.headers["retry-after"]) >= 1
    assert throttled.headers["x-ms-throttle-information"] == "ReportsLimitExceeded"


def test_a_resource_beyond_the_copied_rights_is_warned_in_the_plan_and_at_the_grant(
        start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    """The pipeline's copy of the secret signs in to Microsoft Graph, where the principal has
    no app role to copy: the identity will not reach it, and both the plan and the grant say
    so."""
    graph_caller = tmp_path / "graph-caller.yaml"
    graph_caller.write_text(ESTATE.read_text().replace("resource: arm", "resource: graph"))
    sim = start_sim(graph_caller)
    probe(sim, "web-a")
    run = Run(sim, tmp_path)
    try:
        [web_a] = [a for a in run.plan.apps if a.name == "web-a"]
        [warning] = [d for d in evidence_decisions(run.plan, web_a) if d.topic == "grant"]
        assert "Microsoft Graph" in warning.reason
        granted = run.apply("web-a", stages=STAGES[:2])
        assert granted.outcome == "done", granted.message
        assert any("Microsoft Graph" in n and "do not reach" in n for n in granted.notes)
    finally:
        run.journal.close()
