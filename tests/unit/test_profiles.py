"""Cloud profiles: only the profile differs between Azure clouds and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from migrator.cloud.errors import CloudConfigError
from migrator.cloud.profiles import CHINA, PUBLIC, US_GOVERNMENT, load_profile, write_profile


@pytest.mark.parametrize(("name", "expected"), [
    ("AzureCloud", PUBLIC), ("public", PUBLIC), ("azurechinacloud", CHINA), ("china", CHINA),
    ("AzureUSGovernment", US_GOVERNMENT), ("usgov", US_GOVERNMENT),
])
def test_builtin_clouds_by_name(name: str, expected: object) -> None:
    assert load_profile(name) == expected


@pytest.mark.parametrize(("profile", "arm_scope", "graph_scope", "graph_base"), [
    (PUBLIC, "https://management.azure.com/.default", "https://graph.microsoft.com/.default",
     "https://graph.microsoft.com/v1.0"),
    (CHINA, "https://management.chinacloudapi.cn/.default",
     "https://microsoftgraph.chinacloudapi.cn/.default",
     "https://microsoftgraph.chinacloudapi.cn/v1.0"),
    (US_GOVERNMENT, "https://management.usgovcloudapi.net/.default",
     "https://graph.microsoft.us/.default", "https://graph.microsoft.us/v1.0"),
])
def test_scopes_and_graph_base_url(profile: object, arm_scope: str, graph_scope: str,
                                   graph_base: str) -> None:
    from migrator.cloud.profiles import CloudProfile

    assert isinstance(profile, CloudProfile)
    assert profile.arm_scope == arm_scope
    assert profile.graph_scope == graph_scope
    assert profile.graph_base_url == graph_base  # no trailing slash: kiota needs it so


def test_profile_file_round_trip(tmp_path: Path) -> None:
    custom = PUBLIC.model_copy(update={"name": "sim", "arm_endpoint": "https://127.0.0.1:9",
                                       "graph_endpoint": "https://127.0.0.1:9",
                                       "ca_bundle": "/x/ca.pem",
                                       "disable_instance_discovery": True})
    path = tmp_path / "profile.json"
    write_profile(custom, path)
    loaded = load_profile(str(path))
    assert loaded == custom
    assert loaded.graph_host == "127.0.0.1"


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such cloud profile file, and not a built-in cloud"),
    ("{not json", "not a readable JSON profile"),
    (json.dumps({"name": "x"}), "arm_endpoint: Field required"),
    (json.dumps(PUBLIC.model_dump() | {"colour": "blue"}), "colour: Extra inputs"),
])
def test_bad_profile_files_get_one_line(tmp_path: Path, content: str | None,
                                        message: str) -> None:
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CloudConfigError) as info:
        load_profile(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


_LOCAL = "https://127.0.0.1:9"  # nothing listens there: no test reaches a real cloud


@pytest.mark.parametrize(("field", "plain"), [
    ("arm_endpoint", "http://127.0.0.1:9"),
    ("graph_endpoint", "http://127.0.0.1:9"),
    ("authority", "http://127.0.0.1:9"),
    ("site_url", "http://127.0.0.1:9/_sites/{site}{slot_path}"),
    ("arm_endpoint", "HTTP://127.0.0.1:9"),
    ("graph_endpoint", "127.0.0.1:9"),
])
def test_cli_refuses_a_profile_with_a_plain_http_endpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, plain: str) -> None:
    """A profile endpoint that is not https is bad input (exit 2, one line naming the field
    and the URL), found when the profile is read: before, the authority reached
    DefaultAzureCredential's own check (a ValueError traceback, exit 1) and the other
    endpoints an SDK's refusal to send a bearer token over plain http."""
    from typer.testing import CliRunner

    from migrator.cli import app

    local = PUBLIC.model_copy(update={
        "name": "plain", "arm_endpoint": _LOCAL, "graph_endpoint": _LOCAL, "authority": _LOCAL,
        "disable_instance_discovery": True})
    raw = local.model_dump() | {field: plain}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(raw))
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MIGRATOR_CLOUD_PROFILE", raising=False)

    result = CliRunner().invoke(app, ["scan", "--cloud", str(path)], env={"COLUMNS": "300"})

    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert field in lines[0]
    assert plain in lines[0]
    assert "https" in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_plain_http_endpoint_error_shows_no_user_info(tmp_path: Path) -> None:
    """A URL with credentials in it (user:password@host) is named without them."""
    raw = PUBLIC.model_dump() | {"graph_endpoint": "http://svc:hunter2-not-a-secret@proxy.test"}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(CloudConfigError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert "graph_endpoint" in message
    assert "proxy.test" in message
    assert "hunter2" not in message
    assert "svc:" not in message
    assert "\n" not in message


def test_https_profiles_still_load(tmp_path: Path) -> None:
    for profile in (PUBLIC, CHINA, US_GOVERNMENT):
        path = tmp_path / f"{profile.name}.json"
        write_profile(profile, path)
        assert load_profile(str(path)) == profile
