"""The executor's journal: every step, recorded before and after it touches Azure.

The engine records a step as `started`, with the state it is about to change, before it writes
to Azure, and `done` (or `failed`) after. A run that dies at any point (SIGKILL, power loss)
leaves a journal that says which steps may have happened and what they changed, which is all
that resume and rollback have to go on. So each record is its own transaction, committed and
synced before `record` returns, and the file is SQLite in WAL mode: committed records survive a
crash, a half-written one never appears, and a second process (`status` while `apply` runs,
two `apply` runs on different apps) reads and writes alongside.

The journal is a plain file that people read and attach to tickets; secret values never go in
it. `record` refuses any entry holding something shaped like an Entra client secret or a
connection-string password. Rollback data that needs a secret goes to the stash (`stash.py`),
and the journal keeps only the stash key.
"""

from __future__ import annotations

import enum
import json
import os
import re
import sqlite3
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from migrator.detect.values import ENTRA_CLIENT_SECRET

# Version of the file layout below. A file written by a newer msi-migrator is refused rather
# than misread: resuming or rolling back from a misunderstood journal does harm.
SCHEMA_VERSION = 1
# How long a write waits for another process's transaction (each is a single small insert).
BUSY_TIMEOUT_SECONDS = 30.0
# A connection-string keyword that carries a credential, with a value after it (AZURE-FACTS.md).
CONNECTION_STRING_SECRET = re.compile(r"(?i)(password|pwd|accountkey|sharedaccesskey)\s*=\s*[^;]+")

_COLUMNS = "seq, plan, plan_digest, owner, stage, step_id, state, at, before, result, message"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS steps ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " plan TEXT NOT NULL, plan_digest TEXT NOT NULL, owner TEXT NOT NULL,"
    " stage TEXT NOT NULL, step_id TEXT NOT NULL, state TEXT NOT NULL,"
    " at TEXT NOT NULL, before TEXT NOT NULL, result TEXT NOT NULL, message TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS steps_plan_step ON steps (plan, step_id)",
)


class StepState(str, enum.Enum):
    """Where a step stands; the latest entry of a step is its state."""

    STARTED = "started"
    DONE = "done"
    FAILED = "failed"
    UNDO_STARTED = "undo-started"
    UNDONE = "undone"
    UNDO_FAILED = "undo-failed"
    CONFIRMED = "confirmed"  # an operator confirmed a manual step (SQL)


@dataclass(frozen=True)
class JournalEntry:
    """One record of one step, as it was committed.

    `owner` is the app (or slot) the step belongs to, or `principal/<app id>` for steps on a
    shared service principal. `before` is what the step is about to change, `result` what it
    produced; both are JSON objects and never hold a secret value.
    """

    seq: int
    plan: str
    plan_digest: str
    owner: str
    stage: str
    step_id: str
    state: StepState
    at: datetime
    before: Mapping[str, Any]
    result: Mapping[str, Any]
    message: str


class JournalError(Exception):
    """Base of the journal's errors; messages are one line and never hold a secret."""


class SecretInJournal(JournalError):
    """An entry would have written a secret value; it belongs in the stash."""


class Journal(Protocol):
    """Durable record of steps, which resume and rollback read after a crash."""

    def record(self, *, plan: str, plan_digest: str, owner: str, stage: str, step_id: str,
               state: StepState, before: Mapping[str, Any] | None = None,
               result: Mapping[str, Any] | None = None, message: str = "",
               at: datetime | None = None) -> JournalEntry:
        """Commit one entry durably before returning; raise SecretInJournal for a secret."""
        ...

    def entries(self, plan: str, owner: str | None = None) -> list[JournalEntry]:
        """Every entry of a plan (of one owner), in the order they were recorded."""
        ...

    def last_states(self, plan: str) -> dict[str, JournalEntry]:
        """Each step id of a plan to its latest entry: what resume and rollback start from."""
        ...

    def close(self) -> None:
        """Release the file; committed entries are already on disk."""
        ...


