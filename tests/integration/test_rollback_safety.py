"""Rollback never strands an app, and a journal belongs to one plan in one tenant (issue 11,
items 1-3, 8-10, 14, 15): the operator's commands against the simulator, as they run them.

Each test here failed before its fix: a rollback with another stash key went on and removed
the grant and the identity; the stash mixed two keys; stashes kept secrets after complete
rollbacks; a copied or symlinked plan started an empty journal; a plan from another tenant ran;
`status` created files; the preview ignored `--health-timeout`; Ctrl-C said nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.fernet import Fernet
from typer.testing import CliRunner, Result

from migrator.cli import app
from migrator.execute.engine import Engine

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "execute_estate.yaml"


class Operator:
    """The CLI, signed in to one simulator, with its plan `p` in `plans`."""

    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        self.sim = sim
        self.plans = tmp_path / "plans"
        self.key = tmp_path / "keys" / "stash.key"
        self.env = {**sim.endpoints.environment(), "COLUMNS": "200",
                    "MIGRATOR_STASH_KEY_FILE": str(self.key)}
        self.outputs: list[str] = []
        # Every secret the tenant holds before anything runs: a revoke removes the one the
        # run handles, and that one above all must never be printed.
        self.secrets = set(self.tenant_secrets())
        made = self("plan", "--name", "p", "--dir", str(self.plans))
        assert made.exit_code == 0, made.output
        self.plan = self.plans / "p.json"

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        result = CliRunner().invoke(app, list(args), env={**self.env, **(env or {})})
        self.outputs.append(result.output)
        return result

    def tenant_secrets(self) -> list[str]:
        return [p.secret for a in self.sim.tenant.applications.values() for p in a.passwords]

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

    def journal_rows(self) -> list[tuple[str, str, str]]:
        path = self.plans / "p.journal.sqlite"
        if not path.exists():
            return []
        with sqlite3.connect(path) as db:
            return [(str(a), str(b), str(c)) for a, b, c in
                    db.execute("SELECT owner, step_id, state FROM steps ORDER BY seq")]

    def last_state(self, step_prefix: str) -> dict[str, str]:
        last: dict[str, str] = {}
        for _, step, state in self.journal_rows():
            if step.startswith(step_prefix):
                last[step] = state
        return last

    def stash_entries(self) -> list[str]:
        path = self.plans / "p.stash"
        if not path.exists():
            return []
        return sorted(json.loads(path.read_text())["entries"])

    def another_key(self, tmp_path: Path) -> Path:
        other = tmp_path / "other.key"
        other.write_bytes(Fernet.generate_key())
        other.chmod(0o600)
        return other

    def leaks(self) -> list[str]:
        everything = self.secrets | set(self.tenant_secrets())
        texts = [*self.outputs, *(p.read_text(errors="replace") for p in self.plans.iterdir()
                                  if p.is_file() and not p.name.endswith(".stash"))]
        return [s for s in everything for t in texts if s in t]


@pytest.fixture
def op(sim: Sim, tmp_path: Path) -> Iterator[Operator]:
    operator = Operator(sim, tmp_path)
    yield operator
    assert operator.leaks() == []


def _migrate(op: Operator, app_name: str) -> None:
    done = op("apply", str(op.plan), "--app", app_name, "--soak", "0", "--yes")
    assert done.exit_code == 0, done.output
    assert f"done {app_name} (stages done: identity, grant, swap, revoke)" in done.output


# -- item 1: the stash key is checked before anything changes ---------------------------------


def test_rollback_with_another_key_changes_nothing(op: Operator, tmp_path: Path) -> None:
    _migrate(op, "solo-api")
    before, stash, rows = op.state(), (op.plans / "p.stash").read_bytes(), op.journal_rows()
    refused = op("rollback", str(op.plan), "--app", "solo-api", "--yes",
                 env={"MIGRATOR_STASH_KEY_FILE": str(op.another_key(tmp_path))})
    assert refused.exit_code == 2, refused.output
    assert "written with another key" in refused.output
    assert len(refused.output.strip().splitlines()) == 1  # one line, no traceback
    assert op.state() == before  # no secret minted, identity and grant still there
    assert (op.plans / "p.stash").read_bytes() == stash  # nothing stored under that key
    assert op.journal_rows() == rows
    assert op.healthy("solo-api")
    # With its own key the same rollback works, and the app is healthy on a new secret.
    done = op("rollback", str(op.plan), "--app", "solo-api", "--yes")
    assert done.exit_code == 0 and "rolled-back solo-api" in done.output, done.output
    assert op.healthy("solo-api")


def test_rollback_without_the_key_file_changes_nothing(op: Operator) -> None:
    _migrate(op, "solo-api")
    before = op.state()
    saved = op.key.with_name("saved.key")
    op.key.rename(saved)
    refused = op("rollback", str(op.plan), "--app", "solo-api", "--yes")
    assert refused.exit_code == 2 and "stash key file" in refused.output, refused.output
    assert "is missing" in refused.output
    assert op.state() == before
    assert not op.key.exists()  # no new key made that would strand the old entries
    saved.rename(op.key)


def test_apply_with_another_key_is_refused_before_any_step(op: Operator,
                                                           tmp_path: Path) -> None:
    _migrate(op, "solo-api")
    rows = op.journal_rows()
    refused = op("apply", str(op.plan), "--app", "shared-a", "--soak", "0", "--yes",
                 env={"MIGRATOR_STASH_KEY_FILE": str(op.another_key(tmp_path))})
    assert refused.exit_code == 2 and "written with another key" in refused.output
    assert op.journal_rows() == rows


def test_an_undo_that_fails_stops_the_rollback_there(
        op: Operator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator loses its ARM rights mid-way, after the rollback's rights check passed:
    the revoke's undo (Graph) works, the swap's (ARM) fails, and the grant and identity under
    it must stay, or the app would be left with neither a secret nor an identity with
    rights. (Rights missing before the rollback starts are refused up front:
    test_operator_rights.)"""
    _migrate(op, "solo-api")
    tenant = op.sim.tenant
    operator_id = op.sim.object_id("migrator-operator")
    owned = [a for a in tenant.role_assignments.values() if a.principal_id == operator_id]
    checked = Engine.check_rights

    def check_then_lose_rights(engine: Engine, *args: Any, **kwargs: Any) -> Any:
        verdict = checked(engine, *args, **kwargs)
        with tenant.lock:
            for a in owned:
                tenant.role_assignments.pop(a.name, None)
        return verdict

    monkeypatch.setattr(Engine, "check_rights", check_then_lose_rights)
    failed = op("rollback", str(op.plan), "--app", "solo-api", "--yes")
    monkeypatch.setattr(Engine, "check_rights", checked)
    assert failed.exit_code == 1, failed.output
    assert "failed solo-api" in failed.output and "the rollback stopped there" in failed.output
    assert "Update the app settings of solo-api" in failed.output  # names the step
    grant = op.last_state("solo-api/grant/")
    identity = op.last_state("solo-api/identity/")
    assert set(grant.values()) == {"done"} and set(identity.values()) == {"done"}
    assert op.healthy("solo-api")  # still on its managed identity, with its rights
    with tenant.lock:
        for a in owned:
            tenant.role_assignments[a.name] = a
    done = op("rollback", str(op.plan), "--app", "solo-api", "--yes")
    assert done.exit_code == 0 and "rolled-back solo-api" in done.output, done.output
    assert op.healthy("solo-api")
    solo = tenant.app_by_app_id(op.sim.client_id("solo-sp"))
    assert solo is not None and len(solo.passwords) == 1  # minted once, reused on the retry


