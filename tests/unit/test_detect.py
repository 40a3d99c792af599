"""Table tests for the detector: one site's settings in, findings out.

One row per rule and per decoy the rule must leave alone, so a change in classification shows
up as a named row. Secret values are generated when the module loads (random Entra-format
secrets, random base64 keys): no real-looking secret is written in this file, and every row
also checks that none of them appears in any finding.
"""

from __future__ import annotations

import base64
import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from migrator.detect import (
    ConnectionStringValue,
    FindingKind,
    KeyVaultRef,
    Note,
    Rule,
    SecretFinding,
    SiteSettings,
    detect,
    fingerprint,
)

SALT = b"table-test-salt"
_ENTRA_ALPHABET = string.ascii_letters + string.digits + "_~.-"


def entra_secret() -> str:
    """A random value in Entra's client-secret format: 3 chars, a digit, `Q~`, 31-34 chars."""
    def pick(n: int) -> str:
        return "".join(secrets.choice(_ENTRA_ALPHABET) for _ in range(n))
    return f"{pick(3)}{secrets.randbelow(10)}Q~{pick(31 + secrets.randbelow(4))}"


def legacy_secret() -> str:
    """A random secret in no particular format (older Entra secrets, other systems' keys)."""
    return secrets.token_urlsafe(24)


def base64_key(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def guid() -> str:
    return str(uuid.uuid4())


SECRET = entra_secret()
SECRET_2 = entra_secret()
LEGACY = legacy_secret()
SQL_PASSWORD = legacy_secret()
ACCOUNT_KEY = base64_key(64)
SAS_KEY = base64_key(32)
APP_SECRET_GUID = guid()  # a GUID where a secret belongs
APP, APP_2, TENANT = guid(), guid(), guid()
SECRETS = (SECRET, SECRET_2, LEGACY, SQL_PASSWORD, ACCOUNT_KEY, SAS_KEY)

KV_URI = "@Microsoft.KeyVault(SecretUri=https://kv-apps.vault.azure.net/secrets/sp-secret)"
KV_URI_VERSION = ("@Microsoft.KeyVault(SecretUri=https://kv-apps.vault.azure.net/secrets/"
                  "sp-secret/0123456789abcdef0123456789abcdef)")
KV_NAMES = "@Microsoft.KeyVault(VaultName=kv-apps;SecretName=sp-secret)"
KV_NAMES_VERSION = "@Microsoft.KeyVault(VaultName=kv-apps;SecretName=sp-secret;SecretVersion=v1)"
KV_REF = KeyVaultRef("kv-apps", "sp-secret")
STORAGE_CS = (f"DefaultEndpointsProtocol=https;AccountName=stapps;AccountKey={ACCOUNT_KEY};"
              "EndpointSuffix=core.windows.net")
SQL_CS = (f"Server=tcp:sql-apps.database.windows.net,1433;Database=appdb;"
          f"Authentication=Active Directory Service Principal;User Id={APP};"
          f"Password={SQL_PASSWORD}")
SB_CS = (f"Endpoint=sb://sb-apps.servicebus.windows.net/;SharedAccessKeyName=send;"
         f"SharedAccessKey={SAS_KEY}")

CLIENT, KV, SQL, INBOUND, SHARED = (
    FindingKind.CLIENT_SECRET, FindingKind.KEY_VAULT_REFERENCE,
    FindingKind.SQL_SERVICE_PRINCIPAL, FindingKind.INBOUND, FindingKind.SHARED_KEY)


@dataclass(frozen=True)
class Site:
    """A row's input: app settings, connection strings (name -> value) and sticky names."""

    app: dict[str, str]
    connection: dict[str, str] = field(default_factory=dict)
    sticky_app: frozenset[str] = frozenset()
    sticky_connection: frozenset[str] = frozenset()

    def settings(self) -> SiteSettings:
        return SiteSettings(
            app_settings=dict(self.app),
            connection_strings={n: ConnectionStringValue("Custom", v)
                                for n, v in self.connection.items()},
            sticky_app_settings=self.sticky_app,
            sticky_connection_strings=self.sticky_connection)


@dataclass(frozen=True)
class Want:
    """A row's expected finding; the fingerprint is checked for shape, the note by a phrase."""

    name: str
    kind: FindingKind
    rule: Rule
    source: str = "app_setting"
    sticky: bool = False
    client_id_setting: str | None = None
    client_id: str | None = None
    tenant_setting: str | None = None
    tenant_id: str | None = None
    hint: str | None = None
    key_vault: KeyVaultRef | None = None
    service: str | None = None
    note_has: str = ""

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sticky": self.sticky,
                "kind": self.kind, "rule": self.rule.value,
                "client_id_setting": self.client_id_setting, "client_id": self.client_id,
                "tenant_setting": self.tenant_setting, "tenant_id": self.tenant_id,
                "hint": self.hint, "key_vault": self.key_vault, "service": self.service}


