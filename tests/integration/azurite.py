"""Azurite, the Azure Storage emulator, run for the tests of the runbook's storage state.

The runbook keeps its journal in Table Storage and its plans and stash in Blob Storage; those
classes are tested against the real SDKs talking to a real (emulated) service rather than to
mocks, because what matters is how the service answers a conflicting insert, a stale ETag or a
taken lease. Azurite is an npm package pinned in the root package.json: `npm ci` installs it.

Each `running_azurite` starts its own Azurite with every service on a port the OS picks (port
0, read back from Azurite's start-up lines), so that parallel test workers never race for a
port, and with in-memory storage, so that nothing is left behind.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.core.credentials import AzureNamedKeyCredential

ROOT = Path(__file__).resolve().parents[2]
AZURITE = ROOT / "node_modules" / ".bin" / "azurite"
# CI sets this: a missing Azurite is then a failure, not a skip.
REQUIRE_ENV = "MIGRATOR_REQUIRE_AZURITE"
START_TIMEOUT_SECONDS = 30.0
# Azurite's well-known development account (public, documented by Microsoft; not a secret).
DEV_ACCOUNT = "devstoreaccount1"
DEV_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
           "K1SZFPTOtr/KBHBeksoGMGw==")
_LISTENING = re.compile(r"Azurite (Blob|Table) service is successfully listening at "
                        r"http://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class Endpoints:
    """Where a running Azurite answers, and the account to sign requests with."""

    account_name: str
    account_key: str
    blob_url: str
    table_url: str
    started_in: float  # seconds from launch until both services answered

    def credential(self) -> AzureNamedKeyCredential:
        return AzureNamedKeyCredential(self.account_name, self.account_key)


def azurite_binary() -> Path:
    """Azurite's launcher, or skip the test (fail it where CI insists) saying how to get it."""
    if AZURITE.exists():
        return AZURITE
    missing = ("Azurite is not installed: run `npm ci` in the repository root (it needs "
               "Node.js and npm)")
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(missing)
    pytest.skip(missing)


@contextmanager
def running_azurite(tmp_path: Path) -> Iterator[Endpoints]:
    """Start Azurite (blob and table services), wait until both answer, stop it on exit."""
    binary = azurite_binary()
    log_path = tmp_path / "azurite.log"
    arguments = [str(binary),
                 "--blobHost", "127.0.0.1", "--blobPort", "0",
                 "--tableHost", "127.0.0.1", "--tablePort", "0",
                 # The combined launcher always starts the queue service too; keep it on a
                 # free loopback port where it bothers nobody.
                 "--queueHost", "127.0.0.1", "--queuePort", "0",
                 "--inMemoryPersistence", "--extentMemoryLimit", "256",
                 "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"]
    launched = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(arguments, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        ports = _wait_until_listening(process, log_path, launched + START_TIMEOUT_SECONDS)
        yield Endpoints(account_name=DEV_ACCOUNT, account_key=DEV_KEY,
                        blob_url=f"http://127.0.0.1:{ports['Blob']}/{DEV_ACCOUNT}",
                        table_url=f"http://127.0.0.1:{ports['Table']}/{DEV_ACCOUNT}",
                        started_in=time.monotonic() - launched)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_listening(process: subprocess.Popen[bytes], log_path: Path,
                          deadline: float) -> dict[str, int]:
    """The blob and table ports, once Azurite has announced both and both accept connections."""
    while True:
        log = log_path.read_text(errors="replace")
        ports = {service: int(port) for service, port in _LISTENING.findall(log)}
        if len(ports) == 2 and all(_answers(port) for port in ports.values()):
            return ports
        if process.poll() is not None:
            raise RuntimeError(f"Azurite exited with code {process.returncode} before it "
                               f"answered:\n{log[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"Azurite did not answer within {START_TIMEOUT_SECONDS:g} s:\n"
                               f"{log[-2000:]}")
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
