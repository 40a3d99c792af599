"""Every write the executor makes, with its answer lost after Azure committed it.

A gateway that fails after the service has handled a request, or a connection that breaks on
the way back, leaves the client with a failure for a change that is in place. azure-core does
not resend a POST or PATCH that got no answer, and a 500 after a commit looks like any other
500, so the engine's own retry of the step meets a world where the step is already done: it
must find it done (not make a second role assignment, fail on "already exists", or mint a
second secret) and go on.

The reference run migrates APPS of tests/fixtures/execute_estate.yaml (solo-api: a system
identity; shared-a + shared-b: one shared user-assigned identity; orders-api and its staging
slot: a user-assigned identity, a Key Vault access policy, a Graph app role, a role assignment
and a slot setting) on a healthy simulator and lists the writes it sent (every request but a
GET and the POSTs that only read: `.../list`). Each case then runs the same migration on a fresh
simulator with one `FaultRule` aimed at one of those writes (its first occurrence, GUIDs
matched by shape), as `500_after` or `drop_after`: the write is committed, its answer lost.
One `apply` must still migrate every app, and the tenant must end exactly as the reference
run left it (compared by names, test_execute_crash_wide.shape), no journal step left open.

The rollback cases do the same for `rollback` of every app (plan order) after a finished
migration, whose writes include the `addPassword` that mints a replacement for each removed
credential: a lost answer there leaves a credential whose text nobody saw; the retry mints
another and removes that orphan (by its display name). The reference rollback must leave the
tenant as it was before the apply; it did not, until the shared steps' before-state became the
plan's (test_rollback_shared.py).

WRITES and ROLLBACK_WRITES are the numbers of distinct writes of the reference runs (measured,
asserted), so a plan that changes shape fails the reference first. Measured on 2 cores with
`-n auto`: 71 cases, about 6 minutes.
"""

from __future__ import annotations

import re
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Sim, running_sim
from test_execute_crash_wide import shape

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, AppOutcome, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan
from migrator.scan import Scanner
from migrator.sim.faults import AFTER_KINDS, service_of

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ESTATE = Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"
APPS = ("orders-api", "orders-api/staging", "shared-a", "shared-b", "solo-api")
WRITES = 18  # distinct writes of the reference apply (asserted by the reference)
ROLLBACK_WRITES = 17  # and of the reference rollback of every app
# The parts of a path each simulator and plan makes anew: GUIDs (identities, role assignment
# names) and Graph's app-role assignment ids.
_VARIABLE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                       r"|(?<=/appRoleAssignments/)[^/]+", re.I)


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


def _pattern(path: str) -> str:
    """A regular expression for one request path whose variable parts match any value."""
    return "^" + "[^/]+".join(re.escape(p) for p in _VARIABLE.split(path)) + "$"


def _is_write(method: str, path: str) -> bool:
    if method in ("GET", "HEAD"):
        return False
    return not (method == "POST" and path.rstrip("/").lower().endswith("/list"))


class Run:
    """Scan, plan and one unattended `apply` of APPS against a simulator, in process."""

    def __init__(self, sim: Sim, tmp: Path) -> None:
        self.sim = sim
        inventory = Scanner(sim.factory(), workers=2).run()
        assert inventory.complete
        self.plan = build_plan(inventory, PlanOptions(name="lost", tool_version="test"))
        self.journal = SqliteJournal(tmp / "lost.journal.sqlite")
        self.engine = Engine(self.plan, self.journal,
                             FileStash(tmp / "lost.stash", tmp / "keys" / "stash.key"),
                             CloudChanges(sim.factory()),
                             sleep=lambda s: time.sleep(min(s, 1.0)))
        self.secrets = {p.secret for a in sim.tenant.applications.values() for p in a.passwords}

    def apply(self) -> dict[str, AppOutcome]:
        options = ApplyOptions(apps=APPS, soak=timedelta(0), health_timeout=30,
                               replication_timeout=30)
        try:
            return {o.app: o for o in self.engine.apply(options)}
        finally:
            self.secrets |= {p.secret for a in self.sim.tenant.applications.values()
                             for p in a.passwords}

    def rollback(self) -> dict[str, AppOutcome]:
        options = ApplyOptions(health_timeout=30, replication_timeout=30)
        try:
            return {app: self.engine.rollback(app, options=options) for app in APPS}
        finally:
            self.secrets |= {p.secret for a in self.sim.tenant.applications.values()
                             for p in a.passwords}

    def shape(self) -> dict[str, Any]:
        with self.sim.http() as http:
            return shape(http.get("/_sim/state").json(), self.secrets)

    def open_steps(self) -> dict[str, str]:
        last = self.journal.last_states(self.plan.name)
        return {step: e.state.value for step, e in last.items()
                if e.state.value not in ("done", "confirmed")}


_REFERENCE: dict[str, Any] = {}


def _writes(sim: Sim) -> list[tuple[str, str]]:
    """The distinct writes the simulator received since its request log was cleared."""
    writes: list[tuple[str, str]] = []
    for method, path, _ in sim.server.middleware.requests:
        if _is_write(method, path) and (method, _pattern(path)) not in writes:
            writes.append((method, _pattern(path)))
    return writes


