"""Graph's transport sends a request again after a dropped connection, only when that is safe.

Driven with httpx's own MockTransport (a transport, not an SDK object): each handler call is
one attempt on the wire.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from migrator.cloud.graph_transport import ATTEMPTS, ResendingTransport, may_resend

URL = "https://graph.example/v1.0/servicePrincipals"


def send(method: str, failures: list[Exception]) -> tuple[httpx.Response | Exception, int]:
    """Send one request through a transport whose first attempts fail with `failures`;
    the outcome and how many attempts reached the wire."""
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= len(failures):
            raise failures[calls - 1]
        return httpx.Response(200, json={"value": []})

    transport = ResendingTransport(httpx.MockTransport(handler), initial=0.001, maximum=0.001)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(method, URL, json={} if method == "POST" else None)

    try:
        return asyncio.run(run()), calls
    except httpx.TransportError as exc:
        return exc, calls


def dropped() -> httpx.RemoteProtocolError:
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def test_a_read_whose_connection_dropped_is_sent_again() -> None:
    outcome, calls = send("GET", [dropped(), httpx.ReadError("reset")])
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 200
    assert calls == 3


def test_resends_are_bounded() -> None:
    outcome, calls = send("GET", [dropped()] * (ATTEMPTS + 3))
    assert isinstance(outcome, httpx.RemoteProtocolError)
    assert calls == ATTEMPTS


def test_a_post_that_may_have_arrived_is_not_sent_again() -> None:
    # addPassword is a POST: sending it twice would mint two secrets.
    outcome, calls = send("POST", [dropped()])
    assert isinstance(outcome, httpx.RemoteProtocolError)
    assert calls == 1


def test_a_post_that_never_left_is_sent_again() -> None:
    outcome, calls = send("POST", [httpx.ConnectError("refused")])
    assert isinstance(outcome, httpx.Response)
    assert calls == 2


@pytest.mark.parametrize(("method", "error", "expected"), [
    ("DELETE", dropped(), True),
    ("PUT", httpx.ReadTimeout("slow"), True),
    ("PATCH", dropped(), False),
    ("GET", httpx.UnsupportedProtocol("ftp"), False),
    ("GET", ValueError("not a transport error"), False),
])
def test_which_failures_are_sent_again(method: str, error: Exception, expected: bool) -> None:
    assert may_resend(httpx.Request(method, URL), error) is expected
