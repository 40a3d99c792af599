"""Plans, stash and locks in Azure Blob Storage, for the Automation runbook.

A runbook job keeps nothing on its own disk: Automation stops a job after three hours and
starts it again elsewhere, and two jobs may run at the same time. So what a job must find
again (the plan, the encrypted stash) lives in a blob container, and every write that could
race another job's is conditional on the blob's ETag: a job that read a stale copy gets
`ConflictError` instead of silently overwriting the other job's change. Where a job needs a
plan to itself (apply, rollback), it holds a blob lease, which Azure keeps for at most 60 s
unless renewed: a background thread renews it while the job runs, and a job that is killed
(fair share, a crashed sandbox) loses it within a minute, so its restart is not locked out.

`BlobStash` is the runbook's stash: the whole stash, keys and values, is one Fernet token in
one blob, so that nothing of it is readable without the key, which the runbook keeps in an
encrypted Automation variable, never in the storage account.
"""

from __future__ import annotations

import builtins
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient, ContentSettings
from cryptography.fernet import Fernet, InvalidToken

from migrator.execute.stash import StashError

# Azure's bounds for a finite blob lease. An infinite lease is not offered: a job killed while
# holding one would lock the blob until someone breaks the lease by hand.
MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60
# How many times a stash change is tried again after another job changed the stash first.
MAX_STASH_ATTEMPTS = 32
MAX_BACKOFF_SECONDS = 0.5
STASH_FORMAT = "msi-migrator-stash"
STASH_VERSION = 1

# What may follow `?` in a URL (a SAS token) and credential-bearing keywords: scrubbed from any
# SDK error text before it becomes one of ours.
_URL_QUERY = re.compile(r"\?[^\s'\"<>]*")
_CREDENTIAL_KEYWORD = re.compile(
    r"(?i)\b(sig|accountkey|sharedaccesskey|sharedaccesssignature|password|pwd)=[^&;\s'\"]*")
# What Azure answers when the blob's lease is another's (held, or being broken).
_HELD_BY_ANOTHER = frozenset({"LeaseAlreadyPresent", "LeaseIsBreakingAndCannotBeAcquired"})
_TEXT = ContentSettings(content_type="text/plain; charset=utf-8")
_Entries = dict[str, dict[str, Any]]


class BlobStoreError(Exception):
    """Base of the blob store's errors; messages are one line and never hold a secret."""


class ConflictError(BlobStoreError):
    """A conditional write found the blob changed (or present) since it was read."""


class LeaseTaken(BlobStoreError):
    """Another job holds the lease on the blob."""


class LeaseLost(BlobStoreError):
    """The lease could not be kept: another job may have taken the blob meanwhile."""


@dataclass(frozen=True)
class BlobText:
    """A blob's text together with the ETag of exactly that version, for a conditional write."""

    text: str
    etag: str


