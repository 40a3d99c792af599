"""The runbook's state in Azure Storage (TableJournal, BlobStore, BlobStash), against Azurite.

What these promise is about how the service answers races (two jobs inserting the same
sequence number, writing over a stale ETag, taking a held lease), so they run the real SDKs
against the real emulator, and the races with real processes. The journal's semantics are
checked on both journals with the same tests, so the runbook and the CLI resume alike.
"""

from __future__ import annotations

import base64
import itertools
import multiprocessing
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ServiceRequestError, ServiceResponseError
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient
from azurite import DEV_ACCOUNT, DEV_KEY, Endpoints, running_azurite
from cryptography.fernet import Fernet

from migrator.cloud.blobs import BlobStore, ConflictError, LeaseTaken
from migrator.cloud.storage import EntityTable
from migrator.execute.blob_stash import BlobStash
from migrator.execute.journal import (
    Journal,
    JournalError,
    SecretInJournal,
    SqliteJournal,
    StepState,
)
from migrator.execute.stash import StashError
from migrator.execute.table_journal import TableJournal

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
WORKER_ENTRIES = 200
WORKER_PUTS = 25


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    with running_azurite(tmp_path_factory.mktemp("azurite")) as endpoints:
        yield endpoints


def _name(prefix: str) -> str:
    """A fresh table or container name, so that tests sharing one Azurite never meet."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@pytest.fixture
def table_journal(azurite: Endpoints) -> Iterator[TableJournal]:
    with TableJournal.from_url(azurite.table_url, _name("journal"),
                               azurite.credential()) as journal:
        yield journal


@pytest.fixture(params=["sqlite", "table"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    """Each journal in turn: the tests that take it hold both to the same behaviour."""
    opened: Journal
    if request.param == "sqlite":
        opened = SqliteJournal(tmp_path / "journal.sqlite")
    else:
        endpoints: Endpoints = request.getfixturevalue("azurite")
        opened = TableJournal.from_url(endpoints.table_url, _name("journal"),
                                       endpoints.credential())
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def store(azurite: Endpoints) -> Iterator[BlobStore]:
    opened = BlobStore.from_url(azurite.blob_url, _name("state-"), azurite.credential())
    try:
        yield opened
    finally:
        opened.close()


def _generated_secret() -> str:
    """A value shaped like an Entra client secret, made up here (never a real one)."""
    return uuid.uuid4().hex[:3] + "8Q~" + (uuid.uuid4().hex + uuid.uuid4().hex)[:34]


# -- the journal, both implementations


def test_round_trip_and_order(journal: Journal) -> None:
    recorded = [
        journal.record(plan="p", plan_digest="d1", owner="app-a", stage="identity",
                       step_id="a-identity", state=StepState.STARTED,
                       before={"identity": {"type": "None"}, "tags": ["x", 1, None]},
                       at=T0),
        journal.record(plan="p", plan_digest="d1", owner="app-b", stage="identity",
                       step_id="b-identity", state=StepState.STARTED, at=T0),
        journal.record(plan="p", plan_digest="d1", owner="app-a", stage="identity",
                       step_id="a-identity", state=StepState.DONE,
                       result={"principal_id": "p-1"}, message="enabled",
                       at=T0 + timedelta(seconds=1)),
    ]
    assert journal.entries("p") == recorded
    assert journal.entries("p", "app-a") == [recorded[0], recorded[2]]
    assert journal.entries("p", "nobody") == []
    assert journal.entries("other") == []
    first = recorded[0]
    assert first.before == {"identity": {"type": "None"}, "tags": ["x", 1, None]}
    assert first.at == T0 and first.at.tzinfo is not None
    assert recorded[2].message == "enabled"
    assert [entry.seq for entry in recorded] == sorted(entry.seq for entry in recorded)


def test_local_times_are_kept_in_utc(journal: Journal) -> None:
    local = datetime(2025, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    entry = journal.record(plan="p", plan_digest="d", owner="o", stage="swap", step_id="s",
                           state=StepState.DONE, at=local)
    (read,) = journal.entries("p")
    assert read.at == entry.at == T0
    assert read.at.utcoffset() == timedelta(0)
    with pytest.raises(JournalError, match="timezone-aware"):
        journal.record(plan="p", plan_digest="d", owner="o", stage="swap", step_id="s",
                       state=StepState.DONE, at=datetime(2025, 3, 1))


def test_last_states_semantics(journal: Journal) -> None:
    """Resume and rollback read `last_states`: the latest entry of each step, ordered by when
    that latest entry was recorded, and one plan never sees another's steps."""
    script = [
        ("p", "s1", StepState.STARTED), ("p", "s2", StepState.STARTED),
        ("other", "s1", StepState.FAILED),
        ("p", "s1", StepState.DONE), ("p", "s3", StepState.STARTED),
        ("p", "s2", StepState.FAILED), ("p", "s3", StepState.DONE),
        ("p", "s2", StepState.STARTED), ("other", "s9", StepState.DONE),
        ("p", "s3", StepState.UNDO_STARTED), ("p", "s3", StepState.UNDONE),
        ("p", "s4", StepState.CONFIRMED),
    ]
    for index, (plan, step, state) in enumerate(script):
        journal.record(plan=plan, plan_digest="d", owner=f"owner-{step}", stage="grant",
                       step_id=step, state=state, result={"n": index},
                       at=T0 + timedelta(seconds=index))
    last = journal.last_states("p")
    assert [(step, entry.state, entry.result["n"]) for step, entry in last.items()] == [
        ("s1", StepState.DONE, 3), ("s2", StepState.STARTED, 7),
        ("s3", StepState.UNDONE, 10), ("s4", StepState.CONFIRMED, 11)]
    assert all(entry.plan == "p" for entry in last.values())
    assert list(journal.last_states("other")) == ["s1", "s9"]
    assert journal.last_states("nothing") == {}


