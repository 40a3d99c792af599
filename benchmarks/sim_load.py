"""How long and how much memory the simulator needs to load a large estate.

Generates an estate (migrator.sim.generate) into a temporary file, then measures, each in a fresh
Python process so that one phase's memory does not hide the next one's:

* generation time and YAML size;
* `load_estate` (parse + validate + check_references) and `build_tenant` time, with the growth
  of the process's peak RSS (ru_maxrss) over a baseline taken after the imports;
* the same two phases under tracemalloc, for the peak of Python allocations (slower: the timing
  of that run is not reported);
* the time for `SimServer(spec, dir)` to build its tenant and answer its first HTTPS request.

`--what-if` adds one more timed run with two changes to the loader that are not (yet) in the
code: libyaml's parser in place of the pure-Python one, and the cyclic GC paused during load and
build. It patches them in, in its own process only, to show what they would buy.

Nothing is asserted: this prints figures for people to compare. `--profile` adds a cProfile of
load + build, for when the figures look wrong.

    python benchmarks/sim_load.py --apps 10000 --subscriptions 20
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import pstats
import resource
import ssl
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from migrator.sim.estate import load_estate
from migrator.sim.generate import generate_estate, write_estate
from migrator.sim.server import SimServer
from migrator.sim.state import build_tenant

MB = 1024 * 1024


def _maxrss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def measure_what_if(path: Path) -> dict[str, Any]:
    """`measure_time` with libyaml composing and the GC paused (see the module docstring)."""
    if not getattr(yaml, "__with_libyaml__", False):
        return {}
    yaml.SafeLoader = yaml.CSafeLoader  # type: ignore[misc,assignment]  # this process only
    gc.disable()
    return measure_time(path)


def measure_time(path: Path) -> dict[str, Any]:
    """Load, build and serve, timed, in this (fresh) process."""
    before = _maxrss_bytes()
    t0 = time.perf_counter()
    spec = load_estate(path)
    t1 = time.perf_counter()
    after_load = _maxrss_bytes()
    tenant = build_tenant(spec)
    t2 = time.perf_counter()
    after_build = _maxrss_bytes()
    sites = len(tenant.sites)
    slots = sum(len(site.slots) for site in tenant.sites.values())
    principals = len(tenant.applications)
    del tenant

    with tempfile.TemporaryDirectory(prefix="sim-load-") as state_dir:
        t3 = time.perf_counter()
        server = SimServer(spec, Path(state_dir))
        t4 = time.perf_counter()
        with server as endpoints:
            t5 = time.perf_counter()
            context = ssl.create_default_context(cafile=str(endpoints.ca_bundle))
            with urllib.request.urlopen(endpoints.base_url + "/", context=context,
                                        timeout=30) as response:
                response.read()
            t6 = time.perf_counter()
        t7 = time.perf_counter()
    return {
        "load_s": t1 - t0, "build_s": t2 - t1,
        "rss_before": before, "rss_load_delta": after_load - before,
        "rss_total_delta": after_build - before,
        "server_init_s": t4 - t3, "server_start_s": t5 - t4, "first_request_s": t6 - t5,
        "server_stop_s": t7 - t6,
        "sites": sites, "slots": slots, "principals": principals,
    }


def measure_memory(path: Path) -> dict[str, Any]:
    """Peak Python allocations of load and of load + build, under tracemalloc."""
    tracemalloc.start()
    spec = load_estate(path)
    _, load_peak = tracemalloc.get_traced_memory()
    spec_size, _ = tracemalloc.get_traced_memory()
    tenant = build_tenant(spec)
    retained, total_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del tenant
    return {"trace_load_peak": load_peak, "trace_total_peak": total_peak,
            "trace_spec_retained": spec_size, "trace_retained": retained}


def profile(path: Path, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    spec = load_estate(path)
    build_tenant(spec)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


_MEASURES = {"time": measure_time, "memory": measure_memory, "what-if": measure_what_if}


def _child(mode: str, path: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; it prints its figures as JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--estate", str(path)],
        check=True, capture_output=True, text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--subscriptions", type=int, default=20)
    parser.add_argument("--secret-share", type=float, default=0.6)
    parser.add_argument("--shared-principals", type=int, default=50)
    parser.add_argument("--slots", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="also copy the estate to this path")
    parser.add_argument("--profile", action="store_true", help="cProfile load + build")
    parser.add_argument("--top", type=int, default=25, help="functions per profile listing")
    parser.add_argument("--what-if", action="store_true",
                        help="also time load + build with libyaml and the GC paused")
    parser.add_argument("--child", choices=sorted(_MEASURES), help=argparse.SUPPRESS)
    parser.add_argument("--estate", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        print(json.dumps(_MEASURES[args.child](args.estate)))
        return

    with tempfile.TemporaryDirectory(prefix="sim-estate-") as tmp:
        path = Path(tmp) / "estate.yaml"
        t0 = time.perf_counter()
        spec = generate_estate(subscriptions=args.subscriptions, apps=args.apps,
                               secret_share=args.secret_share,
                               shared_principals=args.shared_principals, slots=args.slots,
                               seed=args.seed)
        t1 = time.perf_counter()
        size = write_estate(spec, path)
        t2 = time.perf_counter()
        if args.keep:
            args.keep.write_bytes(path.read_bytes())
        del spec

        timed = _child("time", path)
        memory = _child("memory", path)

        print(f"estate: {args.apps} apps over {args.subscriptions} subscriptions, "
              f"secret share {args.secret_share}, {args.shared_principals} shared principals, "
              f"slots {args.slots}, seed {args.seed}")
        print(f"  built tenant: {timed['sites']} sites, {timed['slots']} slots, "
              f"{timed['principals']} app registrations")
        print(f"generate (build + validate):   {t1 - t0:8.2f} s")
        print(f"render + write YAML:           {t2 - t1:8.2f} s")
        print(f"YAML size:                     {size / MB:8.2f} MB ({size} bytes)")
        print(f"load_estate (parse+validate):  {timed['load_s']:8.2f} s")
        print(f"build_tenant:                  {timed['build_s']:8.2f} s")
        print(f"load + build:                  {timed['load_s'] + timed['build_s']:8.2f} s")
        print(f"ru_maxrss baseline (imports):  {timed['rss_before'] / MB:8.1f} MB")
        print(f"ru_maxrss delta, load:         {timed['rss_load_delta'] / MB:8.1f} MB")
        print(f"ru_maxrss delta, load + build: {timed['rss_total_delta'] / MB:8.1f} MB")
        print(f"tracemalloc peak, load:        {memory['trace_load_peak'] / MB:8.1f} MB")
        print(f"tracemalloc peak, load+build:  {memory['trace_total_peak'] / MB:8.1f} MB")
        print(f"  retained: spec {memory['trace_spec_retained'] / MB:.1f} MB, "
              f"spec + tenant {memory['trace_retained'] / MB:.1f} MB")
        print(f"SimServer(spec, dir) init:     {timed['server_init_s']:8.2f} s "
              "(build_tenant, routes)")
        print(f"SimServer start (__enter__):   {timed['server_start_s']:8.2f} s "
              "(CA, certificate, uvicorn)")
        print(f"first HTTPS request:           {timed['first_request_s']:8.3f} s")
        print(f"SimServer stop:                {timed['server_stop_s']:8.2f} s")

        if args.what_if:
            fixed = _child("what-if", path)
            if fixed:
                print("what if: libyaml compose + GC paused (patched in, not the code as is)")
                print(f"  load_estate:                 {fixed['load_s']:8.2f} s")
                print(f"  build_tenant:                {fixed['build_s']:8.2f} s")
                print(f"  ru_maxrss delta, load+build: {fixed['rss_total_delta'] / MB:8.1f} MB")
                print(f"  SimServer(spec, dir) init:   {fixed['server_init_s']:8.2f} s")
            else:
                print("what if: PyYAML has no libyaml here; skipped")

        if args.profile:
            print(profile(path, args.top))


if __name__ == "__main__":
    main()
