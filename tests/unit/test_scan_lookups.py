"""The scanner sends Graph look-ups while ARM is still being read: each app id once, in
chunks no larger than Graph's `in` limit, and nothing is lost at the end."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from migrator.cloud.graph import IN_FILTER_LIMIT
from migrator.cloud.records import PrincipalRecord
from migrator.scan import _GraphLookups


def test_each_app_id_is_looked_up_once_in_bounded_chunks() -> None:
    asked: list[list[str]] = []
    lock = threading.Lock()

    def lookup(chunk: list[str]) -> dict[str, PrincipalRecord]:
        with lock:
            asked.append(list(chunk))
        return {}

    ids = [f"app-{i:03d}" for i in range(40)]
    with ThreadPoolExecutor(4) as pool:
        lookups = _GraphLookups(pool, lookup)
        lookups.add(ids[:20])
        lookups.add(ids[10:30])      # half seen already
        lookups.add(ids[25:40] + ids[:5])
        chunks = lookups.finish()
        for _, future in chunks:
            future.result()
    flat = [a for chunk in asked for a in chunk]
    assert sorted(flat) == ids, "every id exactly once"
    assert all(len(chunk) <= IN_FILTER_LIMIT for chunk in asked)
    assert sorted(a for chunk, _ in chunks for a in chunk) == ids


def test_full_chunks_go_out_before_finish() -> None:
    started = threading.Event()

    def lookup(chunk: list[str]) -> dict[str, PrincipalRecord]:
        started.set()
        return {}

    with ThreadPoolExecutor(1) as pool:
        lookups = _GraphLookups(pool, lookup)
        lookups.add(f"a{i}" for i in range(IN_FILTER_LIMIT - 1))
        assert not started.wait(0.05), "a partial chunk waits for more ids"
        lookups.add(["last"])
        assert started.wait(5), "a full chunk is sent at once, before finish()"
        lookups.finish()
