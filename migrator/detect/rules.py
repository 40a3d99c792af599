"""The detector: one site's (or slot's) settings in, typed findings out, never a secret's value.

`detect` is pure (no I/O, no SDK, no logging) so the scanner can run it on every site and tests
can pin every rule with a table. It reads the rule table `RULES` top to bottom and the first
rule that recognises a setting reports it, so a setting is reported once:

1. secret *positions*, known by the setting's name (`AZURE_CLIENT_SECRET`,
   `AzureAd__ClientSecret`, `<PREFIX>__clientSecret`, `SP_PASSWORD` beside a GUID `SP_APP_ID`…).
   Whatever such a setting holds is the credential: a clear-text secret, or a Key Vault
   reference to it. Inbound sign-in secrets (Easy Auth, Microsoft.Identity.Web) are reported
   as such, because a managed identity cannot replace them;
2. credential *values*, known by their shape wherever they sit: SQL connection strings that
   sign in as a service principal, shared keys (storage, Service Bus, Event Hubs, Cosmos DB),
   and anything in Entra's client-secret format.

A finding names settings and pairs the secret with its client id and tenant settings (same
prefix). Of a value it keeps only Entra's own hint (the first three characters, which Graph
shows anyway) and a salted fingerprint that groups equal secrets across one scan.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from migrator.detect import values
from migrator.detect.findings import (
    FindingKind,
    KeyVaultRef,
    SecretFinding,
    SettingRef,
    SiteSettings,
)
from migrator.detect.names import Role, SettingName, parse_name

FINGERPRINT_LENGTH = 16  # hex characters: 64 bits, plenty to group one estate's secrets
HINT_LENGTH = 3  # Entra's passwordCredential.hint

STORAGE, SERVICE_BUS, EVENT_HUBS, COSMOS_DB = "storage", "servicebus", "eventhubs", "cosmosdb"
SERVICES = (STORAGE, SERVICE_BUS, EVENT_HUBS, COSMOS_DB)


class Rule(str, enum.Enum):
    """Which rule recognised a setting: `SecretFinding.rule` holds the value."""

    EASY_AUTH = "easy-auth-secret"
    EASY_AUTH_OTHER_PROVIDER = "easy-auth-provider-secret"
    IDENTITY_WEB_CREDENTIALS = "identity-web-client-credentials"
    IDENTITY_WEB = "identity-web-secret"
    FUNCTIONS_CONNECTION = "functions-connection-secret"
    AZURE_IDENTITY_ENV = "azure-identity-env"
    ARM_ENV = "arm-env"
    CLIENT_SECRET_SETTING = "client-secret-setting"
    CONTAINER_REGISTRY = "container-registry-principal"
    PRINCIPAL_PASSWORD = "principal-password-setting"
    CONTENT_SHARE = "content-share-key"
    SQL_SERVICE_PRINCIPAL = "sql-service-principal"
    STORAGE_ACCOUNT_KEY = "storage-account-key"
    STORAGE_SAS = "storage-sas"
    COSMOS_DB_KEY = "cosmosdb-key"
    EVENT_HUBS_SAS = "eventhubs-sas"
    SERVICE_BUS_SAS = "servicebus-sas"
    ACCOUNT_KEY_SETTING = "account-key-setting"
    ENTRA_SECRET_FORMAT = "entra-secret-format"


class Note(str, enum.Enum):
    """The fixed sentences a finding's `note` is made of (joined with "; ", never inside one)."""

    IDENTITY_WEB = (
        "Microsoft.Identity.Web sign-in credential of an app registration: its passwordless "
        "path keeps the registration and adds a federated credential "
        "(SourceType SignedAssertionFromManagedIdentity), so a managed-identity swap alone "
        "does not replace it")
    EASY_AUTH = ("App Service Authentication (Easy Auth) client secret for inbound sign-in: "
                 "a managed-identity swap does not replace it")
    EASY_AUTH_OTHER_PROVIDER = ("App Service Authentication secret of a non-Entra identity "
                                "provider: no Entra principal, outside the migration")
    FUNCTIONS_CONNECTION = ("Functions identity-based connection: clientSecret is meant for "
                            "local development, in Azure use __credential=managedidentity")
    CONTAINER_REGISTRY = ("image pull as a service principal: the managed-identity path is the "
                          "site's acrUseManagedIdentityCreds, not a settings swap")
    GUID_SECRET = ("the value is a GUID: a legacy CLI-generated password, or a secret's ID "
                   "pasted instead of its value (Entra no longer issues secrets like this)")
    PLATFORM_REFERENCE = ("a platform reference other than Key Vault: the secret is held "
                          "elsewhere (e.g. App Configuration)")
    MALFORMED_REFERENCE = ("a platform reference App Service cannot parse (Key Vault status "
                           "InvalidSyntax): the app receives the reference text itself, not a "
                           "secret. Fix the reference before migrating")
    ENTRA_SECRET_FORMAT = "recognised by Entra's client-secret format, not by its name"
    PAIRED_BY_VALUE = ("paired by value: no client id setting names it, but another setting "
                       "holds an application id with a valid credential of the same hint")
    PAIRED_AMBIGUOUS = ("not paired: several application ids in this app's settings have a "
                        "valid credential of the same hint, so which one it signs in as is "
                        "unknown")
    CONTENT_SHARE = ("Azure Files content share: the platform still needs the account key "
                     "here, it cannot go passwordless")


