"""The simulator's Entra token endpoint and App Service managed-identity endpoint, driven through
azure-identity (ClientSecretCredential, DefaultAzureCredential, ManagedIdentityCredential).

These pin what the migration depends on: which principal a token names (oid), that refused
secrets carry Entra's AADSTS codes, that a managed identity's token is the identity of the site
or slot that asked (or the user-assigned identity it selected), and that ARM honours the tokens
and nothing else.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jwt
import pytest
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.web.models import ManagedServiceIdentity, SitePatchResource
from cryptography.hazmat.primitives.asymmetric import rsa

from migrator.cloud.factory import make_credential, secret_credential

if TYPE_CHECKING:
    from conftest import Sim

# quiet_identity_warnings (conftest): refused sign-ins would otherwise stall each teardown ~2 s.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("quiet_identity_warnings")]

ARM_AUDIENCE = "https://management.azure.com/"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
MI_ENV = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT",
          "MSI_SECRET", "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
          "AZURE_FEDERATED_TOKEN_FILE")
AZURE_ENV = ("AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET",
             "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME", "AZURE_PASSWORD",
             "AZURE_AUTHORITY_HOST")
# DefaultAzureCredential without the developer-tool credentials, so nothing outside the
# simulator (az, azd, PowerShell, VS Code, a token cache) can answer.
HERMETIC = {"exclude_cli_credential": True, "exclude_developer_cli_credential": True,
            "exclude_powershell_credential": True,
            "exclude_visual_studio_code_credential": True,
            "exclude_shared_token_cache_credential": True,
            "exclude_workload_identity_credential": True}


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def site_resource_id(sim: Sim, subscription: str, rg: str, site: str) -> str:
    return (f"/subscriptions/{sim.subscription_id_of(subscription)}/resourceGroups/{rg}"
            f"/providers/Microsoft.Web/sites/{site}")


def shared_id(sim: Sim) -> str:
    return (f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-orders/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/id-shared")


def arm_status(sim: Sim, token: str) -> int:
    with sim.http() as http:
        return http.get("/subscriptions", params={"api-version": "2022-12-01"},
                        headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No azure-identity or managed-identity variables from the outer environment."""
    for name in MI_ENV + AZURE_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def app_service_env(sim: Sim, clean_env: pytest.MonkeyPatch) -> Callable[[str], None]:
    """as_site(resource_id): set the variables App Service gives that site's code."""

    def as_site(resource_id: str) -> None:
        clean_env.setenv("IDENTITY_ENDPOINT", f"{sim.base_url}/msi/token")
        clean_env.setenv("IDENTITY_HEADER", sim.tenant.identity_header_for(resource_id))
        clean_env.setenv("REQUESTS_CA_BUNDLE", sim.ca_bundle)

    return as_site


# -- client secrets ----------------------------------------------------------------------------


def test_operator_signs_in_with_a_client_secret(sim: Sim) -> None:
    cred = sim.credential()

    token = cred.get_token(sim.profile.arm_scope)

    got = claims(token.token)
    assert got["oid"] == sim.object_id("migrator-operator")
    assert got["tid"] == sim.endpoints.tenant_id
    assert got["aud"] == ARM_AUDIENCE
    assert got["appid"] == sim.endpoints.operator_client_id
    assert "roles" not in got  # ARM tokens carry no Graph app roles
    assert token.expires_on > time.time() + 600
    assert arm_status(sim, token.token) == 200