def view(finding: SecretFinding) -> dict[str, Any]:
    def name(ref: Any) -> str | None:
        return ref.name if ref is not None else None
    return {"name": finding.secret.name, "source": finding.secret.source,
            "sticky": finding.secret.sticky, "kind": finding.kind, "rule": finding.rule,
            "client_id_setting": name(finding.client_id_setting), "client_id": finding.client_id,
            "tenant_setting": name(finding.tenant_setting), "tenant_id": finding.tenant_id,
            "hint": finding.hint, "key_vault": finding.key_vault, "service": finding.service}


def trio(prefix: str, sep: str, rule: Rule, kind: FindingKind = CLIENT, *,
         secret: str = SECRET, names: tuple[str, str, str] = ("CLIENT_SECRET", "CLIENT_ID",
                                                               "TENANT_ID"),
         note_has: str = "") -> tuple[Site, Want]:
    """A secret with its client id and tenant under one prefix, and the finding it gives."""
    secret_name, client_name, tenant_name = (f"{prefix}{sep}{n}" for n in names)
    site = Site({secret_name: secret, client_name: APP, tenant_name: TENANT})
    return site, Want(secret_name, kind, rule, client_id_setting=client_name, client_id=APP,
                      tenant_setting=tenant_name, tenant_id=TENANT, hint=secret[:3],
                      note_has=note_has)


def row(case: tuple[Site, Want], id: str) -> Any:
    site, want = case
    return pytest.param(site, (want,), id=id)


MIW = ("ClientSecret", "ClientId", "TenantId")