# -- item 2 (generic part): a rollback's result is the app's health ---------------------------


def test_a_rollback_that_leaves_the_app_unhealthy_is_not_reported_done(op: Operator) -> None:
    swapped = op("apply", str(op.plan), "--app", "solo-api", "--stage", "swap", "--yes")
    assert swapped.exit_code == 0, swapped.output
    # Behind the tool's back, the old principal loses the right the app needs: back on its
    # secret, the app cannot work.
    tenant = op.sim.tenant
    solo = op.sim.object_id("solo-sp")
    with tenant.lock:
        for a in [a for a in tenant.role_assignments.values() if a.principal_id == solo]:
            del tenant.role_assignments[a.name]
    result = op("rollback", str(op.plan), "--app", "solo-api", "--yes",
                "--health-timeout", "3")
    assert result.exit_code == 1, result.output
    assert "failed solo-api" in result.output
    assert "rolled back, but solo-api did not become healthy within 3 s" in result.output
    assert not op.healthy("solo-api")


# -- item 3: nothing secret outlives the steps that might need it -----------------------------


def test_complete_rollbacks_leave_no_secret_in_the_stash(op: Operator) -> None:
    plan = str(op.plan)
    for name in ("shared-a", "shared-b"):  # one credential, held by both
        assert op("apply", plan, "--app", name, "--stage", "swap", "--yes").exit_code == 0
    revoked = op("apply", plan, "--app", "shared-a", "--app", "shared-b", "--soak", "0",
                 "--yes")
    assert revoked.exit_code == 0, revoked.output
    assert any("minted" not in e for e in op.stash_entries())
    assert op("rollback", plan, "--app", "shared-a", "--yes").exit_code == 0
    left = op.stash_entries()
    assert not any(e.startswith("p/shared-a/") for e in left)  # its settings: not needed
    assert any("/minted/" in e for e in left)  # shared-b still needs the new secret
    assert any(e.startswith("p/shared-b/") for e in left)
    assert op("rollback", plan, "--app", "shared-b", "--yes").exit_code == 0
    assert op.stash_entries() == []
    assert op.healthy("shared-a") and op.healthy("shared-b")


