"""Graph's HTTP transport: a connection that drops is tried again, when that is safe.

msgraph-sdk's retry handler (kiota) retries answers (429, 503, 504), never a request that got
no answer: a connection reset, or "Server disconnected without sending a response" when a
pooled keep-alive connection is closed by the server as the client reuses it. Without this, one
such drop in a scan's bulk `appId in (...)` look-up aborted the whole scan with a traceback.

A request that may be repeated (GET, HEAD, OPTIONS, PUT, DELETE: RFC 9110's idempotent methods)
is sent again on a fresh connection, a bounded number of times with a short exponential pause.
A POST is sent again only when it never left (the connection could not be opened): Graph's
`addPassword` is a POST, and a second one would mint a second secret. What still fails reaches
the caller as the `httpx.TransportError`; `GraphAdapter` turns it into an `AzureCallError`
with no status (transient), which a scan records as a gap and the executor retries, journalled.
"""

from __future__ import annotations

import time
import uuid

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from migrator import calllog

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
ATTEMPTS = 4  # in all: the first and three more
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def may_resend(request: httpx.Request, error: BaseException) -> bool:
    """Whether a request whose connection failed with `error` may be sent again."""
    if not isinstance(error, httpx.TransportError):
        return False
    if isinstance(error, (httpx.UnsupportedProtocol, httpx.ProxyError)):
        return False  # a fault of the set-up, not of the moment
    return request.method.upper() in IDEMPOTENT_METHODS or isinstance(error, _NOT_SENT)


class ResendingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport; sends a request again after a dropped connection when `may_resend`
    says so (see the module's docstring). `initial` and `maximum` are the pauses, seconds."""

    def __init__(self, inner: httpx.AsyncBaseTransport, *, attempts: int = ATTEMPTS,
                 initial: float = 0.2, maximum: float = 2.0) -> None:
        self.inner = inner
        self.attempts = attempts
        self.initial = initial
        self.maximum = maximum
        self.resent = 0  # how many times a request went again: read by tests and benchmarks

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        async for attempt in AsyncRetrying(
                retry=retry_if_exception(lambda e: may_resend(request, e)),
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.initial, max=self.maximum)
                + wait_random(0, self.initial),
                before_sleep=self._count, reraise=True):
            with attempt:
                return await self._attempt(request, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, request: httpx.Request, number: int) -> httpx.Response:
        """One attempt on the wire, logged (`calllog`). kiota's own retries of an answer
        (429, 503) come through here again and carry its `Retry-Attempt` header."""
        # Graph's support asks for the caller's client-request-id: send one with each request.
        request.headers.setdefault("client-request-id", str(uuid.uuid4()))
        started = time.monotonic()
        retried = int(request.headers.get("Retry-Attempt", "0") or 0)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as exc:
            calllog.http_attempt("graph", request.method, str(request.url), status=None,
                                 started=started, attempt=retried + number, headers={},
                                 request_headers=request.headers, error=type(exc).__name__)
            raise
        calllog.http_attempt("graph", request.method, str(request.url),
                             status=response.status_code, started=started,
                             attempt=retried + number, headers=response.headers,
                             request_headers=request.headers)
        return response

    def _count(self, _: object) -> None:
        self.resent += 1

    async def aclose(self) -> None:
        await self.inner.aclose()
