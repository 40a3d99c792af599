"""The journal in Azure Table Storage, for the Automation runbook.

A runbook job has no disk that outlives it: Automation stops a job after three hours (fair
share) and starts it again elsewhere, and two jobs of the same runbook may run at once. So the
runbook keeps its journal where every job can reach it, in a storage table, with the same
promises as `SqliteJournal`: an entry is durable once `record` returns, entries are totally
ordered, and no secret value is ever written.

One table row per entry. PartitionKey is the plan's name, so that one plan's entries are read
with one partition query; RowKey is the entry's sequence number, zero-padded so that the
service's lexical order is the numeric order. Sequence numbers are allocated without a lock:
a writer inserts its row at the next free number it knows of, and an insert that collides
with another writer's (409 Conflict; rows are never replaced) tries the next number, and
after a few collisions in a row reads how far the plan has got. Rows are never updated or
deleted, and a number is only tried after all below it were seen taken, so the numbers of a
plan have no gaps. Every entry also carries a random record id, so that a writer whose
insert reached the table but whose answer was lost, and which then gets 409 for its own row
on trying again, recognises the row as its own instead of writing the entry twice.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from migrator.cloud.storage import (
    EntityTable,
    RowExists,
    StorageCallError,
    StorageCredential,
    StorageError,
)

# check_entry is the SQLite journal's own check, so both journals refuse the same entries.
from migrator.execute.journal import (
    JournalEntry,
    JournalError,
    StepState,
    check_entry,
)

# Version of the row layout below; a row written by a newer msi-migrator is refused rather
# than misread, as the SQLite journal refuses a newer file.
SCHEMA_VERSION = 1
# Digits of the RowKey: lexical order must be numeric order. 10^15 entries is never reached.
SEQUENCE_DIGITS = 15
# How long one entry may go on losing the race for a sequence number before `record` gives
# up. Every loss means that another writer recorded an entry meanwhile, so this only ends a
# pathological case (a writer recording nonstop for minutes); between two runbook jobs, whose
# records are seconds apart (each step calls Azure in between), a writer loses a race or two.
CONTENTION_TIMEOUT_SECONDS = 120.0
# Collisions in a row after which a writer reads where the plan has got to, instead of trying
# the next number blindly, and pauses a random moment, up to this long.
BLIND_SKIPS = 3
MAX_BACKOFF_SECONDS = 0.1
# Transient failures (connection, timeout, 5xx, throttling) of one insert tried again, with
# exponential pauses up to this long: about half a minute in all, as the SDK's own policy.
MAX_TRANSIENT_RETRIES = 6
MAX_TRANSIENT_PAUSE = 8.0
# Table Storage keeps strings as UTF-16 and refuses a string property over 64 KiB, and a
# PartitionKey over 1 KiB.
MAX_PROPERTY_BYTES = 64 * 1024
MAX_KEY_BYTES = 1024
# Characters a PartitionKey may not hold: / \ # ? and control characters.
FORBIDDEN_KEY_CHARACTERS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")

# Each string property, as an error message names it.
_TEXT_PROPERTIES = {"plan_digest": "plan digest", "owner": "owner", "stage": "stage",
                    "step_id": "step id", "state": "state", "at": "time",
                    "before": "before-state", "result": "result", "message": "message"}


class TableJournal:
    """The journal in one Azure storage table, shared by every job that runs a plan."""

    def __init__(self, table: EntityTable) -> None:
        """Use `table`, which must exist (see `from_url`); nothing is read or written yet."""
        self.table = table
        self._lock = threading.Lock()
        self._latest: dict[str, int] = {}  # per plan: the highest sequence number seen
        self._closed = False

    @classmethod
    def from_url(cls, account_url: str, table_name: str,
                 credential: StorageCredential) -> TableJournal:
        """Open the journal in `table_name` of the account at `account_url`, creating the table
        if it is missing, so that a runbook's first job needs no setup step.

        `credential` is the job's managed identity (a TokenCredential: it needs the Storage
        Table Data Contributor role), an account key, or, as a string, a SAS token. An identity
        allowed to use the table but not to create it gets on with the table that is there.
        """
        try:
            return cls(EntityTable.open(account_url, table_name, credential, purpose="journal"))
        except StorageError as exc:
            raise JournalError(str(exc)) from None

    def __enter__(self) -> TableJournal:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def record(self, *, plan: str, plan_digest: str, owner: str, stage: str, step_id: str,
               state: StepState, before: Mapping[str, Any] | None = None,
               result: Mapping[str, Any] | None = None, message: str = "",
               at: datetime | None = None) -> JournalEntry:
        """Insert one entry at the next sequence number of its plan and return it as read back.

        Everything is checked before anything is written: a refused entry leaves no trace. The
        insert is acknowledged by the service only once it is durable.
        """
        checked = check_entry(plan=plan, plan_digest=plan_digest, owner=owner, stage=stage,
                              step_id=step_id, state=state, before=before, result=result,
                              message=message, at=at)
        state, before_json, result_json, when = (checked.state, checked.before_json,
                                                 checked.result_json, checked.at)
        _check_partition_key(plan)
        properties: dict[str, Any] = {
            "plan_digest": plan_digest, "owner": owner, "stage": stage, "step_id": step_id,
            "state": state.value, "at": when.isoformat(), "before": before_json,
            "result": result_json, "message": message,
            "record_id": uuid.uuid4().hex, "schema_version": SCHEMA_VERSION,
        }
        for name, described in _TEXT_PROPERTIES.items():
            _check_size(properties[name], described, step_id)
        with self._lock:
            self._check_open()
            seq = self._insert(plan, properties, step_id)
        return JournalEntry(seq=seq, plan=plan, plan_digest=plan_digest, owner=owner,
                            stage=stage, step_id=step_id, state=state, at=when,
                            before=json.loads(before_json), result=json.loads(result_json),
                            message=message)

    def entries(self, plan: str, owner: str | None = None) -> list[JournalEntry]:
        """Every entry of a plan (of one owner), in the order they were recorded."""
        _check_partition_key(plan)
        if owner is None:
            return self._query(plan, "PartitionKey eq @plan", {"plan": plan})
        return self._query(plan, "PartitionKey eq @plan and owner eq @owner",
                           {"plan": plan, "owner": owner})

    def last_states(self, plan: str) -> dict[str, JournalEntry]:
        """Each step id of a plan to its latest entry, in the order those were recorded.

        The same mapping, in the same order, as `SqliteJournal.last_states`.
        """
        latest: dict[str, JournalEntry] = {}
        for entry in self.entries(plan):
            latest[entry.step_id] = entry
        return {entry.step_id: entry for entry in sorted(latest.values(),
                                                         key=lambda each: each.seq)}

    def close(self) -> None:
        """Close the client's connections; entries are already durable. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.table.close()

    # -- sequence numbers

    def _insert(self, plan: str, properties: dict[str, Any], step_id: str) -> int:
        """Insert the row at the next free sequence number; the caller holds the lock.

        A collision moves straight on to the next number without reading first: re-reading
        would leave the loser a round trip behind the winner's next insert every time. After
        a few collisions in a row it reads where the plan has got to. There is no fairness
        beyond that: a writer recording nonstop can hold another off until it pauses.
        """
        if plan not in self._latest:
            self._learn(plan, self._rows_after(plan, 0))
        seq = self._latest[plan] + 1
        record_id = str(properties["record_id"])
        in_a_row = failures = 0
        give_up = time.monotonic() + CONTENTION_TIMEOUT_SECONDS
        maybe_written = False  # an earlier attempt at `seq` may have reached the table
        while True:
            if seq >= 10 ** SEQUENCE_DIGITS:
                raise JournalError(f"the journal of plan {plan} is full")
            entity = {"PartitionKey": plan, "RowKey": _row_key(seq), **properties}
            try:
                # Inserted once, without the SDK's retries: after a retried insert, a conflict
                # could be this very row, and only the loop below knows to check.
                self.table.insert(entity)
            except RowExists:
                if maybe_written and self._holds(plan, seq, record_id):
                    break
                maybe_written = False
                in_a_row += 1
                if time.monotonic() > give_up:
                    raise JournalError(
                        f"cannot record step {step_id}: other writers kept recording entries "
                        f"of plan {plan} for {CONTENTION_TIMEOUT_SECONDS:g} s") from None
                self._latest[plan] = max(self._latest[plan], seq)
                if in_a_row >= BLIND_SKIPS:
                    in_a_row = 0
                    self._learn(plan, self._rows_after(plan, self._latest[plan]))
                    _pause()
                seq = self._latest[plan] + 1
                continue
            except StorageCallError as exc:
                failures += 1
                if not exc.transient or failures > MAX_TRANSIENT_RETRIES:
                    raise JournalError(f"cannot record step {step_id} in the journal table "
                                       f"{self.table.name}: {exc}") from None
                maybe_written = maybe_written or exc.reached
                time.sleep(min(MAX_TRANSIENT_PAUSE, 0.5 * 2 ** (failures - 1)))
                continue
            break
        self._latest[plan] = max(self._latest[plan], seq)
        return seq

    def _holds(self, plan: str, seq: int, record_id: str) -> bool:
        """Whether the row at `seq` is the one with `record_id`: an insert of this writer's
        that reached the table although its answer did not reach the writer."""
        try:
            found = self.table.get(plan, _row_key(seq), select=["record_id"])
        except StorageCallError as exc:
            raise JournalError(f"cannot read the journal table {self.table.name}: "
                               f"{exc}") from None
        return found.get("record_id") == record_id

    def _rows_after(self, plan: str, seq: int) -> list[int]:
        """The sequence numbers of the plan's rows after `seq`, read from the table."""
        try:
            found = self.table.query("PartitionKey eq @plan and RowKey gt @after",
                                     {"plan": plan, "after": _row_key(seq)}, select=["RowKey"])
        except StorageCallError as exc:
            raise JournalError(f"cannot read the journal table {self.table.name}: "
                               f"{exc}") from None
        return [_sequence(entity) for entity in found]

    def _learn(self, plan: str, taken: Iterable[int]) -> None:
        """Remember the highest sequence number of the plan known to be taken."""
        self._latest[plan] = max([self._latest.get(plan, 0), *taken])

    # -- reading

    def _query(self, plan: str, query: str, parameters: dict[str, Any]) -> list[JournalEntry]:
        self._check_open()
        try:
            rows = self.table.query(query, parameters)
        except StorageCallError as exc:
            raise JournalError(f"cannot read the journal table {self.table.name}: "
                               f"{exc}") from None
        found = sorted((_entry(plan, row, self.table.name) for row in rows),
                       key=lambda entry: entry.seq)
        if found:
            with self._lock:
                self._learn(plan, [found[-1].seq])
        return found

    def _check_open(self) -> None:
        if self._closed:
            raise JournalError(f"the journal table {self.table.name} is closed")