# Settings the platform owns. They never hold an app's service-principal credential; the
# content-share connection string (its own rule) and Entra-format values are the exceptions.
_PLATFORM_PREFIXES = (
    "WEBSITE_", "WEBSITES_", "FUNCTIONS_", "APPINSIGHTS_", "APPLICATIONINSIGHTS_",
    "APPLICATIONINSIGHTSAGENT_", "XDT_", "DIAGNOSTICS_", "SCM_", "ANCM_", "MACHINEKEY_",
    "INSTRUMENTATIONENGINE_", "SNAPSHOTDEBUGGER_",
)
_IDENTITY_WEB_SECTIONS = frozenset({"azuread", "azureadb2c"})
# The last section of a Functions identity-based connection's other settings: with one of
# these beside it, `<PREFIX>__clientSecret` is that connection's secret.
_FUNCTIONS_CONNECTION_LEAVES = frozenset({
    "fullyqualifiednamespace", "serviceuri", "blobserviceuri", "queueserviceuri",
    "tableserviceuri", "accountname", "accountendpoint", "credential",
    "managedidentityresourceid",
})
_STORAGE_ENDPOINTS = ("accountname", "defaultendpointsprotocol", "blobendpoint",
                      "queueendpoint", "tableendpoint", "fileendpoint")
_STORAGE_EMULATOR_ACCOUNT = "devstoreaccount1"  # its key is published: not a secret
_SQL_SERVICE_PRINCIPAL = "activedirectoryserviceprincipal"
_SQL_USER_KEYWORDS = ("userid", "uid", "user", "username", "aadsecureprincipalid")
_SQL_PASSWORD_KEYWORDS = ("password", "pwd", "aadsecureprincipalsecret")


