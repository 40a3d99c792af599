"""Find the credentials an app signs in with, from its settings alone.

The detect layer is pure: the scanner hands it one site's (or slot's) settings and gets typed
findings back, with no I/O and no SDK in between, so every rule can be pinned by a table test
and the same code runs in the CLI, the runbook and the simulator's tests. Findings name
settings and never carry a secret's value (see `findings`).
"""

from migrator.detect.findings import (
    ConnectionStringValue,
    FindingKind,
    KeyVaultRef,
    SecretFinding,
    SettingRef,
    SettingSource,
    SiteSettings,
)
from migrator.detect.rules import (
    SERVICES,
    Note,
    Rule,
    detect,
    fingerprint,
    settings_fingerprint,
)

__all__ = [
    "SERVICES",
    "ConnectionStringValue",
    "FindingKind",
    "KeyVaultRef",
    "Note",
    "Rule",
    "SecretFinding",
    "SettingRef",
    "SettingSource",
    "SiteSettings",
    "detect",
    "fingerprint",
    "settings_fingerprint",
]
