"""How fast the scanner reads a throttled estate, against the lower bound ARM's buckets allow.

Generates an estate (2,000 apps over 10 subscriptions by default, fixed seed), serves it with
`migrator sim serve --throttle-scale X` in its own process, and runs, each in a fresh Python
process so that memory figures are the scan's alone (not the simulator's, not the generator's):

* the project's `Scanner` (paced per subscription by the client factory, a thread pool);
* unless `--skip-naive`, a naive sequential scan written directly with azure-mgmt-web's
  `WebSiteManagementClient` and azure-core's default retry policy (it honours Retry-After): for
  each subscription, list sites; for each site list slots, read app settings, connection strings
  and slot config names; the same for each slot. No pacing, no concurrency.

Each scan runs twice: once timed (wall time, ru_maxrss, CPU), then once under tracemalloc for
the peak of Python allocations (tracemalloc slows allocation several times over, so that run's
time is shown but is not the figure). `--no-tracemalloc` skips the traced runs.

The simulator's token buckets are refilled (`POST /_sim/throttle/reset`) before each run. Request
counts come from `GET /_sim/faults` (`arm_requests` answered per subscription and kind, and
`injected` for the 429s it sent), as deltas over the run.

The lower bound: ARM's buckets are per subscription and kind and refill independently, so with n
requests answered for one bucket of capacity C refilling R per second (both scaled), that bucket
alone needs t = max(0, (n - C) / R) seconds; the scan cannot be faster than the largest t. The
ratio measured / bound says how much of the buckets' allowance a scan wastes (Graph, CPU and
request latency are not in the bound: the CPU figures show when the machine is the limit).

Nothing is asserted: this prints figures for people to compare.

    python benchmarks/scan_throughput.py [--apps 2000] [--subscriptions 10] \
        [--throttle-scale 1.0] [--workers 16] [--skip-naive] [--no-tracemalloc]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import tracemalloc
from pathlib import Path
from typing import Any

# Azure's ARM buckets, (capacity, refill per second): the simulator's own numbers.
from migrator.sim.exports import wait_for_exports
from migrator.sim.faults import ARM_BUCKETS

MB = 1024 * 1024
SEED = 7


def _maxrss_bytes() -> int:
    # Linux reports kilobytes, macOS bytes.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) another process has used so far; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _where(exc: BaseException) -> str:
    """The error and the innermost frames that raised it, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__}: {exc} (at {where})"


# --- the scans, each run in a child process ----------------------------------------------------


def _sign_in() -> tuple[Any, Any]:
    from migrator.cloud.factory import secret_credential
    from migrator.cloud.profiles import load_profile

    profile = load_profile(os.environ["MIGRATOR_CLOUD_PROFILE"])
    credential = secret_credential(profile, os.environ["AZURE_TENANT_ID"],
                                   os.environ["AZURE_CLIENT_ID"],
                                   os.environ["AZURE_CLIENT_SECRET"])
    return profile, credential


