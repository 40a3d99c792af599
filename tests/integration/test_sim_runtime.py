"""The simulated app runtime (the health oracle) keeps azure-identity's promises.

Each test starts `migrator.sim` on tests/fixtures/runtime_estate.yaml, performs migration steps
through the real SDKs signed in as the operator (azure-mgmt-web, azure-mgmt-authorization,
azure-mgmt-keyvault, msgraph-sdk; T-SQL through the simulator's `/_sim/sql`), and asks the
site's health route whether the app still works, checking the status code *and* the
credential and failing need the runtime reports. The rules pinned here are in
../shared/AZURE-FACTS.md ("azure-identity environment semantics", "Key Vault", "RBAC").
"""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    AccessPolicyUpdateKind,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import (
    ConnectionStringDictionary,
    ConnStringValueTypePair,
    ManagedServiceIdentity,
    SitePatchResource,
    StringDictionary,
    UserAssignedIdentity,
)
from msgraph.generated.models.app_role_assignment import AppRoleAssignment

from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.cloud.profiles import load_profile
from migrator.sim.estate import load_estate
from migrator.sim.runtime import Runtime
from migrator.sim.server import SimEndpoints, SimServer
from migrator.sim.state import NO_DELAYS

pytestmark = [
    pytest.mark.integration,
    # msgraph-sdk 1.x warns about its own generated request configuration classes.
    pytest.mark.filterwarnings("ignore:This class is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:GetQueryParameters is deprecated:DeprecationWarning"),
]

ESTATE = Path(__file__).resolve().parents[1] / "fixtures" / "runtime_estate.yaml"
RG = "rg-orders"
TRIO = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")
BLOB_READ = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read"
ROLE_NEED = f"{BLOB_READ} on /subscriptions/prod/resourceGroups/rg-orders"
KV_NEED = "key vault secret kv-orders/db-password"
GRAPH_NEED = "graph User.Read.All"
SQL_NEED = "sql Db"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SQL_SCRIPT = ("CREATE USER [{name}] FROM EXTERNAL PROVIDER; "
              "ALTER ROLE db_datareader ADD MEMBER [{name}];")


