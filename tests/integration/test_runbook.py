"""The runbook as Azure Automation runs it: a Python 3.10 subprocess signing in with the
Automation account's managed identity (the simulator's endpoint standing in for Automation's),
its state in Azure Storage (Azurite): both modes, a job killed halfway and started again, and
two jobs started together.

The interpreter is $MIGRATOR_RUNBOOK_PYTHON (CI points it at a Python 3.10 environment with the
package installed), else this test's own Python.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azurite import Endpoints, running_azurite
from cryptography.fernet import Fernet

from migrator.cloud.blobs import BlobStore
from migrator.execute.journal import StepState
from migrator.execute.table_journal import TableJournal
from migrator.sim.catalog import GRAPH_APP_ROLES

if TYPE_CHECKING:
    from conftest import Sim

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RUNBOOK = ROOT / "runbooks" / "msi_migrator_runbook.py"
FIXTURES = Path(__file__).parents[1] / "fixtures"
PYTHON = os.environ.get("MIGRATOR_RUNBOOK_PYTHON") or sys.executable


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "runbook_estate.yaml"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Endpoints]:
    (tmp_path / "azurite").mkdir()
    with running_azurite(tmp_path / "azurite") as endpoints:
        yield endpoints


class Jobs:
    """Starts runbook jobs against one simulator and one storage account."""

    def __init__(self, sim: Sim, storage: Endpoints) -> None:
        self.sim = sim
        self.storage = storage
        account = next(iter(sim.tenant.automation_accounts.values()))
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "MIGRATOR_"))}
        self.env = {
            **keep,
            "MIGRATOR_CLOUD_PROFILE": str(sim.endpoints.profile_path),
            "REQUESTS_CA_BUNDLE": sim.ca_bundle, "SSL_CERT_FILE": sim.ca_bundle,
            "IDENTITY_ENDPOINT": f"{sim.base_url}/msi/token",
            "IDENTITY_HEADER": sim.tenant.identity_header_for(account.id),
            "MIGRATOR_STORAGE_ACCOUNT_NAME": storage.account_name,
            "MIGRATOR_STORAGE_ACCOUNT_KEY": storage.account_key,
            "MIGRATOR_STASH_KEY": Fernet.generate_key().decode(),
        }
        self.outputs: list[str] = []
        self.blobs = BlobStore.from_url(storage.blob_url, "msi-migrator", storage.credential())
        # Every secret the tenant holds before any job runs: a revoke deletes the one the job
        # handles, and that one above all must never be written or printed.
        self.secrets = self.tenant_secrets()

    def tenant_secrets(self) -> set[str]:
        with self.sim.tenant.lock:
            return {p.secret for a in self.sim.tenant.applications.values()
                    for p in a.passwords}

    def searched(self) -> set[str]:
        """What the leak check looks for: the secrets held at the start, and those since."""
        return self.secrets | self.tenant_secrets()

    def args(self, mode: str, *extra: str) -> list[str]:
        return [PYTHON, str(RUNBOOK), mode, "--blob-url", self.storage.blob_url,
                "--table-url", self.storage.table_url, "--soak", "0", "--health-timeout", "20",
                *extra]

    def run(self, mode: str, *extra: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(self.args(mode, *extra), env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=180, check=False)
        self.outputs += [done.stdout, done.stderr]
        return done

    def start(self, mode: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.args(mode), env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def lines(self, stdout: str) -> list[dict[str, Any]]:
        out = []
        for line in stdout.splitlines():
            body = line.split(": ", 1)[1] if line.startswith(("ERROR: ", "WARNING: ")) else line
            out.append(json.loads(body))
        return out

    def healthy(self, site: str) -> bool:
        with self.sim.http() as http:
            return bool(http.get(f"/_sites/{site}/healthz").status_code == 200)

    def plan_name(self) -> str:
        return f"nightly-{datetime.now(timezone.utc):%Y%m%d}"

    def approve(self, apps: dict[str, str]) -> None:
        self.blobs.write_text("approvals.json", json.dumps(
            {"plan": self.plan_name(), "apps": apps}))

    def journal(self) -> TableJournal:
        return TableJournal.from_url(self.storage.table_url, "migratorjournal",
                                     self.storage.credential())

    def no_secret_anywhere(self) -> None:
        stored = [self.blobs.read_text(n) or "" for n in self.blobs.list("")
                  if not n.startswith("stash/")]
        journal = self.journal()
        try:
            rows = json.dumps([e.__dict__ for e in journal.entries(self.plan_name())],
                              default=str)
        finally:
            journal.close()
        for secret in [*self.searched(), self.env["MIGRATOR_STASH_KEY"]]:
            for text in [*self.outputs, *stored, rows]:
                leaked = secret in text or json.dumps(secret)[1:-1] in text
                assert not leaked, f"a secret (hint {secret[:3]}) was written or printed"


@pytest.fixture
def jobs(sim: Sim, storage: Endpoints) -> Iterator[Jobs]:
    j = Jobs(sim, storage)
    yield j
    j.blobs.close()


def test_runs_under_the_automation_python(jobs: Jobs) -> None:
    version = subprocess.run([PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, check=True).stdout
    if os.environ.get("MIGRATOR_RUNBOOK_PYTHON"):
        assert version.strip() == "(3, 10)", "the runbook's tests must run under Python 3.10"


def test_plan_mode_writes_the_plan_and_reports_once_a_day(jobs: Jobs) -> None:
    first = jobs.run("plan")
    assert first.returncode == 0, first.stdout + first.stderr
    written = [e for e in jobs.lines(first.stdout) if e["event"] == "plan written"]
    assert written and written[0]["migratable"] == 3 and written[0]["blocked"] == 0
    name = jobs.plan_name()
    assert {f"plans/{name}.json", f"plans/{name}.md", f"plans/{name}.html"} <= set(
        jobs.blobs.list("plans/"))
    etag = jobs.blobs.etag(f"plans/{name}.json")
    again = jobs.run("plan")
    assert again.returncode == 0
    assert any(e["event"] == "plan exists" for e in jobs.lines(again.stdout))
    assert jobs.blobs.etag(f"plans/{name}.json") == etag  # a restarted job repeats nothing
    jobs.no_secret_anywhere()


def test_advance_moves_approved_apps_one_stage_per_run(jobs: Jobs) -> None:
    handled = jobs.sim.secret("solo-sp")
    assert jobs.run("plan").returncode == 0
    nothing = jobs.run("advance")
    assert nothing.returncode == 0 and "nothing approved" in nothing.stdout
    jobs.approve({"solo-api": "revoke", "shared-a": "grant"})
    stages = []
    for _ in range(5):
        job = jobs.run("advance")
        assert job.returncode == 0, job.stdout + job.stderr
        stages.append({e["app"]: e.get("stage") for e in jobs.lines(job.stdout)
                       if e["event"] == "advance"})
    assert [s.get("solo-api") for s in stages] == ["identity", "grant", "swap", "revoke", None]
    assert [s.get("shared-a") for s in stages] == ["identity", "grant", None, None, None]
    assert jobs.healthy("solo-api") and jobs.healthy("shared-a")
    solo = jobs.sim.tenant.app_by_app_id(jobs.sim.client_id("solo-sp"))
    assert solo is not None and solo.passwords == []
    # the revoke deleted the secret the job handled: the leak check still looks for it
    covered = handled not in jobs.tenant_secrets() and handled in jobs.searched()
    assert covered, "the revoked secret is not among those searched"  # no value printed
    jobs.no_secret_anywhere()


def test_a_job_killed_halfway_resumes(jobs: Jobs) -> None:
    assert jobs.run("plan").returncode == 0
    jobs.approve({"solo-api": "identity"})
    killed = jobs.run("advance", env={"MIGRATOR_TEST_KILL_BEFORE_RECORD": "2"})
    assert killed.returncode == -9  # after the identity was enabled, before it was recorded
    resumed = jobs.run("advance")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    journal = jobs.journal()
    try:
        states = [e.state for e in journal.entries(jobs.plan_name(), "solo-api")]
    finally:
        journal.close()
    assert states == [StepState.STARTED, StepState.DONE]  # resumed: verified, not redone
    assert jobs.healthy("solo-api")
    jobs.no_secret_anywhere()


def test_two_jobs_started_together_do_not_corrupt_the_state(jobs: Jobs) -> None:
    assert jobs.run("plan").returncode == 0
    jobs.approve({"solo-api": "revoke", "shared-a": "swap", "shared-b": "revoke"})
    for _ in range(4):
        first, second = jobs.start("advance"), jobs.start("advance")
        for job in (first, second):
            out, err = job.communicate(timeout=180)
            jobs.outputs += [out, err]
            assert job.returncode == 0, out + err
    journal = jobs.journal()
    try:
        entries = journal.entries(jobs.plan_name())
    finally:
        journal.close()
    per_step: dict[str, list[StepState]] = {}
    for e in entries:
        per_step.setdefault(e.step_id, []).append(e.state)
    assert all(states == [StepState.STARTED, StepState.DONE] for states in per_step.values()), \
        per_step  # no step was started twice: one job at a time held the plan
    # one job at a time held the plan: the second waited for the first, then did the next stage
    last = jobs.run("advance")
    last2 = jobs.run("advance")
    assert last.returncode == 0 and last2.returncode == 0
    for site in ("solo-api", "shared-a", "shared-b"):
        assert jobs.healthy(site)
    jobs.no_secret_anywhere()


def test_an_identity_that_may_not_remove_the_secret_is_warned_and_its_revoke_held(jobs: Jobs) -> None:
    """Issue 12: the Automation identity lacks Graph's Application.ReadWrite.All. The plan says
    so and holds the app's revoke; advance moves the app as far as the swap, then reports the
    revoke waiting, with the reason, and changes nothing; the secret stays and the app stays
    healthy on its managed identity."""
    t = jobs.sim.tenant
    account = next(iter(t.automation_accounts.values()))
    with t.lock:
        for key, a in list(t.app_role_assignments.items()):
            if a.principal_id == account.identity.system_principal_id and \
                    a.app_role_id == GRAPH_APP_ROLES["Application.ReadWrite.All"]:
                del t.app_role_assignments[key]
            if a.principal_id == account.identity.system_principal_id and \
                    a.app_role_id == GRAPH_APP_ROLES["AppRoleAssignment.ReadWrite.All"]:
                t.app_role_assignments[key + "-read"] = type(a)(
                    key + "-read", a.principal_id, a.resource_id,
                    GRAPH_APP_ROLES["Application.Read.All"])  # it may still scan
    planned = jobs.run("plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    (warning,) = [e for e in jobs.lines(planned.stdout) if e["event"] == "missing rights"]
    assert all("revoke" in line and "Application.ReadWrite.All" in line
               for line in warning["missing"])
    jobs.approve({"solo-api": "revoke"})
    for stage in ("identity", "grant", "swap"):
        job = jobs.run("advance")
        assert job.returncode == 0, (stage, job.stdout + job.stderr)
    held = jobs.run("advance")  # the plan held the revoke: it waits, it is not attempted
    assert held.returncode == 0, held.stdout + held.stderr
    (event,) = [e for e in jobs.lines(held.stdout) if e["event"] == "advance"]
    assert event["app"] == "solo-api" and event["stage"] == "revoke"
    assert event["outcome"] == "waiting" and event["level"] == "warning"
    assert "revoke is held: the operator who made the plan may not do this" in event["message"]
    assert "Application.ReadWrite.All" in event["message"]
    solo = t.app_by_app_id(jobs.sim.client_id("solo-sp"))
    assert solo is not None and len(solo.passwords) == 1  # nothing removed
    assert jobs.healthy("solo-api")
    jobs.no_secret_anywhere()


def test_advance_refuses_a_revoke_while_the_logs_show_the_secret_in_use(jobs: Jobs) -> None:
    """Issue 13: the same evidence gate as `apply`. A nightly export outside App Service signs
    in with solo-api's secret; the plan holds its revoke, advance refuses it with the export's
    address (nothing removed), and removes the secret once the export has stopped and been
    quiet for the soak."""
    t = jobs.sim.tenant
    account = next(iter(t.automation_accounts.values()))
    graph = t.graph_sp
    with t.lock:  # the account may read the sign-in logs
        assignment = next(a for a in t.app_role_assignments.values()
                          if a.principal_id == account.identity.system_principal_id)
        t.app_role_assignments["audit"] = type(assignment)(
            "audit", assignment.principal_id, graph.object_id,
            GRAPH_APP_ROLES["AuditLog.Read.All"])
    with jobs.sim.http() as http:
        assert http.post("/_sim/callers/nightly-export", json={"active": True}).status_code \
            == 200
    time.sleep(2.5)  # a few of its sign-ins, past the logs' delay
    planned = jobs.run("plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    plan = json.loads(jobs.blobs.read_text(f"plans/{jobs.plan_name()}.json") or "{}")
    assert plan["sign_ins"]["source"] == "graph"
    outside = [a["ip"] for c in plan["sign_ins"]["credentials"] for a in c["addresses"]
               if not a["apps"]]
    assert outside == ["198.51.100.20"]
    jobs.approve({"solo-api": "revoke"})
    gate = ("--sign-in-delay", "2s", "--soak", "5s")
    for stage in ("identity", "grant", "swap"):
        job = jobs.run("advance", *gate)
        assert job.returncode == 0, (stage, job.stdout + job.stderr)

    def revoke() -> tuple[int, dict[str, Any]]:
        deadline = time.monotonic() + 40
        while True:
            job = jobs.run("advance", *gate)
            (event,) = [e for e in jobs.lines(job.stdout) if e["event"] == "advance"]
            if event["outcome"] != "waiting" or time.monotonic() > deadline:
                return job.returncode, event
            time.sleep(1)

    code, refused = revoke()
    assert (code, refused["outcome"]) == (1, "refused"), refused
    assert "198.51.100.20" in refused["message"] and "nothing was removed" in refused["message"]
    solo = t.app_by_app_id(jobs.sim.client_id("solo-sp"))
    assert solo is not None and len(solo.passwords) == 1
    with jobs.sim.http() as http:
        assert http.post("/_sim/callers/nightly-export", json={"active": False}).status_code \
            == 200
    deadline = time.monotonic() + 40
    while True:
        code, done = revoke()
        if done["outcome"] != "refused" or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (code, done["outcome"]) == (0, "done"), done
    assert solo.passwords == []
    assert jobs.healthy("solo-api")
    jobs.no_secret_anywhere()