# -- item 8: one journal per plan, whatever path it is opened by ------------------------------


def _status_row(result: Result, app_name: str) -> str:
    return next(line for line in result.output.splitlines() if f" {app_name} " in line)


def test_a_symlink_or_a_copy_of_the_plan_uses_its_journal(op: Operator,
                                                          tmp_path: Path) -> None:
    _migrate(op, "solo-api")
    link = tmp_path / "link.json"
    link.symlink_to(op.plan)
    elsewhere = tmp_path / "ticket"
    elsewhere.mkdir()
    copy = elsewhere / "attached.json"
    shutil.copy(op.plan, copy)
    for path in (link, copy):
        shown = op("status", str(path))
        assert shown.exit_code == 0, shown.output
        assert "revoke" in _status_row(shown, "solo-api").split("│")[2], shown.output
        assert "nothing: migrated" in _status_row(shown, "solo-api")
    assert not (tmp_path / "link.journal.sqlite").exists()
    assert not (elsewhere / "attached.journal.sqlite").exists()
    # A rollback from the copy uses the run's journal and stash, beside the original plan.
    undone = op("rollback", str(copy), "--app", "solo-api", "--yes")
    assert undone.exit_code == 0 and "rolled-back solo-api" in undone.output, undone.output
    assert "this plan's journal is" in undone.output
    assert not (elsewhere / "attached.journal.sqlite").exists()
    assert op.healthy("solo-api")


def test_a_plan_made_anew_under_the_same_name_is_refused(op: Operator, tmp_path: Path) -> None:
    _migrate(op, "solo-api")
    again = op("plan", "--name", "p", "--dir", str(op.plans), "--overwrite")
    assert again.exit_code == 2, again.output
    assert "holds the steps of the plan 'p'" in again.output
    # Made elsewhere and copied over the old one, the new plan finds a journal that is not
    # its own: refused before it reads or changes anything.
    other = tmp_path / "other"
    assert op("plan", "--name", "p", "--dir", str(other)).exit_code == 0
    shutil.copy(other / "p.json", op.plan)
    for command in (("status", str(op.plan)),
                    ("apply", str(op.plan), "--app", "solo-api", "--yes"),
                    ("rollback", str(op.plan), "--app", "solo-api", "--yes")):
        refused = op(*command)
        assert refused.exit_code == 2, refused.output
        assert "holds the steps of another plan named 'p'" in refused.output


# -- item 9: a plan runs only in its own tenant -----------------------------------------------


def test_a_plan_from_another_tenant_is_refused_before_any_step(
        op: Operator, start_sim: Callable[[Path], Sim], tmp_path: Path) -> None:
    text = (FIXTURES / "execute_estate.yaml").read_text()
    other_estate = tmp_path / "other-tenant.yaml"
    other_estate.write_text(text.replace("6f1c3b0e-0000-4000-8000-0000000000e1",
                                         "6f1c3b0e-0000-4000-8000-0000000000f2"))
    other = start_sim(other_estate)
    env = {**other.endpoints.environment(), "MIGRATOR_STASH_KEY_FILE": str(op.key)}
    with other.http() as http:
        before = http.get("/_sim/state").json()
    for command in (("apply", str(op.plan), "--app", "solo-api", "--yes"),
                    ("rollback", str(op.plan), "--app", "solo-api", "--yes")):
        refused = op(*command, env=env)
        assert refused.exit_code == 2, refused.output
        assert "was made in tenant 6f1c3b0e-0000-4000-8000-0000000000e1" in refused.output
        assert "signed in to tenant 6f1c3b0e-0000-4000-8000-0000000000f2" in refused.output
    assert op.journal_rows() == []
    with other.http() as http:
        assert http.get("/_sim/state").json() == before


