"""What every simulator route shares: the tenant, the token issuer, and Azure-shaped errors."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from migrator.sim.api_versions import ApiVersions, published
from migrator.sim.faults import FaultConfig
from migrator.sim.state import SimError, Tenant, WebError
from migrator.sim.tokens import Caller, TokenError, TokenIssuer

ARM_AUDIENCES = (
    "https://management.azure.com/", "https://management.azure.com",
    "https://management.core.windows.net/", "https://management.core.windows.net",
)
GRAPH_AUDIENCES = (
    "https://graph.microsoft.com", "https://graph.microsoft.com/",
    "00000003-0000-0000-c000-000000000000",
)
# Log Analytics' query API takes tokens for either name of its resource (azure-monitor-query
# asks for https://api.loganalytics.io/.default unless given another audience).
LOG_ANALYTICS_AUDIENCES = (
    "https://api.loganalytics.io", "https://api.loganalytics.io/",
    "https://api.loganalytics.azure.com", "https://api.loganalytics.azure.com/",
)


@dataclass
class SimContext:
    tenant: Tenant
    issuer: TokenIssuer
    base_url: str = "https://127.0.0.1"  # set once the port is known
    faults: FaultConfig = field(default_factory=FaultConfig)
    extras: dict[str, Any] = field(default_factory=dict)
    # Each vault's data plane listens on a port of its own (keyvault.py): port -> vault name
    # (lower case), and vault name -> the URL ARM reports as its vaultUri.
    vault_ports: dict[int, str] = field(default_factory=dict)
    vault_urls: dict[str, str] = field(default_factory=dict)
    # The api-versions ARM accepts per resource type; None accepts any (`--any-api-version`).
    api_versions: ApiVersions | None = field(default_factory=published)
    api_versions_seen: set[tuple[str, str]] = field(default_factory=set)  # (type, version)

    @property
    def authority(self) -> str:
        return self.base_url

    def arm_caller(self, request: Request) -> Caller:
        return self._caller(request, ARM_AUDIENCES, "InvalidAuthenticationToken")

    def graph_caller(self, request: Request) -> Caller:
        return self._caller(request, GRAPH_AUDIENCES, "InvalidAuthenticationToken")

    def _caller(self, request: Request, audiences: tuple[str, ...], code: str) -> Caller:
        try:
            return self.issuer.verify(request.headers.get("authorization"), audiences)
        except TokenError as exc:
            raise SimError(401, code, str(exc)) from None


def request_id() -> str:
    return str(uuid.uuid4())


# What every ARM answer carries (the Azure CLI's recordings: appservice, role, keyvault,
# identity): no caching anywhere on the way, HSTS, no content sniffing.
ARM_HEADERS = {
    "cache-control": "no-cache", "pragma": "no-cache", "expires": "-1",
    "strict-transport-security": "max-age=31536000; includeSubDomains",
    "x-content-type-options": "nosniff",
}


def with_arm_headers(response: Response) -> Response:
    for name, value in ARM_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def arm_error(err: SimError) -> Response:
    headers = {"x-ms-request-id": request_id(), "x-ms-failure-cause": "gateway", **ARM_HEADERS}
    if err.status == 401:
        headers["WWW-Authenticate"] = (
            'Bearer authorization_uri="https://login.microsoftonline.com/common", '
            'error="invalid_token", error_description="' + err.message.replace('"', "'") + '"'
        )
    return JSONResponse(web_error_body(err) if isinstance(err, WebError)
                        else {"error": {"code": err.code, "message": err.message}},
                        status_code=err.status, headers=headers)


def web_error_body(err: SimError) -> dict[str, object]:
    """Microsoft.Web's error shape: PascalCase keys at the top level, no `error` wrapper, the
    message repeated in `Details` and an `ErrorEntity` (as Azure's activity log and `az`
    show it, e.g. `{"Code":"Conflict","Message":"Website with given name mysite already
    exists.","Target":null,"Details":[{"Message":…},{"Code":"Conflict"},{"ErrorEntity":
    {"ExtendedCode":"54001",…}}],"Innererror":null}`). azure-core parses ARM's shape only,
    so an SDK reading this body finds no code: the client must read it itself. The simulator
    sends no ExtendedCode, having none of Azure's numbers for its refusals."""
    return {"Code": err.code, "Message": err.message, "Target": None,
            "Details": [{"Message": err.message}, {"Code": err.code},
                        {"ErrorEntity": {"MessageTemplate": err.message, "Parameters": [],
                                         "Code": err.code, "Message": err.message,
                                         "InnerErrors": None}}],
            "Innererror": None}


def graph_error(err: SimError) -> Response:
    rid = request_id()
    # As Graph answers (Azure/azure-cli role recording test_app_resolution): the time, to the
    # second, then the ids an operator hands to support.
    date = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    body = {"error": {"code": err.code, "message": err.message,
                      "innerError": {"date": date, "request-id": rid,
                                     "client-request-id": rid}}}
    return JSONResponse(body, status_code=err.status, headers={"request-id": rid})
