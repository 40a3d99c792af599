"""Plans, stash and locks in Azure Blob Storage, for the Automation runbook.

A runbook job keeps nothing on its own disk: Automation stops a job after three hours and
starts it again elsewhere, and two jobs may run at the same time. So what a job must find
again (the plan, the encrypted stash) lives in a blob container, and every write that could
race another job's is conditional on the blob's ETag: a job that read a stale copy gets
`ConflictError` instead of silently overwriting the other job's change. Where a job needs a
plan to itself (apply, rollback), it holds a blob lease, which Azure keeps for at most 60 s
unless renewed: a background thread renews it while the job runs, and a job that is killed
(fair share, a crashed sandbox) loses it within a minute, so its restart is not locked out.

The stash built on it is `execute.blob_stash.BlobStash`.
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient, ContentSettings

from migrator.cloud.storage import (
    StorageCredential,
    container_client,
    create_if_missing,
    describe_sdk_error,
    error_code,
)

# Azure's bounds for a finite blob lease. An infinite lease is not offered: a job killed while
# holding one would lock the blob until someone breaks the lease by hand.
MIN_LEASE_SECONDS = 15
MAX_LEASE_SECONDS = 60
# What Azure answers when the blob's lease is another's (held, or being broken).
_HELD_BY_ANOTHER = frozenset({"LeaseAlreadyPresent", "LeaseIsBreakingAndCannotBeAcquired"})
_TEXT = ContentSettings(content_type="text/plain; charset=utf-8")


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
                 credential: StorageCredential) -> BlobStore:
        """Open `container` of the account at `account_url`, creating it if missing.

        `credential` is the job's managed identity (a TokenCredential: it needs the Storage
        Blob Data Contributor role), an account key, or, as a string, a SAS token. An identity
        allowed to use the container but not to create it gets on with the one that is there.
        """
        client = container_client(account_url, container, credential)
        create_if_missing(client.create_container, client.close, BlobStoreError,
                          f"the container {container}")
        return cls(client)

    @property
    def container_name(self) -> str:
        return str(self.container.container_name)

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