def test_operator_signs_in_with_default_azure_credential_from_the_environment(
        sim: Sim, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("AZURE_TENANT_ID", sim.endpoints.tenant_id)
    clean_env.setenv("AZURE_CLIENT_ID", sim.endpoints.operator_client_id)
    clean_env.setenv("AZURE_CLIENT_SECRET", sim.endpoints.operator_secret)
    cred = make_credential(sim.profile, **HERMETIC)
    sim.track(cred)

    token = cred.get_token(sim.profile.arm_scope)

    assert claims(token.token)["oid"] == sim.object_id("migrator-operator")
    subs = list(sim.factory_with(cred).subscriptions().subscriptions.list())
    assert [s.display_name for s in subs] == ["prod"]


def test_graph_token_carries_the_principals_graph_app_roles(sim: Sim) -> None:
    operator, orders = sim.credential(), sim.credential("orders-sp")
    reports = sim.credential("reports-sp")

    operator_claims = claims(operator.get_token(GRAPH_SCOPE).token)
    orders_claims = claims(orders.get_token(GRAPH_SCOPE).token)
    reports_claims = claims(reports.get_token(GRAPH_SCOPE).token)

    assert operator_claims["aud"].rstrip("/") == "https://graph.microsoft.com"
    assert sorted(operator_claims["roles"]) == ["AppRoleAssignment.ReadWrite.All",
                                                "Application.ReadWrite.All"]
    assert orders_claims["roles"] == ["User.Read.All"]
    assert orders_claims["oid"] == sim.object_id("orders-sp")
    assert "roles" not in reports_claims


@pytest.mark.parametrize(("principal", "secret_index", "secret", "code"), [
    ("orders-sp", 1, None, "AADSTS7000222"),  # secrets[1] expired on 2020-01-01
    ("orders-sp", 0, "abc8Q~not-the-secret-at-all-0000000000000", "AADSTS7000215"),
    ("disabled-sp", 0, None, "AADSTS7000112"),
], ids=["expired-secret", "wrong-secret", "disabled-principal"])
def test_refused_secrets_carry_entras_error_code(
        sim: Sim, principal: str, secret_index: int,
        secret: str | None, code: str) -> None:
    cred = sim.credential(principal, secret_index=secret_index, secret=secret)

    with pytest.raises(ClientAuthenticationError) as info:
        cred.get_token(sim.profile.arm_scope)
    assert code in str(info.value.message)


def test_the_valid_secret_of_a_principal_with_an_expired_one_still_works(
        sim: Sim) -> None:
    cred = sim.credential("orders-sp", secret_index=0)

    assert claims(cred.get_token(sim.profile.arm_scope).token)["oid"] == \
        sim.object_id("orders-sp")


def test_an_unknown_client_id_is_refused(sim: Sim) -> None:
    cred = secret_credential(sim.profile, sim.endpoints.tenant_id, str(uuid.uuid4()),
                             sim.endpoints.operator_secret)
    sim.track(cred)

    with pytest.raises(ClientAuthenticationError) as info:
        cred.get_token(sim.profile.arm_scope)
    assert "AADSTS700016" in str(info.value.message)


def test_the_tenant_may_be_named_by_its_domain(sim: Sim) -> None:
    cred = sim.track(secret_credential(sim.profile, sim.tenant.domain,
                                       sim.endpoints.operator_client_id,
                                       sim.endpoints.operator_secret))

    got = claims(cred.get_token(sim.profile.arm_scope).token)

    assert got["tid"] == sim.endpoints.tenant_id
    assert got["oid"] == sim.object_id("migrator-operator")


def test_an_unknown_tenant_is_refused(sim: Sim) -> None:
    tenant = str(uuid.uuid4())
    cred = secret_credential(sim.profile, tenant, sim.endpoints.operator_client_id,
                             sim.endpoints.operator_secret)
    sim.track(cred)

    # MSAL stops at the authority's discovery document, as it does against Entra...
    with pytest.raises(ClientAuthenticationError) as info:
        cred.get_token(sim.profile.arm_scope)
    assert "Unable to get authority configuration" in str(info.value.message)
    assert tenant in str(info.value.message)
    # ...which Entra (and the simulator) refuse with AADSTS90002.
    with sim.http() as http:
        discovery = http.get(f"/{tenant}/v2.0/.well-known/openid-configuration")
    assert discovery.status_code == 400
    assert "AADSTS90002" in discovery.json()["error_description"]


@pytest.mark.parametrize("scope", ["https://vault.azure.net/.default",
                                   "https://storage.azure.com/.default",
                                   "https://database.windows.net/.default"])
def test_tokens_for_data_plane_resources_are_issued(sim: Sim, scope: str) -> None:
    token = sim.credential("orders-sp").get_token(scope)

    assert claims(token.token)["aud"].rstrip("/") == scope.removesuffix("/.default")


# -- what ARM accepts ----------------------------------------------------------------------------


def test_arm_refuses_a_token_with_a_tampered_signature(
        sim: Sim) -> None:
    cred = sim.credential()
    token = cred.get_token(sim.profile.arm_scope).token
    head, body, signature = token.split(".")
    flipped = ("A" if signature[10] != "A" else "B")
    tampered = ".".join([head, body, signature[:10] + flipped + signature[11:]])

    assert arm_status(sim, token) == 200
    assert arm_status(sim, tampered) == 401


def test_arm_refuses_a_token_signed_by_another_key(sim: Sim) -> None:
    cred = sim.credential()
    genuine = claims(cred.get_token(sim.profile.arm_scope).token)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(genuine, other_key, algorithm="RS256")

    assert arm_status(sim, forged) == 401


def test_arm_refuses_a_graph_token(sim: Sim) -> None:
    cred = sim.credential()

    with sim.http() as http:
        response = http.get("/subscriptions", params={"api-version": "2022-12-01"}, headers={
            "Authorization": f"Bearer {cred.get_token(GRAPH_SCOPE).token}"})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "audience" in response.json()["error"]["message"]


# -- the App Service managed-identity endpoint -------------------------------------------------


def mi_credential(sim: Sim, **kwargs: Any) -> TokenCredential:
    """A ManagedIdentityCredential, as code in the site would build it, closed with the sim."""
    return sim.track(ManagedIdentityCredential(**kwargs))


def replicated(sim: Sim) -> None:
    """Wait out Entra's replication of an identity just enabled: until then the token
    endpoint answers "Identity not found", as App Service's does (the simulator's delay is
    shortened to a fraction of a second for tests)."""
    time.sleep(sim.tenant.replication_delay + 0.1)


def test_managed_identity_credential_gets_the_sites_system_identity(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    dev_api = site_resource_id(sim, "dev", "rg-dev", "dev-api")
    app_service_env(dev_api)

    token = mi_credential(sim).get_token(sim.profile.arm_scope)

    got = claims(token.token)
    assert got["oid"] == sim.object_id("dev-api")
    assert got["tid"] == sim.endpoints.tenant_id
    # ManagedIdentityCredential asks for resource "https://management.azure.com" (no slash).
    assert got["aud"].rstrip("/") == ARM_AUDIENCE.rstrip("/")
    assert got["xms_mirid"] == dev_api


def test_managed_identity_credential_selects_a_user_assigned_identity_by_client_id(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "reports-fn"))
    shared = sim.tenant.service_principals[sim.object_id("id-shared")]

    token = mi_credential(sim, client_id=shared.app_id).get_token(sim.profile.arm_scope)

    got = claims(token.token)
    assert got["oid"] == sim.object_id("id-shared")
    assert got["appid"] == shared.app_id


@pytest.mark.parametrize("key", ["object_id", "resource_id"])
def test_a_user_assigned_identity_may_be_selected_by_object_or_resource_id(
        sim: Sim, app_service_env: Callable[[str], None], key: str) -> None:
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "reports-fn"))
    value = {"object_id": sim.object_id("id-shared"), "resource_id": shared_id(sim)}

    cred = mi_credential(sim, identity_config={key: value[key]})

    assert claims(cred.get_token(sim.profile.arm_scope).token)["oid"] == \
        sim.object_id("id-shared")