class Cloud:
    """One running simulator, the operator's SDK clients, and the migration steps."""

    def __init__(self, server: SimServer, ep: SimEndpoints) -> None:
        self.server = server
        self.ep = ep
        self.tenant = server.tenant
        self.profile = load_profile(str(ep.profile_path))
        self.factory = ClientFactory(self.profile, secret_credential(
            self.profile, ep.tenant_id, ep.operator_client_id, ep.operator_secret))
        self.sub_id = next(s.id for s in self.tenant.subscriptions.values() if s.name == "prod")
        self.web: WebSiteManagementClient = self.factory.web(self.sub_id)
        self.authz: AuthorizationManagementClient = self.factory.authorization(self.sub_id)
        self.kv: KeyVaultManagementClient = self.factory.keyvault(self.sub_id)
        self.http = httpx.Client(base_url=ep.base_url, timeout=30,
                                 verify=ssl.create_default_context(cafile=str(ep.ca_bundle)))
        self._graph_used = False

    def close(self) -> None:
        # A keep-alive TLS connection left open can hold up the server's stop.
        for client in (self.web, self.authz, self.kv):
            client.close()
        if self._graph_used:
            graph = self.factory.graph()
            transport = graph.request_adapter._http_client._transport
            # msgraph-core's AsyncGraphTransport does not close the transport it wraps.
            self.factory.run_graph(getattr(transport, "transport", transport).aclose())
        self.factory.close()
        self.http.close()

    # -- the independent witness

    def health(self, app: str) -> tuple[int, dict[str, Any]]:
        site, _, slot = app.partition("/")
        path = f"/_sites/{site}/slots/{slot}/healthz" if slot else f"/_sites/{site}/healthz"
        response = self.http.get(path)
        return response.status_code, response.json()

    @staticmethod
    def needs(report: dict[str, Any]) -> dict[str, tuple[bool, str]]:
        return {n["need"]: (n["ok"], n["detail"]) for n in report["needs"]}

    # -- names

    def object_id(self, name: str) -> str:
        return self.tenant.names[name]

    def app_id(self, principal: str) -> str:
        return self.tenant.service_principals[self.object_id(principal)].app_id

    def uai_id(self, name: str) -> str:
        return (f"/subscriptions/{self.sub_id}/resourceGroups/{RG}/providers/"
                f"Microsoft.ManagedIdentity/userAssignedIdentities/{name}")

    @property
    def rg_scope(self) -> str:
        return f"/subscriptions/{self.sub_id}/resourceGroups/{RG}"

    # -- Microsoft.Web

    def enable_system_identity(self, site: str, slot: str | None = None) -> str:
        patch = SitePatchResource(identity=ManagedServiceIdentity(type="SystemAssigned"))
        result = (self.web.web_apps.update_slot(RG, site, slot, patch) if slot
                  else self.web.web_apps.update(RG, site, patch))
        assert result.identity is not None
        assert result.identity.principal_id
        return str(result.identity.principal_id)

    def settings(self, site: str, slot: str | None = None) -> dict[str, str]:
        got = (self.web.web_apps.list_application_settings_slot(RG, site, slot) if slot
               else self.web.web_apps.list_application_settings(RG, site))
        return dict(got.properties or {})

    def change_settings(self, site: str, *, remove: tuple[str, ...] = (),
                        put: dict[str, str] | None = None, slot: str | None = None) -> None:
        current = self.settings(site, slot)
        for key in remove:
            current.pop(key, None)
        current.update(put or {})
        body = StringDictionary(properties=current)
        if slot:
            self.web.web_apps.update_application_settings_slot(RG, site, slot, body)
        else:
            self.web.web_apps.update_application_settings(RG, site, body)

    def set_connection_string(self, site: str, name: str, value: str) -> None:
        current = self.web.web_apps.list_connection_strings(RG, site).properties or {}
        current[name] = ConnStringValueTypePair(value=value, type="SQLAzure")
        self.web.web_apps.update_connection_strings(
            RG, site, ConnectionStringDictionary(properties=current))

    # -- rights

    def assign_role(self, scope: str, role_id: str, principal_id: str, *,
                    principal_type: str | None = "ServicePrincipal") -> None:
        role_guid = role_id.rsplit("/", 1)[-1]
        name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{scope}|{principal_id}|{role_guid}"))
        params = RoleAssignmentCreateParameters(
            role_definition_id=(f"/subscriptions/{self.sub_id}/providers/"
                                f"Microsoft.Authorization/roleDefinitions/{role_guid}"),
            principal_id=principal_id, principal_type=principal_type)
        self.authz.role_assignments.create(scope, name, params)

    def copy_role_assignments(self, source_principal: str, target_principal_id: str) -> int:
        found = list(self.authz.role_assignments.list_for_subscription(
            filter=f"principalId eq '{self.object_id(source_principal)}'"))
        for ra in found:
            self.assign_role(str(ra.scope), str(ra.role_definition_id), target_principal_id)
        return len(found)

    def add_access_policy(self, vault: str, object_id: str,
                          secrets: list[str] | None = None) -> None:
        entry = AccessPolicyEntry(tenant_id=self.ep.tenant_id, object_id=object_id,
                                  permissions=Permissions(secrets=secrets or ["get", "list"]))
        self.kv.vaults.update_access_policy(
            RG, vault, AccessPolicyUpdateKind.ADD,
            VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(
                access_policies=[entry])))

    def copy_access_policy(self, vault: str, source_principal: str, target_id: str) -> None:
        got = self.kv.vaults.get(RG, vault)
        source = self.object_id(source_principal)
        entry = next(p for p in got.properties.access_policies if p.object_id == source)
        # The SDK hands back SecretPermissions members; str() of one is not its value.
        self.add_access_policy(vault, target_id,
                               [getattr(s, "value", s) for s in entry.permissions.secrets])

    def copy_graph_app_roles(self, source_principal: str, target_id: str) -> int:
        """Re-grant every app role the source holds (Microsoft Graph's included) to target."""
        self._graph_used = True
        graph = self.factory.graph()
        held = self.factory.run_graph(graph.service_principals.by_service_principal_id(
            self.object_id(source_principal)).app_role_assignments.get())
        assert held is not None
        assert held.value is not None
        for grant in held.value:
            body = AppRoleAssignment(principal_id=uuid.UUID(target_id),
                                     resource_id=grant.resource_id,
                                     app_role_id=grant.app_role_id)
            created = self.factory.run_graph(
                graph.service_principals.by_service_principal_id(str(grant.resource_id))
                .app_role_assigned_to.post(body))
            assert created is not None
            assert str(created.principal_id) == target_id
        return len(held.value)

    def create_sql_user(self, name: str) -> None:
        response = self.http.post("/_sim/sql", json={
            "server": "sql-orders", "database": "orders", "script": SQL_SCRIPT.format(name=name)})
        assert response.status_code == 200, response.text

    def grant_orders_rights(self, principal_id: str, sql_user: str) -> None:
        """Give an identity everything orders-sp holds: RBAC, Key Vault, Graph and SQL."""
        assert self.copy_role_assignments("orders-sp", principal_id) == 1
        self.copy_access_policy("kv-orders", "orders-sp", principal_id)
        assert self.copy_graph_app_roles("orders-sp", principal_id) == 1
        self.create_sql_user(sql_user)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    # The simulator's own behaviour, without Azure's delays (test_sim_propagation pins those).
    server = SimServer(load_estate(ESTATE), tmp_path / "sim", delays=NO_DELAYS)
    with server as ep:
        running = Cloud(server, ep)
        try:
            yield running
        finally:
            running.close()