class BlobStore:
    """Text blobs in one container, with ETag-conditional writes and renewed leases."""

    def __init__(self, container: ContainerClient) -> None:
        """Use `container`, which must exist (see `from_url`); nothing is read or written yet."""
        self.container = container

    @classmethod
    def from_url(cls, account_url: str, container: str,
                 credential: TokenCredential | AzureNamedKeyCredential | str) -> BlobStore:
        """Open `container` of the account at `account_url`, creating it if missing.

        `credential` is the job's managed identity (a TokenCredential: it needs the Storage
        Blob Data Contributor role), an account key, or, as a string, a SAS token. An identity
        allowed to use the container but not to create it gets on with the one that is there.
        """
        sdk_credential: TokenCredential | AzureNamedKeyCredential | AzureSasCredential = (
            AzureSasCredential(credential) if isinstance(credential, str) else credential)
        client = ContainerClient(account_url, container, credential=sdk_credential)
        create_if_missing(client.create_container, client.close, BlobStoreError,
                          f"the container {container}")
        return cls(client)

    def close(self) -> None:
        """Close the client's connections."""
        self.container.close()

    def read(self, name: str) -> BlobText | None:
        """The blob's text and the ETag of that very version, or None when it does not exist.

        Read together in one request, so that a conditional write based on them cannot miss a
        change made between reading the text and reading the ETag.
        """
        try:
            download = self.container.download_blob(name, encoding="utf-8")
            text = download.readall()
            etag = download.properties.etag
        except ResourceNotFoundError:
            return None
        except (AzureError, UnicodeError) as exc:
            raise BlobStoreError(f"cannot read {self._where(name)}: "
                                 f"{describe_sdk_error(exc)}") from None
        return BlobText(text=text, etag=str(etag))

    def read_text(self, name: str) -> str | None:
        """The blob's text, or None when it does not exist."""
        found = self.read(name)
        return None if found is None else found.text

    def write_text(self, name: str, text: str, *, if_match: str | None = None,
                   if_none_match: bool = False) -> str:
        """Write the blob whole and return its new ETag.

        `if_match` writes only over the version with that ETag, `if_none_match` only where
        no blob exists; either way a blob changed meanwhile raises ConflictError, which is
        how two jobs are kept from overwriting each other. Without either, the last writer wins.
        """
        if if_match is not None and if_none_match:
            raise BlobStoreError(f"writing {self._where(name)}: if_match and if_none_match "
                                 "exclude each other")
        blob = self.container.get_blob_client(name)
        conditions: dict[str, Any] = {"overwrite": True}
        if if_match is not None:
            conditions = {"overwrite": True, "etag": if_match,
                          "match_condition": MatchConditions.IfNotModified}
        elif if_none_match:
            conditions = {"overwrite": False}
        try:
            response = blob.upload_blob(text.encode("utf-8"), content_settings=_TEXT,
                                        **conditions)
        except ResourceModifiedError:
            raise ConflictError(f"{self._where(name)} changed since it was read (its ETag is "
                                "no longer the one given); read it again") from None
        except ResourceExistsError:
            raise ConflictError(f"{self._where(name)} exists already") from None
        except ResourceNotFoundError:
            raise ConflictError(f"{self._where(name)} was deleted since it was read") from None
        except HttpResponseError as exc:
            if error_code(exc) in ("LeaseIdMissing", "LeaseIdMismatchWithBlobOperation"):
                raise ConflictError(f"{self._where(name)} is leased; a leased blob is a lock, "
                                    "not written to") from None
            raise BlobStoreError(f"cannot write {self._where(name)}: "
                                 f"{describe_sdk_error(exc)}") from None
        except (AzureError, UnicodeError) as exc:
            raise BlobStoreError(f"cannot write {self._where(name)}: "
                                 f"{describe_sdk_error(exc)}") from None
        return str(response["etag"])

    def etag(self, name: str) -> str | None:
        """The blob's current ETag, or None when it does not exist."""
        try:
            properties = self.container.get_blob_client(name).get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise BlobStoreError(f"cannot read {self._where(name)}: "
                                 f"{describe_sdk_error(exc)}") from None
        return str(properties.etag)

    def list(self, prefix: str = "") -> builtins.list[str]:
        """The names of the container's blobs that start with `prefix`, in name order."""
        try:
            return [blob.name for blob in self.container.list_blobs(name_starts_with=prefix)]
        except AzureError as exc:
            raise BlobStoreError(f"cannot list the container {self.container.container_name}: "
                                 f"{describe_sdk_error(exc)}") from None

    @contextmanager
    def lease(self, name: str, seconds: int = MAX_LEASE_SECONDS, *,
              wait: float = 0.0) -> Iterator[HeldLease]:
        """Hold the blob `name` exclusively, as a lock between jobs, while the block runs.

        The blob is created empty if missing. Azure keeps the lease for `seconds` (15 to 60);
        a background thread renews it while held, and it is released on exit. Another job's
        lease raises LeaseTaken at once, or after `wait` seconds of trying: a job restarted
        after its previous run was killed can wait out that run's lease (at most `seconds`).
        A lease that could not be kept raises LeaseLost on exit; call `check()` on the held
        lease between steps to stop sooner.
        """
        if not MIN_LEASE_SECONDS <= seconds <= MAX_LEASE_SECONDS:
            raise BlobStoreError(f"a blob lease lasts {MIN_LEASE_SECONDS} to {MAX_LEASE_SECONDS}"
                                 f" s, not {seconds}")
        blob = self.container.get_blob_client(name)
        self._create_empty(blob, name)
        held = HeldLease(self._where(name), self._acquire(blob, name, seconds, wait), seconds)
        try:
            yield held
        except BaseException:
            held.release()
            raise
        held.release()
        held.check()

    def _create_empty(self, blob: BlobClient, name: str) -> None:
        try:
            blob.upload_blob(b"", overwrite=False, content_settings=_TEXT)
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:  # leased, hence there
                raise BlobStoreError(f"cannot create {self._where(name)}: "
                                     f"{describe_sdk_error(exc)}") from None
        except AzureError as exc:
            raise BlobStoreError(f"cannot create {self._where(name)}: "
                                 f"{describe_sdk_error(exc)}") from None

    def _acquire(self, blob: BlobClient, name: str, seconds: int,
                 wait: float) -> BlobLeaseClient:
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                return blob.acquire_lease(lease_duration=seconds)
            except HttpResponseError as exc:
                if error_code(exc) not in _HELD_BY_ANOTHER:
                    raise BlobStoreError(f"cannot lease {self._where(name)}: "
                                         f"{describe_sdk_error(exc)}") from None
            except AzureError as exc:
                raise BlobStoreError(f"cannot lease {self._where(name)}: "
                                     f"{describe_sdk_error(exc)}") from None
            left = deadline - time.monotonic()
            if left <= 0:
                waited = f" after waiting {wait:g} s" if wait > 0 else ""
                raise LeaseTaken(f"{self._where(name)} is leased by another job{waited}; a "
                                 "job that was stopped loses its lease within a minute")
            time.sleep(min(1.0, left))

    def _where(self, name: str) -> str:
        return f"the blob {self.container.container_name}/{name}"


