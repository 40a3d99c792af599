"""The scheduled runbook's core: the same scan, plan and engine as the CLI, unattended, with
its state in Azure Storage so a job that is stopped (Automation's 3-hour fair share) and
started again resumes instead of repeating work, and two jobs at once cannot corrupt it.

Two modes (`runbooks/msi_migrator_runbook.py` calls `main(sys.argv[1:])`):
- `plan`: scan, plan and report; the plan and its reports go to the blob container as
  `plans/<prefix>-<UTC date>.json|.md|.html`, a summary to the job's output. A plan already
  made today is not made again.
- `advance`: for the apps listed in `approvals.json` in the container, run the next due stage
  of each (never beyond the stage approved for it), respecting soak periods and holds. The
  journal lives in Table Storage, the encrypted stash in a blob; a lease on a lock blob keeps a
  second job from advancing the same plan at the same time.

Logs are JSON lines on stdout; error and warning lines start with `ERROR:` / `WARNING:`, which
Azure Automation files in its error and warning streams.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, TextIO

import structlog

from migrator import __version__
from migrator.cloud.errors import CloudError
from migrator.plan.model import STAGES, Plan, Stage

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
APPROVALS = "approvals.json"
# A job's lock is a blob lease, renewed while it runs. A job that was stopped (fair share, a
# crash) loses it within LEASE_SECONDS; the next job waits that long before it stands back.
LEASE_SECONDS = 15
LEASE_WAIT = 20.0


class RunbookError(Exception):
    """Bad parameters or a bad approvals file: one line, exit code 2."""


# --- logging -------------------------------------------------------------------------------


def _automation_lines(stream: TextIO) -> structlog.types.Processor:
    """The final processor: one JSON line, prefixed for Automation's error/warning streams."""
    def render(logger: Any, method: str, event: MutableMapping[str, Any]) -> str:
        line = json.dumps(dict(event), sort_keys=True, default=str)
        prefix = {"error": "ERROR: ", "critical": "ERROR: ", "warning": "WARNING: "}.get(
            method, "")
        return prefix + line
    del stream
    return render


def configure_logging(stream: TextIO | None = None) -> structlog.stdlib.BoundLogger:
    target = stream or sys.stdout
    structlog.configure(
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    _automation_lines(target)],
        logger_factory=structlog.PrintLoggerFactory(target),
        cache_logger_on_first_use=False)
    logger: structlog.stdlib.BoundLogger = structlog.get_logger("msi-migrator-runbook")
    return logger


# --- parameters ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Approvals:
    """What the operator approved: per app, the last stage it may advance to."""

    plan: str
    apps: dict[str, Stage]
    confirm_sql: frozenset[str]


def parse_approvals(text: str) -> Approvals:
    """`{"plan": "<name>", "apps": {"orders-api": "revoke", ...}, "confirm_sql": [...]}`."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunbookError(f"{APPROVALS}: not JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(document, dict) or not isinstance(document.get("plan"), str) \
            or not isinstance(document.get("apps"), dict):
        raise RunbookError(f'{APPROVALS}: expected {{"plan": "<name>", "apps": '
                           '{"<app>": "<stage>"}}')
    apps: dict[str, Stage] = {}
    for app, stage in document["apps"].items():
        try:
            apps[str(app)] = Stage(stage)
        except ValueError:
            raise RunbookError(f"{APPROVALS}: app {app}: stage {stage!r} is not one of "
                               + ", ".join(s.value for s in STAGES)) from None
        if apps[str(app)] not in STAGES:
            raise RunbookError(f"{APPROVALS}: app {app}: {stage!r} is not an app's stage")
    confirm = document.get("confirm_sql") or []
    if not isinstance(confirm, list):
        raise RunbookError(f"{APPROVALS}: confirm_sql must be a list of app names")
    return Approvals(document["plan"], apps, frozenset(str(a) for a in confirm))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="msi_migrator_runbook", description=__doc__)
    parser.add_argument("mode", choices=("plan", "advance"))
    parser.add_argument("--blob-url", required=True, help="Blob service URL of the account.")
    parser.add_argument("--table-url", required=True, help="Table service URL of the account.")
    parser.add_argument("--container", default="msi-migrator")
    parser.add_argument("--table", default="migratorjournal")
    parser.add_argument("--plan-prefix", default="nightly")
    parser.add_argument("--subscription", action="append", default=[])
    parser.add_argument("--soak", default="24h", help="e.g. 24h, 30m, 0")
    parser.add_argument("--sign-in-delay", default="15m",
                        help="how late Entra's sign-in logs may arrive, e.g. 15m")
    parser.add_argument("--sign-in-days", type=int, default=30, choices=range(0, 31),
                        metavar="0-30", help="days of sign-in logs the plan reads")
    parser.add_argument("--sign-in-logs", default="graph",
                        help="graph, or workspace:<id> (a Log Analytics workspace)")
    parser.add_argument("--health-timeout", type=float, default=None)
    parser.add_argument("--cloud", default=os.environ.get("MIGRATOR_CLOUD_PROFILE",
                                                          "AzureCloud"))
    return parser.parse_args(argv)


def sign_in_source(text: str) -> str | None:
    from migrator.cloud.signins import parse_source

    try:
        return parse_source(text)
    except ValueError as exc:
        raise RunbookError(f"--sign-in-logs: {exc}") from None


def parse_soak(text: str, option: str = "--soak") -> timedelta:
    from migrator.execute.engine import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise RunbookError(f"{option} {exc}") from None


# --- the session ---------------------------------------------------------------------------


@dataclass
class Session:
    """Signed in with the Automation account's identity; the storage that holds the state."""

    factory: Any  # ClientFactory
    blobs: Any  # BlobStore
    table_url: str
    table: str
    storage_credential: Any