@pytest.mark.parametrize("param", ["client_id", "principal_id", "object_id", "mi_res_id"])
def test_the_endpoint_selects_a_user_assigned_identity_by_each_documented_parameter(
        sim: Sim, param: str) -> None:
    shared = sim.tenant.service_principals[sim.object_id("id-shared")]
    value = {"client_id": shared.app_id, "principal_id": shared.object_id,
             "object_id": shared.object_id, "mi_res_id": shared_id(sim)}[param]
    header = sim.tenant.identity_header_for(
        site_resource_id(sim, "prod", "rg-orders", "reports-fn"))

    with sim.http() as http:
        response = http.get("/msi/token", headers={"X-IDENTITY-HEADER": header}, params={
            "resource": ARM_AUDIENCE, "api-version": "2019-08-01", param: value})

    assert response.status_code == 200, response.text
    assert response.json()["client_id"] == shared.app_id
    assert claims(response.json()["access_token"])["oid"] == shared.object_id


def test_with_both_kinds_no_selection_means_the_system_identity(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    web = sim.factory().web(sim.subscription_id)
    system = web.web_apps.update("rg-orders", "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned, UserAssigned"))).identity
    assert system is not None
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "reports-fn"))
    replicated(sim)

    token = mi_credential(sim).get_token(sim.profile.arm_scope)

    assert claims(token.token)["oid"] == system.principal_id
    assert system.principal_id != sim.object_id("id-shared")


