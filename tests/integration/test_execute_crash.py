"""The executor killed at every step boundary: what an operator relies on when `migrator apply`
dies (SIGKILL, a lost VM, an OOM kill) part-way through a migration.

Three apps of tests/fixtures/execute_estate.yaml: solo-api (its own principal, a system-assigned
identity) and shared-a + shared-b (one principal, one shared user-assigned identity). For each
kill point k, a fresh simulator, a plan made against it, and `migrator apply` SIGKILLing itself
just before its k-th journal record (workspace.KILL_ENV); then either
- resume: the same `apply` again finishes the migration: every app migrated (all four stages
  done), healthy, its old credential gone, no secret left in its settings; or
- rollback: `migrator rollback` of each app puts every setting, identity and right back exactly
  as the simulator had them before the run. Where the killed run had already removed a password
  credential, rollback mints a new one: then the application holds the new key instead of the
  old, and the apps that held the old secret hold the new one, and are healthy.
And no secret (any password the tenant holds, before or after) is in the journal, its WAL, the
stash file or anything the commands printed.

RECORDS, the number of journal records of an uninterrupted run, was measured (40: 6 steps of
solo-api, 6 of shared-a, 7 of shared-b, then shared-a's revoke, which waited for shared-b's swap,
each `started` + `done`); the k = RECORDS + 1 cases (nothing killed) assert it, so a plan that
changes shape fails there first. Kill points tried: k = 1..41 (41 = nothing killed), each in both
variants: 82 cases. The ones in CLI_KILL_POINTS run `python -m migrator` as real subprocesses;
the others run the same command line (migrator.cli.main) in a child of a multiprocessing
fork server that has the CLI's modules imported already: the same code path and the same
SIGKILL, without the ~2 s interpreter and SDK start-up per command. The children are forked
from that single-threaded server, never from the test process: that process runs the
simulator's server thread, and a child forked while such a thread holds a lock inherits the
lock held forever (a CI run saw a forked `apply` hang for its whole 120 s timeout).
Measured on 2 cores with `-n auto`, this module alone: 78 cases in 150 s wall time on an
otherwise idle machine (CLI cases 7-19 s each, forked cases 1.5-3.5 s each); 284 s while other
work kept the load average near 4 (CLI cases 16-35 s).

Two engine defects this test found first are fixed: one `apply` now finishes apps that wait
for each other's swap, and rolling back any app that held a removed credential gives it the
newly minted secret (one per credential, shared).
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import AppProgress, Engine
from migrator.execute.journal import SqliteJournal
from migrator.execute.stash import FileStash
from migrator.execute.workspace import KILL_ENV, paths_for
from migrator.plan import Plan, PlanOptions, build_plan
from migrator.plan.integrity import dump_plan
from migrator.plan.model import RemovePasswordCredential
from migrator.scan import Scanner

if TYPE_CHECKING:
    from conftest import Sim

pytestmark = [pytest.mark.slow, pytest.mark.integration]

FIXTURES = Path(__file__).parents[1] / "fixtures"
APPS = ("solo-api", "shared-a", "shared-b")
RECORDS = 40  # journal records of an uninterrupted run (asserted by the k = RECORDS + 1 cases)
# Kill points that go through real `python -m migrator` subprocesses: after solo-api's settings
# were swapped (not yet recorded done), after solo-api's credential was removed (not yet
# recorded), after shared-a's settings were swapped, after the shared credential was removed,
# and a run that is not killed.
CLI_KILL_POINTS = frozenset({8, 12, 22, 38, RECORDS + 1})
STAGE_NAMES = ("identity", "grant", "swap", "revoke")
COMMAND_TIMEOUT = 120.0

Runner = Literal["cli", "fork"]
KILL_POINTS = [pytest.param(k, "cli" if k in CLI_KILL_POINTS else "fork",
                            id=f"k{k:02d}-{'cli' if k in CLI_KILL_POINTS else 'fork'}")
               for k in range(1, RECORDS + 2)]



@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "execute_estate.yaml"


@dataclass(frozen=True)
class Finished:
    """One `migrator` command as its caller saw it."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


