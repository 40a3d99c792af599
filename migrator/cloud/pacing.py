"""Client-side pacing for ARM: spend each subscription's token buckets fully, never storm them.

ARM throttles per subscription and caller with token buckets (AZURE-FACTS.md: reads 250 +25/s,
writes 200 +10/s, deletes 200 +10/s). A scanner that fires requests from many threads empties
the write bucket (app settings are read with POST) in a second and then lives on 429s. This
pipeline policy keeps a mirror of each bucket, waits for a token before sending, and corrects
its mirror from the `x-ms-ratelimit-remaining-subscription-*` header of every answer and from
`Retry-After` on a 429. The SDK's own retry policy still retries whatever gets through.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import HTTPPolicy

# (capacity, refill per second), Azure's numbers; a profile's scale multiplies both.
ARM_LIMITS: dict[str, tuple[float, float]] = {
    "read": (250.0, 25.0), "write": (200.0, 10.0), "delete": (200.0, 10.0),
}
_SUBSCRIPTION = re.compile(r"/subscriptions/([0-9a-fA-F-]{36})", re.IGNORECASE)


def request_kind(method: str) -> str:
    return {"GET": "read", "HEAD": "read", "DELETE": "delete"}.get(method.upper(), "write")


@dataclass
class Bucket:
    """A mirror of one ARM bucket; thread-safe."""

    capacity: float
    refill: float
    tokens: float = -1.0
    clock: Callable[[], float] = time.monotonic
    stamp: float = -1.0
    blocked_until: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)
    waited: float = 0.0  # seconds threads spent waiting here, for reports

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.capacity
        if self.stamp < 0:
            self.stamp = self.clock()

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
        self.stamp = now

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self._refill(now)
                if now < self.blocked_until:
                    wait = self.blocked_until - now
                elif self.tokens >= 1.0 - 1e-6:  # refill arithmetic leaves 0.999…
                    self.tokens = max(0.0, self.tokens - 1.0)
                    return
                else:
                    wait = (1.0 - self.tokens) / self.refill if self.refill > 0 else 1.0
                self.waited += wait
            sleep(wait)

    def ready_in(self) -> float:
        """Seconds until a token is free (0 if one is), without taking it."""
        with self.lock:
            now = self.clock()
            self._refill(now)
            if now < self.blocked_until:
                return self.blocked_until - now
            if self.tokens >= 1.0 - 1e-6:
                return 0.0
            return (1.0 - self.tokens) / self.refill if self.refill > 0 else 1.0

    def observe(self, remaining: int | None) -> None:
        """The server's count after our request: never believe we have more than it says."""
        if remaining is None:
            return
        with self.lock:
            self._refill(self.clock())
            self.tokens = min(self.tokens, float(remaining))

    def throttled(self, retry_after: float) -> None:
        with self.lock:
            now = self.clock()
            self.tokens = 0.0
            self.stamp = now
            self.blocked_until = max(self.blocked_until, now + retry_after)


class Pacer:
    """Buckets per (subscription, kind) for one caller; `scale` 0 turns pacing off."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._lock = threading.Lock()
        self.throttled_count = 0

    def bucket(self, subscription: str, kind: str) -> Bucket | None:
        if self.scale <= 0:
            return None
        key = (subscription.lower(), kind)
        with self._lock:
            found = self._buckets.get(key)
            if found is None:
                capacity, refill = ARM_LIMITS[kind]
                found = self._buckets[key] = Bucket(max(1.0, capacity * self.scale),
                                                    refill * self.scale)
            return found

    def ready_in(self, subscription: str, kind: str = "write") -> float:
        bucket = self.bucket(subscription, kind)
        return 0.0 if bucket is None else bucket.ready_in()

    def waited(self) -> float:
        with self._lock:
            return sum(b.waited for b in self._buckets.values())


class PacingPolicy(HTTPPolicy):  # type: ignore[type-arg]
    """Waits for a token of the request's subscription bucket; learns from every answer."""

    def __init__(self, pacer: Pacer) -> None:
        super().__init__()
        self.pacer = pacer

    def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http = request.http_request
        m = _SUBSCRIPTION.search(http.url)
        kind = request_kind(http.method)
        bucket = self.pacer.bucket(m.group(1) if m else "tenant", kind)
        if bucket is not None:
            bucket.acquire()
        response: PipelineResponse[Any, Any] = self.next.send(request)
        if bucket is not None:
            headers = response.http_response.headers
            if response.http_response.status_code == 429:
                self.pacer.throttled_count += 1
                bucket.throttled(_seconds(headers.get("Retry-After")) or 1.0)
            remaining = headers.get(f"x-ms-ratelimit-remaining-subscription-{kind}s")
            bucket.observe(int(remaining) if remaining and remaining.isdigit() else None)
        return response


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