def reference() -> dict[str, Any]:
    """On a healthy simulator: the end shape of the apply and its distinct writes in order
    (method, path pattern), then the same of a rollback of every app; once per process."""
    if not _REFERENCE:
        with tempfile.TemporaryDirectory() as tmp, running_sim(ESTATE, Path(tmp) / "sim") as sim:
            run = Run(sim, Path(tmp))
            before = run.shape()
            sim.server.middleware.requests.clear()
            outcomes = run.apply()
            assert all(o.outcome == "done" for o in outcomes.values()), outcomes
            _REFERENCE["applied"], _REFERENCE["apply_writes"] = run.shape(), _writes(sim)
            sim.server.middleware.requests.clear()
            undone = run.rollback()
            assert all(o.outcome == "rolled-back" for o in undone.values()), undone
            _REFERENCE["rolled_back"], _REFERENCE["rollback_writes"] = run.shape(), _writes(sim)
            # Every identity and right the apply made is gone again; each removed credential
            # is a minted one (the shape counts credentials and calls secrets `<secret>`).
            assert _REFERENCE["rolled_back"] == before
            run.journal.close()
        for phase, count in (("apply", WRITES), ("rollback", ROLLBACK_WRITES)):
            writes = _REFERENCE[f"{phase}_writes"]
            assert len(writes) == count, (
                f"the reference {phase} sent {len(writes)} distinct writes, not {count}: the "
                "plan changed shape; set the count to match. Writes: "
                + "; ".join(f"{m} {p}" for m, p in writes))
    return _REFERENCE


def _aim(sim: Sim, kind: str, method: str, pattern: str) -> None:
    sim.server.middleware.requests.clear()
    sim.server.middleware.counts.clear()
    sim.server.faults.update({"rules": [{"kind": kind, "method": method, "path": pattern}]})


def _hit_once(sim: Sim, kind: str, method: str, pattern: str) -> None:
    aimed = [(m, p) for m, p, k in sim.server.middleware.requests if k == kind]
    assert len(aimed) == 1, (method, pattern, aimed)
    assert sim.server.middleware.counts == {f"{service_of(aimed[0][1])}:{kind}": 1}


@pytest.mark.parametrize("kind", AFTER_KINDS)
@pytest.mark.parametrize("index", range(WRITES))
def test_a_write_whose_answer_is_lost_is_found_done(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int,
        kind: str) -> None:
    expected = reference()
    method, pattern = expected["apply_writes"][index]
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    run = Run(sim, tmp_path)
    _aim(sim, kind, method, pattern)
    try:
        outcomes = run.apply()
        not_done = {app: (o.outcome, o.message) for app, o in outcomes.items()
                    if o.outcome != "done"}
        assert not not_done, (method, pattern, not_done)
        _hit_once(sim, kind, method, pattern)
        assert not run.open_steps(), run.open_steps()
        assert run.shape() == expected["applied"], (method, pattern)
    finally:
        run.journal.close()


@pytest.mark.parametrize("kind", AFTER_KINDS)
@pytest.mark.parametrize("index", range(ROLLBACK_WRITES))
def test_a_rollback_write_whose_answer_is_lost_is_found_undone(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int,
        kind: str) -> None:
    """The same for `rollback` of every app after a finished migration: among its writes the
    `addPassword` that mints a replacement secret, whose lost answer leaves a credential
    nobody knows the text of; the retry mints another and removes that orphan."""
    expected = reference()
    method, pattern = expected["rollback_writes"][index]
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    run = Run(sim, tmp_path)
    try:
        assert all(o.outcome == "done" for o in run.apply().values())
        _aim(sim, kind, method, pattern)
        undone = run.rollback()
        not_undone = {app: (o.outcome, o.message) for app, o in undone.items()
                      if o.outcome != "rolled-back"}
        assert not not_undone, (method, pattern, not_undone)
        _hit_once(sim, kind, method, pattern)
        last = run.journal.last_states(run.plan.name)
        assert {e.state.value for e in last.values()} == {"undone"}, (method, pattern)
        assert run.shape() == expected["rolled_back"], (method, pattern)
    finally:
        run.journal.close()


def test_the_reference_run_sends_the_writes_the_cases_aim_at() -> None:
    """The cases above are one per distinct write of the reference runs: they hold every kind
    of write the executor makes for these apps."""
    shown = " ".join(f"{m} {p}" for m, p in reference()["apply_writes"])
    for needle in ("PATCH", "roleAssignments", "accessPolicies", "appRoleAssignments",
                   "appsettings", "removePassword", "oauth2", "userAssignedIdentities"):
        assert needle in shown, (needle, shown)
    undone = " ".join(f"{m} {p}" for m, p in reference()["rollback_writes"])
    for needle in ("addPassword", "DELETE", "appsettings", "accessPolicies/remove"):
        assert needle in undone, (needle, undone)
