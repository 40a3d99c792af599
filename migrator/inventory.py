"""The inventory: what a scan found, as plain frozen data.

Every site and slot that holds a credential with its findings, every principal those
credentials belong to with its rights (ARM role assignments, Key Vault access policies, Graph
app roles) and the apps that hold it, and every gap: what the operator could not read. The
scanner (`migrator.scan`) builds it; the planner, the reports and the JSON output read it
without importing the scanner or any SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from migrator.cloud.records import (
    AppRoleGrantRecord,
    PrincipalRecord,
    SiteRecord,
    SubscriptionRecord,
)
from migrator.detect.findings import SecretFinding


@dataclass(frozen=True)
class Gap:
    """Something the operator could not read; the inventory is incomplete there."""

    scope: str
    operation: str
    status: int | None
    code: str | None
    message: str


@dataclass(frozen=True)
class AppInventory:
    site: SiteRecord
    findings: tuple[SecretFinding, ...]
    # Salted hash of the settings as read (Inventory.settings_salt): a plan keeps it so that
    # `apply` can refuse an app whose settings changed since.
    settings_fingerprint: str = ""


MatchStatus = Literal["matched", "ambiguous", "expired", "no-match", "not-checked"]


@dataclass(frozen=True)
class CredentialMatch:
    """Which of the principal's password credentials an app's secret is."""

    status: MatchStatus
    key_id: str | None
    candidates: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class Usage:
    """One app (or slot) holding a principal's credential in one setting."""

    app: str  # site or site/slot
    site_id: str
    setting: str
    kind: str
    sticky: bool
    match: CredentialMatch


@dataclass(frozen=True)
class RoleGrant:
    scope: str
    role_definition_id: str
    role_name: str
    condition: str | None = None  # ABAC: the assignment allows the role only where it holds
    condition_version: str | None = None


@dataclass(frozen=True)
class VaultGrant:
    vault_id: str
    vault_name: str
    rbac_vault: bool  # access policies are ignored on an RBAC vault
    secrets: tuple[str, ...]
    keys: tuple[str, ...]
    certificates: tuple[str, ...]


@dataclass(frozen=True)
class PrincipalInventory:
    app_id: str
    principal: PrincipalRecord | None  # None: no such principal in this tenant
    role_assignments: tuple[RoleGrant, ...]
    vault_policies: tuple[VaultGrant, ...]
    graph_roles: tuple[AppRoleGrantRecord, ...]
    used_by: tuple[Usage, ...]

    @property
    def name(self) -> str:
        return self.principal.display_name if self.principal else self.app_id


@dataclass(frozen=True)
class VaultWriteAccess:
    """Whether the operator may write a new version of a secret in a vault that an app's Key
    Vault reference reads: rolling back the removal of that secret's credential has to write
    the replacement there, or the restored reference would read a dead secret."""

    vault: str  # the name the references use, lower case
    vault_id: str | None  # None: the vault is not in the scanned subscriptions
    vault_uri: str | None
    rbac: bool | None
    can_set_secrets: bool | None  # None: could not tell
    reason: str


@dataclass(frozen=True)
class ScanStats:
    seconds: float
    sites: int
    slots: int
    arm_throttled: int
    pacing_wait_seconds: float


@dataclass(frozen=True)
class AddressUse:
    """Sign-ins from one address, and which scanned apps may make calls from it."""

    ip: str
    sign_ins: int
    last: str  # ISO time
    apps: tuple[str, ...]  # scanned apps with this outbound address; empty: none of them


@dataclass(frozen=True)
class CredentialSignIns:
    """What the sign-in logs say of one credential (a principal's password, by keyId)."""

    app_id: str
    key_id: str
    sign_ins: int
    failures: int
    last: str | None  # ISO time of the newest sign-in; None: none in the window
    addresses: tuple[AddressUse, ...]
    resources: tuple[str, ...]  # names of what it signed in to, most used first
    resource_ids: tuple[str, ...]

    @property
    def outside(self) -> tuple[AddressUse, ...]:
        """Addresses that no scanned app makes calls from: someone else has the secret."""
        return tuple(a for a in self.addresses if not a.apps)


@dataclass(frozen=True)
class SignInEvidence:
    """The sign-in logs over the scan's lookback window, or why they could not be read."""

    source: Literal["graph", "log-analytics", "none"]
    since: str  # ISO time: the start of the window
    until: str  # ISO time the logs were read at
    unavailable: str | None  # why there is no evidence (source "none")
    credentials: tuple[CredentialSignIns, ...] = ()
    workspace: str | None = None  # the Log Analytics workspace id, when read from one

    def of(self, app_id: str, key_id: str) -> CredentialSignIns | None:
        return next((c for c in self.credentials if c.app_id == app_id.lower()
                     and c.key_id == key_id.lower()), None)


@dataclass(frozen=True)
class Inventory:
    tenant_id: str | None
    scanned_at: str
    subscriptions: tuple[SubscriptionRecord, ...]
    apps: tuple[AppInventory, ...]
    principals: tuple[PrincipalInventory, ...]
    gaps: tuple[Gap, ...]
    stats: ScanStats
    settings_salt: str = ""  # hex; the salt of every AppInventory.settings_fingerprint
    vault_access: tuple[VaultWriteAccess, ...] = ()  # vaults that apps' references read
    sign_ins: SignInEvidence | None = None  # None: not read (lookback 0)

    @property
    def complete(self) -> bool:
        return not self.gaps

    @property
    def findings(self) -> list[tuple[AppInventory, SecretFinding]]:
        return [(a, f) for a in self.apps for f in a.findings]


# A principal whose Graph look-up failed (a gap): it may well exist, so never "not found".
UNREAD_PRINCIPAL = CredentialMatch(
    "not-checked", None, (),
    "the principal could not be read from Graph (see the scan's gaps): scan again")
