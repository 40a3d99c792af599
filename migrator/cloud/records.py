"""The project's own records of what the cloud holds: frozen, typed, free of SDK objects.

Adapters in `cloud/` convert SDK models into these at the boundary, so nothing above `cloud/`
sees an SDK object or a raw dict from Azure.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SubscriptionRecord:
    id: str
    name: str
    tenant_id: str


@dataclass(frozen=True)
class IdentityRecord:
    """A site's managed identities: the system-assigned principal and user-assigned ids."""

    type: str  # None | SystemAssigned | UserAssigned | SystemAssigned, UserAssigned
    principal_id: str | None
    user_assigned: tuple[str, ...]


@dataclass(frozen=True)
class SiteRecord:
    """A site or a slot (slot is None for the production site)."""

    id: str
    subscription_id: str
    resource_group: str
    name: str
    slot: str | None
    kind: str
    identity: IdentityRecord
    key_vault_reference_identity: str | None

    @property
    def display(self) -> str:
        return f"{self.name}/{self.slot}" if self.slot else self.name