def arm_failure(call: Callable[[], object]) -> tuple[int | None, str]:
    """Status and message of the HttpResponseError a call raises. The error is not kept: its
    traceback holds the response's TLS socket open, and uvicorn's shutdown then waits 10 s."""
    try:
        call()
    except HttpResponseError as err:
        return err.status_code, str(err)
    raise AssertionError("the call succeeded")


def mi_connection(auth: str, client_id: str | None = None) -> str:
    user = f";User Id={client_id}" if client_id else ""
    return ("Server=tcp:sql-orders.database.windows.net,1433;Database=orders;"
            f"Authentication={auth}{user}")


# --- the environment trio -------------------------------------------------------------------------


def test_site_holding_its_principals_secret_is_healthy(cloud: Cloud) -> None:
    status, report = cloud.health("orders-api")

    assert status == 200
    assert report["status"] == "healthy"
    assert report["credential"] == "EnvironmentCredential (client secret of orders-sp)"
    assert report["principalId"] == cloud.object_id("orders-sp")
    assert report["failing"] == []
    assert set(cloud.needs(report)) == {KV_NEED, ROLE_NEED, GRAPH_NEED, SQL_NEED}


@pytest.mark.parametrize("removed", ["AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"])
def test_old_client_id_left_behind_breaks_a_system_assigned_swap(cloud: Cloud,
                                                                  removed: str) -> None:
    """DefaultAzureCredential hands AZURE_CLIENT_ID to ManagedIdentityCredential as a
    user-assigned client id (Azure/azure-sdk-for-python#39864)."""
    principal = cloud.enable_system_identity("orders-api")
    cloud.grant_orders_rights(principal, "orders-api")
    cloud.set_connection_string("orders-api", "Db",
                                mi_connection("Active Directory Managed Identity"))
    cloud.change_settings("orders-api", remove=(removed,))

    status, report = cloud.health("orders-api")

    assert status == 503
    assert report["status"] == "unhealthy"
    assert report["principalId"] is None
    old_app_id = cloud.app_id("orders-sp")
    assert report["credential"] == (
        f"no credential: ManagedIdentityCredential: no user-assigned identity with client id "
        f"{old_app_id} on orders-api (AZURE_CLIENT_ID is taken as one)")
    needs = cloud.needs(report)
    for need in (KV_NEED, ROLE_NEED, GRAPH_NEED):
        assert needs[need] == (False, "no credential")
    # The identity itself has every right: the leftover setting is the only problem.
    cloud.change_settings("orders-api", remove=TRIO)
    status, report = cloud.health("orders-api")
    assert status == 200, report["failing"]