class HeldLease:
    """A blob lease this process holds, renewed in the background until released."""

    def __init__(self, where: str, client: BlobLeaseClient, seconds: int) -> None:
        self.where = where
        self.lease_id = str(client.id)
        self.seconds = seconds
        self._client = client
        self._stop = threading.Event()
        self._confirmed = time.monotonic()  # when Azure last confirmed the lease
        self._lost: str | None = None
        self._thread = threading.Thread(target=self._renew, name=f"lease {where}", daemon=True)
        self._thread.start()

    @property
    def lost(self) -> bool:
        """Whether the lease was lost, or has gone unconfirmed for longer than it lasts."""
        return self._lost is not None or time.monotonic() - self._confirmed > self.seconds

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still certainly held."""
        if self._lost is not None:
            raise LeaseLost(f"the lease on {self.where} was lost ({self._lost}); another job "
                            "may hold it now")
        if time.monotonic() - self._confirmed > self.seconds:
            raise LeaseLost(f"the lease on {self.where} could not be renewed for "
                            f"{self.seconds} s; another job may hold it now")

    def release(self) -> None:
        """Stop renewing and release the lease; idempotent.

        A failed release is not an error: the lease then ends by itself within `seconds`.
        """
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(timeout=self.seconds)
        if self._lost is None:
            # If Azure does not take the release, the lease ends by itself within `seconds`.
            with suppress(AzureError):
                self._client.release()

    def _renew(self) -> None:
        """Renew a quarter-lease apart. A renewal succeeds only while nobody else has leased
        the blob since, so transient failures are simply tried again; a refusal is final."""
        while not self._stop.wait(self.seconds / 4):
            try:
                self._client.renew()
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):
                    self._lost = describe_sdk_error(exc)
                    return
                continue
            except AzureError:
                continue
            self._confirmed = time.monotonic()


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
        self._where = f"the blob {store.container.container_name}/{name}"

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


def create_if_missing(create: Callable[[], object], close: Callable[[], None],
                      error: Callable[[str], Exception], what: str) -> None:
    """Create a container or a table unless it exists, so that a runbook's first job needs no
    setup step. An identity allowed to use it but not to create it (403) goes on: the first
    read or write says whether it is there. Anything else closes the client and raises
    `error` with one line."""
    try:
        create()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            close()
            raise error(f"cannot create {what}: {describe_sdk_error(exc)}") from None
    except AzureError as exc:
        close()
        raise error(f"cannot reach {what}: {describe_sdk_error(exc)}") from None


def error_code(error: HttpResponseError) -> str | None:
    """The storage service's error code (`LeaseAlreadyPresent`, …), which the storage SDKs
    attach to the error at run time."""
    code = getattr(error, "error_code", None)
    code = getattr(code, "value", code)  # a StorageErrorCode enum member, or a plain string
    return str(code) if code else None


def describe_sdk_error(error: BaseException) -> str:
    """An Azure SDK error as one line that holds no credential.

    SDK messages run over many lines (request ids, response bodies) and a transport error can
    quote the request's URL, whose query may be a SAS token: keep the status, the service's
    error code and the first line of the message, with any URL query and credential scrubbed.
    """
    text = str(getattr(error, "message", None) or error)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if isinstance(error, HttpResponseError) and error.status_code:
        code = error_code(error) or error.reason or ""
        first = f"HTTP {error.status_code} {code}: {first}".strip().rstrip(":")
    elif first:
        first = f"{type(error).__name__}: {first}"
    else:
        first = type(error).__name__
    first = _URL_QUERY.sub("?…", first)
    first = _CREDENTIAL_KEYWORD.sub(lambda found: f"{found.group(1)}=…", first)
    return first if len(first) <= 300 else first[:299] + "…"