@pytest.mark.parametrize("where", ["before", "result", "message", "owner"])
def test_secrets_are_refused_and_leave_no_trace(journal: Journal, where: str) -> None:
    secret = _generated_secret()
    document: dict[str, Any] = {"settings": [{"name": "AZURE_CLIENT_SECRET", "value": secret}]}
    arguments: dict[str, Any] = {"plan": "p", "plan_digest": "d", "owner": "o",
                                 "stage": "swap", "step_id": "swap-1",
                                 "state": StepState.STARTED}
    if where in ("before", "result"):
        arguments[where] = document
    else:
        arguments[where] = f"rotated to {secret}"
    with pytest.raises(SecretInJournal) as refused:
        journal.record(**arguments)
    assert secret not in str(refused.value)
    assert journal.entries("p") == []
    with pytest.raises(SecretInJournal):
        journal.record(plan="p", plan_digest="d", owner="o", stage="swap", step_id="swap-1",
                       state=StepState.STARTED,
                       before={"Db": "Server=tcp:x;Password=" + uuid.uuid4().hex})
    assert journal.entries("p") == []


# -- the table journal


def test_a_second_journal_continues_the_sequence(azurite: Endpoints) -> None:
    table = _name("journal")
    with TableJournal.from_url(azurite.table_url, table, azurite.credential()) as first:
        first.record(plan="p", plan_digest="d", owner="o", stage="identity", step_id="s1",
                     state=StepState.STARTED)
    with TableJournal.from_url(azurite.table_url, table, azurite.credential()) as second, \
            TableJournal.from_url(azurite.table_url, table, azurite.credential()) as third:
        assert second.record(plan="p", plan_digest="d", owner="o", stage="identity",
                             step_id="s1", state=StepState.DONE).seq == 2
        # `third` knows nothing yet: its first insert collides and it moves on.
        assert third.record(plan="p", plan_digest="d", owner="o", stage="grant",
                            step_id="s2", state=StepState.STARTED).seq == 3
        assert second.record(plan="p", plan_digest="d", owner="o", stage="grant",
                             step_id="s2", state=StepState.DONE).seq == 4
        assert [entry.seq for entry in third.entries("p")] == [1, 2, 3, 4]
        assert second.record(plan="q", plan_digest="d", owner="o", stage="identity",
                             step_id="s1", state=StepState.STARTED).seq == 1


