"""Where a plan's execution state lives: beside the plan, `<name>.journal.sqlite` (no secret
ever) and `<name>.stash` (encrypted rollback data), with the stash's key elsewhere
(`MIGRATOR_STASH_KEY_FILE`, default ~/.config/msi-migrator/stash.key), so that a copy of the
plans directory alone reveals nothing.

A journal belongs to one plan: the plan's real path (a symlink leads to the file it names),
and its digest. The first `apply` or `rollback` of a plan records, under the digest, where its
journal is (`$MIGRATOR_STATE_DIR`, default `$XDG_STATE_HOME/msi-migrator` or
`~/.local/state/msi-migrator`), so that a copy of the plan (attached to a ticket, moved to
another directory) finds the journal of its run instead of starting an empty one that says
every app is pending. The engine refuses a journal whose steps name another plan.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import Engine, EngineEvent
from migrator.execute.journal import (
    Journal,
    JournalEntry,
    JournalError,
    SqliteJournal,
    StepState,
    fsync_directory,
)
from migrator.execute.stash import FileStash, default_key_file
from migrator.plan.model import Plan

# Crash tests only: SIGKILL this process just before the N-th journal record of the run, so
# a test can stop the engine at every step boundary (before a step starts, and after a step
# wrote to Azure but before it was recorded done).
KILL_ENV = "MIGRATOR_TEST_KILL_BEFORE_RECORD"


def paths_for(plan_path: Path) -> tuple[Path, Path]:
    """The journal and stash beside a plan file (its real path: a symlink leads to the file)."""
    stem = plan_path.resolve().with_suffix("")
    return stem.with_name(stem.name + ".journal.sqlite"), stem.with_name(stem.name + ".stash")


def state_dir() -> Path:
    """Where msi-migrator keeps what it must find again across runs (not secrets)."""
    explicit = os.environ.get("MIGRATOR_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "msi-migrator"


@dataclass(frozen=True)
class Workspace:
    """Where one plan's journal and stash are, and why there (for the operator)."""

    journal: Path
    stash: Path
    note: str = ""  # set when the journal is not the one beside the plan file


def locate(digest: str, name: str, plan_path: Path, *, record: bool) -> Workspace:
    """The journal and stash of the plan with this digest, opened from `plan_path`.

    Beside the plan's real path, unless the plan was first run from another path (a copy) and
    that journal is still there: then that one. Two journals of one plan with steps in both
    are refused. `record` (apply, rollback) remembers this location for later copies."""
    journal, stash = paths_for(plan_path)
    registered = _registered(digest)
    if registered is not None and registered.journal != journal and registered.journal.exists():
        if _has_steps(journal, name):
            raise JournalError(
                f"this plan has two journals, {registered.journal} and {journal}, both with "
                f"steps: run it from {registered.journal.with_name(name + '.json')} (where it "
                "was first applied), or move one journal away")
        return Workspace(registered.journal, registered.stash,
                         f"this plan's journal is {registered.journal} (where the plan was "
                         "first applied); this copy uses it")
    if record and (registered is None or registered.journal != journal):
        _register(digest, Workspace(journal, stash))
    return Workspace(journal, stash)


def journal_in_use(plan_path: Path, name: str) -> Path | None:
    """The journal beside a plan file if it holds steps of a plan by that name: a new plan
    written over the old one would find them and be refused."""
    journal, _ = paths_for(plan_path)
    return journal if _has_steps(journal, name) else None


def _has_steps(journal: Path, name: str) -> bool:
    if not journal.exists():
        return False
    reader = SqliteJournal(journal, readonly=True)
    try:
        return bool(reader.last_states(name))
    finally:
        reader.close()


def _registry_entry(digest: str) -> Path:
    return state_dir() / "plans" / f"{digest}.json"


def _registered(digest: str) -> Workspace | None:
    try:
        document = json.loads(_registry_entry(digest).read_text(encoding="utf-8"))
        return Workspace(Path(document["journal"]), Path(document["stash"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, or unreadable: the journal beside the plan is the one


def _register(digest: str, workspace: Workspace) -> None:
    """Record where this plan's journal is: written whole, then renamed into place."""
    entry = _registry_entry(digest)
    text = json.dumps({"journal": str(workspace.journal), "stash": str(workspace.stash)})
    try:
        entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = entry.with_name(f".{entry.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        temporary.write_text(text + "\n", encoding="utf-8")
        os.replace(temporary, entry)
        fsync_directory(entry.parent)
    except OSError as exc:
        raise JournalError(f"cannot record where this plan's journal is in {entry.parent}: "
                           f"{exc.strerror or exc} (set MIGRATOR_STATE_DIR)") from None


class KillSwitch:
    """A journal that kills its own process before the N-th record (see KILL_ENV)."""

    def __init__(self, inner: Journal, before: int) -> None:
        self.inner, self.before, self.count = inner, before, 0

    def record(self, *, plan: str, plan_digest: str, owner: str, stage: str, step_id: str,
               state: StepState, before: Mapping[str, Any] | None = None,
               result: Mapping[str, Any] | None = None, message: str = "",
               at: datetime | None = None) -> JournalEntry:
        self.count += 1
        if self.count == self.before:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.record(plan=plan, plan_digest=plan_digest, owner=owner, stage=stage,
                                 step_id=step_id, state=state, before=before, result=result,
                                 message=message, at=at)

    def entries(self, plan: str, owner: str | None = None) -> list[JournalEntry]:
        return self.inner.entries(plan, owner)

    def last_states(self, plan: str) -> dict[str, JournalEntry]:
        return self.inner.last_states(plan)

    def close(self) -> None:
        self.inner.close()


@contextlib.contextmanager
def open_engine(plan: Plan, plan_path: Path, cloud: CloudChanges, *,
                events: Callable[[EngineEvent], None] = lambda _: None,
                readonly: bool = False) -> Iterator[Engine]:
    """The engine over the plan's journal and stash. `readonly` (status) creates and writes
    nothing, in the plans directory or elsewhere."""
    where = locate(plan.digest, plan.name, plan_path, record=not readonly)
    if where.note:
        events(EngineEvent("note", plan.name, where.note))
    journal: Journal = SqliteJournal(where.journal, readonly=readonly)
    kill_at = os.environ.get(KILL_ENV)
    if kill_at and not readonly:
        journal = KillSwitch(journal, int(kill_at))
    try:
        stash = FileStash(where.stash, default_key_file())
        yield Engine(plan, journal, stash, cloud, events=events)
    finally:
        journal.close()
