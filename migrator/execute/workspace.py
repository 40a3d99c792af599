"""Where a plan's execution state lives: beside the plan, `<name>.journal.sqlite` (no secret
ever) and `<name>.stash` (encrypted rollback data), with the stash's key elsewhere
(`MIGRATOR_STASH_KEY_FILE`, default ~/.config/msi-migrator/stash.key), so that a copy of the
plans directory alone reveals nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from migrator.cloud.changes import CloudChanges
from migrator.execute.engine import Engine, EngineEvent
from migrator.execute.journal import Journal, JournalEntry, SqliteJournal, StepState
from migrator.execute.stash import FileStash, default_key_file
from migrator.plan.model import Plan

# Crash tests only: SIGKILL this process just before the N-th journal record of the run, so
# a test can stop the engine at every step boundary (before a step starts, and after a step
# wrote to Azure but before it was recorded done).
KILL_ENV = "MIGRATOR_TEST_KILL_BEFORE_RECORD"


def paths_for(plan_path: Path) -> tuple[Path, Path]:
    stem = plan_path.with_suffix("")
    return stem.with_name(stem.name + ".journal.sqlite"), stem.with_name(stem.name + ".stash")


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
                events: Callable[[EngineEvent], None] = lambda _: None) -> Iterator[Engine]:
    journal_path, stash_path = paths_for(plan_path)
    journal: Journal = SqliteJournal(journal_path)
    kill_at = os.environ.get(KILL_ENV)
    if kill_at:
        journal = KillSwitch(journal, int(kill_at))
    try:
        stash = FileStash(stash_path, default_key_file())
        yield Engine(plan, journal, stash, cloud, events=events)
    finally:
        journal.close()