class _Meter:
    """Wall time, CPU, ru_maxrss and (when tracing) the tracemalloc peak of one scan."""

    def __init__(self, trace: bool) -> None:
        self.trace = trace
        self.out: dict[str, Any] = {"error": None}

    def __enter__(self) -> _Meter:
        self.out["rss_before"] = _maxrss_bytes()
        self.cpu = _cpu_seconds()
        if self.trace:
            tracemalloc.start()
        self.began = time.perf_counter()
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        self.out["wall_s"] = time.perf_counter() - self.began
        self.out["cpu_s"] = _cpu_seconds() - self.cpu
        if self.trace:
            self.out["trace_peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        self.out["rss_peak"] = _maxrss_bytes()
        if isinstance(exc, Exception):  # a benchmark reports failures, it does not crash
            self.out["error"] = _where(exc)
            return True
        return False


def child_scanner(workers: int, trace: bool) -> dict[str, Any]:
    """The project's Scanner, as the CLI runs it."""
    from migrator.cloud.factory import ClientFactory
    from migrator.scan import ScanEvent, Scanner, ScanScope

    profile, credential = _sign_in()
    hoisted = _hoist_msgraph_imports() if trace else None
    events: list[tuple[float, str, str]] = []
    lock = threading.Lock()
    meter = _Meter(trace)

    def progress(event: ScanEvent) -> None:
        if event.kind in ("site-done", "principal-done", "gap"):
            with lock:
                events.append((time.perf_counter() - meter.began, event.kind, event.subject))

    with meter, ClientFactory(profile, credential) as factory:
        inventory = Scanner(factory, workers=workers, progress=progress).run(ScanScope())
        meter.out.update(
            sites=inventory.stats.sites, slots=inventory.stats.slots,
            findings=len(inventory.findings), principals=len(inventory.principals),
            principals_missing=sum(1 for p in inventory.principals if p.principal is None),
            gaps=len(inventory.gaps),
            gap_samples=[f"{g.scope} {g.operation}: {g.status} {g.code} {g.message}"
                         for g in inventory.gaps[:5]],
            client_throttled=inventory.stats.arm_throttled,
            pacing_wait_s=inventory.stats.pacing_wait_seconds,
        )
    meter.out["events"] = events
    meter.out["hoisted"] = hoisted
    return meter.out


def _hoist_msgraph_imports() -> str:
    """For the traced run only. msgraph-sdk's `Entity.get_field_deserializers`, called for every
    Graph object deserialised, runs ~2,400 `from .x import X` statements (1,194 modules, each
    twice) every time: ~10 ms untraced, ~1 s under tracemalloc, so a traced scan would take an
    hour. Import those modules once and rebuild the method without the statements: the same
    objects and modules, so the same memory, without tracemalloc's toll on the statements."""
    import inspect
    import textwrap

    try:
        import msgraph.generated.models.entity as module

        source = textwrap.dedent(inspect.getsource(module.Entity.get_field_deserializers))
        body: list[str] = []
        imports: list[str] = []
        for line in source.splitlines():
            (imports if line.strip().startswith("from .") else body).append(line)
        for line in imports:
            exec(line.strip().replace("from .", "from msgraph.generated.models.", 1),
                 module.__dict__)
        exec("\n".join(body), module.__dict__)
        module.Entity.get_field_deserializers = module.__dict__["get_field_deserializers"]
    except Exception as exc:  # the SDK changed: trace it as it is, and say so
        return f"not hoisted ({type(exc).__name__}: {exc})"
    return f"hoisted {len(imports)} per-call imports out of Entity.get_field_deserializers"


def child_naive(trace: bool) -> dict[str, Any]:
    """One thread, one call after the other, azure-core's default retry policy only."""
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.resource.subscriptions import SubscriptionClient
    from azure.mgmt.web import WebSiteManagementClient

    from migrator.detect import detect
    from migrator.detect.findings import ConnectionStringValue, SiteSettings

    profile, credential = _sign_in()
    options: dict[str, Any] = {"base_url": profile.arm_endpoint,
                               "credential_scopes": [profile.arm_scope],
                               "connection_verify": profile.ca_bundle}
    failed: list[str] = []
    counts = {"sites": 0, "slots": 0, "findings": 0}
    salt = b"scan-throughput!"

    def call(what: str, fn: Any) -> Any:
        try:
            return fn()
        except HttpResponseError as exc:
            failed.append(f"{what}: {exc.status_code} {str(exc.message).splitlines()[0]}")
            return None

    def read(web: Any, rg: str, name: str, slot: str | None) -> bool:
        apps = web.web_apps
        if slot:
            settings = call(f"app settings {name}/{slot}",
                            lambda: apps.list_application_settings_slot(rg, name, slot))
            strings = call(f"connection strings {name}/{slot}",
                           lambda: apps.list_connection_strings_slot(rg, name, slot))
        else:
            settings = call(f"app settings {name}", lambda: apps.list_application_settings(
                rg, name))
            strings = call(f"connection strings {name}", lambda: apps.list_connection_strings(
                rg, name))
        sticky = call(f"slot config names {name}",
                      lambda: apps.list_slot_configuration_names(rg, name))
        if settings is None or strings is None or sticky is None:
            return False
        counts["findings"] += len(detect(SiteSettings(
            app_settings={k: str(v) for k, v in (settings.properties or {}).items()},
            connection_strings={
                k: ConnectionStringValue(str(getattr(v.type, "value", v.type)), str(v.value or ""))
                for k, v in (strings.properties or {}).items()},
            sticky_app_settings=frozenset(sticky.app_setting_names or ()),
            sticky_connection_strings=frozenset(sticky.connection_string_names or ()),
        ), salt=salt))
        return True

    meter = _Meter(trace)
    with meter:
        subscriptions = SubscriptionClient(credential, **options)
        for sub in subscriptions.subscriptions.list():
            web = WebSiteManagementClient(credential, str(sub.subscription_id), **options)
            for site in call(f"list sites {sub.display_name}",
                             lambda web=web: list(web.web_apps.list())) or []:
                rg, name = str(site.resource_group), str(site.name)
                site_slots = call(f"list slots {name}", lambda web=web, rg=rg, name=name:
                                  list(web.web_apps.list_slots(rg, name))) or []
                counts["sites"] += read(web, rg, name, None)
                for slot in site_slots:
                    counts["slots"] += read(web, rg, name, str(slot.name).rsplit("/", 1)[-1])
    meter.out.update(counts, gaps=len(failed), gap_samples=failed[:5])
    return meter.out


def _child(mode: str, exports: dict[str, str], workers: int, trace: bool) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--workers", str(workers),
         *(("--trace",) if trace else ())],
        check=False, capture_output=True, text=True, env=os.environ | exports,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{mode} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# --- the simulator, in its own process ---------------------------------------------------------


