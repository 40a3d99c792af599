"""The stash gives back exactly what was put, to the holder of the key only, and keeps every
write of concurrent processes: rollback of a swap depends on the secret it kept."""

from __future__ import annotations

import json
import os
import random
import string
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrator.execute.stash import FileStash, StashError, default_key_file, key_id

REPO = Path(__file__).resolve().parents[2]
SECRET_ALPHABET = string.ascii_letters + string.digits + "_~.-"


def entra_secret() -> str:
    """A random value in the format of an Entra client secret (never a real one)."""
    rng = random.SystemRandom()
    return ("".join(rng.choice(SECRET_ALPHABET) for _ in range(3)) + rng.choice(string.digits)
            + "Q~" + "".join(rng.choice(SECRET_ALPHABET) for _ in range(34)))


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "msi-migrator" / "stash.key"


@pytest.fixture
def stash(tmp_path: Path, key_file: Path) -> FileStash:
    return FileStash(tmp_path / "run" / "stash.json", key_file)


def every_byte_under(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


def test_put_get_delete(stash: FileStash) -> None:
    secret = entra_secret()
    assert stash.get("orders-api/swap/settings") is None
    stash.put("orders-api/swap/settings", {"AZURE_CLIENT_SECRET": secret, "slot": None})
    stash.put("orders-api/swap/connection-strings", {"Db": {"type": "SQLAzure", "value": "x"}})
    assert stash.get("orders-api/swap/settings") == {"AZURE_CLIENT_SECRET": secret, "slot": None}
    stash.put("orders-api/swap/settings", {"AZURE_CLIENT_SECRET": "replaced"})
    assert stash.get("orders-api/swap/settings") == {"AZURE_CLIENT_SECRET": "replaced"}
    stash.delete("orders-api/swap/settings")
    stash.delete("orders-api/swap/settings")  # forgetting twice is fine
    assert stash.get("orders-api/swap/settings") is None
    assert stash.get("orders-api/swap/connection-strings") == {
        "Db": {"type": "SQLAzure", "value": "x"}}


def test_values_survive_a_new_process_view(tmp_path: Path, stash: FileStash,
                                           key_file: Path) -> None:
    stash.put("k", {"secret": "s3cret", "n": [1, 2.5, True]})
    assert FileStash(stash.path, key_file).get("k") == {"secret": "s3cret", "n": [1, 2.5, True]}


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(value=st.dictionaries(st.text(max_size=12), JSON, max_size=6),
       key=st.text(min_size=1, max_size=30))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_json_object_round_trips_exactly(stash: FileStash, key: str,
                                             value: dict[str, Any]) -> None:
    stash.put(key, value)
    assert stash.get(key) == value


def test_the_files_never_hold_the_plaintext(tmp_path: Path, stash: FileStash,
                                            key_file: Path) -> None:
    secret, password = entra_secret(), "".join(random.choices(string.ascii_letters, k=32))
    stash.put("swap", {"AZURE_CLIENT_SECRET": secret,
                       "Db": f"Server=db;Password={password};"})
    stored = every_byte_under(tmp_path)
    assert secret.encode() not in stored
    assert password.encode() not in stored
    assert b"swap" in stash.path.read_bytes()  # keys are step ids, not secret


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    key_file = tmp_path / "home" / ".config" / "msi-migrator" / "stash.key"
    old = os.umask(0)
    try:
        stash = FileStash(tmp_path / "run" / "stash.json", key_file)
        assert not key_file.exists()  # created on first use, not before
        stash.put("k", {"v": 1})
    finally:
        os.umask(old)
    assert stash.path.stat().st_mode & 0o777 == 0o600
    assert key_file.stat().st_mode & 0o777 == 0o600
    for directory in (key_file.parent, key_file.parent.parent, key_file.parent.parent.parent):
        assert directory.stat().st_mode & 0o777 == 0o700, directory
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["stash.key"]  # no temp left


def test_a_stash_read_with_another_key_says_so(tmp_path: Path, stash: FileStash) -> None:
    stash.put("swap", {"secret": "x"})
    other_key = tmp_path / "other" / "stash.key"
    other_key.parent.mkdir()
    other_key.write_bytes(Fernet.generate_key())
    other_key.chmod(0o600)
    with pytest.raises(StashError, match="was written with another key") as refused:
        FileStash(stash.path, other_key).get("swap")
    assert "\n" not in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def _other_key(tmp_path: Path) -> Path:
    other_key = tmp_path / "other" / "stash.key"
    other_key.parent.mkdir(exist_ok=True)
    other_key.write_bytes(Fernet.generate_key())
    other_key.chmod(0o600)
    return other_key


def test_a_stash_is_bound_to_its_key_and_refuses_to_mix_in_another(
        tmp_path: Path, stash: FileStash, key_file: Path) -> None:
    """The issue-11 defect: a rollback with another valid key stored a minted secret under
    that key, so the stash held entries under two keys and no key could read them all."""
    secret = entra_secret()
    stash.put("swap", {"secret": secret})
    wrong = FileStash(stash.path, _other_key(tmp_path))
    before = stash.path.read_bytes()
    with pytest.raises(StashError, match=r"written with another key \(key id [0-9a-f]{16}\)"):
        wrong.put("minted", {"secret": entra_secret()})
    with pytest.raises(StashError, match="written with another key"):
        wrong.require()
    assert stash.path.read_bytes() == before  # nothing was written under the other key
    document = json.loads(before)
    assert document["format"] == "msi-migrator-stash" and document["version"] == 2
    assert document["key_id"] == key_id(key_file.read_bytes())
    assert key_file.read_text().strip() not in before.decode()  # the id is not the key
    stash.require(["swap"])  # the right key: fine
    assert stash.get("swap") == {"secret": secret}


def test_require_names_a_lost_entry_and_a_missing_key(stash: FileStash, key_file: Path) -> None:
    stash.require()  # no stash yet, nothing needed: fine, and nothing is created
    assert not stash.path.exists() and not key_file.exists()
    stash.put("swap", {"v": 1})
    with pytest.raises(StashError, match="has lost 'gone'"):
        stash.require(["swap", "gone"])
    key_file.unlink()
    with pytest.raises(StashError, match=r"key file .* is missing"):
        FileStash(stash.path, key_file).require(["swap"])


def test_a_stash_of_the_first_format_is_read_and_bound_on_the_next_write(
        tmp_path: Path, stash: FileStash, key_file: Path) -> None:
    stash.put("a", {"v": 1})
    tokens = json.loads(stash.path.read_text())["entries"]
    stash.path.write_text(json.dumps(tokens))  # as msi-migrator 0.1 wrote it
    assert stash.get("a") == {"v": 1}
    with pytest.raises(StashError, match="written with another key"):
        FileStash(stash.path, _other_key(tmp_path)).put("b", {"v": 2})  # cannot read "a"
    stash.put("b", {"v": 2})
    assert json.loads(stash.path.read_text())["key_id"] == key_id(key_file.read_bytes())


def test_deleting_without_the_key_keeps_the_binding(stash: FileStash, key_file: Path) -> None:
    stash.put("a", {"v": 1})
    stash.put("b", {"v": 2})
    bound = json.loads(stash.path.read_text())["key_id"]
    key_file.unlink()
    FileStash(stash.path, key_file).delete("a")
    assert json.loads(stash.path.read_text())["key_id"] == bound


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_open_to_others_is_refused(stash: FileStash, key_file: Path,
                                              mode: int) -> None:
    stash.put("k", {"v": 1})
    key_file.chmod(mode)
    with pytest.raises(StashError, match=f"mode {mode:04o}.*chmod 600") as refused:
        FileStash(stash.path, key_file)
    assert "\n" not in str(refused.value)
    assert key_file.read_text().strip() not in str(refused.value)


def test_a_key_file_without_a_key_is_refused(stash: FileStash, key_file: Path) -> None:
    key_file.parent.mkdir(parents=True)
    key_file.write_text("not a key\n")
    key_file.chmod(0o600)
    with pytest.raises(StashError, match="does not hold a Fernet key"):
        FileStash(stash.path, key_file)


def test_a_lost_key_is_not_silently_replaced(stash: FileStash, key_file: Path) -> None:
    stash.put("k", {"v": 1})
    key_file.unlink()
    fresh = FileStash(stash.path, key_file)
    with pytest.raises(StashError, match=r"key file .* is missing"):
        fresh.get("k")
    with pytest.raises(StashError, match=r"key file .* is missing"):
        fresh.put("k2", {"v": 2})  # a new key would leave the old entries unreadable
    assert not key_file.exists()


def test_a_file_that_is_not_a_stash_is_refused(stash: FileStash) -> None:
    stash.path.parent.mkdir(parents=True)
    stash.path.write_text("[1, 2]")
    with pytest.raises(StashError, match="not an msi-migrator stash"):
        stash.get("k")
    with pytest.raises(StashError, match="not an msi-migrator stash"):
        stash.put("k", {"v": 1})
    assert stash.path.read_text() == "[1, 2]"


def test_values_that_are_not_json_are_refused_without_being_echoed(stash: FileStash) -> None:
    with pytest.raises(StashError, match="not JSON") as refused:
        stash.put("k", {"secret": b"raw-bytes-secret"})
    assert "raw-bytes-secret" not in str(refused.value)
    with pytest.raises(StashError, match="not JSON"):
        stash.put("k", {"ratio": float("inf")})
    assert stash.get("k") is None


def test_threads_putting_at_once_lose_nothing(stash: FileStash) -> None:
    def put(owner: str) -> None:
        for i in range(20):
            stash.put(f"{owner}/{i}", {"i": i})

    threads = [threading.Thread(target=put, args=(f"t{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(stash.get(f"t{n}/{i}") == {"i": i} for n in range(6) for i in range(20))


def test_two_processes_putting_at_once_lose_nothing(stash: FileStash, key_file: Path) -> None:
    # Neither finds a key file: they also race to create it, and must end up with one key.
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from migrator.execute.stash import FileStash
        stash = FileStash(Path(sys.argv[1]), Path(sys.argv[2]))
        for i in range(int(sys.argv[4])):
            stash.put(f"{sys.argv[3]}/{i}", {"i": i, "who": sys.argv[3]})
    """)
    count = 40
    children = [subprocess.Popen(
        [sys.executable, "-c", code, str(stash.path), str(key_file), who, str(count)],
        stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)}) for who in ("left", "right")]
    for child in children:
        _, errors = child.communicate(timeout=120)
        assert child.returncode == 0, errors
    reader = FileStash(stash.path, key_file)
    for who in ("left", "right"):
        for i in range(count):
            assert reader.get(f"{who}/{i}") == {"i": i, "who": who}


def test_default_key_file_lives_in_the_user_config(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MIGRATOR_STASH_KEY_FILE", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert default_key_file() == tmp_path / "home" / ".config" / "msi-migrator" / "stash.key"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    assert default_key_file() == tmp_path / "home" / ".config" / "msi-migrator" / "stash.key"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_key_file() == tmp_path / "xdg" / "msi-migrator" / "stash.key"
    monkeypatch.setenv("MIGRATOR_STASH_KEY_FILE", str(tmp_path / "mounted" / "key"))
    assert default_key_file() == tmp_path / "mounted" / "key"
