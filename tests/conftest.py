"""Settings every test shares."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep msi-migrator's record of where each plan's journal is (MIGRATOR_STATE_DIR) out of
    the home directory of whoever runs the tests; subprocesses inherit it."""
    directory = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("MIGRATOR_STATE_DIR", str(directory))
    return directory