def test_a_user_assigned_identity_not_on_the_site_is_refused(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    # id-shared exists, but dev-api does not have it.
    app_service_env(site_resource_id(sim, "dev", "rg-dev", "dev-api"))
    shared = sim.tenant.service_principals[sim.object_id("id-shared")]

    with pytest.raises(ClientAuthenticationError):
        mi_credential(sim, client_id=shared.app_id).get_token(sim.profile.arm_scope)


def test_a_site_without_a_system_identity_gets_no_token(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "orders-api"))

    with pytest.raises(ClientAuthenticationError):
        mi_credential(sim).get_token(sim.profile.arm_scope)


def test_a_wrong_identity_header_is_refused(
        sim: Sim, app_service_env: Callable[[str], None], clean_env: pytest.MonkeyPatch) -> None:
    app_service_env(site_resource_id(sim, "dev", "rg-dev", "dev-api"))
    clean_env.setenv("IDENTITY_HEADER", str(uuid.uuid4()))

    with pytest.raises(ClientAuthenticationError):
        mi_credential(sim).get_token(sim.profile.arm_scope)


def test_managed_identity_endpoint_response_shape(sim: Sim) -> None:
    dev_api = site_resource_id(sim, "dev", "rg-dev", "dev-api")
    header = sim.tenant.identity_header_for(dev_api)

    with sim.http() as http:
        ok = http.get("/msi/token", params={"resource": ARM_AUDIENCE,
                                            "api-version": "2019-08-01"},
                      headers={"X-IDENTITY-HEADER": header})
        old_version = http.get("/msi/token", params={"resource": ARM_AUDIENCE,
                                                     "api-version": "2017-09-01"},
                               headers={"X-IDENTITY-HEADER": header})
        no_header = http.get("/msi/token", params={"resource": ARM_AUDIENCE,
                                                   "api-version": "2019-08-01"})

    body = ok.json()
    assert ok.status_code == 200
    assert set(body) >= {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str)
    assert int(body["expires_on"]) > time.time()
    assert body["resource"] == ARM_AUDIENCE
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == sim.tenant.service_principals[sim.object_id("dev-api")].app_id
    assert old_version.status_code == 400
    assert no_header.status_code == 401