def _storage_credential(credential: Any) -> Any:
    """The account's identity, or (Azurite, tests) a shared key from the environment."""
    name, key = os.environ.get("MIGRATOR_STORAGE_ACCOUNT_NAME"), os.environ.get(
        "MIGRATOR_STORAGE_ACCOUNT_KEY")
    if name and key:
        from migrator.cloud.storage import account_key

        return account_key(name, key)
    return credential


@contextmanager
def session(args: argparse.Namespace) -> Iterator[Session]:
    from migrator.cloud.blobs import BlobStore
    from migrator.cloud.factory import ClientFactory, managed_identity_credential
    from migrator.cloud.profiles import load_profile

    profile = load_profile(args.cloud)
    credential = managed_identity_credential()
    storage = _storage_credential(credential)
    try:
        with ClientFactory(profile, credential) as factory:
            blobs = BlobStore.from_url(args.blob_url, args.container, storage)
            yield Session(factory, blobs, args.table_url, args.table, storage)
    finally:
        credential.close()


def stash_key() -> bytes:
    """The stash's Fernet key: an encrypted Automation variable `MIGRATOR_STASH_KEY` inside
    Automation, the environment elsewhere. Never logged."""
    try:
        import automationassets  # type: ignore[import-not-found]  # Automation's sandbox only

        value = str(automationassets.get_automation_variable("MIGRATOR_STASH_KEY"))
    except ImportError:
        value = os.environ.get("MIGRATOR_STASH_KEY", "")
    if not value:
        raise RunbookError("no stash key: set the encrypted Automation variable (or environment "
                           "variable) MIGRATOR_STASH_KEY to a Fernet key")
    return value.encode()


# --- modes ---------------------------------------------------------------------------------


def run_plan(s: Session, args: argparse.Namespace, log: Any,
             today: datetime | None = None) -> int:
    from migrator.cloud.blobs import ConflictError, LeaseTaken
    from migrator.execute.rights import with_operator_rights
    from migrator.plan import PlanOptions, build_plan, dump_plan
    from migrator.report import plan_html, plan_markdown
    from migrator.scan import Scanner, ScanScope

    name = f"{args.plan_prefix}-{(today or datetime.now(timezone.utc)):%Y%m%d}"
    path = f"plans/{name}.json"
    if s.blobs.etag(path) is not None:
        log.info("plan exists", plan=name, note="made earlier today; not made again")
        return EXIT_OK
    try:
        with s.blobs.lease(f"locks/plan-{name}", LEASE_SECONDS, wait=LEASE_WAIT):
            if s.blobs.etag(path) is not None:
                log.info("plan exists", plan=name)
                return EXIT_OK
            log.info("scan started", subscriptions=args.subscription or "all readable")
            inventory = Scanner(s.factory, sign_in_days=args.sign_in_days,
                                sign_in_workspace=sign_in_source(args.sign_in_logs)).run(
                ScanScope(tuple(args.subscription)))
            plan, unchecked = with_operator_rights(s.factory, build_plan(
                inventory, PlanOptions(name=name, tool_version=__version__)))
            if unchecked:
                log.warning("rights not checked", detail=unchecked)
            s.blobs.write_text(f"plans/{name}.md", plan_markdown.render(plan))
            s.blobs.write_text(f"plans/{name}.html", plan_html.render(plan))
            try:
                s.blobs.write_text(path, dump_plan(plan), if_none_match=True)
            except ConflictError:
                log.warning("plan exists", plan=name, note="another job wrote it first")
                return EXIT_OK
    except LeaseTaken as exc:
        log.warning("busy", detail=str(exc), note="another job is planning; nothing done")
        return EXIT_OK
    summary = plan.summary
    log.info("plan written", plan=name, blob=path, apps_found=summary.apps_found,
             migratable=summary.migratable, blocked=summary.blocked,
             blocked_by_reason=summary.blocked_by_reason,
             secrets_to_remove=summary.secrets_to_remove, rights_to_grant=summary.rights_to_grant,
             shared_principals=summary.shared_principals, scan_complete=plan.scan_complete)
    for app in plan.apps:
        if app.blocked:
            log.warning("blocked", app=app.name, reasons=[b.message for b in app.blocked])
    for gap in plan.gaps:
        log.warning("gap", scope=gap.scope, operation=gap.operation, message=gap.message)
    if plan.operator_rights and plan.operator_rights.missing:
        log.warning("missing rights", note="the runbook's identity lacks these; advance "
                    "refuses the steps that need them",
                    missing=[m.line for m in plan.operator_rights.missing])
    return EXIT_OK if plan.scan_complete else EXIT_FAILED


