"""The call log's last line of defence: nothing shaped like a secret is written, whatever a
caller passes (generated secrets of several shapes), and the file is JSON lines."""

from __future__ import annotations

import base64
import json
import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrator import calllog

_ENTRA = string.ascii_letters + string.digits + "_~.-"


def entra_secret() -> str:
    def pick(n: int) -> str:
        return "".join(secrets.choice(_ENTRA) for _ in range(n))
    return f"{pick(3)}{secrets.randbelow(10)}Q~{pick(34)}"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "calls.jsonl"
    calllog.configure(path)
    yield path
    calllog.close()


def test_secret_shapes_never_reach_the_file(log: Path) -> None:
    entra = entra_secret()
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    sas = secrets.token_urlsafe(32)
    password = secrets.token_urlsafe(18)
    token = "eyJ" + secrets.token_urlsafe(20) + "." + secrets.token_urlsafe(40) + ".sig"
    calllog.event("engine", text=f"failed: {entra} rejected")
    calllog.event("engine", text=f"AccountEndpoint=https://c/;AccountKey={key}")
    calllog.event("engine", text=f"Endpoint=sb://x/;SharedAccessKey={sas};EntityPath=q")
    calllog.event("engine", text=f"Server=tcp:s;User Id=u;Password={password}")
    calllog.event("engine", text=f"Authorization: Bearer {token}", n=3)
    text = log.read_text()
    for secret in (entra, key, sas, password, token):
        assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert len(lines) == 5 and all(e["text"].count("[redacted]") >= 1 for e in lines)
    assert "AccountKey=[redacted]" in lines[1]["text"] and lines[4]["n"] == 3


def test_unconfigured_is_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calllog.close()
    calllog.event("engine", text="nothing configured")
    assert not calllog.enabled()
    assert capsys.readouterr() == ("", "")


def test_verbose_writes_escaped_lines_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    calllog.configure(None, verbose=True)
    try:
        calllog.event("gap", message="\x1b[31mred\x1b[0m \u202eevil")
    finally:
        calllog.close()
    err = capsys.readouterr().err
    assert "event='gap'" in err and "\x1b" not in err and "\u202e" not in err
