"""What the detector reports: typed findings that name settings, never carry their values.

A finding says where a credential sits (the setting, and whether it is slot-sticky), what kind
it is (an outbound service-principal secret the migration replaces, an inbound sign-in secret it
cannot replace, a shared key that is a passwordless candidate), and what it pairs with (client id
and tenant settings). The only trace of a secret's value is Entra's own `hint` (its first three
characters, which Graph shows anyway) and a salted fingerprint that lets one scan tell that two
apps hold the same secret without ever storing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

SettingSource = Literal["app_setting", "connection_string"]


class FindingKind(str, enum.Enum):
    """How a credential is used, which decides what a migration can do with it."""

    CLIENT_SECRET = "client-secret"  # outbound: a principal's secret in clear text
    KEY_VAULT_REFERENCE = "key-vault-reference"  # outbound: that secret, held in a vault
    SQL_SERVICE_PRINCIPAL = "sql-service-principal"  # SQL connection string signing in as a SP
    INBOUND = "inbound-credential"  # Easy Auth / Microsoft.Identity.Web sign-in secret
    SHARED_KEY = "shared-key"  # storage / Service Bus / Event Hubs / Cosmos DB key

    @property
    def is_principal_secret(self) -> bool:
        """Outbound principal secrets: the ones a managed-identity swap replaces."""
        return self in (FindingKind.CLIENT_SECRET, FindingKind.KEY_VAULT_REFERENCE,
                        FindingKind.SQL_SERVICE_PRINCIPAL)


@dataclass(frozen=True)
class SettingRef:
    """A setting by name: an app setting or a connection string, slot-sticky or not."""

    name: str
    source: SettingSource = "app_setting"
    sticky: bool = False


@dataclass(frozen=True)
class KeyVaultRef:
    """Where a Key Vault reference points (vault and secret names, never the secret)."""

    vault: str
    secret: str
    version: str | None = None


@dataclass(frozen=True)
class SecretFinding:
    kind: FindingKind
    rule: str  # which rule fired, e.g. "azure-identity-env", "entra-secret-format"
    secret: SettingRef  # where the credential sits
    client_id: str | None = None  # an app id is an identifier, not a secret
    client_id_setting: SettingRef | None = None
    tenant_id: str | None = None
    tenant_setting: SettingRef | None = None
    hint: str | None = None  # Entra's passwordCredential.hint: the secret's first 3 characters
    fingerprint: str | None = None  # salted hash of the value, to group equal secrets in a scan
    key_vault: KeyVaultRef | None = None
    service: str | None = None  # shared keys: storage, servicebus, eventhubs, cosmosdb
    target: str | None = None  # SQL: "<server host>/<database>", where the database user lives
    note: str = ""  # one line for people, e.g. why a finding is inbound

    @property
    def outbound(self) -> bool:
        return self.kind.is_principal_secret


@dataclass(frozen=True)
class ConnectionStringValue:
    """A connection string as App Service stores it: a type and a value."""

    type: str
    value: str


@dataclass(frozen=True)
class SiteSettings:
    """The detector's whole input for one site or slot."""

    app_settings: dict[str, str] = field(default_factory=dict)
    connection_strings: dict[str, ConnectionStringValue] = field(default_factory=dict)
    sticky_app_settings: frozenset[str] = frozenset()
    sticky_connection_strings: frozenset[str] = frozenset()
