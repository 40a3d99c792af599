"""Rollback data that holds secrets, kept encrypted where the journal cannot hold it.

Rolling back a swap puts a client secret or a connection-string password back into an app, so
someone has to keep that value between apply and rollback, possibly across a crash and for the
weeks of a soak period. The journal is clear text and refuses secrets; the step records its
secret-bearing before-state here instead, under a key the journal entry names (the step id).

In production that is Key Vault. Locally it is `FileStash`: a JSON file of Fernet tokens
(AES-128-CBC with HMAC-SHA256), whose key lives in the user's configuration directory, not
next to the journal and the plans, so that copying a run's directory (to a ticket, a share, a
pull request) does not copy the means to read it. Each write is atomic and synced before
`put` returns, and a file lock keeps two processes from losing each other's writes.

A stash is bound to the key that wrote it: the file records the key's id (a hash, which
reveals nothing of the key), and a different key is refused before anything is written, so
that a stash never holds entries under two keys, of which the operator has only one.
`require` lets the engine check, before a rollback changes anything, that every entry it will
need is there and can be read.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

from migrator.execute.journal import fsync_directory as _fsync_directory

if sys.platform == "win32":
    import msvcrt

    def _lock_file(descriptor: int) -> None:
        while True:
            try:
                msvcrt.locking(descriptor, msvcrt.LK_LOCK, 1)
                return
            except OSError:  # LK_LOCK gives up after ten tries a second apart: keep waiting
                continue

    def _unlock_file(descriptor: int) -> None:
        os.lseek(descriptor, 0, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _lock_file(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_EX)

    def _unlock_file(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)


class StashError(Exception):
    """Base of the stash's errors; messages are one line and never hold a stashed value."""


