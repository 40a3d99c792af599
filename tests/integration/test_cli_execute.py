"""`migrator apply`, `status` and `rollback` as an operator runs them: what they print, their
exit codes, their refusals, and never a secret."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner, Result

from migrator.cli import app

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "execute_estate.yaml"


@pytest.fixture
def cli(sim: Sim, tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {**sim.endpoints.environment(), "COLUMNS": "200",
           "MIGRATOR_STASH_KEY_FILE": str(tmp_path / "keys" / "stash.key")}
    runner = CliRunner()
    outputs: list[str] = []

    def invoke(*args: str) -> Result:
        result = runner.invoke(app, list(args), env=env)
        outputs.append(result.output)
        return result

    made = invoke("plan", "--name", "p", "--dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    yield invoke
    secrets = [p.secret for a in sim.tenant.applications.values() for p in a.passwords]
    for text in outputs:
        for secret in secrets:
            assert secret not in text


def test_apply_shows_the_steps_then_asks_unless_yes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = str(tmp_path / "p.json")
    refused = cli("apply", plan, "--app", "solo-api")
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    assert "Enable the system-assigned identity of solo-api" in refused.output  # shown first
    done = cli("apply", plan, "--app", "solo-api", "--soak", "0", "--yes")
    assert done.exit_code == 0, done.output
    assert "done solo-api (stages done: identity, grant, swap, revoke)" in done.output
    again = cli("apply", plan, "--app", "solo-api", "--soak", "0", "--yes")
    assert again.exit_code == 0 and "Nothing to do" in again.output


def test_apply_stops_at_a_stage_and_waits_for_the_soak(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = str(tmp_path / "p.json")
    swap = cli("apply", plan, "--app", "solo-api", "--stage", "swap", "--yes")
    assert swap.exit_code == 0, swap.output
    assert "revoke" not in swap.output.split("will run:")[1].split("✓")[0]
    waiting = cli("apply", plan, "--app", "solo-api", "--yes")
    assert waiting.exit_code == 0
    assert "waiting solo-api" in waiting.output and "soak" in waiting.output
    status = cli("status", plan)
    assert status.exit_code == 0
    assert "solo-api" in status.output and "apply --app solo-api --stage revoke" in status.output


def test_rollback_and_its_refusals(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = str(tmp_path / "p.json")
    assert cli("apply", plan, "--app", "solo-api", "--stage", "swap", "--yes").exit_code == 0
    unknown = cli("rollback", plan, "--app", "nope", "--yes")
    assert unknown.exit_code == 2 and "unknown app 'nope'" in unknown.output
    ask = cli("rollback", plan, "--app", "solo-api")
    assert ask.exit_code == 2 and "pass --yes" in ask.output
    undone = cli("rollback", plan, "--app", "solo-api", "--yes")
    assert undone.exit_code == 0 and "rolled-back solo-api" in undone.output


def test_a_blocked_app_and_a_bad_plan_are_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plan = tmp_path / "p.json"
    document = json.loads(plan.read_text())
    document["apps"][0]["stages"][0]["steps"][0]["title"] = "something else"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))
    bad = cli("apply", str(edited), "--yes")
    assert bad.exit_code == 2 and "edited after planning" in bad.output
    assert "Traceback" not in bad.output
    unknown = cli("apply", str(plan), "--app", "ghost", "--yes")
    assert unknown.exit_code == 2 and "unknown app 'ghost'" in unknown.output