CASES = [
    # --- azure-identity's EnvironmentCredential and Terraform's ARM_* ------------------------
    row(trio("AZURE", "_", Rule.AZURE_IDENTITY_ENV), "azure-identity-trio"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": SECRET}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV, hint=SECRET[:3]),),
        id="azure-identity-secret-alone"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": SECRET, "AZURE_CLIENT_ID": APP},
                      sticky_app=frozenset({"AZURE_CLIENT_SECRET"})), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV, sticky=True,
             client_id_setting="AZURE_CLIENT_ID", client_id=APP, hint=SECRET[:3]),),
        id="azure-identity-sticky-secret"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": SECRET, "AZURE_CLIENT_ID": APP.upper(),
                       "AZURE_TENANT_ID": "Contoso.onmicrosoft.com"}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV,
             client_id_setting="AZURE_CLIENT_ID", client_id=APP,
             tenant_setting="AZURE_TENANT_ID", tenant_id="contoso.onmicrosoft.com",
             hint=SECRET[:3]),),
        id="azure-identity-upper-guid-domain-tenant"),
    row(trio("ARM", "_", Rule.ARM_ENV), "arm-trio"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": KV_URI_VERSION, "AZURE_CLIENT_ID": APP}), (
        Want("AZURE_CLIENT_SECRET", KV, Rule.AZURE_IDENTITY_ENV,
             client_id_setting="AZURE_CLIENT_ID", client_id=APP,
             key_vault=KeyVaultRef("kv-apps", "sp-secret", "0123456789abcdef0123456789abcdef")),),
        id="azure-identity-key-vault-uri-version"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": APP_SECRET_GUID}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV, hint=APP_SECRET_GUID[:3],
             note_has="GUID"),),
        id="guid-in-secret-setting-flagged-with-note"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": "@Microsoft.AppConfiguration(Endpoint=https://"
                       "appcs.azconfig.io; Key=sp-secret)"}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV,
             note_has="platform reference"),),
        id="app-configuration-reference-no-hint"),
    # A reference App Service cannot parse reaches the app as its own text (status InvalidSyntax):
    # neither a vault pointer nor a secret, so no hint of it, and a note that says so.
    *(pytest.param(Site({"AZURE_CLIENT_SECRET": value, "AZURE_CLIENT_ID": APP}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV,
             client_id_setting="AZURE_CLIENT_ID", client_id=APP,
             note_has="cannot parse (Key Vault status InvalidSyntax)"),), id=f"malformed-kv-{i}")
      for i, value in enumerate(("@MICROSOFT.KEYVAULT(", "@Microsoft.KeyVault(SecretUri=garbage)",
                                 "@Microsoft.KeyVault(VaultName=kv-apps)",
                                 "  @Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/"))),
    # --- Microsoft.Identity.Web: inbound ----------------------------------------------------
    row(trio("AzureAd", "__", Rule.IDENTITY_WEB, INBOUND, names=MIW,
             note_has="federated credential"), "identity-web-sections"),
    row(trio("AzureAd", ":", Rule.IDENTITY_WEB, INBOUND, names=MIW), "identity-web-colon"),
    row(trio("AzureAdB2C", "__", Rule.IDENTITY_WEB, INBOUND, names=MIW), "identity-web-b2c"),
    pytest.param(Site({"AzureAd__ClientCredentials__0__SourceType": "ClientSecret",
                       "AzureAd__ClientCredentials__0__ClientSecret": SECRET,
                       "AzureAd__ClientId": APP, "AzureAd__TenantId": TENANT}), (
        Want("AzureAd__ClientCredentials__0__ClientSecret", INBOUND,
             Rule.IDENTITY_WEB_CREDENTIALS, client_id_setting="AzureAd__ClientId",
             client_id=APP, tenant_setting="AzureAd__TenantId", tenant_id=TENANT,
             hint=SECRET[:3], note_has="SignedAssertionFromManagedIdentity"),),
        id="identity-web-client-credentials"),
    pytest.param(Site({"AzureAd__ClientSecret": SECRET, "AzureAd__ClientId": APP,
                       "AzureAd__Authority": f"https://login.microsoftonline.com/{TENANT}/v2.0"}), (
        Want("AzureAd__ClientSecret", INBOUND, Rule.IDENTITY_WEB,
             client_id_setting="AzureAd__ClientId", client_id=APP,
             tenant_setting="AzureAd__Authority", tenant_id=TENANT, hint=SECRET[:3]),),
        id="identity-web-tenant-from-authority"),
    pytest.param(Site({"AzureAd__ClientSecret": SECRET, "AzureAd__ClientId": APP,
                       "AzureAd__Instance": "https://login.microsoftonline.com/"}), (
        Want("AzureAd__ClientSecret", INBOUND, Rule.IDENTITY_WEB,
             client_id_setting="AzureAd__ClientId", client_id=APP, hint=SECRET[:3]),),
        id="identity-web-instance-names-no-tenant"),
    pytest.param(Site({"AzureAd__ClientSecret": KV_NAMES_VERSION, "AzureAd__ClientId": APP}), (
        Want("AzureAd__ClientSecret", INBOUND, Rule.IDENTITY_WEB,
             client_id_setting="AzureAd__ClientId", client_id=APP,
             key_vault=KeyVaultRef("kv-apps", "sp-secret", "v1")),),
        id="identity-web-key-vault-stays-inbound"),
    # --- App Service Authentication (Easy Auth): inbound -------------------------------------
    pytest.param(Site({"MICROSOFT_PROVIDER_AUTHENTICATION_SECRET": SECRET,
                       "WEBSITE_AUTH_AAD_ALLOWED_TENANTS": TENANT}), (
        Want("MICROSOFT_PROVIDER_AUTHENTICATION_SECRET", INBOUND, Rule.EASY_AUTH,
             hint=SECRET[:3], note_has="Easy Auth"),),
        id="easy-auth-microsoft"),
    pytest.param(Site({"MICROSOFT_PROVIDER_AUTHENTICATION_SECRET": KV_URI}), (
        Want("MICROSOFT_PROVIDER_AUTHENTICATION_SECRET", INBOUND, Rule.EASY_AUTH,
             key_vault=KV_REF),),
        id="easy-auth-key-vault"),
    pytest.param(Site({"GOOGLE_PROVIDER_AUTHENTICATION_SECRET": LEGACY}), (
        Want("GOOGLE_PROVIDER_AUTHENTICATION_SECRET", INBOUND, Rule.EASY_AUTH_OTHER_PROVIDER,
             note_has="non-Entra"),),
        id="easy-auth-google-no-hint"),
    pytest.param(Site({"MYOIDC_PROVIDER_AUTHENTICATION_SECRET": LEGACY}), (
        Want("MYOIDC_PROVIDER_AUTHENTICATION_SECRET", INBOUND, Rule.EASY_AUTH_OTHER_PROVIDER),),
        id="easy-auth-custom-provider"),
    # --- any other client secret, by name ---------------------------------------------------
    row(trio("MyApi", "__", Rule.CLIENT_SECRET_SETTING, names=MIW), "generic-sections"),
    row(trio("MYAPI", "_", Rule.CLIENT_SECRET_SETTING), "generic-environment-style"),
    row(trio("Reporting", "__", Rule.CLIENT_SECRET_SETTING, secret=LEGACY,
             names=("ClientSecret", "ApplicationId", "TenantID")), "generic-application-id"),
    row(trio("reporting", "__", Rule.CLIENT_SECRET_SETTING,
             names=("clientsecret", "clientid", "tenantid")), "generic-lower-case"),
    pytest.param(Site({"ClientSecret": SECRET, "ClientId": APP, "TenantID": TENANT}), (
        Want("ClientSecret", CLIENT, Rule.CLIENT_SECRET_SETTING, client_id_setting="ClientId",
             client_id=APP, tenant_setting="TenantID", tenant_id=TENANT, hint=SECRET[:3]),),
        id="generic-no-prefix"),
    pytest.param(Site({"ServicePrincipalKey": LEGACY, "ServicePrincipalId": APP,
                       "TenantId": TENANT}), (
        Want("ServicePrincipalKey", CLIENT, Rule.CLIENT_SECRET_SETTING,
             client_id_setting="ServicePrincipalId", client_id=APP, tenant_setting="TenantId",
             tenant_id=TENANT, hint=LEGACY[:3]),),
        id="generic-service-principal-key"),
    pytest.param(Site({"MyApi__ClientSecret": SECRET, "AZURE_CLIENT_ID": APP}), (
        Want("MyApi__ClientSecret", CLIENT, Rule.CLIENT_SECRET_SETTING, hint=SECRET[:3]),),
        id="generic-pairs-only-its-own-prefix"),
    pytest.param(Site({"MyApi__ClientSecret": KV_NAMES, "MyApi__ClientId": APP}), (
        Want("MyApi__ClientSecret", KV, Rule.CLIENT_SECRET_SETTING,
             client_id_setting="MyApi__ClientId", client_id=APP, key_vault=KV_REF),),
        id="generic-key-vault-vault-name"),
    pytest.param(Site({"GITHUB_CLIENT_SECRET": SECRET, "GITHUB_CLIENT_ID": "Iv1.8a61f9b3a7aba766"}), (
        Want("GITHUB_CLIENT_SECRET", CLIENT, Rule.CLIENT_SECRET_SETTING,
             client_id_setting="GITHUB_CLIENT_ID", hint=SECRET[:3]),),
        id="generic-entra-value-beats-foreign-client-id"),
    # --- a principal's password or secret beside its GUID id ----------------------------------
    row(trio("SP", "_", Rule.PRINCIPAL_PASSWORD, secret=LEGACY,
             names=("PASSWORD", "APP_ID", "TENANT_ID")), "sp-password-app-id"),
    row(trio("SP", "_", Rule.PRINCIPAL_PASSWORD, names=("PASSWORD", "CLIENT_ID", "TENANT")),
        "sp-password-client-id"),
    row(trio("Microsoft", "", Rule.PRINCIPAL_PASSWORD, secret=LEGACY,
             names=("AppPassword", "AppId", "AppTenantId")), "bot-framework-app-password"),
    row(trio("ida", ":", Rule.PRINCIPAL_PASSWORD, secret=LEGACY,
             names=("AppKey", "ClientId", "Tenant")), "adal-app-key"),
    pytest.param(Site({"DOCKER_REGISTRY_SERVER_URL": "https://acrapps.azurecr.io",
                       "DOCKER_REGISTRY_SERVER_USERNAME": APP,
                       "DOCKER_REGISTRY_SERVER_PASSWORD": LEGACY}), (
        Want("DOCKER_REGISTRY_SERVER_PASSWORD", CLIENT, Rule.CONTAINER_REGISTRY,
             client_id_setting="DOCKER_REGISTRY_SERVER_USERNAME", client_id=APP,
             hint=LEGACY[:3], note_has="acrUseManagedIdentityCreds"),),
        id="container-registry-principal"),
    # --- Functions identity-based connections ------------------------------------------------
    pytest.param(Site({"ServiceBusConnection__fullyQualifiedNamespace":
                       "sb-apps.servicebus.windows.net",
                       "ServiceBusConnection__clientId": APP,
                       "ServiceBusConnection__tenantId": TENANT,
                       "ServiceBusConnection__clientSecret": SECRET}), (
        Want("ServiceBusConnection__clientSecret", CLIENT, Rule.FUNCTIONS_CONNECTION,
             client_id_setting="ServiceBusConnection__clientId", client_id=APP,
             tenant_setting="ServiceBusConnection__tenantId", tenant_id=TENANT,
             hint=SECRET[:3], note_has="__credential=managedidentity"),),
        id="functions-service-bus"),
    pytest.param(Site({"EVENTS__FULLYQUALIFIEDNAMESPACE": "eh-apps.servicebus.windows.net",
                       "EVENTS__CLIENTID": APP, "EVENTS__CLIENTSECRET": SECRET}), (
        Want("EVENTS__CLIENTSECRET", CLIENT, Rule.FUNCTIONS_CONNECTION,
             client_id_setting="EVENTS__CLIENTID", client_id=APP, hint=SECRET[:3]),),
        id="functions-case-insensitive"),
    pytest.param(Site({"AzureWebJobsStorage__accountName": "stapps",
                       "AzureWebJobsStorage__clientId": APP,
                       "AzureWebJobsStorage__clientSecret": KV_URI}), (
        Want("AzureWebJobsStorage__clientSecret", KV, Rule.FUNCTIONS_CONNECTION,
             client_id_setting="AzureWebJobsStorage__clientId", client_id=APP,
             key_vault=KV_REF),),
        id="functions-host-storage-key-vault"),
    row(trio("Orders", "__", Rule.CLIENT_SECRET_SETTING,
             names=("clientSecret", "clientId", "tenantId")),
        "functions-lookalike-without-endpoint-is-generic"),
    # --- Entra's secret format under any name ------------------------------------------------
    pytest.param(Site({"Reporting__Token": SECRET, "Reporting__ClientId": APP,
                       "Reporting__TenantId": TENANT}), (
        Want("Reporting__Token", CLIENT, Rule.ENTRA_SECRET_FORMAT,
             client_id_setting="Reporting__ClientId", client_id=APP,
             tenant_setting="Reporting__TenantId", tenant_id=TENANT, hint=SECRET[:3],
             note_has="format"),),
        id="entra-format-paired-by-prefix"),
    pytest.param(Site({"GRAPH_TOKEN": SECRET, "GRAPH_APP_ID": APP}), (
        Want("GRAPH_TOKEN", CLIENT, Rule.ENTRA_SECRET_FORMAT, client_id_setting="GRAPH_APP_ID",
             client_id=APP, hint=SECRET[:3]),),
        id="entra-format-environment-style-pairing"),
    pytest.param(Site({"Something": SECRET, "Other__ClientId": APP}), (
        Want("Something", CLIENT, Rule.ENTRA_SECRET_FORMAT, hint=SECRET[:3]),),
        id="entra-format-alone"),
    pytest.param(Site({"JWT_SECRET": SECRET}), (
        Want("JWT_SECRET", CLIENT, Rule.ENTRA_SECRET_FORMAT, hint=SECRET[:3]),),
        id="entra-format-beats-decoy-name"),
    pytest.param(Site({"DB_PASSWORD": SECRET, "DB_USER": "app"}), (
        Want("DB_PASSWORD", CLIENT, Rule.ENTRA_SECRET_FORMAT, hint=SECRET[:3]),),
        id="entra-format-in-password-setting"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": SECRET, "AZURE_CLIENT_ID": APP,
                       "OTHER_SECRET": SECRET_2}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV,
             client_id_setting="AZURE_CLIENT_ID", client_id=APP, hint=SECRET[:3]),
        Want("OTHER_SECRET", CLIENT, Rule.ENTRA_SECRET_FORMAT, hint=SECRET_2[:3])),
        id="entra-format-no-double-report"),
    # --- Azure SQL as a service principal -----------------------------------------------------
    pytest.param(Site({}, connection={"Db": SQL_CS}), (
        Want("Db", SQL, Rule.SQL_SERVICE_PRINCIPAL, source="connection_string", client_id=APP,
             hint=SQL_PASSWORD[:3]),),
        id="sql-connection-string"),
    pytest.param(Site({}, connection={"Db": SQL_CS}, sticky_connection=frozenset({"Db"})), (
        Want("Db", SQL, Rule.SQL_SERVICE_PRINCIPAL, source="connection_string", sticky=True,
             client_id=APP, hint=SQL_PASSWORD[:3]),),
        id="sql-sticky-connection-string"),
    pytest.param(Site({"SQL_CONNECTION": f"server=sql-apps.database.windows.net; database=appdb;"
                       f" authentication = active directory service principal ; UID = {APP} ;"
                       f" PWD = {SQL_PASSWORD}"}), (
        Want("SQL_CONNECTION", SQL, Rule.SQL_SERVICE_PRINCIPAL, client_id=APP,
             hint=SQL_PASSWORD[:3]),),
        id="sql-app-setting-uid-pwd-spaces"),
    pytest.param(Site({"Sql": f"Server=s;Authentication=Active Directory Service Principal;"
                       f"User={APP};Password=\"a;b{SQL_PASSWORD}\""}), (
        Want("Sql", SQL, Rule.SQL_SERVICE_PRINCIPAL, client_id=APP, hint="a;b"),),
        id="sql-quoted-password-with-semicolon"),
    pytest.param(Site({}, connection={"Odbc": f"Driver={{ODBC Driver 18 for SQL Server}};"
                                              f"Server=s;Authentication=ActiveDirectoryServicePrincipal;"
                                              f"UID={APP};PWD={{{SQL_PASSWORD}}}"}), (
        Want("Odbc", SQL, Rule.SQL_SERVICE_PRINCIPAL, source="connection_string",
             client_id=APP, hint=SQL_PASSWORD[:3]),),
        id="sql-odbc-braces"),
    pytest.param(Site({"JDBC_URL": f"jdbc:sqlserver://s.database.windows.net:1433;database=d;"
                       f"authentication=ActiveDirectoryServicePrincipal;"
                       f"AADSecurePrincipalId={APP};AADSecurePrincipalSecret={SQL_PASSWORD}"}), (
        Want("JDBC_URL", SQL, Rule.SQL_SERVICE_PRINCIPAL, client_id=APP,
             hint=SQL_PASSWORD[:3]),),
        id="sql-jdbc"),
    pytest.param(Site({"Db": f"Server=s;Authentication=Active Directory Service Principal;"
                       f"User Id={APP}@{TENANT};Password={SQL_PASSWORD}"}), (
        Want("Db", SQL, Rule.SQL_SERVICE_PRINCIPAL, client_id=APP, tenant_id=TENANT,
             hint=SQL_PASSWORD[:3]),),
        id="sql-user-at-tenant"),
    # --- shared keys -----------------------------------------------------------------------
    pytest.param(Site({"AzureWebJobsStorage": STORAGE_CS}), (
        Want("AzureWebJobsStorage", SHARED, Rule.STORAGE_ACCOUNT_KEY, service="storage"),),
        id="storage-webjobs"),
    pytest.param(Site({}, connection={"Blobs": STORAGE_CS}), (
        Want("Blobs", SHARED, Rule.STORAGE_ACCOUNT_KEY, source="connection_string",
             service="storage"),),
        id="storage-connection-string"),
    pytest.param(Site({"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING": STORAGE_CS,
                       "WEBSITE_CONTENTSHARE": "apps-content"}), (
        Want("WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", SHARED, Rule.CONTENT_SHARE,
             service="storage", note_has="cannot go passwordless"),),
        id="content-share-needs-its-key"),
    pytest.param(Site({"MY_STORAGE_KEY": ACCOUNT_KEY}), (
        Want("MY_STORAGE_KEY", SHARED, Rule.ACCOUNT_KEY_SETTING, service="storage"),),
        id="storage-key-setting"),
    pytest.param(Site({"Storage__AccountKey": ACCOUNT_KEY}), (
        Want("Storage__AccountKey", SHARED, Rule.ACCOUNT_KEY_SETTING, service="storage"),),
        id="account-key-setting"),
    pytest.param(Site({"Cosmos__AccountKey": ACCOUNT_KEY}), (
        Want("Cosmos__AccountKey", SHARED, Rule.ACCOUNT_KEY_SETTING, service="cosmosdb"),),
        id="cosmos-key-setting"),
    pytest.param(Site({"CosmosDb": "AccountEndpoint=https://cosmos-apps.documents.azure.com:443/;"
                       f"AccountKey={ACCOUNT_KEY};"}), (
        Want("CosmosDb", SHARED, Rule.COSMOS_DB_KEY, service="cosmosdb"),),
        id="cosmos-connection-string"),
    pytest.param(Site({"ServiceBus": SB_CS}), (
        Want("ServiceBus", SHARED, Rule.SERVICE_BUS_SAS, service="servicebus"),),
        id="servicebus-sas"),
    pytest.param(Site({"Queue": f"{SB_CS};EntityPath=orders"}), (
        Want("Queue", SHARED, Rule.SERVICE_BUS_SAS, service="servicebus"),),
        id="servicebus-sas-queue-entity-path"),
    pytest.param(Site({"Telemetry": f"{SB_CS};EntityPath=telemetry-eventhub"}), (
        Want("Telemetry", SHARED, Rule.EVENT_HUBS_SAS, service="eventhubs"),),
        id="eventhubs-by-entity-path"),
    pytest.param(Site({"EventHubConnection": SB_CS}), (
        Want("EventHubConnection", SHARED, Rule.EVENT_HUBS_SAS, service="eventhubs"),),
        id="eventhubs-by-name"),
    pytest.param(Site({"Blob": "BlobEndpoint=https://stapps.blob.core.windows.net/;"
                       f"SharedAccessSignature=sv=2022-11-02&ss=b&sig={SAS_KEY}"}), (
        Want("Blob", SHARED, Rule.STORAGE_SAS, service="storage"),),
        id="storage-sas"),
    # --- several at once: sorted by setting name -------------------------------------------------
    pytest.param(Site({"b_STORAGE": STORAGE_CS, "AZURE_CLIENT_SECRET": SECRET},
                      connection={"a_Db": SQL_CS}), (
        Want("AZURE_CLIENT_SECRET", CLIENT, Rule.AZURE_IDENTITY_ENV, hint=SECRET[:3]),
        Want("a_Db", SQL, Rule.SQL_SERVICE_PRINCIPAL, source="connection_string",
             client_id=APP, hint=SQL_PASSWORD[:3]),
        Want("b_STORAGE", SHARED, Rule.STORAGE_ACCOUNT_KEY, service="storage")),
        id="several-sorted-by-name"),
    # --- decoys: nothing to report ------------------------------------------------------------
    pytest.param(Site({"APPINSIGHTS_INSTRUMENTATIONKEY": guid()}), (),
                 id="no-appinsights-key"),
    pytest.param(Site({"APPLICATIONINSIGHTS_CONNECTION_STRING": f"InstrumentationKey={guid()};"
                       "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/;"
                       f"ApplicationId={guid()}"}), (),
                 id="no-appinsights-connection-string"),
    pytest.param(Site({"WEBSITE_RUN_FROM_PACKAGE": "1", "WEBSITES_PORT": "8080",
                       "WEBSITE_AUTH_AAD_ALLOWED_TENANTS": TENANT,
                       "WEBSITE_AUTH_ENCRYPTION_KEY": base64_key(32),
                       "WEBSITE_RUN_FROM_PACKAGE_BLOB_MI_RESOURCE_ID": "/subscriptions/x"}), (),
                 id="no-website-platform-settings"),
    pytest.param(Site({"FUNCTIONS_EXTENSION_VERSION": "~4", "FUNCTIONS_WORKER_RUNTIME": "python",
                       "AzureWebJobsFeatureFlags": "EnableWorkerIndexing"}), (),
                 id="no-functions-platform-settings"),
    pytest.param(Site({"JWT_SECRET": legacy_secret(), "STRIPE_SECRET_KEY": f"sk_test_{LEGACY}",
                       "SENDGRID_API_KEY": f"SG.{LEGACY}", "SESSION_SECRET": legacy_secret(),
                       "SIGNING_KEY": ACCOUNT_KEY}), (),
                 id="no-app-own-keys"),
    pytest.param(Site({"AZURE_CLIENT_ID": APP, "AZURE_TENANT_ID": TENANT}), (),
                 id="no-user-assigned-identity-selector"),
    pytest.param(Site({"ServiceBusConnection__fullyQualifiedNamespace": "sb.servicebus.windows.net",
                       "ServiceBusConnection__credential": "managedidentity",
                       "ServiceBusConnection__clientId": APP}), (),
                 id="no-functions-managed-identity-connection"),
    pytest.param(Site({"AZURE_CLIENT_SECRET": "", "MyApi__ClientSecret": "   ",
                       "AzureAd__ClientSecret": "", "AZURE_CLIENT_ID": APP}), (),
                 id="no-empty-values"),
    pytest.param(Site({"DB_CONNECTION": KV_URI, "ApiKey": KV_NAMES}), (),
                 id="no-key-vault-outside-secret-position"),
    pytest.param(Site({"AZURE_CLIENT_ID": KV_URI, "AZURE_TENANT_ID": KV_NAMES}), (),
                 id="no-key-vault-in-identifier"),
    pytest.param(Site({}, connection={"Db": f"Server=s;Database=d;User Id=appuser;"
                                            f"Password={SQL_PASSWORD}"}), (),
                 id="no-sql-login"),
    pytest.param(Site({"Db": f"Server=s;Authentication=Active Directory Managed Identity;"
                       f"User Id={APP}"}), (),
                 id="no-sql-managed-identity"),
    pytest.param(Site({"Db": f"Server=s;Authentication=Active Directory Service Principal;"
                       f"User Id={APP}"}), (),
                 id="no-sql-principal-without-password"),
    pytest.param(Site({"Db": f"Server=s;Authentication=Active Directory Password;"
                       f"User Id=someone@contoso.com;Password={SQL_PASSWORD}"}), (),
                 id="no-sql-user-password"),
    pytest.param(Site({"GITHUB_CLIENT_ID": "Iv1.8a61f9b3a7aba766",
                       "GITHUB_CLIENT_SECRET": secrets.token_hex(20)}), (),
                 id="no-github-oauth-app"),
    pytest.param(Site({"Google__ClientId": "1234-abc.apps.googleusercontent.com",
                       "Google__ClientSecret": f"GOCSPX-{LEGACY}"}), (),
                 id="no-google-oauth-app"),
    pytest.param(Site({"DB_USER": "app", "DB_PASSWORD": LEGACY, "DB_CLIENT_ID": APP}), (),
                 id="no-password-beside-a-login"),
    pytest.param(Site({"SP_APP_ID": "orders-app", "SP_PASSWORD": LEGACY}), (),
                 id="no-password-beside-non-guid-app-id"),
    pytest.param(Site({"SP_PASSWORD": LEGACY}), (), id="no-password-alone"),
    pytest.param(Site({"AZURE_USERNAME": "someone@contoso.com", "AZURE_PASSWORD": LEGACY,
                       "AZURE_CLIENT_ID": APP, "AZURE_TENANT_ID": TENANT}), (),
                 id="no-user-password-credential"),
    pytest.param(Site({"DOCKER_REGISTRY_SERVER_USERNAME": "acrapps",
                       "DOCKER_REGISTRY_SERVER_PASSWORD": LEGACY}), (),
                 id="no-registry-admin-user"),
    pytest.param(Site({"AzureWebJobsStorage": "UseDevelopmentStorage=true",
                       "Emulator": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                                   f"AccountKey={ACCOUNT_KEY}"}), (),
                 id="no-storage-emulator"),
    pytest.param(Site({"ServiceBus": "Endpoint=sb://sb-apps.servicebus.windows.net/;"
                                     "Authentication=Managed Identity"}), (),
                 id="no-servicebus-without-key"),
    pytest.param(Site({"AzureWebJobsStorage__accountName": "stapps",
                       "AzureWebJobsStorage__credential": "managedidentity"}), (),
                 id="no-identity-based-host-storage"),
    pytest.param(Site({"MY_STORAGE_KEY": base64_key(32), "OTHER_STORAGE_KEY": "not-a-key"}), (),
                 id="no-storage-key-of-wrong-size"),
    pytest.param(Site({"NoMarker": SECRET.replace("Q~", "Qx"), "TooShort": SECRET[:20],
                       "Embedded": f"prefix {SECRET} suffix"}), (),
                 id="no-entra-format-lookalikes"),
    pytest.param(Site({"FeatureFlags__NewCheckout": "true", "ASPNETCORE_ENVIRONMENT": "Production",
                       "AzureAd__Instance": "https://login.microsoftonline.com/",
                       "AzureAd__ClientId": APP, "AzureAd__TenantId": TENANT}), (),
                 id="no-identity-web-without-secret"),
]