def guard_no_secret(text: str, *, where: str = "the journal entry") -> None:
    """Refuse text that holds a secret value, so that none reaches the journal in clear.

    Looks for an Entra client secret and for a connection-string password, account key or
    shared access key with a value. The error names where the secret was and what kind it is,
    never the secret itself: the message ends up in logs and terminals.
    """
    if ENTRA_CLIENT_SECRET.search(text):
        raise SecretInJournal(f"{where} holds an Entra client secret; secret values go to the "
                              "stash, never to the journal")
    found = CONNECTION_STRING_SECRET.search(text)
    if found:
        raise SecretInJournal(f"{where} holds a connection-string {found.group(1)}= value; "
                              "secret values go to the stash, never to the journal")


class SqliteJournal:
    """The journal in a local SQLite file: the default for the CLI."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        """Open the journal at `path`, creating it (mode 0600) when it does not exist.

        Refuses a file that is not a journal, and one written by a newer msi-migrator, before
        changing anything in it. `readonly` (what `status` needs) creates nothing and writes
        nothing: a journal that does not exist reads as empty, and one in a directory the
        operator may not write to is still read.
        """
        self.path = Path(path)
        self.readonly = readonly
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._absent = readonly and not self.path.exists()
        if self._absent:
            return
        if readonly:
            self._connection = _open_readonly(self.path)
            return
        _create_private_file(self.path)
        try:
            connection = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_SECONDS,
                                         isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {self.path}: {exc}") from None
        try:
            _prepare(connection, self.path)
        except BaseException:
            connection.close()
            raise
        self._connection = connection

    def __enter__(self) -> SqliteJournal:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def record(self, *, plan: str, plan_digest: str, owner: str, stage: str, step_id: str,
               state: StepState, before: Mapping[str, Any] | None = None,
               result: Mapping[str, Any] | None = None, message: str = "",
               at: datetime | None = None) -> JournalEntry:
        """Commit one entry, synced to disk, before returning it as it will be read back.

        Everything is checked before anything is written: a refused entry leaves no trace.
        """
        if self.readonly:
            raise JournalError(f"the journal {self.path} is open for reading only")
        checked = check_entry(plan=plan, plan_digest=plan_digest, owner=owner, stage=stage,
                              step_id=step_id, state=state, before=before, result=result,
                              message=message, at=at)
        row = (plan, plan_digest, owner, stage, step_id, checked.state.value,
               checked.at.isoformat(), checked.before_json, checked.result_json, message)
        with self._lock:
            connection = self._open_connection()
            try:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    cursor = connection.execute(
                        "INSERT INTO steps (plan, plan_digest, owner, stage, step_id, state, at,"
                        " before, result, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise
            except (sqlite3.Error, UnicodeError) as exc:
                raise JournalError(f"cannot record step {step_id} in {self.path}: "
                                   f"{_one_line(exc)}") from None
        seq = cursor.lastrowid
        assert seq is not None  # an INSERT into a rowid table always sets it
        return _entry((seq, *row), self.path)

    def entries(self, plan: str, owner: str | None = None) -> list[JournalEntry]:
        """Every entry of a plan (of one owner), in the order they were recorded."""
        if owner is None:
            return self._select("WHERE plan = ? ORDER BY seq", (plan,))
        return self._select("WHERE plan = ? AND owner = ? ORDER BY seq", (plan, owner))

    def last_states(self, plan: str) -> dict[str, JournalEntry]:
        """Each step id of a plan to its latest entry, in the order those were recorded."""
        latest = self._select("WHERE seq IN (SELECT MAX(seq) FROM steps WHERE plan = ?"
                              " GROUP BY step_id) ORDER BY seq", (plan,))
        return {entry.step_id: entry for entry in latest}

    def close(self) -> None:
        """Close the file; calling it again does nothing."""
        with self._lock:
            self._absent = False  # closed: reads fail from now on, as for any closed journal
            if self._connection is not None:
                self._connection.close()
                self._connection = None

    def _select(self, where: str, parameters: tuple[str, ...]) -> list[JournalEntry]:
        if self._absent:
            return []
        with self._lock:
            connection = self._open_connection()
            try:
                rows = connection.execute(f"SELECT {_COLUMNS} FROM steps {where}",  # noqa: S608
                                          parameters).fetchall()
            except sqlite3.Error as exc:
                raise JournalError(f"cannot read the journal {self.path}: "
                                   f"{_one_line(exc)}") from None
        return [_entry(tuple(row), self.path) for row in rows]

    def _open_connection(self) -> sqlite3.Connection:
        if self._connection is None:
            raise JournalError(f"the journal {self.path} is closed")
        return self._connection


def _prepare(connection: sqlite3.Connection, path: Path) -> None:
    """Check that the file is a journal this code can read, then set it up for durability."""
    try:
        connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_SECONDS * 1000)}")
        tables = _tables(connection)
        if tables:
            _check_version(connection, path, tables)
        # Only now that the file is known to be ours (or empty) may it be changed.
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"the journal {path} cannot use SQLite's WAL mode (it is on "
                               f"{mode}); keep it on a local disk")
        connection.execute("PRAGMA synchronous = FULL")
        if not tables:
            connection.execute("BEGIN IMMEDIATE")  # another process may be creating it too
            try:
                for statement in _SCHEMA:
                    connection.execute(statement)
                connection.execute("INSERT OR IGNORE INTO meta (key, value) "
                                   "VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            _check_version(connection, path, _tables(connection))
    except sqlite3.OperationalError as exc:
        raise JournalError(f"cannot open the journal {path}: {_one_line(exc)}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", corrupt pages
        raise JournalError(f"{path} is not an msi-migrator journal ({_one_line(exc)})") from None


def _open_readonly(path: Path) -> sqlite3.Connection:
    """The journal for reading only, creating and changing nothing when it can.

    SQLite reads a WAL database read-only when its -shm file exists or can be made; in a
    directory the operator may not write to, with no -shm (so nothing is waiting in a -wal:
    the last writer checkpointed it on closing), it is read as immutable."""
    uri = path.resolve().as_uri()
    last: sqlite3.Error | None = None
    for options in ("mode=ro", "mode=ro&immutable=1"):
        try:
            connection = sqlite3.connect(f"{uri}?{options}", uri=True,
                                         timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            last = exc
            continue
        try:
            tables = _tables(connection)
            _check_version(connection, path, tables)
            return connection
        except sqlite3.OperationalError as exc:  # cannot make the -shm: try immutable
            connection.close()
            last = exc
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise JournalError(f"{path} is not an msi-migrator journal "
                               f"({_one_line(exc)})") from None
        except BaseException:
            connection.close()
            raise
    raise JournalError(f"cannot read the journal {path}: {_one_line(last or Exception())}")


def _tables(connection: sqlite3.Connection) -> set[str]:
    rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def _check_version(connection: sqlite3.Connection, path: Path, tables: set[str]) -> None:
    """Refuse a database that is not a journal, or a journal from a newer msi-migrator."""
    if not {"meta", "steps"} <= tables:
        raise JournalError(f"{path} is an SQLite database but not an msi-migrator journal")
    row = connection.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row else 0
    except (TypeError, ValueError):
        version = 0
    if version < 1:
        raise JournalError(f"{path} is an SQLite database but not an msi-migrator journal")
    if version > SCHEMA_VERSION:
        raise JournalError(f"the journal {path} was written by a newer msi-migrator (schema "
                           f"{version}, this one reads up to {SCHEMA_VERSION}); upgrade it")


def _create_private_file(path: Path) -> None:
    """Create the file readable by its owner only, and make its name durable.

    SQLite gives its -wal and -shm files the permissions of the database file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise JournalError(f"cannot create the journal {path}: {exc.strerror}") from None
    os.close(descriptor)
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a file's creation or rename in `directory` survive a power loss (POSIX)."""
    if sys.platform == "win32":  # NTFS journals metadata; directories cannot be opened
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class CheckedEntry:
    """An entry's parts as every journal stores them, once `check_entry` has passed them."""

    state: StepState
    before_json: str
    result_json: str
    at: datetime  # UTC


