"""The fair pool takes tasks across subscriptions, not one subscription's backlog first."""

from __future__ import annotations

import threading

import pytest

from migrator.scheduling import FairPool


def test_one_worker_alternates_between_keys() -> None:
    order: list[str] = []
    gate = threading.Event()
    with FairPool(1) as pool:
        pool.submit("hold", gate.wait)  # keep the worker busy while we queue
        for i in range(3):
            pool.submit("a", lambda i=i: order.append(f"a{i}"))
        for i in range(3):
            pool.submit("b", lambda i=i: order.append(f"b{i}"))
        gate.set()
        pool.join()
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]


def test_prefers_a_key_whose_bucket_is_ready() -> None:
    order: list[str] = []
    gate = threading.Event()
    with FairPool(1, ready_in=lambda key: 5.0 if key == "empty" else 0.0) as pool:
        pool.submit("hold", gate.wait)
        pool.submit("empty", lambda: order.append("empty"))
        pool.submit("full", lambda: order.append("full1"))
        pool.submit("full", lambda: order.append("full2"))
        gate.set()
        pool.join()
    assert order == ["full1", "full2", "empty"]


def test_join_waits_for_tasks_submitted_by_tasks_and_reraises() -> None:
    done: list[int] = []
    with FairPool(3) as pool:
        def parent() -> None:
            for i in range(5):
                pool.submit("child", lambda i=i: done.append(i))

        pool.submit("p", parent)
        pool.join()
        assert sorted(done) == [0, 1, 2, 3, 4]

        def boom() -> None:
            raise ValueError("the task failed")

        pool.submit("x", boom)
        with pytest.raises(ValueError, match="the task failed"):
            pool.join()