class Stash(Protocol):
    """Secret-bearing rollback data by key, kept until the step's rollback no longer needs it."""

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Keep `value` under `key` (replacing any), durably, before returning."""
        ...

    def get(self, key: str) -> dict[str, Any] | None:
        """The value kept under `key`, or None when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Forget `key`; forgetting a key that is not there does nothing."""
        ...

    def require(self, keys: Iterable[str] = ()) -> None:
        """Raise StashError unless this stash can be written with the key at hand (it was
        written with that key, or is empty) and every one of `keys` is held and decrypts:
        what a rollback checks before it changes anything."""
        ...


FILE_FORMAT = "msi-migrator-stash"
FILE_VERSION = 2  # 1: a flat object of tokens, without the key's id (still read)


def key_id(key: bytes) -> str:
    """A short, stable name for a Fernet key: a hash that tells keys apart and reveals
    nothing of the key (it is 256 random bits)."""
    return hashlib.sha256(b"msi-migrator stash key id\n" + key.strip()).hexdigest()[:16]


def default_key_file() -> Path:
    """Where the local stash key lives: outside the run's directory, in the user's config.

    `$MIGRATOR_STASH_KEY_FILE` when set (a CI secret mount, a smart-card-backed path), else
    `$XDG_CONFIG_HOME/msi-migrator/stash.key`, else `~/.config/msi-migrator/stash.key`.
    """
    explicit = os.environ.get("MIGRATOR_STASH_KEY_FILE")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME")
    # The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    base = Path(config) if config and os.path.isabs(config) else Path.home() / ".config"
    return base / "msi-migrator" / "stash.key"


class FileStash:
    """The stash in a local file, encrypted with a key kept in another file."""

    def __init__(self, path: Path, key_file: Path) -> None:
        """Use the stash at `path` with the key in `key_file`.

        An existing key file is checked now, so that a key readable by others is refused
        before anything is written to Azure; a missing one is created on the first `put`.
        """
        self.path = Path(path)
        self.key_file = Path(key_file)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._thread_lock = threading.Lock()
        self._fernet: Fernet | None = None
        self._key_id = ""
        if self.key_file.exists():
            key = _read_key(self.key_file)
            self._fernet, self._key_id = Fernet(key), key_id(key)

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Encrypt and keep `value` under `key`, synced to disk before returning.

        Refused when the stash was written with another key: entries under two keys would
        leave the holder of either unable to read them all."""
        plaintext = _encode(key, value)
        with self._locked():
            bound, tokens = self._read()
            cipher = self._cipher(create=not tokens)
            self._check_bound(bound, tokens, cipher)
            tokens[key] = cipher.encrypt(plaintext).decode("ascii")
            self._write(tokens, self._key_id)

    def get(self, key: str) -> dict[str, Any] | None:
        """The value kept under `key`, decrypted, or None.

        Needs no lock: the file is only ever replaced whole.
        """
        bound, tokens = self._read()
        token = tokens.get(key)
        if token is None:
            return None
        cipher = self._cipher(create=False)
        if bound is not None:
            self._check_bound(bound, tokens, cipher)
        return self._decrypt(cipher, key, token)

    def delete(self, key: str) -> None:
        """Forget `key`, rewriting the file without it; a missing key does nothing."""
        with self._locked():
            bound, tokens = self._read()
            if key in tokens:
                del tokens[key]
                self._write(tokens, bound)

    def require(self, keys: Iterable[str] = ()) -> None:
        """Raise StashError unless the key at hand wrote this stash (or it is empty) and every
        one of `keys` is held and decrypts. Reads only."""
        wanted = list(keys)
        bound, tokens = self._read()
        if not tokens and not wanted:
            return
        cipher = self._cipher(create=False)
        self._check_bound(bound, tokens, cipher)
        for key in wanted:
            token = tokens.get(key)
            if token is None:
                raise StashError(f"the stash {self.path} has lost {key!r}, which undoing this "
                                 "step needs") from None
            self._decrypt(cipher, key, token)

    def _decrypt(self, cipher: Fernet, key: str, token: str) -> dict[str, Any]:
        try:
            plaintext = cipher.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise StashError(f"the stash {self.path} was written with another key (or altered): "
                             f"{self.key_file} cannot decrypt {key!r}") from None
        value = json.loads(plaintext)
        if not isinstance(value, dict):
            raise StashError(f"the stash {self.path} holds no object under {key!r}")
        return value

    def _check_bound(self, bound: str | None, tokens: Mapping[str, str], cipher: Fernet) -> None:
        """Refuse a key other than the one the stash was written with. A stash of the first
        format names no key: there, every entry must decrypt with this one."""
        ours = self._key_id
        if bound is not None:
            if bound != ours:
                raise StashError(
                    f"the stash {self.path} was written with another key (key id {bound}); "
                    f"{self.key_file} holds key {ours}: set MIGRATOR_STASH_KEY_FILE to the key "
                    "that wrote it") from None
            return
        for key, token in tokens.items():
            self._decrypt(cipher, key, token)

    def _cipher(self, *, create: bool) -> Fernet:
        """The key's cipher; `create` allows a new key, only for a stash with no entries."""
        if self._fernet is None:
            if not self.key_file.exists() and not create:
                raise StashError(f"the stash key file {self.key_file} is missing: the stash "
                                 f"{self.path} cannot be decrypted without the key that wrote it")
            key = _read_key(self.key_file) if not create else _load_or_create_key(self.key_file)
            self._fernet, self._key_id = Fernet(key), key_id(key)
        return self._fernet

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the stash against other threads and other processes for a read-modify-write."""
        with self._thread_lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StashError(f"cannot lock the stash {self.path}: {exc.strerror}") from None
            try:
                _lock_file(descriptor)
                try:
                    yield
                finally:
                    _unlock_file(descriptor)
            finally:
                os.close(descriptor)

    def _read(self) -> tuple[str | None, dict[str, str]]:
        """The key id the stash is bound to (None for the first format) and its tokens."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None, {}
        except OSError as exc:
            raise StashError(f"cannot read the stash {self.path}: {exc.strerror}") from None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeError):
            document = None
        bound: str | None = None
        tokens = document
        if isinstance(document, dict) and document.get("format") == FILE_FORMAT:
            if document.get("version") != FILE_VERSION:
                raise StashError(f"the stash {self.path} was written by another msi-migrator "
                                 f"(format {document.get('version')!r}, this one reads up to "
                                 f"{FILE_VERSION})")
            bound, tokens = document.get("key_id"), document.get("entries")
            if not isinstance(bound, str):
                tokens = None
        if not isinstance(tokens, dict) or not all(
                isinstance(token, str) for token in tokens.values()):
            raise StashError(f"{self.path} is not an msi-migrator stash")
        return bound, tokens

    def _write(self, tokens: Mapping[str, str], bound: str | None) -> None:
        """Write the stash bound to the key id `bound` (None: in the first format, which a
        delete keeps, since it cannot tell which key wrote the other entries)."""
        document: dict[str, Any] = (
            {"format": FILE_FORMAT, "version": FILE_VERSION, "key_id": bound,
             "entries": dict(tokens)} if bound else dict(tokens))
        text = json.dumps(document, sort_keys=True, indent=1) + "\n"
        try:
            _write_atomically(self.path, text.encode("utf-8"))
        except OSError as exc:
            raise StashError(f"cannot write the stash {self.path}: {exc.strerror}") from None


