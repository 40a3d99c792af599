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
    # (lower-case resource id, principal id) of each user-assigned identity as the site holds
    # it: the ids of when it was assigned, stale if the identity was re-created since.
    user_assigned_principals: tuple[tuple[str, str], ...] = ()

    def held_principal(self, resource_id: str) -> str | None:
        """The principal id the site holds for one of its user-assigned identities."""
        return dict(self.user_assigned_principals).get(resource_id.lower())


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
    # Every address its outbound calls may come from (`outboundIpAddresses` and
    # `possibleOutboundIpAddresses`): a sign-in from one of them may be this app's.
    outbound_ips: tuple[str, ...] = ()

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
    # An ABAC condition narrows what the role allows; copying the assignment without it would
    # grant more than the principal had.
    condition: str | None = None
    condition_version: str | None = None


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
    uri: str | None = None  # the data plane (`vaultUri`), e.g. https://kv.vault.azure.net/


@dataclass(frozen=True)
class RoleDataActions:
    """What a role definition allows on data planes (Key Vault secrets, blobs, ...)."""

    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...]


@dataclass(frozen=True)
class Permission:
    """One entry of ARM's effective permissions at a scope (one role the caller holds)."""

    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] = ()
    data_actions: tuple[str, ...] = ()
    not_data_actions: tuple[str, ...] = ()


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


# --- what the executor reads back from, and hands to, the write side (`cloud.changes`) --------


@dataclass(frozen=True)
class SiteAddress:
    """Where a site or slot lives, parsed from its ARM id: the SDK calls take the parts."""

    subscription_id: str
    resource_group: str
    name: str
    slot: str | None

    @property
    def display(self) -> str:
        return f"{self.name}/{self.slot}" if self.slot else self.name


@dataclass(frozen=True)
class SiteState:
    """A site or slot as the executor needs it: identity, host name and health path."""

    record: SiteRecord
    default_host_name: str
    health_check_path: str | None


@dataclass(frozen=True)
class UserAssignedIdentityRecord:
    """A user-assigned managed identity: its ARM id and the ids Entra knows it by."""

    id: str
    name: str
    client_id: str
    principal_id: str
    location: str


@dataclass(frozen=True)
class HealthProbe:
    """One GET of an app's health path: ok for a 2xx answer; detail is short and says why."""

    ok: bool
    status: int | None  # None: no HTTP answer at all (connection, TLS, timeout)
    detail: str


class NewSecret:
    """A client secret Graph has just minted. Its text leaves only through `reveal()`: repr,
    str and f-strings show "NewSecret(<hidden>)", so a log line or a traceback's locals cannot
    print it by accident."""

    __slots__ = ("_text",)

    def __init__(self, text: str) -> None:
        self._text = text

    def reveal(self) -> str:
        """The secret text, for the one place that stores it (the stash or a setting)."""
        return self._text

    def __repr__(self) -> str:
        return "NewSecret(<hidden>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)
