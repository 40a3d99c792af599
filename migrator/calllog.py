"""The call log: what an operator hands to Azure support when a run goes wrong.

`migrator --log-file PATH ...` (or `MIGRATOR_LOG_FILE`) appends one JSON object per line
(structlog): every Azure call attempt with its service, method, URL path, status, duration,
attempt number and the ids support asks for (`x-ms-request-id`, `x-ms-client-request-id`,
`x-ms-correlation-request-id` from ARM and Key Vault; `request-id` and `client-request-id` from
Graph), and every decision of the scan and the executor (gaps, steps started, done, failed,
undone). `-v` writes the same events to stderr as well.

Never a secret, never a setting's value: a line holds method, path and headers' ids, never a
query string (a SAS token lives there), a body or a setting; the executor's events are its step
titles, which by the journal's rule hold no secret. A last processor cuts out anything shaped
like a secret all the same (Entra's client-secret format, `password=`/`AccountKey=`-style
pairs, bearer tokens): defence in depth, tested with generated secrets.

Unconfigured (the default), every call here is a no-op.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import structlog

from migrator.untrusted import visible

_SECRET_SHAPES = (
    re.compile(r"[A-Za-z0-9_~.-]{3}\dQ~[A-Za-z0-9_~.-]{31,34}"),  # Entra client secrets
    re.compile(r"(?i)\b(password|pwd|accountkey|sharedaccesskey|sig|client_secret|secret|"
               r"access_token|refresh_token)\s*=\s*[^;&\s\"']+"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # a JWT
)
REDACTED = "[redacted]"


def scrub(text: str) -> str:
    """`text` with anything shaped like a secret replaced by `[redacted]`."""
    for shape in _SECRET_SHAPES:
        text = shape.sub(lambda m: (m.group(1) + "=" + REDACTED)
                         if m.re.groups else REDACTED, text)
    return text


def _scrubbed(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: scrub(v) if isinstance(v, str) else v for k, v in event.items()}


def _visible(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return {k: visible(v) if isinstance(v, str) else v for k, v in event.items()}


class _Sinks:
    """Where events go: a file (JSON lines) and, with -v, stderr (key=value, escaped)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.file: IO[str] | None = None
        self.loggers: list[Any] = []


_sinks = _Sinks()


class CallLogError(OSError):
    """The log file cannot be opened; its message is one line."""


def configure(path: Path | None, *, verbose: bool = False) -> None:
    """Send events to `path` (appended, created 0600) and, when `verbose`, to stderr."""
    close()
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    loggers: list[Any] = []
    if path is not None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            handle = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise CallLogError(f"cannot open the log file {path}: "
                               f"{exc.strerror or exc}") from None
        _sinks.file = handle
        loggers.append(structlog.wrap_logger(
            structlog.PrintLogger(handle), processors=[
                structlog.processors.add_log_level, stamp, _scrubbed,
                structlog.processors.JSONRenderer(sort_keys=False)]))
    if verbose:
        loggers.append(structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr), processors=[
                structlog.processors.add_log_level, stamp, _scrubbed, _visible,
                structlog.processors.KeyValueRenderer(
                    key_order=["timestamp", "level", "event"], drop_missing=True)]))
    with _sinks.lock:
        _sinks.loggers = loggers


def enabled() -> bool:
    return bool(_sinks.loggers)


def event(name: str, level: str = "info", **fields: Any) -> None:
    """Log one event (a no-op when nothing is configured). Pass ids, names and numbers:
    never a value read from a setting."""
    for logger in _sinks.loggers:
        getattr(logger, level)(name, **fields)


def close() -> None:
    with _sinks.lock:
        _sinks.loggers = []
        handle, _sinks.file = _sinks.file, None
    if handle is not None:
        handle.close()


def _path(url: str) -> str:
    """The URL's path only: a query string may carry a SAS token or a filter of ids."""
    return urlsplit(url).path


def http_attempt(service: str, method: str, url: str, *, status: int | None,
                 started: float, attempt: int, headers: Mapping[str, str],
                 request_headers: Mapping[str, str], error: str | None = None) -> None:
    """One HTTP attempt to an Azure service, with the ids support asks for."""
    if not enabled():
        return
    fields: dict[str, Any] = {
        "service": service, "method": method, "path": _path(url), "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 1), "attempt": attempt}
    for key, header in (("request_id", "x-ms-request-id"), ("request_id", "request-id"),
                        ("correlation_id", "x-ms-correlation-request-id")):
        if fields.get(key) is None and headers.get(header):
            fields[key] = headers[header]
    for header in ("x-ms-client-request-id", "client-request-id"):
        if request_headers.get(header):
            fields["client_request_id"] = request_headers[header]
            break
    if error is not None:
        fields["error"] = error
    level = "warning" if error is not None or (status or 0) >= 400 else "info"
    event("azure-call", level, **fields)


