"""Entra ID's service-principal sign-in logs, read through Microsoft Graph.

Entra records every client-credentials sign-in with the keyId of the password credential used
(`servicePrincipalCredentialKeyId`), the caller's address and the resource it signed in to:
evidence of who still uses a secret, which no scan of App Service can give (a CI pipeline, a
script, a VM holding a copy). Graph serves them only at `GET /beta/auditLogs/signIns`; reading
them needs the application permission `AuditLog.Read.All` and an Entra ID P1 or P2 licence
(learn.microsoft.com/graph/api/signin-list?view=graph-rest-beta). Without either, Graph answers
403 and the reader says why in one line (`SignInsUnavailable`), so the tool can fall back to its
soak timer and say so.

A Log Analytics workspace that receives Entra's diagnostic logs holds the same events in table
`AADServicePrincipalSignInLogs` (learn.microsoft.com/azure/azure-monitor/reference/tables/
aadserviceprincipalsigninlogs); `WorkspaceSignIns` reads them through azure-monitor-query's
`LogsQueryClient`, which needs read access to the workspace (Log Analytics Reader) and no
Graph permission or licence check, and is cheaper on a large tenant (one query, no paging).

The Graph request goes through msgraph-sdk's request adapter (its auth, retries, throttling
middleware); the page is parsed as JSON here, as the bulk principal look-ups are, since
msgraph-sdk (v1.0) has no model for the beta resource.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from msgraph.generated.models.o_data_errors.o_data_error import ODataError

from migrator.cloud.errors import AzureCallError, CloudError
from migrator.cloud.graph import GraphAdapter
from migrator.cloud.reports_pacing import ReportsPacer

if TYPE_CHECKING:
    from migrator.cloud.factory import ClientFactory

# App ids in one `$filter`: each principal's events are read in one pass of pages.
APP_IDS_PER_QUERY = 10
PAGE_SIZE = 1000  # Graph's most for sign-ins
MAX_PAGES = 200  # per query: 200,000 events of a few principals is far more than evidence needs

LICENCE_CODE = "Authentication_RequestFromNonPremiumTenantOrB2CTenant"
AUDIT_LOG_READ = "AuditLog.Read.All"


# Well-known resource app ids, named the way an operator knows them.
RESOURCE_NAMES = {
    "00000003-0000-0000-c000-000000000000": "Microsoft Graph",
    "797f4846-ba00-4fd7-ba43-dac1f8f63013": "Azure Resource Manager",
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093": "Azure Key Vault",
    "e406a681-f3d4-42a8-90b6-c2b029497af1": "Azure Storage",
    "022907d3-0f1b-48f7-badc-1ba6abab6d66": "Azure SQL Database",
}


class SignInsUnavailable(CloudError):
    """The sign-in logs cannot be read at all (no licence, no permission): one line, why."""


@dataclass(frozen=True)
class SignInRecord:
    """One service-principal sign-in: ids, address and time only (no secret is ever in one)."""

    created: datetime
    app_id: str
    key_id: str | None  # the password credential used; None when Entra could not tell
    ip: str
    resource_id: str
    resource_name: str
    error_code: int  # 0: the sign-in succeeded
    failure: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error_code == 0


def graph_time(at: datetime) -> str:
    """An OData datetime literal, UTC, to the second."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_in_filter(app_ids: Sequence[str], since: datetime) -> str:
    ids = " or ".join(f"appId eq '{a.lower()}'" for a in app_ids)
    return ("signInEventTypes/any(t: t eq 'servicePrincipal') and "
            f"({ids}) and createdDateTime ge {graph_time(since)}")


def _parse_time(value: object) -> datetime:
    text = str(value or "")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Graph gives up to 7 fractional digits; Python 3.10 reads at most 6.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        text = f"{head}.{digits[:6]}{rest[len(digits):]}"
    at = datetime.fromisoformat(text)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def record_from_json(item: dict[str, Any]) -> SignInRecord:
    status = item.get("status") or {}
    resource_id = str(item.get("resourceId") or "").lower()
    return SignInRecord(
        created=_parse_time(item.get("createdDateTime")),
        app_id=str(item.get("appId") or "").lower(),
        key_id=str(item.get("servicePrincipalCredentialKeyId") or "").lower() or None,
        ip=str(item.get("ipAddress") or ""),
        resource_id=resource_id,
        resource_name=str(item.get("resourceDisplayName") or "")
        or RESOURCE_NAMES.get(resource_id, resource_id),
        error_code=int(status.get("errorCode") or 0),
        failure=(str(status.get("failureReason")) if status.get("failureReason") else None),
    )