def run_advance(s: Session, args: argparse.Namespace, log: Any) -> int:
    from migrator.cloud.blobs import LeaseTaken
    from migrator.cloud.changes import CloudChanges
    from migrator.execute.blob_stash import BlobStash
    from migrator.execute.engine import ApplyOptions, Engine, EngineEvent, MissingRights
    from migrator.execute.journal import Journal
    from migrator.execute.table_journal import TableJournal
    from migrator.execute.workspace import KILL_ENV, KillSwitch
    from migrator.plan import parse_plan
    from migrator.plan.preflight import describe

    text = s.blobs.read_text(APPROVALS)
    if text is None:
        log.info("nothing approved", note=f"no {APPROVALS} in the container")
        return EXIT_OK
    approvals = parse_approvals(text)
    plan_text = s.blobs.read_text(f"plans/{approvals.plan}.json")
    if plan_text is None:
        raise RunbookError(f"{APPROVALS} names plan {approvals.plan!r}, which is not in the "
                           "container")
    plan: Plan = parse_plan(plan_text, f"plans/{approvals.plan}.json")
    soak = parse_soak(args.soak)
    sign_in_delay = parse_soak(args.sign_in_delay, "--sign-in-delay")

    def event(e: EngineEvent) -> None:
        if e.kind in ("stage", "step-done", "undone", "note"):
            log.info(e.kind, app=e.app, step=e.text)
        elif e.kind == "step-failed":
            log.error("step failed", app=e.app, error=e.text)

    try:
        with s.blobs.lease(f"locks/advance-{plan.name}", LEASE_SECONDS,
                           wait=LEASE_WAIT) as held:
            journal: Journal = TableJournal.from_url(s.table_url, s.table, s.storage_credential)
            if os.environ.get(KILL_ENV):  # crash tests only (see workspace.KILL_ENV)
                journal = KillSwitch(journal, int(os.environ[KILL_ENV]))
            try:
                stash = BlobStash(s.blobs, f"stash/{plan.name}.stash", stash_key())
                engine = Engine(plan, journal, stash, CloudChanges(s.factory), events=event)
                failed = False
                progress = {p.app: p for p in engine.status()}
                for app, limit in sorted(approvals.apps.items()):
                    held.check()  # never go on without the lock: another job may have it
                    current = progress.get(app)
                    if current is None:
                        log.warning("unknown app", app=app, plan=plan.name)
                        failed = True
                        continue
                    due = next((Stage(st.stage) for st in current.stages if st.state != "done"),
                               None)
                    if due is None:
                        log.info("migrated", app=app)
                        continue
                    if STAGES.index(due) > STAGES.index(limit):
                        log.info("approved stages done", app=app, approved_up_to=limit.value,
                                 next_stage=due.value)
                        continue
                    try:
                        outcome = engine.apply(ApplyOptions(
                            apps=(app,), stages=STAGES[:STAGES.index(due) + 1],
                            soak=soak, confirm_sql=app in approvals.confirm_sql,
                            health_timeout=args.health_timeout,
                            sign_in_delay=sign_in_delay))[0]
                    except MissingRights as exc:  # nothing of this app changed; on to the next
                        failed = True
                        log.error("refused", app=app, stage=due.value,
                                  reason="the runbook's identity lacks permissions",
                                  missing=describe(exc.missing))
                        continue
                    fields = {"app": app, "stage": due.value, "outcome": outcome.outcome,
                              "stages_done": list(outcome.stages_done)}
                    if outcome.message:
                        fields["message"] = outcome.message
                    if outcome.outcome in ("failed", "refused", "rolled-back"):
                        failed = True
                        log.error("advance", **fields)
                    elif outcome.outcome == "waiting":
                        log.warning("advance", **fields)
                    else:
                        log.info("advance", **fields)
                return EXIT_FAILED if failed else EXIT_OK
            finally:
                journal.close()
    except LeaseTaken as exc:
        log.warning("busy", detail=str(exc), note="another job is advancing this plan")
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """The runbook's entry: parameters from sys.argv; returns the exit code."""
    from migrator.execute.journal import JournalError
    from migrator.execute.stash import StashError
    from migrator.plan import PlanError

    log = configure_logging()
    try:
        args = parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed its message
        return EXIT_BAD_INPUT if exc.code else EXIT_OK
    log.info("start", mode=args.mode, version=__version__)
    try:
        with session(args) as s:
            return run_plan(s, args, log) if args.mode == "plan" else run_advance(s, args, log)
    except (RunbookError, PlanError) as exc:
        log.error("bad input", error=" ".join(str(exc).split()))
        return EXIT_BAD_INPUT
    except (CloudError, JournalError, StashError) as exc:
        log.error("failed", error=" ".join(str(exc).split()))
        return EXIT_FAILED
    except Exception as exc:
        log.error("failed", error=f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        return EXIT_FAILED
