"""Rolling back apps that share one user-assigned identity, in either order, removes the
identity and every right the plan gave it.

orders-api and its staging slot share id-orders-sp-migrated (a role assignment, a Key Vault
access policy, a Graph app role); shared-a and shared-b share id-shared-sp-migrated (a role
assignment). The second app's steps used to snapshot the state *after* the first app made the
identity and its grants, so its journal said they "existed before the plan". Rolled back in
plan order, the first app kept them ("still needed by" the second) and the second kept them
("existed before"): an identity holding rights no app used was left behind. In reverse order it
worked, which is the only order the kill-point tests tried.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Sim
from test_execute_crash_wide import shape

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import ApplyOptions, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.plan import PlanOptions, build_plan
from migrator.scan import Scanner

pytestmark = pytest.mark.integration

ESTATE = Path(__file__).parents[1] / "fixtures" / "execute_estate.yaml"
APPS = ("orders-api", "orders-api/staging", "shared-a", "shared-b")


@pytest.fixture
def estate_path() -> Path:
    return ESTATE


def _state(sim: Sim) -> dict[str, Any]:
    with sim.http() as http:
        state: dict[str, Any] = http.get("/_sim/state").json()
    return state


@pytest.mark.parametrize("order", ["plan order", "reverse order"])
def test_rolling_back_every_app_of_a_shared_identity_removes_it_and_its_rights(
        sim: Sim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str) -> None:
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "keys" / "stash.key"))
    plan = build_plan(Scanner(sim.factory(), workers=2).run(),
                      PlanOptions(name="shared", tool_version="test"))
    engine = Engine(plan, SqliteJournal(tmp_path / "j.sqlite"),
                    FileStash(tmp_path / "s.stash", tmp_path / "keys" / "stash.key"),
                    CloudChanges(sim.factory()))
    secrets = {p.secret for a in sim.tenant.applications.values() for p in a.passwords}
    before = shape(_state(sim), secrets)
    # Through the grant stage only: no credential is removed, so nothing is minted and the
    # state after the rollback must be the state before, exactly.
    options = ApplyOptions(apps=APPS, soak=timedelta(0), health_timeout=30,
                           stages=tuple(s for s in ApplyOptions().stages
                                        if s.value in ("identity", "grant")))
    assert all(o.outcome == "done" for o in engine.apply(options))
    applied = _state(sim)
    assert {u["id"].rsplit("/", 1)[-1] for u in applied["userAssignedIdentities"]} == {
        "id-orders-sp-migrated", "id-shared-sp-migrated"}

    for app in (APPS if order == "plan order" else tuple(reversed(APPS))):
        assert engine.rollback(app, options=ApplyOptions(health_timeout=30)).outcome == \
            "rolled-back", app

    after = _state(sim)
    assert after["userAssignedIdentities"] == []
    assert shape(after, secrets) == before
