"""The journal keeps every committed step through close, SIGKILL and concurrent writers, and
never a secret: what resume and rollback rely on after a crash."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import string
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.detect.values import ENTRA_CLIENT_SECRET
from migrator.execute.journal import (
    SCHEMA_VERSION,
    JournalEntry,
    JournalError,
    SecretInJournal,
    SqliteJournal,
    StepState,
    guard_no_secret,
)

REPO = Path(__file__).resolve().parents[2]
PLAN = "plans/contoso.json"
DIGEST = "sha256:" + "ab" * 32
SECRET_ALPHABET = string.ascii_letters + string.digits + "_~.-"


def entra_secret() -> str:
    """A random value in the format of an Entra client secret (never a real one)."""
    rng = random.SystemRandom()
    return ("".join(rng.choice(SECRET_ALPHABET) for _ in range(3)) + rng.choice(string.digits)
            + "Q~" + "".join(rng.choice(SECRET_ALPHABET) for _ in range(rng.randint(31, 34))))


def random_password(length: int = 24) -> str:
    rng = random.SystemRandom()
    return "".join(rng.choice(string.ascii_letters + string.digits + "!@#$%^&*") for _ in
                   range(length))


def record(journal: SqliteJournal, step_id: str, state: StepState = StepState.STARTED,
           owner: str = "orders-api", **fields: object) -> JournalEntry:
    return journal.record(plan=PLAN, plan_digest=DIGEST, owner=owner, stage="swap",
                          step_id=step_id, state=state, **fields)  # type: ignore[arg-type]


def file_bytes(path: Path) -> bytes:
    """The journal and its WAL, as anyone with the files could read them."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def run_child(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})


# A writer that records its i-th step with a payload derived from i, and says so on stdout
# only after record() has returned (the record is committed).
WRITER = """
    import sys
    from pathlib import Path
    from migrator.execute.journal import SqliteJournal, StepState
    path, owner, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    journal = SqliteJournal(path)
    for i in range(count):
        journal.record(plan="plans/contoso.json", plan_digest="d", owner=owner, stage="swap",
                       step_id=f"{owner}/{i}", state=StepState.STARTED,
                       before={"i": i, "settings": {"name": f"SETTING_{i}", "pad": "x" * (i % 700)}},
                       message=f"step {i}")
        print(i, flush=True)
    journal.close()
"""


def expected_before(i: int) -> dict[str, object]:
    return {"i": i, "settings": {"name": f"SETTING_{i}", "pad": "x" * (i % 700)}}


def test_entries_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "run" / "journal.sqlite"
    with SqliteJournal(path) as journal:
        started = record(journal, "orders-api/swap/settings",
                         before={"settings": {"AZURE_CLIENT_ID": "0a5e3c1d"}, "stash": "k1"})
        done = record(journal, "orders-api/swap/settings", StepState.DONE,
                      result={"restarted": True}, message="health 200")
    with SqliteJournal(path) as reopened:
        assert reopened.entries(PLAN) == [started, done]
    assert started.seq < done.seq
    assert started.before == {"settings": {"AZURE_CLIENT_ID": "0a5e3c1d"}, "stash": "k1"}


