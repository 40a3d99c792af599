"""Reading what `migrator sim serve` prints when it is ready: the `export NAME=value` lines
(shell-quoted) up to its "Ctrl-C stops it." line. For tests and benchmarks that run the
simulator as its own process."""

from __future__ import annotations

import shlex
import subprocess
import threading


def wait_for_exports(proc: subprocess.Popen[str], timeout: float) -> dict[str, str] | None:
    """The exports of a starting `sim serve`, or None if it ended (or printed nothing more)
    before it was ready; a start that hangs past `timeout` seconds is killed."""
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        for line in proc.stdout:
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
            if "Ctrl-C" in line:
                return exports
    finally:
        watchdog.cancel()
    return None
