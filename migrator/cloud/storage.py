"""Azure Storage, where the runbook keeps what a job must find again: clients and tables.

A runbook job has no disk that outlives it, so its journal lives in a storage table and its
plans, stash and locks in a blob container (`cloud.blobs`). This module builds those clients
(the call log sees their requests, as it sees ARM's), turns the storage SDKs' errors into one
line that holds no credential, and gives the journal a table of its own words: `EntityTable`
raises `RowExists` and `StorageCallError` (transient or not, and whether the request may have
reached the service) instead of azure-core's exception tree, so that `execute/` imports no
SDK.

`credential` everywhere is the job's managed identity (a TokenCredential: it needs the
Storage Table / Blob Data Contributor role), an account key, or, as a string, a SAS token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential, TokenCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableClient
from azure.storage.blob import ContainerClient

from migrator.cloud.call_log_policy import CallLogPolicy

StorageCredential: TypeAlias = TokenCredential | AzureNamedKeyCredential | str

# What may follow `?` in a URL (a SAS token) and credential-bearing keywords: scrubbed from any
# SDK error text before it becomes one of ours.
_URL_QUERY = re.compile(r"\?[^\s'\"<>]*")
_CREDENTIAL_KEYWORD = re.compile(
    r"(?i)\b(sig|accountkey|sharedaccesskey|sharedaccesssignature|password|pwd)=[^&;\s'\"]*")
# Answers after which the same request may succeed: timeout, throttled, the service busy.
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class StorageError(Exception):
    """A storage call that failed; the message is one line and never holds a credential."""


class RowExists(StorageError):
    """An insert found a row with the same PartitionKey and RowKey (rows are never replaced)."""


class StorageCallError(StorageError):
    """A storage call that failed otherwise; the message says why, the caller says doing what.

    `transient`: trying the same call again may succeed (not reached, no answer, busy,
    throttled). `reached`: the request may have reached the service, so a write may have
    happened although its answer was lost.
    """

    def __init__(self, message: str, *, transient: bool, reached: bool) -> None:
        super().__init__(message)
        self.transient = transient
        self.reached = reached


def _sdk_credential(credential: StorageCredential
                    ) -> TokenCredential | AzureNamedKeyCredential | AzureSasCredential:
    return AzureSasCredential(credential) if isinstance(credential, str) else credential


def account_key(account: str, key: str) -> AzureNamedKeyCredential:
    """A storage account's shared key (Azurite, tests); a runbook signs in with its identity."""
    return AzureNamedKeyCredential(account, key)


def table_client(account_url: str, table_name: str,
                 credential: StorageCredential) -> TableClient:
    """A client of the table `table_name` of the account at `account_url`."""
    return TableClient(endpoint=account_url, table_name=table_name,
                       credential=_sdk_credential(credential),
                       per_retry_policies=[CallLogPolicy("storage")])


def container_client(account_url: str, container: str,
                     credential: StorageCredential) -> ContainerClient:
    """A client of the blob container `container` of the account at `account_url`."""
    return ContainerClient(account_url, container, credential=_sdk_credential(credential),
                           per_retry_policies=[CallLogPolicy("storage")])


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


class EntityTable:
    """One storage table, in the project's words: rows in, rows out, errors of our own."""

    def __init__(self, client: TableClient) -> None:
        """Use `client`'s table, which must exist (see `open`); nothing is read or written."""
        self._client = client

    @classmethod
    def open(cls, account_url: str, table_name: str,
             credential: StorageCredential, *, purpose: str = "") -> EntityTable:
        """The table `table_name` of the account at `account_url`, created if missing.

        An identity allowed to use the table but not to create it gets on with the table
        that is there. A failure raises StorageError naming "the {purpose} table".
        """
        client = table_client(account_url, table_name, credential)
        described = f"the {purpose} table" if purpose else "the table"
        create_if_missing(client.create_table, client.close, StorageError,
                          f"{described} {table_name}")
        return cls(client)

    @property
    def name(self) -> str:
        return str(self._client.table_name)

    def insert(self, row: Mapping[str, Any]) -> None:
        """Insert `row` once, never replacing one: the SDK's own retries are off, because
        after a retried insert a conflict could be this very row, which only the caller can
        tell (by what the row holds)."""
        try:
            self._client.create_entity(dict(row), retry_total=0)
        except ResourceExistsError:
            raise RowExists(f"the table {self.name} holds that row already") from None
        except AzureError as exc:
            raise _failed(exc) from None

    def get(self, partition: str, row: str, select: list[str]) -> dict[str, Any]:
        """The properties `select` of one row."""
        try:
            return dict(self._client.get_entity(partition, row, select=select))
        except AzureError as exc:
            raise _failed(exc) from None

    def query(self, query: str, parameters: Mapping[str, Any],
              select: list[str] | None = None) -> list[dict[str, Any]]:
        """Every row matching the OData filter `query` with its `@parameters`, all pages."""
        try:
            found = self._client.query_entities(query, parameters=dict(parameters),
                                                select=select)
            return [dict(row) for row in found]
        except AzureError as exc:
            raise _failed(exc) from None

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


def _failed(error: AzureError) -> StorageCallError:
    transient = isinstance(error, (ServiceRequestError, ServiceResponseError)) or (
        isinstance(error, HttpResponseError) and error.status_code in _TRANSIENT_STATUS)
    return StorageCallError(describe_sdk_error(error), transient=transient,
                            reached=not isinstance(error, ServiceRequestError))
