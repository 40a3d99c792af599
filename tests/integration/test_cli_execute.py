"""`migrator apply`, `status` and `rollback` as an operator runs them: what they print, their
exit codes, their refusals, and never a secret."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
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


def tenant_secrets(sim: Sim) -> set[str]:
    with sim.tenant.lock:
        return {p.secret for a in sim.tenant.applications.values() for p in a.passwords}


def written_files(*directories: Path) -> list[Path]:
    """The files the commands wrote: not the simulator's own (sim/), nor the encrypted stash."""
    return [p for d in directories for p in sorted(d.rglob("*"))
            if p.is_file() and not p.name.endswith(".stash")
            and p.relative_to(d).parts[0] != "sim"]


class Cli:
    """`migrator` signed in to one simulator, keeping what every command printed."""

    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        self.sim = sim
        self.env = {**sim.endpoints.environment(), "COLUMNS": "200",
                    "MIGRATOR_STASH_KEY_FILE": str(tmp_path / "keys" / "stash.key")}
        self.outputs: list[str] = []
        # Every secret the tenant holds before anything runs: a revoke deletes the one the run
        # handles, and that one above all must never be printed.
        self.secrets = tenant_secrets(sim)

    def __call__(self, *args: str) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env)
        self.outputs.append(result.output)
        return result

    def searched(self) -> set[str]:
        """What the leak check looks for: the secrets held at the start, and those since."""
        return self.secrets | tenant_secrets(self.sim)


@pytest.fixture
def cli(sim: Sim, tmp_path: Path) -> Iterator[Cli]:
    invoke = Cli(sim, tmp_path)
    made = invoke("plan", "--name", "p", "--dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    yield invoke
    texts = {f"output {i + 1}": text for i, text in enumerate(invoke.outputs)}
    texts |= {p.name: p.read_text(encoding="utf-8", errors="replace")
              for p in written_files(tmp_path, Path(os.environ["MIGRATOR_STATE_DIR"]))}
    for secret in invoke.searched():
        for name, text in texts.items():
            leaked = secret in text or secret in "".join(text.split())  # wrapped lines too
            assert not leaked, f"a secret (hint {secret[:3]}) is in {name}"


def test_apply_shows_the_steps_then_asks_unless_yes(cli: Cli, sim: Sim, tmp_path: Path) -> None:
    handled = sim.secret("solo-sp")
    plan = str(tmp_path / "p.json")
    refused = cli("apply", plan, "--app", "solo-api")
    assert refused.exit_code == 2 and "pass --yes" in refused.output
    assert "Enable the system-assigned identity of solo-api" in refused.output  # shown first
    done = cli("apply", plan, "--app", "solo-api", "--soak", "0", "--yes")
    assert done.exit_code == 0, done.output
    assert "done solo-api (stages done: identity, grant, swap, revoke)" in done.output
    again = cli("apply", plan, "--app", "solo-api", "--soak", "0", "--yes")
    assert again.exit_code == 0 and "Nothing to do" in again.output
    # the revoke deleted the secret the run handled: the leak check still looks for it
    covered = handled not in tenant_secrets(sim) and handled in cli.searched()
    assert covered, "the revoked secret is not among those searched"  # no value printed


def test_apply_stops_at_a_stage_and_waits_for_the_soak(cli: Cli, tmp_path: Path) -> None:
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


def test_rollback_and_its_refusals(cli: Cli, tmp_path: Path) -> None:
    plan = str(tmp_path / "p.json")
    assert cli("apply", plan, "--app", "solo-api", "--stage", "swap", "--yes").exit_code == 0
    unknown = cli("rollback", plan, "--app", "nope", "--yes")
    assert unknown.exit_code == 2 and "unknown app 'nope'" in unknown.output
    ask = cli("rollback", plan, "--app", "solo-api")
    assert ask.exit_code == 2 and "pass --yes" in ask.output
    undone = cli("rollback", plan, "--app", "solo-api", "--yes")
    assert undone.exit_code == 0 and "rolled-back solo-api" in undone.output


def test_a_blocked_app_and_a_bad_plan_are_refused(cli: Cli, tmp_path: Path) -> None:
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


def test_log_file_has_every_call_and_decision_and_no_secret(cli: Cli, tmp_path: Path) -> None:
    # Issue 11 item 18: what an operator hands to Azure support. The fixture's teardown
    # searches this file, like every file the commands wrote, for every secret of the tenant.
    log = tmp_path / "calls.jsonl"
    plan = str(tmp_path / "p.json")
    applied = cli("--log-file", str(log), "apply", plan, "--app", "solo-api", "--soak", "0",
                  "--yes")
    assert applied.exit_code == 0, applied.output
    undone = cli("--log-file", str(log), "rollback", plan, "--app", "solo-api", "--yes")
    assert undone.exit_code == 0, undone.output
    assert log.stat().st_mode & 0o077 == 0  # the operator's alone
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["command"] for e in lines if e["event"] == "run"] == ["apply", "rollback"]
    calls = [e for e in lines if e["event"] == "azure-call"]
    assert {e["service"] for e in calls} >= {"arm", "graph"}
    for call in calls:
        assert call["method"] in {"GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"}
        assert call["path"].startswith("/") and "?" not in call["path"]  # never a query
        assert isinstance(call["duration_ms"], float) and call["attempt"] >= 1
        if call["status"] is not None:
            assert call["request_id"], call  # what support looks a call up by
        assert call["client_request_id"], call
    revoke = [c for c in calls if c["service"] == "graph" and c["method"] == "POST"
              and c["path"].endswith("/removePassword")]
    assert revoke and revoke[0]["status"] in (200, 204)
    engine = [(e["kind"], e["app"]) for e in lines if e["event"] == "engine"]
    assert ("step-done", "solo-api") in engine and ("undone", "solo-api") in engine
    assert [(e["app"], e["outcome"]) for e in lines if e["event"] == "outcome"] == [
        ("solo-api", "done"), ("solo-api", "rolled-back")]


def test_an_unwritable_log_file_is_one_line_exit_2(cli: Cli, tmp_path: Path) -> None:
    refused = cli("--log-file", str(tmp_path / "no-such-dir" / "calls.jsonl"), "status",
                  str(tmp_path / "p.json"))
    assert refused.exit_code == 2, refused.output
    assert "cannot open the log file" in refused.output and "Traceback" not in refused.output