# -- item 10: status reads, and writes nothing ------------------------------------------------


def test_status_creates_nothing(op: Operator) -> None:
    listing = sorted(p.name for p in op.plans.iterdir())
    shown = op("status", str(op.plan))
    assert shown.exit_code == 0, shown.output
    assert "pending" in shown.output
    assert sorted(p.name for p in op.plans.iterdir()) == listing  # no journal made


_AS_ANOTHER_USER = """
import os, sys
from migrator.cli import main

def status(path):
    sys.argv = ["migrator", "status", "--cloud", "AzureCloud", path]
    try:
        main()
    except SystemExit as done:
        return done.code
    return 0

warm, shared = sys.argv[1:3]
assert status(warm) == 0  # as root, on a writable copy: every lazy import is made
if os.geteuid() == 0:  # root may write anywhere: from here on, be nobody
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
print("-- as", os.geteuid(), flush=True)
sys.exit(status(shared))
"""


def test_status_reads_a_journal_in_a_directory_it_cannot_write(op: Operator) -> None:
    """As an auditor with read access only: the directory and files are read-only to the
    process that runs status (root's tests drop to nobody after their imports)."""
    _migrate(op, "solo-api")
    warm = Path(tempfile.mkdtemp(prefix="migrator-warm-"))
    shared = Path(tempfile.mkdtemp(prefix="migrator-ro-"))
    try:
        for name in ("p.json", "p.journal.sqlite"):
            shutil.copy(op.plans / name, shared / name)
            shutil.copy(op.plans / name, warm / name)
        for path in shared.iterdir():
            path.chmod(0o444)
        shared.chmod(0o555)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MIGRATOR_"))}
        env.update(HOME=str(shared / "no-home"), MIGRATOR_STATE_DIR=str(shared / "no-state"),
                   MIGRATOR_STASH_KEY_FILE=str(shared / "no-key"), COLUMNS="200")
        shown = subprocess.run(
            [sys.executable, "-c", _AS_ANOTHER_USER, str(warm / "p.json"),
             str(shared / "p.json")], env=env, capture_output=True, text=True, timeout=120,
            cwd=shared, check=False)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        as_user = shown.stdout.split("-- as", 1)[1]
        assert "nothing: migrated" in as_user, shown.stdout
        assert sorted(p.name for p in shared.iterdir()) == ["p.journal.sqlite", "p.json"]
    finally:
        shared.chmod(0o755)
        shutil.rmtree(shared)
        shutil.rmtree(warm)


# -- item 15: the preview says what this run will do ------------------------------------------


def test_the_preview_shows_the_health_timeout_of_this_run(op: Operator) -> None:
    shown = op("apply", str(op.plan), "--app", "solo-api", "--health-timeout", "30")
    assert shown.exit_code == 2  # not a terminal: asks for --yes, after the preview
    assert "(up to 30 s)" in shown.output and "(up to 300 s)" not in shown.output
    plain = op("apply", str(op.plan), "--app", "solo-api")
    assert "(up to 300 s)" in plain.output


# -- item 14: Ctrl-C says what it interrupted and how to go on --------------------------------


def test_ctrl_c_during_apply_says_how_to_resume(op: Operator, sim: Sim) -> None:
    with sim.http() as http:  # slow every call down so that the signal lands mid-run
        assert http.post("/_sim/faults", json={"latency_ms": 150}).status_code == 200
    env = {**os.environ, **op.env}
    env.pop("COLUMNS")
    child = subprocess.Popen(
        [sys.executable, "-m", "migrator", "apply", str(op.plan), "--app", "solo-api",
         "--soak", "0", "--yes"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, cwd=REPO)
    assert child.stdout is not None
    for line in child.stdout:  # wait until the first step is done, then interrupt
        if "✓" in line:
            break
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    assert "interrupted during apply of solo-api, at:" in stderr
    assert f"migrator apply {op.plan} --app solo-api" in " ".join(stderr.split())
    assert "Traceback" not in stderr
    op.outputs.append(stderr)
    with sim.http() as http:
        assert http.post("/_sim/faults", json={"latency_ms": 0}).status_code == 200
    resumed = op("apply", str(op.plan), "--app", "solo-api", "--soak", "0", "--yes")
    assert resumed.exit_code == 0, resumed.output
    assert "done solo-api (stages done: identity, grant, swap, revoke)" in resumed.output
    assert op.healthy("solo-api")
