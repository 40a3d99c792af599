"""JSON for machines: the inventory as plain data. Names, ids and hints only: the inventory
holds no setting value (the detector's findings never carry one), so neither does this."""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from migrator.inventory import Inventory

SCHEMA_VERSION = 1


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def render_inventory(inventory: Inventory) -> str:
    document = {"schema_version": SCHEMA_VERSION, "complete": inventory.complete,
                **_plain(inventory)}
    document.pop("settings_salt", None)  # per-scan salts: meaningless outside this run
    for app in document["apps"]:
        app.pop("settings_fingerprint", None)
        for finding in app["findings"]:
            finding.pop("fingerprint", None)  # per-scan salt: meaningless outside this run
    return json.dumps(document, indent=2, sort_keys=False) + "\n"
