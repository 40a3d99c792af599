"""The call log's azure-core policy: every attempt of an SDK request as one `migrator.calllog`
line (service, method, path, status, duration, attempt, the ids Azure support asks for)."""

from __future__ import annotations

import sys
import time
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from migrator.calllog import http_attempt

_STARTED, _ATTEMPT = "migrator_call_started", "migrator_call_attempt"


class CallLogPolicy(SansIOHTTPPolicy[Any, Any]):
    """An azure-core policy for the per-retry position: logs every attempt, so a retried
    call shows as attempts 1, 2, ... with the status each got."""

    def __init__(self, service: str) -> None:
        self.service = service

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context[_STARTED] = time.monotonic()
        request.context[_ATTEMPT] = request.context.get(_ATTEMPT, 0) + 1

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
                    ) -> None:
        http = request.http_request
        http_attempt(self.service, http.method, http.url,
                     status=response.http_response.status_code,
                     started=request.context.get(_STARTED, time.monotonic()),
                     attempt=request.context.get(_ATTEMPT, 1),
                     headers=response.http_response.headers, request_headers=http.headers)

    def on_exception(self, request: PipelineRequest[Any]) -> None:
        http = request.http_request
        error = sys.exc_info()[0]
        http_attempt(self.service, http.method, http.url, status=None,
                     started=request.context.get(_STARTED, time.monotonic()),
                     attempt=request.context.get(_ATTEMPT, 1), headers={},
                     request_headers=http.headers,
                     error=error.__name__ if error is not None else "error")