def test_oversized_properties_are_refused(table_journal: TableJournal) -> None:
    big = {"settings": "x" * (33 * 1024)}  # 66 KiB as UTF-16
    with pytest.raises(JournalError, match="before-state of step s1 is 66 KiB"):
        table_journal.record(plan="p", plan_digest="d", owner="o", stage="swap",
                             step_id="s1", state=StepState.STARTED, before=big)
    assert table_journal.entries("p") == []
    fits = {"settings": "x" * (32 * 1024 - 100)}
    entry = table_journal.record(plan="p", plan_digest="d", owner="o", stage="swap",
                                 step_id="s1", state=StepState.STARTED, before=fits)
    assert table_journal.entries("p") == [entry]


@pytest.mark.parametrize("plan", ["team/plan", "a#b", "what?", "back\\slash", "tab\there"])
def test_plan_names_a_table_cannot_key_are_refused(table_journal: TableJournal,
                                                   plan: str) -> None:
    with pytest.raises(JournalError, match="cannot key a storage table"):
        table_journal.record(plan=plan, plan_digest="d", owner="o", stage="swap",
                             step_id="s1", state=StepState.STARTED)


def test_service_errors_are_one_line_without_the_key(azurite: Endpoints) -> None:
    table = _name("journal")
    TableJournal.from_url(azurite.table_url, table, azurite.credential()).close()
    wrong_key = base64.b64encode(os.urandom(64)).decode()  # a well-formed key, not the account's
    client = TableClient(endpoint=azurite.table_url, table_name=table,
                         credential=AzureNamedKeyCredential(DEV_ACCOUNT, wrong_key))
    with TableJournal(EntityTable(client)) as journal, pytest.raises(JournalError) as failed:
        journal.record(plan="p", plan_digest="d", owner="o", stage="swap", step_id="s1",
                       state=StepState.STARTED)
    message = str(failed.value)
    assert "\n" not in message and wrong_key not in message and DEV_KEY not in message
    assert "HTTP 403" in message


def test_closed_journal_refuses(table_journal: TableJournal) -> None:
    table_journal.close()
    table_journal.close()
    with pytest.raises(JournalError, match="closed"):
        table_journal.entries("p")


def _record_many(table_url: str, table: str, plan: str, pace: float, worker: int,
                 start: Any) -> None:
    """One of two processes racing to record into the same plan (runs in a spawned child),
    with a random pause of up to `pace` seconds between records, as steps have."""
    client = TableClient(endpoint=table_url, table_name=table,
                         credential=AzureNamedKeyCredential(DEV_ACCOUNT, DEV_KEY))
    with TableJournal(EntityTable(client)) as journal:
        start.wait(60)
        for index in range(WORKER_ENTRIES):
            journal.record(plan=plan, plan_digest="d", owner=f"app-{worker}", stage="grant",
                           step_id=f"w{worker}-{index:03d}", state=StepState.DONE)
            time.sleep(pace * random.random())