def check_entry(*, plan: str, plan_digest: str, owner: str, stage: str, step_id: str,
                state: StepState, before: Mapping[str, Any] | None,
                result: Mapping[str, Any] | None, message: str,
                at: datetime | None) -> CheckedEntry:
    """Everything a journal checks before it writes an entry, whatever its storage: non-empty
    names, no secret in any field, a known state, JSON documents and an aware time. A refused
    entry raises JournalError (SecretInJournal for a secret) and leaves no trace."""
    for name, text in (("plan", plan), ("plan_digest", plan_digest), ("owner", owner),
                       ("stage", stage), ("step_id", step_id)):
        if not isinstance(text, str) or not text:
            raise JournalError(f"a journal entry needs a non-empty {name}")
        guard_no_secret(text, where=f"the {name} of a journal entry")
    guard_no_secret(message, where=f"the message of step {step_id}")
    try:
        checked_state = StepState(state)
    except ValueError:
        raise JournalError(f"step {step_id}: that is not a step state") from None
    return CheckedEntry(checked_state,
                        _to_json(before, f"the before-state of step {step_id}"),
                        _to_json(result, f"the result of step {step_id}"),
                        _utc(at, step_id))


def _utc(at: datetime | None, step_id: str) -> datetime:
    if at is None:
        return datetime.now(timezone.utc)
    if at.tzinfo is None or at.utcoffset() is None:
        raise JournalError(f"step {step_id}: the time of an entry must be timezone-aware")
    return at.astimezone(timezone.utc)


