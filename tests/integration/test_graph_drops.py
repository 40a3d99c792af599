"""Graph connections that drop (`graph:drop`) never abort a scan or a plan.

Issue 11 item 20a: the scheduled runbook's plan failed at random with `RemoteProtocolError:
Server disconnected without sending a response` from a Graph `appId in (...)` look-up; the
transport error skipped the scan's gap handling. Reads are now sent again on a fresh
connection (bounded), and a look-up that still fails is a gap: the principal is "could not be
read", never "does not exist".
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.inventory import UNREAD_PRINCIPAL, Inventory
from migrator.plan.model import BlockedCode
from migrator.plan.planner import PlanOptions, build_plan
from migrator.scan import Scanner, ScanScope

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "scan_estate.yaml"


def principals(inventory: Inventory) -> dict[str, str | None]:
    return {p.app_id: p.principal.display_name if p.principal else None
            for p in inventory.principals}


def test_a_third_of_graph_connections_dropping_changes_nothing(sim: Sim) -> None:
    calm = Scanner(sim.factory()).run(ScanScope())
    sim.server.faults.update({"seed": 7, "rates": {"graph": {"drop": 0.3}}})
    stormy = Scanner(sim.factory()).run(ScanScope())
    assert stormy.complete, stormy.gaps
    assert principals(stormy) == principals(calm)
    assert all(principals(stormy).values())


def test_graph_that_always_drops_is_a_gap_and_no_principal_reads_as_missing(sim: Sim) -> None:
    sim.server.faults.set_rate("graph", "drop", 1.0)
    inventory = Scanner(sim.factory()).run(ScanScope())
    assert not inventory.complete
    assert any(g.scope == "graph:/servicePrincipals" and g.status is None
               and "connection failed" in g.message for g in inventory.gaps), inventory.gaps
    assert inventory.principals
    for principal in inventory.principals:
        assert principal.principal is None
        assert {u.match for u in principal.used_by} == {UNREAD_PRINCIPAL}
    plan = build_plan(inventory, PlanOptions(name="t", tool_version="test",
                                             accept_gaps=("graph",)))
    blocked = [b for a in plan.apps for b in a.blocked]
    assert blocked
    assert BlockedCode.PRINCIPAL_NOT_FOUND not in {b.code for b in blocked}
    assert any("could not be read from Graph" in b.message for b in blocked)


def test_cli_scan_with_graph_down_is_one_incomplete_report(sim: Sim,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    for name, value in sim.endpoints.environment().items():
        monkeypatch.setenv(name, value)
    sim.server.faults.set_rate("graph", "drop", 1.0)
    result = CliRunner().invoke(app, ["scan"], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Incomplete" in result.output