@pytest.mark.parametrize("auth", ["Active Directory Managed Identity",
                                  "Active Directory Default"])
def test_trio_removed_and_rights_copied_to_the_system_identity_is_healthy(
        cloud: Cloud, auth: str) -> None:
    principal = cloud.enable_system_identity("orders-api")
    cloud.change_settings("orders-api", remove=TRIO)
    cloud.set_connection_string("orders-api", "Db", mi_connection(auth))

    # An identity authorizes nothing by itself.
    status, report = cloud.health("orders-api")
    assert status == 503
    assert report["credential"] == "ManagedIdentityCredential (system-assigned orders-api)"
    needs = cloud.needs(report)
    assert needs[ROLE_NEED] == (False, "AuthorizationFailed for orders-api")
    assert needs[KV_NEED] == (
        False, "Forbidden: no access policy grants orders-api secret get on kv-orders")
    assert needs[GRAPH_NEED] == (
        False, "Authorization_RequestDenied: orders-api lacks User.Read.All")
    assert needs[SQL_NEED][0] is False
    assert "orders-api has no user in sql-orders/orders" in needs[SQL_NEED][1]

    cloud.grant_orders_rights(principal, "orders-api")

    status, report = cloud.health("orders-api")
    assert status == 200, report["failing"]
    assert report["credential"] == "ManagedIdentityCredential (system-assigned orders-api)"
    assert report["principalId"] == principal
    assert cloud.needs(report)[SQL_NEED] == (
        True, "orders-api in sql-orders/orders as db_datareader")


def test_user_assigned_identity_named_by_azure_client_id_is_healthy(cloud: Cloud) -> None:
    uai = cloud.uai_id("id-orders")
    site = cloud.web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="UserAssigned",
                                        user_assigned_identities={uai: UserAssignedIdentity()})))
    assert site.identity is not None
    assert site.identity.user_assigned_identities is not None
    attached = next(v for k, v in site.identity.user_assigned_identities.items()
                    if k.lower() == uai.lower())
    client_id, principal = str(attached.client_id), str(attached.principal_id)
    cloud.change_settings("orders-api", remove=("AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"),
                          put={"AZURE_CLIENT_ID": client_id})
    cloud.set_connection_string(
        "orders-api", "Db", mi_connection("Active Directory Managed Identity", client_id))

    status, report = cloud.health("orders-api")
    assert status == 503
    assert report["credential"] == "ManagedIdentityCredential (user-assigned id-orders)"
    assert cloud.needs(report)[ROLE_NEED] == (False, "AuthorizationFailed for id-orders")

    cloud.grant_orders_rights(principal, "id-orders")

    status, report = cloud.health("orders-api")
    assert status == 200, report["failing"]
    assert report["credential"] == "ManagedIdentityCredential (user-assigned id-orders)"
    assert report["principalId"] == principal


def test_expired_secret_in_the_trio_ends_the_chain(cloud: Cloud) -> None:
    """EnvironmentCredential is configured, so its failure is final: the working system
    identity of the same site is never tried."""
    status, report = cloud.health("expired-app")

    assert status == 503
    assert report["principalId"] is None
    assert report["credential"].startswith("no credential: AADSTS7000222:")
    assert "are expired" in report["credential"]
    assert cloud.needs(report)[ROLE_NEED] == (False, "no credential")

    cloud.change_settings("expired-app", remove=TRIO)
    status, report = cloud.health("expired-app")
    assert status == 200, report["failing"]
    assert report["credential"] == "ManagedIdentityCredential (system-assigned expired-app)"


def test_trio_naming_another_tenant_does_not_sign_in(cloud: Cloud) -> None:
    cloud.change_settings("orders-api",
                          put={"AZURE_TENANT_ID": "00000000-0000-4000-8000-00000000dead"})

    status, report = cloud.health("orders-api")

    assert status == 503
    assert report["credential"].startswith("no credential:")