def _to_json(document: Mapping[str, Any] | None, where: str) -> str:
    """The document as JSON text, after checking every string in it for a secret.

    Each key and string value is checked as itself rather than the JSON text as a whole, so
    that neither JSON quoting nor a neighbouring value hides a secret or invents one.
    """
    try:
        text = json.dumps({} if document is None else document, sort_keys=True,
                          allow_nan=False, default=_plain_mapping)
    except (TypeError, ValueError, RecursionError) as exc:
        raise JournalError(f"{where} is not a JSON object: {_one_line(exc)}") from None
    decoded = json.loads(text)
    if not isinstance(decoded, dict):
        raise JournalError(f"{where} is not a JSON object")
    _guard_tree(decoded, where)
    return text


def _plain_mapping(value: object) -> dict[str, Any]:
    """Let json serialise any Mapping (a MappingProxyType, a frozen view) as an object."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _guard_tree(value: object, where: str, path: str = "") -> None:
    """Check every key and string in a decoded document; errors name the path, not the value."""
    if isinstance(value, str):
        guard_no_secret(value, where=f"{where}, at {path}," if path else where)
    elif isinstance(value, dict):
        for key, item in value.items():
            guard_no_secret(key, where=f"a key in {where}, at {path}," if path
                            else f"a key in {where}")
            _guard_tree(item, where, f"{path}[{json.dumps(key)}]")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _guard_tree(item, where, f"{path}[{index}]")


def _entry(row: tuple[Any, ...], path: Path) -> JournalEntry:
    seq, plan, digest, owner, stage, step_id, state, at, before, result, message = row
    try:
        return JournalEntry(seq=int(seq), plan=plan, plan_digest=digest, owner=owner,
                            stage=stage, step_id=step_id, state=StepState(state),
                            at=datetime.fromisoformat(at), before=json.loads(before),
                            result=json.loads(result), message=message)
    except (TypeError, ValueError) as exc:
        raise JournalError(f"entry {seq} of the journal {path} cannot be read: "
                           f"{_one_line(exc)}") from None


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__
