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
    location: str = ""  # where a user-assigned identity for it would be created

    @property
    def display(self) -> str:
        return f"{self.name}/{self.slot}" if self.slot else self.name


@dataclass(frozen=True)
class RoleAssignmentRecord:
    id: str
    scope: str
    role_definition_id: str  # the GUID
    principal_id: str
    principal_type: str


@dataclass(frozen=True)
class AccessPolicyRecord:
    object_id: str
    secrets: tuple[str, ...]
    keys: tuple[str, ...]
    certificates: tuple[str, ...]


@dataclass(frozen=True)
class VaultRecord:
    id: str
    name: str
    subscription_id: str
    rbac: bool
    access_policies: tuple[AccessPolicyRecord, ...]


@dataclass(frozen=True)
class PasswordCredentialRecord:
    """A principal's password credential as Graph shows it: never the secret text."""

    key_id: str
    hint: str | None
    display_name: str | None
    start: str | None  # ISO 8601
    end: str | None


@dataclass(frozen=True)
class AppRoleGrantRecord:
    """An application permission granted to a principal (Graph appRoleAssignment)."""

    id: str
    resource_id: str  # the resource service principal's object id
    resource_app_id: str | None
    resource_name: str
    app_role_id: str
    app_role_value: str | None  # e.g. User.Read.All


@dataclass(frozen=True)
class PrincipalRecord:
    """A service principal and its application object, found by app id."""

    app_id: str
    object_id: str
    display_name: str
    enabled: bool
    kind: str  # Application | ManagedIdentity
    application_object_id: str | None
    password_credentials: tuple[PasswordCredentialRecord, ...]
    app_role_grants: tuple[AppRoleGrantRecord, ...]


@dataclass(frozen=True)
class SettingsRecord:
    """A site's settings as read, values included: held in memory for the detector only."""

    app_settings: dict[str, str]
    connection_strings: dict[str, tuple[str, str]]  # name -> (type, value)
    sticky_app_settings: frozenset[str]
    sticky_connection_strings: frozenset[str]