def _row_key(seq: int) -> str:
    return f"{seq:0{SEQUENCE_DIGITS}d}"


def _sequence(entity: Mapping[str, Any]) -> int:
    key = entity.get("RowKey")
    if not isinstance(key, str) or len(key) != SEQUENCE_DIGITS or not key.isdigit():
        raise JournalError(f"the journal table holds a row that is not a journal entry "
                           f"(RowKey {str(key)[:40]!r})")
    return int(key)


def _entry(plan: str, row: Mapping[str, Any], table_name: str) -> JournalEntry:
    seq = _sequence(row)
    version = row.get("schema_version")
    if not isinstance(version, int) or version < 1:
        raise JournalError(f"entry {seq} of plan {plan} in the table {table_name} is not an "
                           "msi-migrator journal entry")
    if version > SCHEMA_VERSION:
        raise JournalError(f"entry {seq} of plan {plan} in the table {table_name} was written "
                           f"by a newer msi-migrator (schema {version}, this one reads up to "
                           f"{SCHEMA_VERSION}); upgrade it")
    try:
        return JournalEntry(seq=seq, plan=plan, plan_digest=str(row["plan_digest"]),
                            owner=str(row["owner"]), stage=str(row["stage"]),
                            step_id=str(row["step_id"]), state=StepState(row["state"]),
                            at=datetime.fromisoformat(str(row["at"])),
                            before=json.loads(str(row["before"])),
                            result=json.loads(str(row["result"])),
                            message=str(row.get("message", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise JournalError(f"entry {seq} of plan {plan} in the table {table_name} cannot be "
                           f"read: {type(exc).__name__}") from None


def _check_partition_key(plan: str) -> None:
    """Refuse a plan name that Table Storage cannot take as a PartitionKey, naming the rule."""
    if not isinstance(plan, str) or not plan:
        raise JournalError("a journal entry needs a non-empty plan")
    if FORBIDDEN_KEY_CHARACTERS.search(plan):
        raise JournalError(f"the plan name {plan!r} cannot key a storage table: it holds one of "
                           "/ \\ # ? or a control character; rename the plan")
    if _utf16_bytes(plan, "the plan name") > MAX_KEY_BYTES:
        raise JournalError("the plan name is longer than a storage table's 1 KiB key limit")


def _check_size(text: str, name: str, step_id: str) -> None:
    size = _utf16_bytes(text, f"the {name} of step {step_id}")
    if size > MAX_PROPERTY_BYTES:
        raise JournalError(f"the {name} of step {step_id} is {size / 1024:.0f} KiB, over the "
                           f"{MAX_PROPERTY_BYTES // 1024} KiB a storage table keeps in one "
                           "property; record less")


def _utf16_bytes(text: str, where: str) -> int:
    try:
        return len(text.encode("utf-16-le"))
    except UnicodeError:
        raise JournalError(f"{where} is not valid Unicode") from None


def _pause() -> None:
    """Wait a random moment, so that writers that keep colliding fall out of step."""
    time.sleep(MAX_BACKOFF_SECONDS * secrets.randbelow(1001) / 1000)