# --- slots ----------------------------------------------------------------------------------------


def test_slot_has_its_own_identity(cloud: Cloud) -> None:
    site_principal = cloud.enable_system_identity("orders-api")
    slot_principal = cloud.enable_system_identity("orders-api", "staging")
    assert slot_principal != site_principal
    cloud.copy_access_policy("kv-orders", "orders-sp", site_principal)
    cloud.change_settings("orders-api", slot="staging", remove=TRIO)

    status, report = cloud.health("orders-api/staging")
    assert status == 503
    assert report["credential"] == (
        "ManagedIdentityCredential (system-assigned orders-api/slots/staging)")
    assert report["principalId"] == slot_principal
    assert cloud.needs(report)[KV_NEED] == (
        False,
        "Forbidden: no access policy grants orders-api/slots/staging secret get on kv-orders")

    cloud.copy_access_policy("kv-orders", "orders-sp", slot_principal)

    status, report = cloud.health("orders-api/staging")
    assert status == 200, report["failing"]
    assert cloud.needs(report)[KV_NEED] == (True, "read as orders-api/slots/staging")


# --- Key Vault references -------------------------------------------------------------------------


KVREF_SETTINGS = ("setting DB_PASSWORD", "setting DB_PASSWORD_PINNED", "setting API_KEY")


def test_key_vault_references_resolve_once_the_identity_may_read(cloud: Cloud) -> None:
    status, report = cloud.health("kvref-app")
    assert status == 503
    for need in KVREF_SETTINGS:
        assert cloud.needs(report)[need] == (
            False, "Key Vault reference unresolved: Key Vault reference: no system-assigned "
                   "identity")

    principal = cloud.enable_system_identity("kvref-app")
    status, report = cloud.health("kvref-app")
    assert status == 503
    assert report["credential"] == "ManagedIdentityCredential (system-assigned kvref-app)"
    for need in KVREF_SETTINGS:
        assert cloud.needs(report)[need] == (
            False, "Key Vault reference unresolved: access denied")

    # Access-policy vault (SecretUri form, with and without a version).
    cloud.add_access_policy("kv-orders", principal, ["get"])
    # An RBAC vault ignores access policies.
    cloud.add_access_policy("kv-rbac", principal, ["get"])
    status, report = cloud.health("kvref-app")
    assert status == 503
    needs = cloud.needs(report)
    assert needs["setting DB_PASSWORD"] == (True, "resolved")
    # The pinned version does not exist: a reference to it stays unresolved, as in Azure
    # (a versioned SecretUri reads that version, never the current one).
    assert needs["setting DB_PASSWORD_PINNED"] == (
        False, "Key Vault reference unresolved: SecretNotFound: "
               "kv-orders/db-password/0123456789abcdef0123456789abcdef")
    with cloud.tenant.lock:  # pinned to a version that exists, it resolves to that version
        kv = cloud.tenant.vaults["kv-orders"]
        first = kv.secret_versions("db-password")[0].version
        kv.set_secret("db-password", "a-newer-value")
        cloud.tenant.sites["kvref-app"].app_settings["DB_PASSWORD_PINNED"] = (
            "@Microsoft.KeyVault(SecretUri=https://kv-orders.vault.azure.net/secrets/"
            f"db-password/{first})")
        assert Runtime(cloud.tenant).effective_settings(
            cloud.tenant.sites["kvref-app"])["DB_PASSWORD_PINNED"] == "not-a-real-password"
    assert needs["setting API_KEY"] == (False, "Key Vault reference unresolved: access denied")

    # RBAC vault (VaultName= form): Key Vault Secrets User at the vault's scope.
    vault = cloud.kv.vaults.get(RG, "kv-rbac")
    assert vault.properties.enable_rbac_authorization is True
    cloud.assign_role(str(vault.id), KEY_VAULT_SECRETS_USER, principal)

    status, report = cloud.health("kvref-app")
    assert status == 200, report["failing"]
    assert cloud.needs(report)["setting API_KEY"] == (True, "resolved")