def _run_workers(target: Callable[..., None], *arguments: Any) -> None:
    context = multiprocessing.get_context("spawn")
    # Both workers start racing only once both are up: spawning takes a second or so.
    start = context.Barrier(2)
    workers = [context.Process(target=target, args=(*arguments, worker, start))
               for worker in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(180)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("pace", [0.0, 0.01], ids=["flat-out", "paced"])
def test_two_processes_recording_into_one_plan_lose_nothing(azurite: Endpoints,
                                                            pace: float) -> None:
    """Every entry survives, in its writer's order, and the numbers run 1..400 without a gap
    or a repeat. Flat out, the slower writer mostly waits until the other is done (the
    allocation is not fair, which the engine's pace of records makes harmless); paced like
    steps, the two interleave."""
    table = _name("journal")
    TableJournal.from_url(azurite.table_url, table, azurite.credential()).close()
    _run_workers(_record_many, azurite.table_url, table, "p", pace)
    with TableJournal.from_url(azurite.table_url, table, azurite.credential()) as journal:
        entries = journal.entries("p")
    assert [entry.seq for entry in entries] == list(range(1, 2 * WORKER_ENTRIES + 1))
    for worker in range(2):
        mine = [entry.step_id for entry in entries if entry.owner == f"app-{worker}"]
        assert mine == [f"w{worker}-{index:03d}" for index in range(WORKER_ENTRIES)]
    if pace:
        owners = [entry.owner for entry in entries]
        assert sum(1 for a, b in itertools.pairwise(owners) if a != b) > 4


class _FlakyTable(TableClient):
    """A table client whose first insert fails in transit: before the request was sent, or
    after the row was written but before the answer arrived."""

    def __init__(self, *args: Any, written: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.written = written
        self.failed = False

    def create_entity(self, entity: Any, **kwargs: Any) -> dict[str, Any]:
        if self.failed:
            return super().create_entity(entity, **kwargs)
        self.failed = True
        if not self.written:
            raise ServiceRequestError("connection refused")
        super().create_entity(entity, **kwargs)
        raise ServiceResponseError("connection reset by peer")


@pytest.mark.parametrize("written", [False, True], ids=["not-sent", "answer-lost"])
def test_an_insert_failing_in_transit_is_recorded_once(azurite: Endpoints,
                                                       written: bool) -> None:
    table = _name("journal")
    TableJournal.from_url(azurite.table_url, table, azurite.credential()).close()
    client = _FlakyTable(endpoint=azurite.table_url, table_name=table,
                         credential=azurite.credential(), written=written)
    with TableJournal(EntityTable(client)) as journal:
        entry = journal.record(plan="p", plan_digest="d", owner="o", stage="swap",
                               step_id="s1", state=StepState.STARTED)
        assert client.failed
        assert journal.entries("p") == [entry]
        assert journal.record(plan="p", plan_digest="d", owner="o", stage="swap",
                              step_id="s1", state=StepState.DONE).seq == 2


# -- the blob store


def test_blob_text_round_trip_and_listing(store: BlobStore) -> None:
    assert store.read_text("plans/p.json") is None
    assert store.etag("plans/p.json") is None
    etag = store.write_text("plans/p.json", '{"name": "p", "note": "ünïcode"}')
    assert store.read_text("plans/p.json") == '{"name": "p", "note": "ünïcode"}'
    assert store.etag("plans/p.json") == etag
    found = store.read("plans/p.json")
    assert found is not None and found.etag == etag
    store.write_text("plans/q.json", "{}")
    store.write_text("journal-notes.txt", "")
    assert store.list("plans/") == ["plans/p.json", "plans/q.json"]
    assert store.list() == ["journal-notes.txt", "plans/p.json", "plans/q.json"]


def test_conditional_writes_refuse_a_stale_etag(store: BlobStore) -> None:
    first = store.write_text("plan.json", "v1", if_none_match=True)
    with pytest.raises(ConflictError, match="exists already"):
        store.write_text("plan.json", "other job's v1", if_none_match=True)
    second = store.write_text("plan.json", "v2", if_match=first)
    assert second != first
    with pytest.raises(ConflictError, match="changed since it was read"):
        store.write_text("plan.json", "stale v2", if_match=first)
    assert store.read_text("plan.json") == "v2"
    with pytest.raises(ConflictError):
        store.write_text("gone.json", "v1", if_match=first)
    assert store.read_text("gone.json") is None


def test_a_lease_is_exclusive_until_released(store: BlobStore) -> None:
    with store.lease("locks/p", seconds=15) as held:
        with pytest.raises(LeaseTaken) as taken, store.lease("locks/p", seconds=15):
            pass
        assert "locks/p" in str(taken.value) and "\n" not in str(taken.value)
        held.check()
        with pytest.raises(ConflictError, match="leased"):
            store.write_text("locks/p", "overwrite the lock")
        with store.lease("locks/other", seconds=15):  # other blobs are not held
            pass
    with store.lease("locks/p", seconds=15):
        pass


@pytest.mark.slow
def test_a_held_lease_is_renewed(store: BlobStore) -> None:
    with store.lease("locks/p", seconds=15) as held:
        time.sleep(17)  # past the 15 s Azure keeps a lease that is not renewed
        with pytest.raises(LeaseTaken), store.lease("locks/p", seconds=15):
            pass
        assert not held.lost
        held.check()


@pytest.mark.slow
def test_a_killed_jobs_lease_can_be_waited_out(store: BlobStore) -> None:
    """A job stopped by Automation never releases its lease; its restart waits it out."""
    store.write_text("locks/p", "")
    store.container.get_blob_client("locks/p").acquire_lease(lease_duration=15)  # then "dies"
    with pytest.raises(LeaseTaken), store.lease("locks/p", seconds=15):
        pass
    started = time.monotonic()
    with store.lease("locks/p", seconds=15, wait=30):
        waited = time.monotonic() - started
    assert waited < 20


def test_lease_length_is_checked(store: BlobStore) -> None:
    with pytest.raises(Exception, match="15 to 60"), store.lease("locks/p", seconds=300):
        pass


# -- the blob stash


def test_stash_round_trip_without_plaintext(store: BlobStore) -> None:
    key = Fernet.generate_key()
    stash = BlobStash(store, "stash/p.bin", key)
    secret = _generated_secret()
    assert stash.get("swap-1") is None
    stash.delete("swap-1")
    stash.put("swap-1", {"AZURE_CLIENT_SECRET": secret, "nested": {"n": [1, 2]}})
    stash.put("swap-2", {"Db": "Password=" + uuid.uuid4().hex})
    assert stash.get("swap-1") == {"AZURE_CLIENT_SECRET": secret, "nested": {"n": [1, 2]}}
    stored = store.read_text("stash/p.bin")
    assert stored is not None
    for clear in (secret, "AZURE_CLIENT_SECRET", "swap-1", "Password"):
        assert clear not in stored
    # Another job with the same key reads it; a job with another key is refused.
    assert BlobStash(store, "stash/p.bin", key).get("swap-2") is not None
    with pytest.raises(StashError, match="another key") as refused:
        BlobStash(store, "stash/p.bin", Fernet.generate_key()).get("swap-1")
    assert secret not in str(refused.value)
    stash.delete("swap-1")
    assert stash.get("swap-1") is None
    assert stash.get("swap-2") is not None


def test_stash_refuses_a_bad_key_and_a_value_that_is_not_json(store: BlobStore) -> None:
    with pytest.raises(StashError, match="not a Fernet key"):
        BlobStash(store, "stash/p.bin", b"short")
    stash = BlobStash(store, "stash/p.bin", Fernet.generate_key())
    with pytest.raises(StashError, match="not JSON"):
        stash.put("k", {"when": datetime.now(timezone.utc)})
    assert store.read_text("stash/p.bin") is None


def _put_many(blob_url: str, container: str, key: bytes, worker: int, start: Any) -> None:
    """One of two processes racing to put into the same stash (runs in a spawned child)."""
    client = ContainerClient(blob_url, container,
                             credential=AzureNamedKeyCredential(DEV_ACCOUNT, DEV_KEY))
    stash = BlobStash(BlobStore(client), "stash/p.bin", key)
    start.wait(60)
    for index in range(WORKER_PUTS):
        stash.put(f"w{worker}-{index}", {"worker": worker, "index": index})
    client.close()


@pytest.mark.slow
def test_concurrent_puts_from_two_processes_all_survive(azurite: Endpoints,
                                                        store: BlobStore) -> None:
    key = Fernet.generate_key()
    _run_workers(_put_many, azurite.blob_url, store.container.container_name, key)
    stash = BlobStash(store, "stash/p.bin", key)
    for worker in range(2):
        for index in range(WORKER_PUTS):
            assert stash.get(f"w{worker}-{index}") == {"worker": worker, "index": index}