# One fork server per test process. It starts at the first forked command, importing what
# this process has imported of the CLI's packages by then (a scan and a plan ran here), so that
# its children start as fast as a fork of this process would.
_FORK_SERVER = multiprocessing.get_context("forkserver")
_PRELOAD_ROOTS = frozenset({
    "migrator", "azure", "msgraph", "msgraph_core", "kiota_abstractions", "kiota_http",
    "kiota_authentication_azure", "kiota_serialization_json", "kiota_serialization_text",
    "kiota_serialization_form", "kiota_serialization_multipart", "msal", "httpx", "httpcore",
    "requests", "urllib3", "rich", "typer", "click", "pydantic", "cryptography", "tenacity",
    "structlog", "sqlite3", "ssl", "asyncio", "concurrent"})


def _start_fork_server() -> None:
    if getattr(_start_fork_server, "done", False):
        return
    preload = sorted(
        name for name in list(sys.modules)
        if name.split(".")[0] in _PRELOAD_ROOTS and not name.endswith("__main__")
        and not name.startswith("migrator.sim"))
    _FORK_SERVER.set_forkserver_preload([*preload, __name__])
    _start_fork_server.done = True  # type: ignore[attr-defined]


def _cli_in_forked_child(args: list[str], env: dict[str, str], stdout_path: str,
                         stderr_path: str) -> None:
    """The body of a forked `migrator` process: the environment a shell would give it, its
    standard streams in files, then the console entry point itself (which ends in SystemExit,
    which multiprocessing turns into the exit code; the kill switch ends it with SIGKILL)."""
    os.environ.pop(KILL_ENV, None)
    os.environ.update(env)
    for fd, path in ((1, stdout_path), (2, stderr_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.argv = ["migrator", *args]
    from migrator.cli import main

    main()


class Workspace:
    """One kill point's world: a fresh simulator, a plan made against it (secrets differ per
    simulator start), the plan's journal and stash, and the `migrator` commands run on it."""

    def __init__(self, sim: Sim, tmp_path: Path, runner: Runner) -> None:
        self.sim = sim
        self.runner = runner
        self.dir = tmp_path
        inventory = Scanner(sim.factory(), workers=4).run()
        self.plan: Plan = build_plan(inventory, PlanOptions(name="crash", tool_version="test"))
        self.plan_path = tmp_path / "plan.json"
        self.plan_path.write_text(dump_plan(self.plan), encoding="utf-8")
        self.journal_path, self.stash_path = paths_for(self.plan_path)
        self.key_path = tmp_path / "keys" / "stash.key"
        self.env = sim.endpoints.environment() | {
            "MIGRATOR_STASH_KEY_FILE": str(self.key_path), "COLUMNS": "250",
            "NO_COLOR": "1"}
        self.finished: list[Finished] = []
        self.secrets = set(self.current_secrets())
        self._commands = 0

    # -- commands

    def migrator(self, *args: str, kill_at: int | None = None) -> Finished:
        """`migrator ARGS` the way the runner of this case runs it."""
        env = dict(self.env)
        if kill_at is not None:
            env[KILL_ENV] = str(kill_at)
        self._commands += 1
        done = (self._subprocess if self.runner == "cli" else self._forked)(list(args), env)
        self.finished.append(done)
        self.secrets |= set(self.current_secrets())
        self.assert_no_secret_leaked()
        return done

    def _subprocess(self, args: list[str], env: dict[str, str]) -> Finished:
        base = {k: v for k, v in os.environ.items() if k != KILL_ENV}
        ran = subprocess.run([sys.executable, "-m", "migrator", *args], env=base | env,
                             cwd=self.dir, capture_output=True, text=True,
                             timeout=COMMAND_TIMEOUT, check=False)
        return Finished(ran.returncode, ran.stdout, ran.stderr)

    def _forked(self, args: list[str], env: dict[str, str]) -> Finished:
        out = self.dir / f"command-{self._commands}.stdout"
        err = self.dir / f"command-{self._commands}.stderr"
        _start_fork_server()
        child = _FORK_SERVER.Process(target=_cli_in_forked_child,
                                     args=(args, env, str(out), str(err)), daemon=True)
        child.start()
        child.join(COMMAND_TIMEOUT)
        if child.exitcode is None:
            child.kill()
            child.join()
            pytest.fail(f"migrator {' '.join(args)} did not end within {COMMAND_TIMEOUT} s")
        return Finished(child.exitcode, out.read_text(encoding="utf-8"),
                        err.read_text(encoding="utf-8"))

    def apply(self, kill_at: int | None = None) -> Finished:
        apps = [arg for app in APPS for arg in ("--app", app)]
        return self.migrator("apply", str(self.plan_path), *apps, "--soak", "0", "--yes",
                             "--health-timeout", "20", kill_at=kill_at)

    def rollback(self, app: str) -> Finished:
        return self.migrator("rollback", str(self.plan_path), "--app", app, "--yes")

    # -- what the simulator and the journal say

    def state(self) -> dict[str, Any]:
        """The simulator's whole state, lists in a stable order, minus restart counters."""
        with self.sim.http() as http:
            state: dict[str, Any] = http.get("/_sim/state").json()
        for site in state["sites"]:
            site.pop("restarts", None)
        for application in state["applications"]:
            application["passwordCredentials"].sort(key=lambda p: p["keyId"])
        for key, field in (("roleAssignments", "name"), ("servicePrincipals", "id"),
                           ("userAssignedIdentities", "id"), ("keyVaults", "id"),
                           ("sites", "id"), ("applications", "id")):
            state[key].sort(key=lambda item, field=field: str(item[field]).lower())
        return state

    def healthy(self, app: str) -> bool:
        with self.sim.http() as http:
            return http.get(f"/_sites/{app}/healthz").status_code == 200

    def journal_rows(self) -> list[tuple[str, str, str]]:
        """(owner, step id, state) of every record, in order."""
        connection = sqlite3.connect(self.journal_path)
        try:
            return [(str(o), str(s), str(t)) for o, s, t in connection.execute(
                "SELECT owner, step_id, state FROM steps ORDER BY seq")]
        finally:
            connection.close()

    def status(self) -> dict[str, AppProgress]:
        """Engine.status() over the journal, as `migrator status` shows it."""
        journal = SqliteJournal(self.journal_path)
        try:
            engine = Engine(self.plan, journal, FileStash(self.stash_path, self.key_path),
                            CloudChanges(self.sim.factory()))
            return {p.app: p for p in engine.status()}
        finally:
            journal.close()

    def credentials(self) -> dict[str, RemovePasswordCredential]:
        """The password credential each app's revoke removes, by app."""
        found = {}
        for app in self.plan.apps:
            for stage in app.stages:
                for step in stage.steps:
                    if isinstance(step.params, RemovePasswordCredential) and app.name in APPS:
                        found[app.name] = step.params
        return found

    def secret_of(self, app_id: str, key_id: str) -> str | None:
        application = self.sim.tenant.app_by_app_id(app_id)
        assert application is not None
        return next((p.secret for p in application.passwords if p.key_id == key_id), None)

    def current_secrets(self) -> Iterator[str]:
        with self.sim.tenant.lock:
            for application in self.sim.tenant.applications.values():
                for password in application.passwords:
                    yield password.secret

    def assert_no_secret_leaked(self) -> None:
        """No password the tenant has held is in the journal, its WAL, the stash file or any
        command's output (compared without white space too: the console wraps lines)."""
        files = [self.journal_path, self.journal_path.with_name(self.journal_path.name + "-wal"),
                 self.stash_path]
        blobs = {str(p): p.read_bytes() for p in files if p.exists()}
        texts = {f"output of command {i + 1}": f.stdout + f.stderr
                 for i, f in enumerate(self.finished)}
        for name, text in list(texts.items()):
            texts[name + " (unwrapped)"] = "".join(text.split())
        for secret in self.secrets:
            for name, blob in blobs.items():
                assert secret.encode() not in blob, f"a secret (hint {secret[:3]}) is in {name}"
            for name, text in texts.items():
                assert secret not in text, f"a secret (hint {secret[:3]}) is in the {name}"


def _killed_run(ws: Workspace, kill_at: int) -> Finished:
    """`apply` killed just before its kill_at-th journal record (or not at all, past the end)."""
    killed = ws.apply(kill_at=kill_at)
    rows = ws.journal_rows()
    if kill_at <= RECORDS:
        assert killed.returncode == -9, f"apply was not SIGKILLed at record {kill_at}:\n" \
                                        + killed.output
        assert len(rows) == kill_at - 1, rows
    else:
        assert killed.returncode == 0, killed.output
        assert len(rows) == RECORDS, (
            f"an uninterrupted run wrote {len(rows)} journal records, not {RECORDS}: the plan "
            "changed shape; set RECORDS (and CLI_KILL_POINTS) to match")
    return killed


@pytest.mark.parametrize(("kill_at", "runner"), KILL_POINTS)
def test_apply_again_after_a_kill_finishes_the_migration(sim: Sim, tmp_path: Path,
                                                         kill_at: int, runner: Runner) -> None:
    """Whatever record the engine died before, a new `apply` finishes every app: migrated,
    healthy, the old credentials gone and no secret in the settings."""
    ws = Workspace(sim, tmp_path, runner)
    _killed_run(ws, kill_at)

    resumed = ws.apply()
    assert resumed.returncode == 0, resumed.output
    status = ws.status()
    unfinished = [a for a in APPS if [s.state for s in status[a].stages] != ["done"] * 4]
    assert not unfinished, {a: [(s.stage, s.state, s.message) for s in status[a].stages]
                            for a in unfinished}
    assert all(tuple(s.stage for s in status[a].stages) == STAGE_NAMES for a in APPS)

    last: dict[str, str] = {}
    for _, step_id, step_state in ws.journal_rows():
        last[step_id] = step_state
    assert set(last.values()) == {"done"}, last  # nothing left started, failed or undone

    state = ws.state()
    sites = {s["name"]: s for s in state["sites"]}
    held = {(a["appId"], p["keyId"]) for a in state["applications"]
            for p in a["passwordCredentials"]}
    for app, credential in ws.credentials().items():
        assert (credential.app_id, credential.key_id) not in held, f"{app}'s credential is left"
        assert "AZURE_CLIENT_SECRET" not in sites[app]["appSettings"], app
        assert ws.healthy(app), app
    ws.assert_no_secret_leaked()


@pytest.mark.parametrize(("kill_at", "runner"), KILL_POINTS)
def test_rollback_after_a_kill_restores_the_former_state(sim: Sim, tmp_path: Path,
                                                         kill_at: int, runner: Runner) -> None:
    """Whatever record the engine died before, rolling every app back restores the settings,
    identities and rights exactly; a credential the killed run removed is replaced by a newly
    minted one, which the apps that held the old secret now hold."""
    ws = Workspace(sim, tmp_path, runner)
    before = ws.state()
    old_secrets = {(c.app_id, c.key_id): ws.secret_of(c.app_id, c.key_id)
                   for c in ws.credentials().values()}
    _killed_run(ws, kill_at)
    removed = {key for key in old_secrets if ws.secret_of(*key) is None}

    for app in reversed(APPS):  # latest first
        undone = ws.rollback(app)
        assert undone.returncode == 0, undone.output
        assert "rolled-back" in undone.stdout, undone.output

    after = ws.state()
    expected = copy.deepcopy(before)
    new_secret: dict[str, str] = {}  # old secret -> the one minted in its place
    for application in expected["applications"]:
        gone = [p for p in application["passwordCredentials"]
                if (application["appId"], p["keyId"]) in removed]
        if not gone:
            continue
        (actual,) = [a for a in after["applications"] if a["id"] == application["id"]]
        kept = [p for p in application["passwordCredentials"] if p not in gone]
        minted = [p for p in actual["passwordCredentials"] if p not in kept]
        assert len(minted) == len(gone) == 1, (application["displayName"], actual)
        assert minted[0]["keyId"] not in {p["keyId"] for p in gone}
        secret = ws.secret_of(application["appId"], minted[0]["keyId"])
        old = old_secrets[(application["appId"], gone[0]["keyId"])]
        assert secret is not None and old is not None
        new_secret[old] = secret
        application["passwordCredentials"] = sorted([*kept, *minted],
                                                    key=lambda p: p["keyId"])
    for site in expected["sites"]:
        settings = site["appSettings"]
        if settings.get("AZURE_CLIENT_SECRET") in new_secret:
            settings["AZURE_CLIENT_SECRET"] = new_secret[settings["AZURE_CLIENT_SECRET"]]

    for key in before:
        assert after[key] == expected[key], f"{key} differs from the state before the run"
    for app in APPS:
        assert ws.healthy(app), app
    ws.assert_no_secret_leaked()