def test_record_returns_the_entry_as_it_reads_back(tmp_path: Path) -> None:
    at = datetime(2026, 5, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        entry = record(journal, "s1", before=MappingProxyType({"ids": ("a", "b")}),
                       result=None, at=at)
        [read] = journal.entries(PLAN)
    assert read == entry
    assert entry.at == at and entry.at.utcoffset() == timedelta(0)
    assert entry.before == {"ids": ["a", "b"]} and entry.result == {}
    assert entry.state is StepState.STARTED and entry.plan_digest == DIGEST


def test_time_defaults_to_now_in_utc_and_naive_times_are_refused(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        before = datetime.now(timezone.utc)
        entry = record(journal, "s1")
        assert before <= entry.at <= datetime.now(timezone.utc)
        assert entry.at.tzinfo is not None
        with pytest.raises(JournalError, match="timezone-aware"):
            record(journal, "s2", at=datetime(2026, 5, 1, 12, 0))
        assert [e.step_id for e in journal.entries(PLAN)] == ["s1"]


def test_last_states_is_the_latest_entry_of_each_step(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        record(journal, "a/identity", StepState.STARTED)
        record(journal, "a/identity", StepState.DONE)
        record(journal, "a/grant/sql", StepState.STARTED)
        record(journal, "a/grant/sql", StepState.CONFIRMED)
        record(journal, "a/swap", StepState.STARTED)
        record(journal, "a/identity", StepState.UNDO_STARTED)
        journal.record(plan="plans/other.json", plan_digest="x", owner="b", stage="swap",
                       step_id="a/swap", state=StepState.FAILED)
        states = journal.last_states(PLAN)
    assert {step: entry.state for step, entry in states.items()} == {
        "a/grant/sql": StepState.CONFIRMED, "a/swap": StepState.STARTED,
        "a/identity": StepState.UNDO_STARTED}
    assert list(states) == ["a/grant/sql", "a/swap", "a/identity"]  # in the order recorded


def test_entries_are_per_plan_and_per_owner_in_order(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        record(journal, "1", owner="orders-api")
        record(journal, "2", owner="principal/0a5e3c1d")
        record(journal, "3", owner="orders-api")
        journal.record(plan="plans/other.json", plan_digest="x", owner="orders-api",
                       stage="swap", step_id="4", state=StepState.DONE)
        assert [e.step_id for e in journal.entries(PLAN)] == ["1", "2", "3"]
        assert [e.step_id for e in journal.entries(PLAN, "orders-api")] == ["1", "3"]
        assert [e.step_id for e in journal.entries("plans/other.json")] == ["4"]
        assert journal.entries("plans/none.json") == []


def test_journal_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    old = os.umask(0)
    try:
        with SqliteJournal(path) as journal:
            record(journal, "s1")
            modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    finally:
        os.umask(old)
    assert modes["j.sqlite"] == 0o600
    assert modes.get("j.sqlite-wal", 0o600) == 0o600
    assert modes.get("j.sqlite-shm", 0o600) == 0o600


def test_a_sigkilled_writer_leaves_every_committed_record(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    rng = random.Random(20260501)
    written = 0
    for round_ in range(4):
        owner = f"app{round_}"
        child = run_child(WRITER, path, owner, 100_000)
        assert child.stdout is not None
        kill_after = rng.randint(1, 300)
        committed = []
        for line in child.stdout:
            committed.append(int(line))
            if len(committed) == kill_after:
                child.send_signal(signal.SIGKILL)
                break
        # Read the rest through the same file object: lines the loop's read-ahead already
        # buffered are in it, and communicate() would read past them from the raw pipe.
        rest = child.stdout.read()
        child.wait(timeout=30)
        assert child.stderr is not None
        child.stderr.close()
        child.stdout.close()
        committed += [int(line) for line in rest.split()]
        assert child.returncode == -signal.SIGKILL

        with SqliteJournal(path) as journal:
            entries = journal.entries(PLAN, owner)
            # A consistent prefix: 0..m-1 in order, whole, at most one committed unreported.
            assert [e.before for e in entries] == [expected_before(i) for i in
                                                   range(len(entries))]
            assert len(committed) <= len(entries) <= len(committed) + 1
            assert committed == list(range(len(committed)))
            seqs = [e.seq for e in journal.entries(PLAN)]
            assert seqs == sorted(set(seqs)) and len(seqs) == written + len(entries)
            written += len(entries)
            # ... and the journal is writable again at once: the dead writer holds no lock.
            record(journal, f"after-{round_}", owner="checker")
            written += 1


def test_a_transaction_killed_before_commit_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as journal:
        record(journal, "kept")
    child = run_child("""
        import sqlite3, sys, time
        connection = sqlite3.connect(sys.argv[1], isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO steps (plan, plan_digest, owner, stage, step_id, state, at, before,"
            " result, message) VALUES ('plans/contoso.json', 'd', 'o', 's', 'lost', 'started',"
            " '2026-05-01T00:00:00+00:00', '{}', '{}', '')")
        print("inside", flush=True)
        time.sleep(60)
    """, path)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "inside"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    with SqliteJournal(path) as journal:
        assert [e.step_id for e in journal.entries(PLAN)] == ["kept"]
        record(journal, "next")
        assert [e.step_id for e in journal.entries(PLAN)] == ["kept", "next"]


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"  # neither process finds it: both race to create it too
    count = 300
    children = [run_child(WRITER, path, owner, count) for owner in ("left", "right")]
    for child in children:
        _, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
    with SqliteJournal(path) as journal:
        every = journal.entries(PLAN)
        assert len(every) == 2 * count
        assert len({e.seq for e in every}) == 2 * count
        for owner in ("left", "right"):
            mine = journal.entries(PLAN, owner)
            assert [e.before for e in mine] == [expected_before(i) for i in range(count)]


def test_threads_share_one_journal(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        def write(owner: str) -> None:
            for i in range(50):
                record(journal, f"{owner}/{i}", owner=owner, before={"i": i})

        threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for n in range(8):
            assert [e.before["i"] for e in journal.entries(PLAN, f"t{n}")] == list(range(50))
        assert len({e.seq for e in journal.entries(PLAN)}) == 400


@pytest.mark.parametrize("place", ["before", "nested", "list", "key", "result", "message",
                                   "step_id", "owner"])
def test_an_entra_client_secret_is_refused_wherever_it_is(tmp_path: Path, place: str) -> None:
    secret = entra_secret()
    table: dict[str, dict[str, object]] = {
        "before": {"before": {"AZURE_CLIENT_SECRET": secret}},
        "nested": {"before": {"settings": {"a": {"b": f"prefix {secret} suffix"}}}},
        "list": {"result": {"tried": ["x", secret]}},
        "key": {"before": {secret: "AZURE_CLIENT_SECRET"}},
        "result": {"result": {"new_secret": secret}},
        "message": {"message": f"addPassword returned {secret}"},
        "step_id": {"step_id": f"swap/{secret}"},
        "owner": {"owner": secret},
    }
    fields = table[place]
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as journal:
        arguments: dict[str, object] = {"plan": PLAN, "plan_digest": DIGEST, "owner": "o",
                                        "stage": "swap", "step_id": "s",
                                        "state": StepState.STARTED, **fields}
        with pytest.raises(SecretInJournal) as refused:
            journal.record(**arguments)  # type: ignore[arg-type]
        assert journal.entries(PLAN) == []
    assert secret not in str(refused.value)
    assert "\n" not in str(refused.value)
    assert "Entra client secret" in str(refused.value)
    assert secret.encode() not in file_bytes(path)


@pytest.mark.parametrize("template", [
    "Server=tcp:db.database.windows.net;Authentication=Active Directory Service Principal;"
    "User Id=0a5e3c1d;Password={};",
    "Server=db;Database=orders;UID=sa;PWD = {}",
    "DefaultEndpointsProtocol=https;AccountName=orders;AccountKey={};EndpointSuffix=core",
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={}",
])
def test_a_connection_string_credential_is_refused(tmp_path: Path, template: str) -> None:
    password = random_password()
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(SecretInJournal) as refused:
            record(journal, "s", before={"connection_strings": {"Db": template.format(password)}})
        assert journal.entries(PLAN) == []
    assert password not in str(refused.value)
    assert "connection-string" in str(refused.value)
    assert '["connection_strings"]["Db"]' in str(refused.value)  # says where, not what


def test_names_hints_and_managed_identity_forms_are_not_secrets(tmp_path: Path) -> None:
    secret = entra_secret()
    before = {
        "removed": ["AZURE_CLIENT_SECRET", "AZURE_CLIENT_ID"],
        "credential": {"keyId": "5f0c3b0e-1111-4000-8000-000000000001", "hint": secret[:3]},
        "connection_string": "Server=db;Authentication=Active Directory Managed Identity;",
        "template": "Password=",  # a keyword with no value
        "password": "stash:orders-api/swap/settings",  # a field named so, holding a reference
        "stash": "orders-api/swap/settings",
    }
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        assert record(journal, "s", before=before).before == before


@given(prefix=st.text(max_size=20), suffix=st.text(max_size=20),
       secret=st.from_regex(ENTRA_CLIENT_SECRET, fullmatch=True))
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_guard_refuses_any_secret_in_any_text_and_never_repeats_it(
        prefix: str, suffix: str, secret: str) -> None:
    with pytest.raises(SecretInJournal) as refused:
        guard_no_secret(prefix + secret + suffix)
    assert secret not in str(refused.value)


def test_values_that_are_not_json_are_refused(tmp_path: Path) -> None:
    with SqliteJournal(tmp_path / "j.sqlite") as journal:
        with pytest.raises(JournalError, match="not a JSON object"):
            record(journal, "s", before={"raw": b"bytes"})
        with pytest.raises(JournalError, match="not a JSON object"):
            record(journal, "s", result={"ratio": float("nan")})
        with pytest.raises(JournalError, match="step state"):
            record(journal, "s", state="finished")  # type: ignore[arg-type]
        with pytest.raises(JournalError, match="non-empty step_id"):
            record(journal, "")
        assert journal.entries(PLAN) == []


def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.sqlite")
    journal.close()
    journal.close()
    with pytest.raises(JournalError, match="closed"):
        record(journal, "s")
    with pytest.raises(JournalError, match="closed"):
        journal.entries(PLAN)


@pytest.mark.parametrize("content", [b"step,state\nswap,done\n", os.urandom(4096)])
def test_a_file_that_is_not_a_journal_is_refused_unchanged(tmp_path: Path,
                                                             content: bytes) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(JournalError) as refused:
        SqliteJournal(path)
    assert "not an msi-migrator journal" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert path.read_bytes() == content


def test_another_sqlite_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE invoices (id INTEGER)")
    other.commit()
    other.close()
    content = path.read_bytes()
    with pytest.raises(JournalError, match="not an msi-migrator journal"):
        SqliteJournal(path)
    assert path.read_bytes() == content  # still in its own journal mode, not WAL
    assert not (tmp_path / "other.db-wal").exists()


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as journal:
        record(journal, "s")
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION + 1),))
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="newer msi-migrator") as refused:
        SqliteJournal(path)
    assert "\n" not in str(refused.value)


def test_the_stored_form_is_plain_sorted_json(tmp_path: Path) -> None:
    """Other tools (and people) read the journal: JSON with sorted keys, ISO times in UTC."""
    path = tmp_path / "j.sqlite"
    with SqliteJournal(path) as journal:
        record(journal, "s", before={"b": 1, "a": [True, None]},
               at=datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc))
    raw = sqlite3.connect(path)
    [(at, before, state)] = raw.execute("SELECT at, before, state FROM steps").fetchall()
    raw.close()
    assert at == "2026-05-01T12:00:00+00:00"
    assert before == json.dumps({"a": [True, None], "b": 1}, sort_keys=True)
    assert state == "started"