def _encode(key: str, value: Mapping[str, Any]) -> bytes:
    if not isinstance(key, str) or not key:
        raise StashError("a stash key must be a non-empty string")
    if not isinstance(value, Mapping):
        raise StashError(f"the value for {key!r} is not a JSON object")
    try:
        text = json.dumps(dict(value), sort_keys=True, allow_nan=False, default=_plain_mapping)
    except (TypeError, ValueError, RecursionError) as exc:
        # The message names a type or a rule, never the value.
        raise StashError(f"the value for {key!r} is not JSON: {exc}") from None
    return text.encode("utf-8")


def _plain_mapping(value: object) -> dict[str, Any]:
    """Let json serialise any Mapping (a MappingProxyType, a frozen view) as an object."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _read_key(path: Path) -> bytes:
    """The Fernet key in `path`, refused (as ssh refuses a private key) if others can read it."""
    try:
        status = path.stat()
        if not stat.S_ISREG(status.st_mode):
            raise StashError(f"the stash key file {path} is not a regular file")
        if sys.platform != "win32" and status.st_mode & 0o077:
            raise StashError(f"the stash key file {path} is open to group or others (mode "
                             f"{stat.S_IMODE(status.st_mode):04o}); run `chmod 600 {path}`")
        key = path.read_bytes().strip()
    except OSError as exc:
        raise StashError(f"cannot read the stash key file {path}: {exc.strerror}") from None
    try:
        Fernet(key)
    except ValueError:
        raise StashError(f"the stash key file {path} does not hold a Fernet key") from None
    return key


def _load_or_create_key(path: Path) -> bytes:
    """The key in `path`, created first if missing, so that exactly one key ever wins.

    The new key is written in full to a private temporary file and then linked into place,
    which fails if another process got there first; then that process's key is used.
    """
    if path.exists():
        return _read_key(path)
    try:
        _make_private_directories(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        _write_new_file(temporary, Fernet.generate_key() + b"\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process created the key meanwhile: use that one
        finally:
            temporary.unlink()
        _fsync_directory(path.parent)
    except OSError as exc:
        raise StashError(f"cannot create the stash key file {path}: {exc.strerror}") from None
    return _read_key(path)


def _make_private_directories(directory: Path) -> None:
    """Create `directory` and any missing parents as 0700 (os.makedirs applies it to the last)."""
    missing: list[Path] = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for each in reversed(missing):
        with suppress(FileExistsError):  # another process made it meanwhile
            os.mkdir(each, 0o700)


def _write_atomically(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a crash leaves the old file or the new one, whole."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    _write_new_file(temporary, data)
    try:
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _write_new_file(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, write `data` and sync it to disk."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