def start_sim(estate: Path, state_dir: Path, scale: float,
              log: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "migrator", "sim", "serve", "--estate", str(estate),
             "--state-dir", str(state_dir), "--throttle-scale", str(scale)],
            stdout=subprocess.PIPE, stderr=err, text=True,
            env=os.environ | {"COLUMNS": "200"})
    exports = wait_for_exports(proc, timeout=300)
    if exports is not None:
        return proc, exports
    proc.kill()
    raise SystemExit(f"the simulator did not start: {log.read_text()[-3000:]}")


def _arm_counts(faults: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(r["subscription"], r["kind"]): int(r["count"]) for r in faults["arm_requests"]}


def bound(requests: dict[tuple[str, str], int],
          scale: float) -> tuple[float, tuple[str, str] | None, dict[tuple[str, str], float]]:
    """Seconds the buckets need for these answered requests; the binding bucket; each one's."""
    each: dict[tuple[str, str], float] = {}
    for (sub, kind), n in requests.items():
        capacity, refill = ARM_BUCKETS[kind]
        capacity, refill = max(1.0, capacity * scale), refill * scale
        each[(sub, kind)] = max(0.0, (n - capacity) / refill) if refill > 0 else 0.0
    if not each:
        return 0.0, None, each
    binding = max(each, key=lambda k: each[k])
    return each[binding], binding, each


class Sim:
    """The admin side of the running simulator."""

    def __init__(self, proc: subprocess.Popen[str], base_url: str, ca: str) -> None:
        import httpx

        self.proc = proc
        self.base = base_url
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=ca), timeout=60.0)

    def faults(self) -> dict[str, Any]:
        response = self.http.get(f"{self.base}/_sim/faults")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self.http.post(f"{self.base}/_sim/throttle/reset").raise_for_status()