def test_key_vault_reference_identity_names_a_user_assigned_identity(cloud: Cloud) -> None:
    uai = cloud.uai_id("id-kvref")
    status, report = cloud.health("kvref-uai")
    assert status == 503
    assert report["credential"] == "ManagedIdentityCredential (user-assigned id-kvref)"
    assert cloud.needs(report)["setting DB_PASSWORD"] == (
        False, "Key Vault reference unresolved: Key Vault reference: no system-assigned identity")

    cloud.add_access_policy("kv-orders", cloud.object_id("id-kvref"), ["get"])
    # References still resolve with the (missing) system identity by default.
    assert cloud.health("kvref-uai")[0] == 503

    site = cloud.web.web_apps.update(RG, "kvref-uai",
                                     SitePatchResource(key_vault_reference_identity=uai))
    assert str(site.key_vault_reference_identity).lower() == uai.lower()

    status, report = cloud.health("kvref-uai")
    assert status == 200, report["failing"]
    assert cloud.needs(report)["setting DB_PASSWORD"] == (True, "resolved")


def test_app_that_only_reads_key_vault_references_needs_no_credential_of_its_own(
        cloud: Cloud) -> None:
    uai = cloud.uai_id("id-kvref")
    cloud.add_access_policy("kv-orders", cloud.object_id("id-kvref"), ["get"])
    cloud.web.web_apps.update(RG, "kvref-uai", SitePatchResource(key_vault_reference_identity=uai))
    cloud.change_settings("kvref-uai", remove=("AZURE_CLIENT_ID",))

    status, report = cloud.health("kvref-uai")

    assert cloud.needs(report)["setting DB_PASSWORD"] == (True, "resolved")
    assert status == 200, report


def test_key_vault_reference_identity_must_be_assigned_to_the_site(cloud: Cloud) -> None:
    status, message = arm_failure(lambda: cloud.web.web_apps.update(
        RG, "kvref-uai", SitePatchResource(key_vault_reference_identity=cloud.uai_id("id-orders"))))
    assert status == 400
    assert "is not assigned to kvref-uai" in message


# --- code that cannot use a managed identity ------------------------------------------------------


def test_client_secret_code_stays_unhealthy_after_a_managed_identity_swap(cloud: Cloud) -> None:
    status, report = cloud.health("legacy-worker")
    assert status == 200
    assert report["credential"] == "ClientSecretCredential in code (secret of legacy-sp)"

    principal = cloud.enable_system_identity("legacy-worker")
    assert cloud.copy_role_assignments("legacy-sp", principal) == 1
    cloud.change_settings("legacy-worker", remove=(
        "AzureAd__TenantId", "AzureAd__ClientId", "AzureAd__ClientSecret"))

    status, report = cloud.health("legacy-worker")
    assert status == 503
    assert report["principalId"] is None
    assert report["credential"] == (
        "no credential: the code needs a client id and client secret in its settings")
    assert cloud.needs(report)[ROLE_NEED] == (False, "no credential")


# --- replication delay ----------------------------------------------------------------------------


def test_new_system_identity_is_unusable_until_replicated(cloud: Cloud) -> None:
    delay = 2.0
    cloud.settings("reports-fn")  # sign in first: the clock below is about replication only
    assert cloud.http.post("/_sim/faults", json={"replication_delay": delay}).status_code == 200

    started = time.monotonic()
    principal = cloud.enable_system_identity("reports-fn")
    cloud.assign_role(cloud.rg_scope, "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1", principal,
                      principal_type="ServicePrincipal")
    cloud.change_settings("reports-fn", remove=TRIO)

    status, report = cloud.health("reports-fn")
    assert time.monotonic() - started < delay, "the steps took longer than the delay"
    assert status == 503
    assert report["credential"] == (
        f"no credential: identity {principal} is not yet replicated")
    assert cloud.needs(report)[ROLE_NEED] == (False, "no credential")

    deadline = started + delay + 5.0
    while status != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        status, report = cloud.health("reports-fn")
    assert status == 200, report["failing"]
    assert time.monotonic() - started >= delay
    assert report["credential"] == "ManagedIdentityCredential (system-assigned reports-fn)"