def test_a_managed_identity_token_is_accepted_by_arm_once_the_identity_has_a_role(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    app_service_env(site_resource_id(sim, "dev", "rg-dev", "dev-api"))
    mi = mi_credential(sim)
    as_site = sim.factory_with(mi).subscriptions()
    assert list(as_site.subscriptions.list()) == []  # authenticated, but no role anywhere

    auth = sim.factory().authorization(sim.subscription_id)
    scope = f"/subscriptions/{sim.subscription_id}"
    reader = next(iter(auth.role_definitions.list(scope, filter="roleName eq 'Reader'")))
    auth.role_assignments.create(scope, str(uuid.uuid4()), RoleAssignmentCreateParameters(
        role_definition_id=reader.id, principal_id=sim.object_id("dev-api"),
        principal_type="ServicePrincipal"))

    assert [s.display_name for s in as_site.subscriptions.list()] == ["prod"]


def test_a_slots_token_is_the_slots_own_identity(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    web = sim.factory().web(sim.subscription_id)
    patch = SitePatchResource(identity=ManagedServiceIdentity(type="SystemAssigned"))
    site = web.web_apps.update("rg-orders", "orders-api", patch).identity
    slot = web.web_apps.update_slot("rg-orders", "orders-api", "staging", patch).identity
    assert site is not None
    assert slot is not None
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "orders-api") + "/slots/staging")
    replicated(sim)

    token = mi_credential(sim).get_token(sim.profile.arm_scope)

    assert claims(token.token)["oid"] == slot.principal_id
    assert slot.principal_id != site.principal_id


def test_disabling_the_system_identity_stops_its_tokens(
        sim: Sim, app_service_env: Callable[[str], None]) -> None:
    # The operator has no role in dev, so switch the identity off on a prod site it manages.
    web = sim.factory().web(sim.subscription_id)
    web.web_apps.update("rg-orders", "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned")))
    app_service_env(site_resource_id(sim, "prod", "rg-orders", "orders-api"))
    replicated(sim)
    assert mi_credential(sim).get_token(sim.profile.arm_scope).token

    web.web_apps.update("rg-orders", "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="None")))

    with pytest.raises(ClientAuthenticationError):
        mi_credential(sim).get_token(sim.profile.arm_scope)


# -- the swap trap (AZURE-FACTS.md): DefaultAzureCredential inside a site ------------------------


def test_a_secret_left_in_the_environment_wins_over_the_managed_identity(
        sim: Sim, app_service_env: Callable[[str], None], clean_env: pytest.MonkeyPatch) -> None:
    app_service_env(site_resource_id(sim, "dev", "rg-dev", "dev-api"))
    clean_env.setenv("AZURE_TENANT_ID", sim.endpoints.tenant_id)
    clean_env.setenv("AZURE_CLIENT_ID", sim.client_id("orders-sp"))
    clean_env.setenv("AZURE_CLIENT_SECRET", sim.secret("orders-sp"))
    cred = make_credential(sim.profile, **HERMETIC)
    sim.track(cred)

    assert claims(cred.get_token(sim.profile.arm_scope).token)["oid"] == \
        sim.object_id("orders-sp")


def test_a_leftover_client_id_is_taken_as_a_user_assigned_identity(
        sim: Sim, app_service_env: Callable[[str], None], clean_env: pytest.MonkeyPatch) -> None:
    app_service_env(site_resource_id(sim, "dev", "rg-dev", "dev-api"))
    clean_env.setenv("AZURE_TENANT_ID", sim.endpoints.tenant_id)
    clean_env.setenv("AZURE_CLIENT_ID", sim.client_id("orders-sp"))  # secret removed, id left
    broken = make_credential(sim.profile, **HERMETIC)
    sim.track(broken)

    with pytest.raises(ClientAuthenticationError):
        broken.get_token(sim.profile.arm_scope)

    clean_env.delenv("AZURE_CLIENT_ID")
    clean_env.delenv("AZURE_TENANT_ID")
    fixed = make_credential(sim.profile, **HERMETIC)
    sim.track(fixed)
    assert claims(fixed.get_token(sim.profile.arm_scope).token)["oid"] == \
        sim.object_id("dev-api")
