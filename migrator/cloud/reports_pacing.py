"""Client-side pacing for Microsoft Graph's "identity and access reports" (sign-in logs).

Graph serves them at 5 requests per 10 seconds per application and tenant
(learn.microsoft.com/graph/throttling-limits#identity-and-access-reports-service-limits), far
below the directory's limits: the sign-in reader waits for the window rather than collect 429s.
One pacer per client factory (one application signed in to one tenant).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

REPORTS_REQUESTS, REPORTS_WINDOW = 5, 10.0


class ReportsPacer:
    """At most `count` requests in any `window` seconds: sleeps before one that would be more.
    Thread-safe; one per process, as Graph counts per application and tenant."""

    def __init__(self, count: int = REPORTS_REQUESTS, window: float = REPORTS_WINDOW,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.count, self.window = count, window
        self.clock, self.sleep = clock, sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            while self._sent and now - self._sent[0] >= self.window:
                self._sent.popleft()
            if len(self._sent) >= self.count:
                pause = self.window - (now - self._sent[0])
                self.waited += pause
                self.sleep(pause)
                now = self.clock()
                self._sent.popleft()
            self._sent.append(now)
