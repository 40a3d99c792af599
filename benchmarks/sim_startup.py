"""How long `migrator sim serve` takes to start, and the latency of an ARM GET against it.

Run: python benchmarks/sim_startup.py [--estate FILE] [--requests N]
Prints figures; asserts nothing (the machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.cloud.profiles import load_profile

ROOT = Path(__file__).resolve().parents[1]


def start(estate: Path, state_dir: Path) -> tuple[subprocess.Popen[str], dict[str, str], float]:
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator", "sim", "serve", "--estate", str(estate),
         "--state-dir", str(state_dir), "--throttle-scale", "0"],
        stdout=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "200"})
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    for line in proc.stdout:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            exports[name] = shlex.split(value)[0]
        if "Ctrl-C" in line:
            return proc, exports, time.perf_counter() - began
    raise SystemExit("the simulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--estate", type=Path, default=ROOT / "tests/fixtures/small.yaml")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        starts = []
        for i in range(3):
            proc, exports, seconds = start(args.estate, Path(tmp) / f"s{i}")
            starts.append(seconds)
            if i < 2:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
        print(f"sim serve start (process launch to exports printed): "
              f"median {statistics.median(starts) * 1000:.0f} ms over 3 "
              f"({', '.join(f'{s * 1000:.0f}' for s in starts)} ms)")
        try:
            profile = load_profile(exports["MIGRATOR_CLOUD_PROFILE"])
            credential = secret_credential(profile, exports["AZURE_TENANT_ID"],
                                           exports["AZURE_CLIENT_ID"],
                                           exports["AZURE_CLIENT_SECRET"])
            token = credential.get_token(profile.arm_scope).token
            subs = httpx.get(
                f"{profile.arm_endpoint}/subscriptions?api-version=2022-12-01",
                headers={"Authorization": f"Bearer {token}"},
                verify=ssl.create_default_context(cafile=profile.ca_bundle))
            sub_id = subs.json()["value"][0]["subscriptionId"]
            url = (f"{profile.arm_endpoint}/subscriptions/{sub_id}/providers/Microsoft.Web/"
                   f"sites?api-version=2025-05-01")
            ctx = ssl.create_default_context(cafile=profile.ca_bundle)
            with httpx.Client(verify=ctx, headers={"Authorization": f"Bearer {token}"}) as http:
                http.get(url)
                raw = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    http.get(url).raise_for_status()
                    raw.append(time.perf_counter() - t0)
            with ClientFactory(profile, credential) as factory:
                web = factory.web(sub_id)
                list(web.web_apps.list())
                sdk = []
                for _ in range(min(args.requests, 100)):
                    t0 = time.perf_counter()
                    web.web_apps.get("rg-orders", "orders-api")
                    sdk.append(time.perf_counter() - t0)
            q = statistics.quantiles(raw, n=20)
            print(f"ARM GET sites list, keep-alive httpx: median "
                  f"{statistics.median(raw) * 1000:.2f} ms, "
                  f"p95 {q[18] * 1000:.2f} ms over {len(raw)}")
            print(f"ARM GET site via azure-mgmt-web (full SDK pipeline): median "
                  f"{statistics.median(sdk) * 1000:.2f} ms over {len(sdk)}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
