"""A fair worker pool: bounded threads that take tasks round-robin across subscriptions.

ARM's token buckets are per subscription. With one FIFO queue, a scan's workers all pick up the
first subscription's 200 sites, all wait on that one subscription's write bucket, and the other
subscriptions' buckets sit full and idle: measured on 2,000 apps in 10 subscriptions, the scan
took 9x the time the buckets allow, one subscription after another. This pool keeps a queue per
key and gives each free worker a task of the key whose bucket is ready soonest.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable


class FairPool:
    def __init__(self, workers: int, ready_in: Callable[[str], float] = lambda _: 0.0,
                 name: str = "fair") -> None:
        self._queues: dict[str, deque[Callable[[], None]]] = {}
        self._order: deque[str] = deque()
        self._ready_in = ready_in
        self._cv = threading.Condition()
        self._running = 0
        self._closed = False
        self._error: BaseException | None = None
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: str, task: Callable[[], None]) -> None:
        with self._cv:
            if key not in self._queues:
                self._queues[key] = deque()
                self._order.append(key)
            self._queues[key].append(task)
            self._cv.notify()

    def _next(self) -> Callable[[], None] | None:
        """Called with the lock held: a task of the readiest key, rotating among ready ones."""
        waiting = [k for k in self._order if self._queues[k]]
        if not waiting:
            return None
        chosen, best = waiting[0], float("inf")
        for key in waiting:
            eta = self._ready_in(key)
            if eta <= 0:
                chosen = key
                break
            if eta < best:
                chosen, best = key, eta
        self._order.remove(chosen)
        self._order.append(chosen)
        return self._queues[chosen].popleft()

    def _work(self) -> None:
        while True:
            with self._cv:
                task = self._next()
                while task is None:
                    if self._closed:
                        return
                    self._cv.wait()
                    task = self._next()
                self._running += 1
            try:
                task()
            except BaseException as exc:
                with self._cv:
                    self._error = self._error or exc
            finally:
                with self._cv:
                    self._running -= 1
                    self._cv.notify_all()

    def join(self) -> None:
        """Wait until every task, including tasks submitted by tasks, has run; re-raise the
        first failure."""
        with self._cv:
            while self._running or any(self._queues.values()):
                self._cv.wait()
            error = self._error
        if error is not None:
            raise error

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FairPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
