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