def fingerprint(salt: bytes, material: str) -> str:
    """Salted hash of a secret: equal secrets match within a scan, the value stays unknown."""
    digest = hmac.new(salt, material.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def settings_fingerprint(settings: SiteSettings, salt: bytes) -> str:
    """Salted hash of everything a plan was made from (names, values, types, stickiness), so
    a later run can tell that an app's settings changed without the plan holding a value."""
    material = json.dumps({
        "app_settings": sorted(settings.app_settings.items()),
        "connection_strings": sorted((k, v.type, v.value)
                                     for k, v in settings.connection_strings.items()),
        "sticky_app_settings": sorted(settings.sticky_app_settings),
        "sticky_connection_strings": sorted(settings.sticky_connection_strings),
    }, separators=(",", ":"))
    return hmac.new(salt, material.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def detect(settings: SiteSettings, *, salt: bytes) -> tuple[SecretFinding, ...]:
    """Every credential in one site's (or slot's) settings, sorted by setting name then rule.

    Pure and order-independent: the same settings give the same findings whatever order the
    dicts were filled in, so scans and plans can be compared.
    """
    site = _Site(settings)
    found = (finding for setting in site.settings if (finding := _first(setting, site, salt)))
    return tuple(sorted(found, key=lambda f: (f.secret.name, f.secret.source, f.rule)))


def _first(setting: _Setting, site: _Site, salt: bytes) -> SecretFinding | None:
    if not setting.value:
        return None
    for rule in RULES:
        if setting.platform and not rule.platform:
            continue
        if (finding := rule.find(setting, site, salt)) is not None:
            return finding
    return None


# --- the settings of one site ----------------------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    ref: SettingRef
    name: SettingName
    value: str  # stripped

    @property
    def platform(self) -> bool:
        return self.name.raw.upper().startswith(_PLATFORM_PREFIXES)

    @property
    def order(self) -> tuple[bool, str]:
        """App settings before connection strings, then by name: the findings' order."""
        return (self.ref.source != "app_setting", self.ref.name)


class _Site:
    """One site's settings, indexed by (role, prefix) to pair a secret with its identifiers."""

    def __init__(self, settings: SiteSettings) -> None:
        app = [_Setting(SettingRef(name, "app_setting", name in settings.sticky_app_settings),
                        parse_name(name), value.strip())
               for name, value in settings.app_settings.items()]
        connection = [
            _Setting(SettingRef(name, "connection_string",
                                name in settings.sticky_connection_strings),
                     parse_name(name), entry.value.strip())
            for name, entry in settings.connection_strings.items()]
        self.settings = tuple(sorted(app + connection, key=lambda s: s.order))
        # Identifiers and Functions connection settings are app settings: a connection string
        # reaches the app under another name (CUSTOMCONNSTR_x, ConnectionStrings:x).
        self._by_role: dict[tuple[Role, str], list[_Setting]] = {}
        for setting in app:
            if setting.name.role is not None:
                for prefix in setting.name.prefixes:
                    self._by_role.setdefault((setting.name.role, prefix), []).append(setting)
        self._functions_connections = frozenset(
            s.name.section_prefix for s in app
            if s.name.hierarchical and s.name.leaf in _FUNCTIONS_CONNECTION_LEAVES)

    def siblings(self, of: _Setting, role: Role) -> list[_Setting]:
        """Settings of `role` that share a prefix with `of`, in pairing order."""
        found = {s for prefix in of.name.prefixes for s in self._by_role.get((role, prefix), ())
                 if s != of}
        return sorted(found, key=lambda s: s.order)

    def sibling(self, of: _Setting, role: Role) -> _Setting | None:
        candidates = self.siblings(of, role)
        return candidates[0] if candidates else None

    def is_functions_connection(self, setting: _Setting) -> bool:
        return setting.name.hierarchical and setting.name.section_prefix in \
            self._functions_connections


# --- pairing a secret with its client id and tenant --------------------------------------------


@dataclass(frozen=True)
class _Pairing:
    client_id_setting: _Setting | None = None
    tenant_setting: _Setting | None = None
    client_id: str | None = None
    tenant_id: str | None = None


def _pair(client: _Setting | None, setting: _Setting, site: _Site) -> _Pairing:
    """The tenant of the same prefix: a tenant setting, else a sign-in URL that names one."""
    tenant_setting = site.sibling(setting, Role.TENANT)
    tenant_id = values.tenant(tenant_setting.value) if tenant_setting else None
    if tenant_setting is None:
        for authority in site.siblings(setting, Role.AUTHORITY):
            if tenant_id := values.tenant_from_authority(authority.value):
                tenant_setting = authority
                break
    return _Pairing(client_id_setting=client, tenant_setting=tenant_setting,
                    client_id=values.guid(client.value) if client else None,
                    tenant_id=tenant_id)


def _same_prefix(setting: _Setting, site: _Site) -> _Pairing:
    return _pair(site.sibling(setting, Role.CLIENT_ID), setting, site)


def _principal_pairing(setting: _Setting, site: _Site) -> _Pairing:
    return _pair(_principal_id(setting, site), setting, site)


def _unpaired(setting: _Setting, site: _Site) -> _Pairing:
    return _Pairing()


def _principal_id(setting: _Setting, site: _Site) -> _Setting | None:
    """The setting that names a service principal (a GUID) beside a `…Password`/`…Secret`.

    A client id, or a user name that is a GUID (`DOCKER_REGISTRY_SERVER_USERNAME`). A user
    name that is not a GUID means a person's or an admin's login (`AZURE_USERNAME` /
    `AZURE_PASSWORD`): no principal's secret, whatever client id sits beside it.
    """
    user = site.sibling(setting, Role.USER_NAME)
    if user is not None and values.guid(user.value) is None:
        return None
    client = site.sibling(setting, Role.CLIENT_ID)
    return next((s for s in (client, user) if s is not None and values.guid(s.value)), None)


# --- rules -------------------------------------------------------------------------------------


class _Rule(Protocol):
    @property
    def platform(self) -> bool:
        """Whether the rule also looks at platform-owned settings (WEBSITE_*, FUNCTIONS_*…)."""

    def find(self, setting: _Setting, site: _Site, salt: bytes) -> SecretFinding | None:
        """A finding when this rule recognises the setting, else None."""


_Match = Callable[[_Setting, _Site], bool]
_Pairer = Callable[[_Setting, _Site], _Pairing]


def _finding(setting: _Setting, rule: Rule, kind: FindingKind, pairing: _Pairing, *,
             fingerprint_of: str, salt: bytes, hint: str | None = None,
             key_vault: KeyVaultRef | None = None, service: str | None = None,
             target: str | None = None, notes: tuple[Note, ...] = ()) -> SecretFinding:
    client, tenant = pairing.client_id_setting, pairing.tenant_setting
    return SecretFinding(
        kind=kind, rule=rule.value, secret=setting.ref,
        client_id=pairing.client_id, client_id_setting=client.ref if client else None,
        tenant_id=pairing.tenant_id, tenant_setting=tenant.ref if tenant else None,
        hint=hint, fingerprint=fingerprint(salt, fingerprint_of), key_vault=key_vault,
        service=service, target=target, note="; ".join(note.value for note in notes))


@dataclass(frozen=True)
class _Position:
    """A secret position, known by the setting's name: whatever it holds is the credential."""

    rule: Rule
    kind: FindingKind  # CLIENT_SECRET or INBOUND
    matches: _Match
    pairing: _Pairer = _same_prefix
    entra: bool = True  # an Entra credential: Graph shows its hint, GUIDs are suspicious
    note: Note | None = None
    platform: bool = False

    def find(self, setting: _Setting, site: _Site, salt: bytes) -> SecretFinding | None:
        if not self.matches(setting, site):
            return None
        notes = (self.note,) if self.note else ()
        pairing = self.pairing(setting, site)
        value = setting.value
        if (vault := values.key_vault_reference(value)) is not None:
            kind = FindingKind.KEY_VAULT_REFERENCE if self.kind is FindingKind.CLIENT_SECRET \
                else self.kind
            where = "/".join((vault.vault.lower(), vault.secret.lower(), vault.version or ""))
            return _finding(setting, self.rule, kind, pairing, fingerprint_of=f"kv:{where}",
                            salt=salt, key_vault=vault, notes=notes)
        if values.platform_service(value) not in (None, "keyvault"):
            return _finding(setting, self.rule, self.kind, pairing, fingerprint_of=value,
                            salt=salt, notes=(*notes, Note.PLATFORM_REFERENCE))
        if values.looks_like_platform_reference(value):
            return _finding(setting, self.rule, self.kind, pairing, fingerprint_of=value,
                            salt=salt, notes=(*notes, Note.MALFORMED_REFERENCE))
        if self.entra and values.guid(value):
            notes = (*notes, Note.GUID_SECRET)
        return _finding(setting, self.rule, self.kind, pairing, fingerprint_of=value, salt=salt,
                        hint=_hint(value) if self.entra else None, notes=notes)


@dataclass(frozen=True)
class _Credential:
    """What a value rule read from a value: the secret part and what it says about itself."""

    secret: str  # what the fingerprint hashes: the password, the key
    hint: str | None = None
    client_id: str | None = None
    tenant_id: str | None = None
    service: str | None = None
    target: str | None = None


@dataclass(frozen=True)
class _ValueShape:
    """A credential known by its value's shape, wherever it sits."""

    rule: Rule
    kind: FindingKind
    read: Callable[[_Setting], _Credential | None]
    pair_by_name: bool = False  # look for a client id and tenant of the setting's prefix
    note: Note | None = None
    platform: bool = False

    def find(self, setting: _Setting, site: _Site, salt: bytes) -> SecretFinding | None:
        credential = self.read(setting)
        if credential is None:
            return None
        pairing = _same_prefix(setting, site) if self.pair_by_name else _Pairing(
            client_id=credential.client_id, tenant_id=credential.tenant_id)
        return _finding(setting, self.rule, self.kind, pairing, fingerprint_of=credential.secret,
                        salt=salt, hint=credential.hint, service=credential.service,
                        target=credential.target, notes=(self.note,) if self.note else ())


def _hint(value: str) -> str | None:
    """Entra's hint: the first three characters, only of a value longer than that."""
    return value[:HINT_LENGTH] if len(value) > HINT_LENGTH else None


# --- name matchers -----------------------------------------------------------------------------


def _named(*names: str) -> _Match:
    upper = frozenset(n.upper() for n in names)
    return lambda setting, site: setting.name.raw.upper() in upper


def _easy_auth_provider(setting: _Setting, site: _Site) -> bool:
    name = setting.name.raw.upper()
    return name.endswith("_PROVIDER_AUTHENTICATION_SECRET") and \
        name != "_PROVIDER_AUTHENTICATION_SECRET"


def _is_client_secret(setting: _Setting) -> bool:
    return setting.name.role is Role.CLIENT_SECRET


def _identity_web(slot: bool) -> _Match:
    return lambda setting, site: (
        _is_client_secret(setting) and setting.name.hierarchical
        and setting.name.credential_slot is slot
        and setting.name.prefix in _IDENTITY_WEB_SECTIONS)


def _functions_connection(setting: _Setting, site: _Site) -> bool:
    return setting.name.leaf == "clientsecret" and site.is_functions_connection(setting)


def _client_secret_setting(setting: _Setting, site: _Site) -> bool:
    """Any `…ClientSecret`, unless its client id is another identity provider's.

    `GITHUB_CLIENT_SECRET` beside `GITHUB_CLIENT_ID=Iv1.…` is an OAuth app of GitHub, not an
    Entra principal: Entra app ids are GUIDs. An Entra-format value is Entra's, whatever the
    client id says.
    """
    if not _is_client_secret(setting):
        return False
    client = site.sibling(setting, Role.CLIENT_ID)
    if client is None or not client.value or values.is_entra_client_secret(setting.value):
        return True
    return values.guid(client.value) is not None or values.is_platform_reference(client.value)


def _principal_password(setting: _Setting, site: _Site) -> bool:
    return setting.name.role is Role.SECRET_WORD and _principal_id(setting, site) is not None


def _container_registry(setting: _Setting, site: _Site) -> bool:
    """App Service pulls the image with DOCKER_REGISTRY_SERVER_*: a principal if a GUID user."""
    return setting.name.raw.upper() == "DOCKER_REGISTRY_SERVER_PASSWORD" and \
        _principal_password(setting, site)


# --- value readers -----------------------------------------------------------------------------


def _fields(setting: _Setting) -> dict[str, str]:
    return values.connection_string_fields(setting.value) if "=" in setting.value else {}


def _sql_service_principal(setting: _Setting) -> _Credential | None:
    """`Authentication=Active Directory Service Principal;User Id=<app id>;Password=<secret>`.

    A SQL login (no Authentication keyword) is a database password, not a principal's
    secret: out of scope. The client id sits inside the connection string, so the finding
    names no client id setting (a swap rewrites the connection string, it deletes no setting).
    """
    fields = _fields(setting)
    if "".join(fields.get("authentication", "").split()).lower() != _SQL_SERVICE_PRINCIPAL:
        return None
    password = next((fields[k] for k in _SQL_PASSWORD_KEYWORDS if fields.get(k)), "")
    if not password:
        return None
    user = next((fields[k] for k in _SQL_USER_KEYWORDS if fields.get(k)), "")
    app, _, tenant = user.partition("@")  # some samples write <app id>@<tenant>
    return _Credential(secret=password, hint=_hint(password), client_id=values.guid(app),
                       tenant_id=values.tenant(tenant) if tenant else None,
                       target=_sql_target(fields))


def _sql_target(fields: dict[str, str]) -> str | None:
    """`Server=tcp:host,1433;Database=db` -> "host/db": where the database user must exist."""
    server = next((fields[k] for k in ("server", "datasource", "address", "addr",
                                       "networkaddress") if fields.get(k)), "")
    database = next((fields[k] for k in ("database", "initialcatalog") if fields.get(k)), "")
    host = server.strip().removeprefix("tcp:").split(",", 1)[0].strip()
    return f"{host}/{database.strip()}" if host and database else None


def _storage_account_key(setting: _Setting) -> _Credential | None:
    fields = _fields(setting)
    key = fields.get("accountkey", "")
    if not key or "accountendpoint" in fields or not any(k in fields for k in _STORAGE_ENDPOINTS):
        return None
    if fields.get("accountname", "").lower() == _STORAGE_EMULATOR_ACCOUNT:
        return None
    return _Credential(secret=key, service=STORAGE)


def _content_share_key(setting: _Setting) -> _Credential | None:
    if setting.name.raw.upper() != "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING":
        return None
    return _storage_account_key(setting)


def _storage_sas(setting: _Setting) -> _Credential | None:
    fields = _fields(setting)
    signature = fields.get("sharedaccesssignature", "")
    if not signature or not any(k in fields for k in _STORAGE_ENDPOINTS):
        return None
    return _Credential(secret=signature, service=STORAGE)


def _cosmos_db_key(setting: _Setting) -> _Credential | None:
    fields = _fields(setting)
    if not fields.get("accountendpoint") or not fields.get("accountkey"):
        return None
    return _Credential(secret=fields["accountkey"], service=COSMOS_DB)


def _messaging_sas(service: str) -> Callable[[_Setting], _Credential | None]:
    """Service Bus or Event Hubs (both `sb://…servicebus.windows.net`): Event Hubs when the
    setting's name or the EntityPath says "eventhub", else Service Bus. Best effort."""

    def read(setting: _Setting) -> _Credential | None:
        fields = _fields(setting)
        key = fields.get("sharedaccesskey") or fields.get("sharedaccesssignature")
        if not key or not fields.get("endpoint", "").lower().startswith("sb://"):
            return None
        said = "".join(setting.name.words) + fields.get("entitypath", "").lower()
        event_hubs = "eventhub" in said.replace("-", "").replace("_", "")
        return _Credential(secret=key, service=service) \
            if event_hubs is (service == EVENT_HUBS) else None

    return read


def _account_key_setting(setting: _Setting) -> _Credential | None:
    """A bare account key (`MY_STORAGE_KEY`, `Cosmos__AccountKey`): base64 of 64 bytes."""
    name = "".join(setting.name.words)
    if not name.endswith("key") or not values.is_base64_key(setting.value):
        return None
    if "cosmos" in name:
        return _Credential(secret=setting.value, service=COSMOS_DB)
    if "storage" in name or name.endswith("accountkey"):
        return _Credential(secret=setting.value, service=STORAGE)
    return None


def _entra_format(setting: _Setting) -> _Credential | None:
    if not values.is_entra_client_secret(setting.value):
        return None
    return _Credential(secret=setting.value, hint=_hint(setting.value))


# --- the table -----------------------------------------------------------------------------------

_CLIENT, _INBOUND, _SHARED = (FindingKind.CLIENT_SECRET, FindingKind.INBOUND,
                              FindingKind.SHARED_KEY)

RULES: tuple[_Rule, ...] = (
    _ValueShape(Rule.CONTENT_SHARE, _SHARED, _content_share_key, note=Note.CONTENT_SHARE,
                platform=True),
    # Positions, inbound first: their names would also fit the outbound rules below.
    _Position(Rule.EASY_AUTH, _INBOUND, _named("MICROSOFT_PROVIDER_AUTHENTICATION_SECRET"),
              _unpaired, note=Note.EASY_AUTH),
    _Position(Rule.EASY_AUTH_OTHER_PROVIDER, _INBOUND, _easy_auth_provider, _unpaired,
              entra=False, note=Note.EASY_AUTH_OTHER_PROVIDER),
    _Position(Rule.IDENTITY_WEB_CREDENTIALS, _INBOUND, _identity_web(slot=True),
              note=Note.IDENTITY_WEB),
    _Position(Rule.IDENTITY_WEB, _INBOUND, _identity_web(slot=False), note=Note.IDENTITY_WEB),
    _Position(Rule.FUNCTIONS_CONNECTION, _CLIENT, _functions_connection,
              note=Note.FUNCTIONS_CONNECTION),
    _Position(Rule.AZURE_IDENTITY_ENV, _CLIENT, _named("AZURE_CLIENT_SECRET")),
    _Position(Rule.ARM_ENV, _CLIENT, _named("ARM_CLIENT_SECRET")),
    _Position(Rule.CLIENT_SECRET_SETTING, _CLIENT, _client_secret_setting),
    _Position(Rule.CONTAINER_REGISTRY, _CLIENT, _container_registry, _principal_pairing,
              note=Note.CONTAINER_REGISTRY),
    _Position(Rule.PRINCIPAL_PASSWORD, _CLIENT, _principal_password, _principal_pairing),
    # Shapes: a credential wherever it sits.
    _ValueShape(Rule.SQL_SERVICE_PRINCIPAL, FindingKind.SQL_SERVICE_PRINCIPAL,
                _sql_service_principal),
    _ValueShape(Rule.STORAGE_ACCOUNT_KEY, _SHARED, _storage_account_key),
    _ValueShape(Rule.STORAGE_SAS, _SHARED, _storage_sas),
    _ValueShape(Rule.COSMOS_DB_KEY, _SHARED, _cosmos_db_key),
    _ValueShape(Rule.EVENT_HUBS_SAS, _SHARED, _messaging_sas(EVENT_HUBS)),
    _ValueShape(Rule.SERVICE_BUS_SAS, _SHARED, _messaging_sas(SERVICE_BUS)),
    _ValueShape(Rule.ACCOUNT_KEY_SETTING, _SHARED, _account_key_setting),
    _ValueShape(Rule.ENTRA_SECRET_FORMAT, _CLIENT, _entra_format, pair_by_name=True,
                note=Note.ENTRA_SECRET_FORMAT, platform=True),
)