def measured(sim: Sim, mode: str, exports: dict[str, str], workers: int,
             scale: float, trace: bool) -> dict[str, Any]:
    """One scan in a child process, with the simulator's counts over it."""
    sim.reset()
    before = sim.faults()
    cpu_before = _process_cpu(sim.proc.pid)
    result = _child(mode, exports, workers, trace)
    cpu_after = _process_cpu(sim.proc.pid)
    after = sim.faults()
    b, a = _arm_counts(before), _arm_counts(after)
    requests = {k: n - b.get(k, 0) for k, n in a.items() if n - b.get(k, 0) > 0}
    seconds, binding, each = bound(requests, scale)
    injected_b, injected_a = before["injected"], after["injected"]
    result.update(
        requests=requests, bound_s=seconds, binding=binding, each=each,
        sim_cpu_s=(cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None
        else None,
        arm_429=injected_a.get("arm:throttled", 0) - injected_b.get("arm:throttled", 0),
        graph_429=injected_a.get("graph:throttled", 0) - injected_b.get("graph:throttled", 0),
    )
    return result


# --- the report --------------------------------------------------------------------------------


def _estate_layout(spec: Any) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """Per subscription name: (sites, slots); and site name -> subscription name."""
    per_sub: dict[str, tuple[int, int]] = {}
    owner: dict[str, str] = {}
    for sub in spec.subscriptions:
        sites = [s for g in sub.resource_groups for s in g.sites]
        per_sub[sub.name] = (len(sites), sum(len(s.slots) for s in sites))
        for s in sites:
            owner[s.name.lower()] = sub.name
    return per_sub, owner


def _row(label: str, *values: str) -> str:
    return f"{label:<40}" + "".join(f"{v:>22}" for v in values)


def _apps(r: dict[str, Any]) -> int:
    return int(r.get("sites") or 0) + int(r.get("slots") or 0)


def _failed(r: dict[str, Any]) -> int:
    return int(r.get("gaps") or 0) + (1 if r.get("error") else 0)


def report(runs: dict[str, dict[str, Any]], expected_apps: int, names: dict[str, str],
           owner: dict[str, str], scale: float) -> None:
    modes = list(runs)
    print()
    print(_row("", *modes))
    print(_row("", *("-" * 20 for _ in modes)))

    def line(label: str, fmt: Any) -> None:
        print(_row(label, *(fmt(runs[m]) for m in modes)))

    def traced(r: dict[str, Any], key: str, fmt: str) -> str:
        t = r.get("traced")
        return format(t[key], fmt) if t and t.get(key) is not None else "-"

    line("wall time (s)", lambda r: f"{r['wall_s']:.1f}")
    line("apps scanned (sites + slots)",
         lambda r: f"{_apps(r)} ({r.get('sites')}+{r.get('slots')})")
    line("apps / s", lambda r: f"{_apps(r) / r['wall_s']:.1f}")
    line("lower bound from buckets (s)", lambda r: f"{r['bound_s']:.1f}")
    line("  binding bucket", lambda r: (
        f"{names.get(r['binding'][0], r['binding'][0])} {r['binding'][1]}"
        if r["binding"] else "-"))
    line("  requests in binding bucket", lambda r: str(
        r["requests"].get(tuple(r["binding"]), 0) if r["binding"] else 0))
    line("ratio measured / bound", lambda r: (
        f"{r['wall_s'] / r['bound_s']:.2f}x" if r["bound_s"] > 0 else "-"))
    line("ARM requests answered", lambda r: str(sum(r["requests"].values())))
    for kind in ("read", "write", "delete"):
        line(f"  {kind}s", lambda r, kind=kind: str(
            sum(n for (_, k), n in r["requests"].items() if k == kind)))
    line("ARM requests answered / s", lambda r: f"{sum(r['requests'].values()) / r['wall_s']:.0f}")
    line("429s sent by the simulator (ARM)", lambda r: str(r["arm_429"]))
    line("429s sent by the simulator (Graph)", lambda r: str(r["graph_429"]))
    line("failed requests (gaps + errors)", lambda r: str(_failed(r)))
    line("findings", lambda r: str(r.get("findings", "-")))
    line("principals (not found in Graph)", lambda r: (
        f"{r['principals']} ({r['principals_missing']})" if "principals" in r else "-"))
    line("CPU of the scan's process (s)", lambda r: f"{r['cpu_s']:.1f}")
    line("CPU of the simulator's process (s)", lambda r: (
        f"{r['sim_cpu_s']:.1f}" if r.get("sim_cpu_s") is not None else "-"))
    line("ru_maxrss, scan process peak (MB)", lambda r: f"{r['rss_peak'] / MB:.1f}")
    line("ru_maxrss, growth during scan (MB)", lambda r: (
        f"{(r['rss_peak'] - r['rss_before']) / MB:.1f}"))
    line("tracemalloc peak during scan (MB)", lambda r: (
        f"{r['traced']['trace_peak'] / MB:.1f}" if r.get("traced") else "not traced"))
    line("  wall time of the traced run (s)", lambda r: traced(r, "wall_s", ".1f"))
    line("  429s / failed in the traced run", lambda r: (
        f"{r['traced']['arm_429']} / {_failed(r['traced'])}" if r.get("traced") else "-"))
    print(f"(each scan ran in its own process, the simulator in another, so memory and CPU are "
          f"the scan's alone; {os.cpu_count()} CPUs here, shared by scan and simulator. The "
          "timed run is untraced; tracemalloc figures come from a second, traced run.)")

    for mode in modes:
        r = runs[mode]
        ok = _apps(r) == expected_apps
        print(f"\n{mode}: apps scanned {_apps(r)} "
              f"{'==' if ok else '!='} estate sites + slots {expected_apps}"
              f"{'' if ok else '  <-- MISMATCH'}")
        for run in (r, r.get("traced") or {}):
            if run.get("error"):
                print(f"  error{' (traced run)' if run is not r else ''}: {run['error']}")
            for sample in run.get("gap_samples", []):
                print(f"  failed{' (traced run)' if run is not r else ''}: {sample}")
        if (r.get("traced") or {}).get("hoisted"):
            print(f"  traced run: msgraph-sdk {r['traced']['hoisted']} (see "
                  "_hoist_msgraph_imports)")
        if "client_throttled" in r:
            print(f"  client side: {r['client_throttled']} 429s seen by the pacer, "
                  f"{r['pacing_wait_s']:.1f} thread-seconds waiting in the pacer")

    scan = next((r for r in runs.values() if "events" in r), None)
    if scan and scan["events"]:
        _timeline(scan, names, owner, scale)


def _timeline(scan: dict[str, Any], names: dict[str, str], owner: dict[str, str],
              scale: float) -> None:
    """When each subscription's apps were done, against what its own buckets allow."""
    done: dict[str, list[float]] = {}
    principals: list[float] = []
    for t, kind, subject in scan["events"]:
        if kind == "site-done":
            done.setdefault(owner.get(subject.split("/", 1)[0].lower(), "?"), []).append(t)
        elif kind == "principal-done":
            principals.append(t)
    print("\nscanner timeline (timed run, seconds from the start of the scan):")
    print(f"  {'subscription':<14}{'apps':>6}{'first done':>12}{'last done':>11}"
          f"{'own bound':>11}{'writes':>8}{'reads':>7}")
    ids = {v: k for k, v in names.items()}
    for name in sorted(done):
        times = sorted(done[name])
        sub = ids.get(name, "")
        own = max(scan["each"].get((sub, "write"), 0.0), scan["each"].get((sub, "read"), 0.0))
        print(f"  {name:<14}{len(times):>6}{times[0]:>12.1f}{times[-1]:>11.1f}{own:>11.1f}"
              f"{scan['requests'].get((sub, 'write'), 0):>8}"
              f"{scan['requests'].get((sub, 'read'), 0):>7}")
    last_site = max((t for ts in done.values() for t in ts), default=0.0)
    print(f"  last app done at {last_site:.1f} s", end="")
    if principals:
        print(f"; {len(principals)} principals looked up in Graph from {min(principals):.1f} s "
              f"to {max(principals):.1f} s ({max(principals) - last_site:.1f} s after the last "
              "app)")
    else:
        print()
    print(f"  (throttle scale {scale}; 'own bound': the subscription's own busiest bucket)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=2000)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--shared-principals", type=int, default=20)
    parser.add_argument("--slots", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--throttle-scale", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--skip-naive", action="store_true", help="only run the Scanner")
    parser.add_argument("--no-tracemalloc", action="store_true",
                        help="skip the second, traced run of each scan")
    parser.add_argument("--child", choices=("scanner", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child == "scanner":
        print(json.dumps(child_scanner(args.workers, args.trace)))
        return
    if args.child == "naive":
        print(json.dumps(child_naive(args.trace)))
        return

    from migrator.sim.catalog import derive_id
    from migrator.sim.generate import generate_estate, write_estate

    scale = args.throttle_scale
    with tempfile.TemporaryDirectory(prefix="scan-throughput-") as tmp:
        path = Path(tmp) / "estate.yaml"
        t0 = time.perf_counter()
        spec = generate_estate(subscriptions=args.subscriptions, apps=args.apps,
                               shared_principals=args.shared_principals, slots=args.slots,
                               seed=args.seed)
        write_estate(spec, path)
        per_sub, owner = _estate_layout(spec)
        names = {str(s.id or derive_id("subscription", s.name)).lower(): s.name
                 for s in spec.subscriptions}
        del spec
        sites = sum(a for a, _ in per_sub.values())
        slots = sum(b for _, b in per_sub.values())
        print(f"estate: {args.apps} apps over {args.subscriptions} subscriptions, "
              f"{args.shared_principals} shared principals, slots {args.slots}, seed {args.seed}"
              f" -> {sites} sites + {slots} slots = {sites + slots} apps "
              f"(generated in {time.perf_counter() - t0:.1f} s)")

        # What to expect: each site and slot costs 2 writes (POST appsettings/list, POST
        # connectionstrings/list) and 1-2 reads; the write bucket is the binding one.
        w_cap, w_rate = ARM_BUCKETS["write"]
        w_cap, w_rate = max(1.0, w_cap * scale), w_rate * scale
        predicted = {name: max(0.0, (2 * (a + b) - w_cap) / w_rate) if w_rate else 0.0
                     for name, (a, b) in per_sub.items()}
        worst = max(predicted, key=lambda n: predicted[n])
        a, b = per_sub[worst]
        print(f"throttle scale {scale}: write bucket {w_cap:.0f} + {w_rate:g}/s per subscription;"
              f" the largest subscription ({worst}: {a} sites + {b} slots) needs "
              f"2 x {a + b} = {2 * (a + b)} writes -> ({2 * (a + b)} - {w_cap:.0f}) / {w_rate:g}"
              f" = {predicted[worst]:.1f} s at least")

        proc, exports = start_sim(path, Path(tmp) / "state", scale, Path(tmp) / "sim.log")
        print(f"simulator: pid {proc.pid} at {exports['AZURE_AUTHORITY_HOST']} "
              "(its own process)", flush=True)
        runs: dict[str, dict[str, Any]] = {}
        try:
            sim = Sim(proc, exports["AZURE_AUTHORITY_HOST"], exports["REQUESTS_CA_BUNDLE"])
            modes = ["scanner"] if args.skip_naive else ["scanner", "naive"]
            for mode in modes:
                print(f"running {mode} ...", flush=True)
                runs[mode] = measured(sim, mode, exports, args.workers, scale, trace=False)
                print(f"  {mode}: {runs[mode]['wall_s']:.1f} s", flush=True)
            if not args.no_tracemalloc:
                for mode in modes:
                    print(f"running {mode} under tracemalloc ...", flush=True)
                    runs[mode]["traced"] = measured(sim, mode, exports, args.workers, scale,
                                                    trace=True)
                    print(f"  {mode} (traced): {runs[mode]['traced']['wall_s']:.1f} s",
                          flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        label = {"scanner": f"Scanner ({args.workers} workers)", "naive": "naive sequential"}
        report({label[m]: r for m, r in runs.items()}, sites + slots, names, owner, scale)


if __name__ == "__main__":
    main()