@pytest.mark.parametrize(("site", "wanted"), CASES)
def test_detect_table(site: Site, wanted: tuple[Want, ...]) -> None:
    found = detect(site.settings(), salt=SALT)
    assert [view(f) for f in found] == [w.view() for w in wanted]
    for finding, want in zip(found, wanted, strict=True):
        assert want.note_has in finding.note
        assert finding.fingerprint is not None
        assert len(finding.fingerprint) == 16
        assert set(finding.fingerprint) <= set(string.hexdigits.lower())
    text = repr(found)
    assert not [s for s in SECRETS if s[3:] in text], "a secret value leaked into a finding"


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 50
    positive = {w.rule for case in CASES for w in case.values[1]}
    assert positive == set(Rule), f"rules without a row: {set(Rule) - positive}"


# --- fingerprints, pairing details, notes ------------------------------------------------------


def _one(app: dict[str, str], *, salt: bytes = SALT,
         connection: dict[str, str] | None = None) -> SecretFinding:
    found = detect(Site(app, connection or {}).settings(), salt=salt)
    assert len(found) == 1, found
    return found[0]


def test_fingerprint_is_salted_hmac_of_the_secret() -> None:
    finding = _one({"AZURE_CLIENT_SECRET": SECRET})
    assert finding.fingerprint == fingerprint(SALT, SECRET)
    assert finding.fingerprint != fingerprint(b"other salt", SECRET)


