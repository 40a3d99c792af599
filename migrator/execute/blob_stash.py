"""The runbook's stash: one encrypted blob, shared by every job that runs a plan.

The whole stash, keys and values, is one Fernet token in one blob, so that nothing of it is
readable without the key, which the runbook keeps in an encrypted Automation variable, never
in the storage account. Every change is a read-modify-write conditional on the blob's ETag
(`cloud.blobs`), tried again when another job changed the stash first.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from migrator.cloud.blobs import BlobStore, BlobStoreError, ConflictError
from migrator.execute.stash import StashError

# How many times a stash change is tried again after another job changed the stash first.
MAX_STASH_ATTEMPTS = 32
MAX_BACKOFF_SECONDS = 0.5
STASH_FORMAT = "msi-migrator-stash"
STASH_VERSION = 1
_Entries = dict[str, dict[str, Any]]


class BlobStash:
    """The stash as one encrypted blob, shared by every job that runs a plan."""

    def __init__(self, store: BlobStore, name: str, key: bytes) -> None:
        """Keep the stash in the blob `name` of `store`, encrypted with the Fernet `key`.

        The key is checked now, so that a bad key is refused before anything is changed in
        Azure; it is the runbook's to keep (an encrypted Automation variable).
        """
        try:
            self._fernet = Fernet(key)
        except (TypeError, ValueError):
            raise StashError("the stash key is not a Fernet key (32 url-safe base64-encoded "
                             "bytes)") from None
        self.store = store
        self.name = name
        self._where = f"the blob {store.container_name}/{name}"

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Encrypt and keep `value` under `key`; written before returning.

        A read-modify-write conditional on the blob's ETag, tried again when another job
        changed the stash first, so that neither job's entries are lost.
        """
        plain = _plain_value(key, value)
        self._change(key, lambda entries: {**entries, key: plain})

    def get(self, key: str) -> dict[str, Any] | None:
        """The value kept under `key`, decrypted, or None."""
        found = self._read()
        if found is None:
            return None
        value = found[0].get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise StashError(f"the stash {self._where} holds no object under {key!r}")
        return value

    def delete(self, key: str) -> None:
        """Forget `key`; a missing key changes nothing."""
        self._change(key, lambda entries: {k: v for k, v in entries.items() if k != key})

    def require(self, keys: Iterable[str] = ()) -> None:
        """Raise StashError unless this key can read the stash (the blob is encrypted whole,
        so it can never hold entries under two keys) and every one of `keys` is held."""
        found = self._read()
        entries = found[0] if found is not None else {}
        for key in keys:
            if not isinstance(entries.get(key), dict):
                raise StashError(f"the stash {self._where} has lost {key!r}, which undoing this "
                                 "step needs")

    def _change(self, key: str, change: Callable[[_Entries], _Entries]) -> None:
        for attempt in range(MAX_STASH_ATTEMPTS):
            found = self._read()
            entries, etag = found if found is not None else ({}, None)
            updated = change(entries)
            if updated == entries:  # the same value again, or a key that is not there
                return
            token = self._encrypt(updated)
            try:
                if etag is None:
                    self.store.write_text(self.name, token, if_none_match=True)
                else:
                    self.store.write_text(self.name, token, if_match=etag)
            except ConflictError:
                _pause(attempt)
                continue
            except BlobStoreError as exc:
                raise StashError(f"cannot keep {key!r} in the stash: {exc}") from None
            return
        raise StashError(f"cannot keep {key!r} in the stash: it changed {MAX_STASH_ATTEMPTS} "
                         "times while being written; too many jobs at once")

    def _read(self) -> tuple[_Entries, str] | None:
        try:
            found = self.store.read(self.name)
        except BlobStoreError as exc:
            raise StashError(f"cannot read the stash: {exc}") from None
        if found is None:
            return None
        try:
            plaintext = self._fernet.decrypt(found.text.strip().encode("ascii"))
        except (InvalidToken, UnicodeError):
            raise StashError(f"the stash {self._where} was written with another "
                             "key (or altered): this key cannot decrypt it") from None
        try:
            document = json.loads(plaintext)
        except ValueError:
            document = None
        if (not isinstance(document, dict) or document.get("format") != STASH_FORMAT
                or not isinstance(document.get("entries"), dict)):
            raise StashError(f"{self._where} is not an msi-migrator stash")
        if document.get("version") != STASH_VERSION:
            raise StashError(f"the stash {self._where} was written by another "
                             f"msi-migrator (format {document.get('version')!r}, this one reads "
                             f"{STASH_VERSION})")
        return document["entries"], found.etag

    def _encrypt(self, entries: _Entries) -> str:
        document = {"format": STASH_FORMAT, "version": STASH_VERSION, "entries": entries}
        text = json.dumps(document, sort_keys=True, allow_nan=False)
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")


def _plain_value(key: str, value: Mapping[str, Any]) -> dict[str, Any]:
    """The value as plain JSON data, refused (naming the key, never the value) if it is not."""
    if not isinstance(key, str) or not key:
        raise StashError("a stash key must be a non-empty string")
    if not isinstance(value, Mapping):
        raise StashError(f"the value for {key!r} is not a JSON object")
    try:
        text = json.dumps(dict(value), allow_nan=False, default=_plain_mapping)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StashError(f"the value for {key!r} is not JSON: {exc}") from None
    plain: dict[str, Any] = json.loads(text)
    return plain


def _plain_mapping(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"a {type(value).__name__} is not JSON")


def _pause(attempt: int) -> None:
    """Wait a random moment, longer after each conflict, so that two jobs stop colliding."""
    ceiling = min(MAX_BACKOFF_SECONDS, 0.005 * 2 ** attempt)
    time.sleep(ceiling * secrets.randbelow(1001) / 1000)
