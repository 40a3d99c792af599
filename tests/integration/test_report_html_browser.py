"""The HTML report opens in a real browser: headless Chromium loads the file, the DOM it builds
holds the summary and a section for every app, and the page paints.

The plan is the demo's: the bundled sample estate, scanned through the real SDKs against
`migrator.sim` and planned, so the page is what an operator would get. Chromium runs as root
here, hence `--no-sandbox`; every network feature it would start on its own is switched off
(the page needs none: it is one self-contained file), and each run is bounded by a timeout that
kills Chromium's whole process group.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from migrator.demo import run_demo
from migrator.plan.model import Plan
from migrator.report import plan_html, plan_view

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)
TIMEOUT_SECONDS = 60
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser, before the demo's plan is made for it: a skip costs nothing."""
    if CHROMIUM is None:
        missing = ("chromium is not installed (Debian package 'chromium'); the HTML report is "
                   "checked without a browser in tests/unit/test_plan_report.py")
        if os.environ.get("MIGRATOR_REQUIRE_BROWSER"):  # CI installs it and insists on it
            pytest.fail(missing)
        pytest.skip(missing)
    return CHROMIUM


@pytest.fixture(scope="module")
def plan() -> Plan:
    return run_demo().plan


def _chromium(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", *args]
    env = os.environ | {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                        "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_SECONDS} s: {' '.join(args)}")
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def test_the_report_loads_and_paints_in_chromium(chromium: str, plan: Plan,
                                                 tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(plan_html.render(plan), encoding="utf-8")

    dumped = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
    dom = dumped.stdout.decode("utf-8")
    assert '<section id="summary">' in dom
    for row in plan_view.summary_rows(plan):
        assert (f'<tr data-figure="{row.key}"><td>{row.label}</td>'
                f'<td class="num">{row.value}</td>') in dom
    assert plan.apps, "the demo's plan has apps"
    for app in plan.apps:
        assert f'data-app="{app.name}"' in dom, f"no section for {app.name}"
    assert dom.count('<details class="app ') == len(plan.apps)
    assert '<section id="irreversible">' in dom
    assert "<script" not in dom

    shot = tmp_path / "r.png"
    painted = _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000",
                        page.as_uri())
    assert painted.returncode == 0, painted.stderr.decode(errors="replace")[-2000:]
    assert shot.exists(), "no screenshot written"
    png = shot.read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert (width, height) == (1280, 2000)
    assert len(png) > 10_000, f"a {len(png)}-byte screenshot is a blank page"