def test_fingerprint_groups_one_secret_wherever_it_sits() -> None:
    in_env = _one({"AZURE_CLIENT_SECRET": SECRET})
    in_section = _one({"MyApi__ClientSecret": f"  {SECRET}\n"})
    in_sql = _one({}, connection={"Db": SQL_CS.replace(SQL_PASSWORD, SECRET)})
    assert in_env.fingerprint == in_section.fingerprint == in_sql.fingerprint


def test_fingerprint_groups_a_shared_key_across_connection_strings() -> None:
    webjobs = _one({"AzureWebJobsStorage": STORAGE_CS})
    content = _one({"WEBSITE_CONTENTAZUREFILECONNECTIONSTRING":
                    f"AccountKey={ACCOUNT_KEY};AccountName=stapps;DefaultEndpointsProtocol=https"})
    bare = _one({"MY_STORAGE_KEY": ACCOUNT_KEY})
    assert webjobs.fingerprint == content.fingerprint == bare.fingerprint


def test_fingerprint_of_key_vault_reference_ignores_its_spelling() -> None:
    by_uri = _one({"AZURE_CLIENT_SECRET": KV_URI})
    by_names = _one({"MyApi__ClientSecret": KV_NAMES.replace("kv-apps", "KV-Apps")})
    assert by_uri.fingerprint == by_names.fingerprint
    assert by_uri.hint is None