class SignIns(Protocol):
    """Where the sign-in logs are read from: Graph, or a Log Analytics workspace."""

    def read(self, app_ids: Iterable[str], since: datetime) -> list[SignInRecord]: ...


GRAPH_SOURCE = "graph"
WORKSPACE_PREFIX = "workspace:"
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def parse_source(text: str) -> str | None:
    """`graph` -> None; `workspace:<workspace id>` -> the id (lower case). ValueError saying
    what to write for anything else."""
    value = text.strip()
    if value.lower() == GRAPH_SOURCE:
        return None
    if value.lower().startswith(WORKSPACE_PREFIX):
        workspace = value[len(WORKSPACE_PREFIX):].strip()
        if _GUID.match(workspace):
            return workspace.lower()
    raise ValueError("use `graph` or `workspace:<id>`, the workspace id being the GUID "
                     "Log Analytics shows as 'Workspace ID'")


def sign_ins_from(factory: ClientFactory, graph: GraphAdapter,
                  workspace: str | None) -> SignIns:
    return SignInReader(graph) if workspace is None else WorkspaceSignIns(factory, workspace)




class SignInReader:
    """Reads the service-principal sign-ins of some principals since a time, from Graph."""

    def __init__(self, graph: GraphAdapter, pacer: ReportsPacer | None = None) -> None:
        self.graph = graph
        self.pacer = pacer or graph.factory.reports_pacer

    def read(self, app_ids: Iterable[str], since: datetime) -> list[SignInRecord]:
        """Every sign-in of these principals since `since`, oldest first. Raises
        SignInsUnavailable when the logs cannot be read at all, AzureCallError when a read
        failed after the SDK's retries."""
        wanted = sorted({a.lower() for a in app_ids})
        self._check_token()
        out: list[SignInRecord] = []
        for start in range(0, len(wanted), APP_IDS_PER_QUERY):
            out += self._query(wanted[start:start + APP_IDS_PER_QUERY], since)
        return sorted(out, key=lambda r: r.created)

    def _check_token(self) -> None:
        """An app-only Graph token lists its application permissions (`roles`): without
        AuditLog.Read.All there is no point asking (and spending the reports API's 5
        requests per 10 seconds on a 403). A delegated token says nothing: ask."""
        from migrator.cloud.whoami import graph_roles

        try:
            roles = graph_roles(self.graph.factory)
        except CloudError:
            return  # the request will say what is wrong
        if roles is not None and AUDIT_LOG_READ not in roles:
            raise SignInsUnavailable(
                "the operator may not read sign-in logs: grant it the Microsoft Graph "
                f"application permission {AUDIT_LOG_READ} (its Graph token holds no such role)")

    def _query(self, app_ids: list[str], since: datetime) -> list[SignInRecord]:
        what = "read the sign-in logs"
        link: str | None = None
        out: list[SignInRecord] = []
        flt = sign_in_filter(app_ids, since)
        for _ in range(MAX_PAGES):
            self.pacer.wait()
            try:
                page = json.loads(self.graph.run(what, functools.partial(
                    _page, flt=flt, link=link)))
            except AzureCallError as exc:
                raise _unavailable(exc) or exc from None
            out += [record_from_json(i) for i in page.get("value") or []
                    if isinstance(i, dict)]
            link = page.get("@odata.nextLink")
            if not link:
                return out
        raise AzureCallError(what, None, None,
                             f"more than {MAX_PAGES} pages of sign-ins: narrow the lookback")


TABLE = "AADServicePrincipalSignInLogs"
COLUMNS = ("TimeGenerated", "AppId", "ServicePrincipalCredentialKeyId", "IPAddress",
           "ResourceIdentity", "ResourceDisplayName", "ResultType")
WORKSPACE_ROW_LIMIT = 50_000  # per query: far more than evidence needs; more is refused


def workspace_query(app_ids: Sequence[str], since: datetime) -> str:
    """The KQL for these principals' sign-ins since `since`. App ids come from app settings:
    only GUIDs go into the query, so no text of anyone's can change its meaning."""
    bad = [a for a in app_ids if not _GUID.match(a)]
    if bad:
        raise ValueError(f"not an application id: {bad[0][:40]!r}")
    ids = ", ".join(f'"{a.lower()}"' for a in app_ids)
    return (f"{TABLE}\n"
            f"| where TimeGenerated >= datetime({graph_time(since)})\n"
            f"| where AppId in~ ({ids})\n"
            f"| project {', '.join(COLUMNS)}\n"
            "| order by TimeGenerated asc\n"
            f"| take {WORKSPACE_ROW_LIMIT + 1}")