def test_paired_settings_carry_their_own_stickiness() -> None:
    site = Site({"AZURE_CLIENT_SECRET": SECRET, "AZURE_CLIENT_ID": APP, "AZURE_TENANT_ID": TENANT},
                sticky_app=frozenset({"AZURE_CLIENT_ID"}),
                sticky_connection=frozenset({"AZURE_CLIENT_SECRET"}))  # wrong source: not sticky
    (finding,) = detect(site.settings(), salt=SALT)
    assert finding.secret.sticky is False
    assert finding.client_id_setting is not None and finding.client_id_setting.sticky is True
    assert finding.tenant_setting is not None and finding.tenant_setting.sticky is False


def test_client_id_prefers_app_settings_then_name_order() -> None:
    finding = _one({"MyApi__ClientSecret": SECRET, "MyApi__ClientId": APP,
                    "MyApi__AppId": APP_2})
    assert finding.client_id_setting is not None
    assert (finding.client_id_setting.name, finding.client_id) == ("MyApi__AppId", APP_2)


def test_inbound_findings_are_not_outbound() -> None:
    finding = _one({"AzureAd__ClientSecret": SECRET})
    assert finding.kind is FindingKind.INBOUND
    assert not finding.outbound
    assert _one({"ARM_CLIENT_SECRET": SECRET}).outbound


def test_notes_are_made_of_fixed_sentences() -> None:
    finding = _one({"AzureAd__ClientSecret": APP_SECRET_GUID})
    assert finding.note.split("; ") == [Note.IDENTITY_WEB.value, Note.GUID_SECRET.value]


def test_notes_split_cleanly() -> None:
    assert not [note for note in Note if "; " in note.value]


def test_identifiers_pair_from_app_settings_only() -> None:
    """A connection string named AZURE_CLIENT_ID reaches the app as CUSTOMCONNSTR_…: no pair."""
    finding = _one({"AZURE_CLIENT_SECRET": SECRET}, connection={"AZURE_CLIENT_ID": APP})
    assert finding.client_id_setting is None


def test_short_value_gets_no_hint() -> None:
    assert _one({"AZURE_CLIENT_SECRET": "abc"}).hint is None
    assert _one({"AZURE_CLIENT_SECRET": "abcd"}).hint == "abc"