def record_from_row(row: dict[str, Any]) -> SignInRecord:
    created = row.get("TimeGenerated")
    at = created if isinstance(created, datetime) else _parse_time(created)
    resource_id = str(row.get("ResourceIdentity") or "").lower()
    result = str(row.get("ResultType") or "0").strip()
    return SignInRecord(
        created=at if at.tzinfo else at.replace(tzinfo=timezone.utc),
        app_id=str(row.get("AppId") or "").lower(),
        key_id=str(row.get("ServicePrincipalCredentialKeyId") or "").lower() or None,
        ip=str(row.get("IPAddress") or ""),
        resource_id=resource_id,
        resource_name=str(row.get("ResourceDisplayName") or "")
        or RESOURCE_NAMES.get(resource_id, resource_id),
        error_code=int(result) if result.isdigit() else -1,
        failure=None if result == "0" else result)


class WorkspaceSignIns:
    """The same sign-ins from a Log Analytics workspace that receives Entra's logs."""

    def __init__(self, factory: ClientFactory, workspace: str) -> None:
        self.factory = factory
        self.workspace = workspace

    def read(self, app_ids: Iterable[str], since: datetime) -> list[SignInRecord]:
        from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
        from azure.monitor.query import LogsQueryStatus

        from migrator.cloud.web import call_error, sign_in_error

        what = f"query workspace {self.workspace} for sign-ins"
        wanted = sorted({a.lower() for a in app_ids})
        if not wanted:
            return []
        try:
            query = workspace_query(wanted, since)
        except ValueError as exc:
            raise AzureCallError(what, None, None, str(exc)) from None
        now = datetime.now(timezone.utc)
        try:
            result = self.factory.log_analytics().query_workspace(
                self.workspace, query, timespan=(since, max(now, since)))
        except ClientAuthenticationError as exc:
            raise sign_in_error(what, exc) from None
        except HttpResponseError as exc:
            error = call_error(what, exc)
            if exc.status_code in (401, 403):
                raise SignInsUnavailable(
                    f"the operator may not query Log Analytics workspace {self.workspace}: "
                    f"grant it Log Analytics Reader there ({error.code or exc.status_code})"
                ) from None
            if exc.status_code == 404:
                raise SignInsUnavailable(
                    f"no Log Analytics workspace {self.workspace} ({error.code or 404})"
                ) from None
            raise error from None
        if result.status != LogsQueryStatus.SUCCESS:
            raise AzureCallError(what, None, "PartialError",
                                 "the workspace answered in part: narrow the lookback")
        rows = [dict(zip(t.columns, r, strict=False)) for t in result.tables for r in t.rows]
        if len(rows) > WORKSPACE_ROW_LIMIT:
            raise AzureCallError(what, None, None, f"more than {WORKSPACE_ROW_LIMIT} sign-ins: "
                                 "narrow the lookback")
        return sorted((record_from_row(r) for r in rows), key=lambda r: r.created)


def _unavailable(exc: AzureCallError) -> SignInsUnavailable | None:
    if exc.status == 403 and exc.code == LICENCE_CODE:
        return SignInsUnavailable(
            "the tenant has no Microsoft Entra ID P1 or P2 licence, which Graph needs to "
            "serve sign-in logs")
    if exc.status in (401, 403):
        return SignInsUnavailable(
            "the operator may not read sign-in logs: grant it the Microsoft Graph "
            f"application permission AuditLog.Read.All ({exc.code or exc.status})")
    return None


def _page(graph: Any, flt: str, link: str | None) -> Awaitable[bytes]:
    from kiota_abstractions.method import Method
    from kiota_abstractions.request_information import RequestInformation

    adapter: Any = graph.request_adapter
    info = RequestInformation()
    info.http_method = Method.GET
    if link:
        info.url = link
    else:
        base = str(adapter.base_url).rstrip("/")
        root = base[:-len("/v1.0")] if base.endswith("/v1.0") else base
        info.url = (f"{root}/beta/auditLogs/signIns?$top={PAGE_SIZE}"
                    f"&$filter={quote(flt, safe='')}")
    info.headers.try_add("Accept", "application/json")
    result: Awaitable[bytes] = adapter.send_primitive_async(info, "bytes",
                                                            {"XXX": ODataError})
    return result
