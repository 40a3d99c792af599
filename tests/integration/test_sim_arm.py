"""The simulator's ARM surface, driven through the real azure-mgmt-* clients.

Every ARM operation `migrator.sim.arm` serves is called here the way the tool calls it: through
`ClientFactory` and an azure-identity credential, over HTTPS behind the simulator's test CA. The
tests pin what a user of Azure relies on (identity semantics of PATCH, replace-all settings,
RBAC scope inheritance and 403/409 error codes), not the simulator's internals.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
)
from azure.mgmt.msi.models import Identity, IdentityUpdate
from azure.mgmt.web.models import (
    ConnectionStringDictionary,
    ConnStringValueTypePair,
    ManagedServiceIdentity,
    SitePatchResource,
    SitePatchResourceProperties,
    SlotConfigNames,
    SlotConfigNamesResource,
    StringDictionary,
    UserAssignedIdentity,
)

import migrator.sim.arm

if TYPE_CHECKING:
    from conftest import Sim

pytestmark = pytest.mark.integration

RG = "rg-orders"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
SUBSCRIPTIONS_URL = "{base}/subscriptions?api-version=2022-12-01"


# -- helpers -----------------------------------------------------------------------------------


def rg_scope(sim: Sim, rg: str = RG) -> str:
    return f"/subscriptions/{sim.subscription_id}/resourceGroups/{rg}"


def site_id(sim: Sim, site: str, rg: str = RG) -> str:
    return f"{rg_scope(sim, rg)}/providers/Microsoft.Web/sites/{site}"


def uai_id(sim: Sim, name: str, rg: str = RG) -> str:
    return f"{rg_scope(sim, rg)}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}"


def answered_uai_id(sim: Sim, name: str, rg: str = RG) -> str:
    """A user-assigned identity's id as a site's identity lists it: Azure answers those keys
    with a lower-case `resourcegroups` segment (Azure/azure-cli appservice recording
    test_functionapp_assign_user_identity.yaml), so a client must not compare them exactly."""
    return uai_id(sim, name, rg).replace("/resourceGroups/", "/resourcegroups/")


def role_definition_id(auth: AuthorizationManagementClient, scope: str, role_name: str) -> str:
    found = list(auth.role_definitions.list(scope, filter=f"roleName eq '{role_name}'"))
    assert len(found) == 1, f"expected one role named {role_name!r}, got {found}"
    return str(found[0].id)


def assign(auth: AuthorizationManagementClient, scope: str, role_name: str,
           principal_id: str) -> str:
    """Create a role assignment the way the tool does; returns its name."""
    name = str(uuid.uuid4())
    auth.role_assignments.create(scope, name, RoleAssignmentCreateParameters(
        role_definition_id=role_definition_id(auth, scope, role_name),
        principal_id=principal_id, principal_type="ServicePrincipal"))
    return name


def assert_forbidden(err: HttpResponseError, action: str | None = None) -> None:
    assert err.status_code == 403, err
    assert err.error is not None
    assert err.error.code == "AuthorizationFailed"
    if action is not None:
        assert action in str(err.message)


def names(items: Any) -> set[str]:
    return {str(i.name) for i in items}


@pytest.fixture
def operator_auth(sim: Sim) -> AuthorizationManagementClient:
    return sim.factory().authorization(sim.subscription_id)


@pytest.fixture
def grant(sim: Sim, operator_auth: AuthorizationManagementClient) -> Callable[..., str]:
    """grant(principal_name_or_object_id, role_name, scope) through the operator."""

    def _grant(who: str, role_name: str, scope: str) -> str:
        oid = sim.tenant.names.get(who, who)
        return assign(operator_auth, scope, role_name, oid)

    return _grant


# -- subscriptions -----------------------------------------------------------------------------


def test_operator_sees_prod_but_not_dev_where_it_has_no_role(sim: Sim) -> None:
    subs = list(sim.factory().subscriptions().subscriptions.list())

    assert [s.display_name for s in subs] == ["prod"]
    assert subs[0].subscription_id == sim.subscription_id
    assert subs[0].tenant_id == sim.endpoints.tenant_id


def test_operator_cannot_get_a_subscription_it_has_no_role_in(sim: Sim) -> None:
    client = sim.factory().subscriptions()
    assert client.subscriptions.get(sim.subscription_id).display_name == "prod"

    with pytest.raises(HttpResponseError) as info:
        client.subscriptions.get(sim.subscription_id_of("dev"))
    assert info.value.status_code == 404


def test_a_role_on_one_resource_group_makes_the_subscription_visible(sim: Sim) -> None:
    subs = list(sim.factory("reader-sp").subscriptions().subscriptions.list())

    assert [s.display_name for s in subs] == ["prod"]


def test_a_principal_without_roles_sees_no_subscription(sim: Sim) -> None:
    assert list(sim.factory("nobody-sp").subscriptions().subscriptions.list()) == []


# -- Microsoft.Web: sites and slots ------------------------------------------------------------


def test_list_sites_in_subscription_and_resource_group(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    assert names(web.web_apps.list()) == {"orders-api", "reports-fn"}  # not dev's dev-api
    assert names(web.web_apps.list_by_resource_group(RG)) == {"orders-api", "reports-fn"}


def test_list_sites_of_a_missing_resource_group_is_404(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    with pytest.raises(ResourceNotFoundError) as info:
        list(web.web_apps.list_by_resource_group("rg-missing"))
    assert info.value.error is not None
    assert info.value.error.code == "ResourceGroupNotFound"


def test_get_site_shows_kind_and_identities(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    shared = sim.tenant.identities[uai_id(sim, "id-shared").lower()]

    reports = web.web_apps.get(RG, "reports-fn")
    orders = web.web_apps.get(RG, "orders-api")

    assert reports.id == site_id(sim, "reports-fn")
    assert reports.kind == "functionapp,linux"
    assert reports.identity is not None
    assert reports.identity.type == "UserAssigned"
    assert reports.identity.principal_id is None
    assigned = reports.identity.user_assigned_identities or {}
    assert list(assigned) == [answered_uai_id(sim, "id-shared")]
    assert assigned[answered_uai_id(sim, "id-shared")].client_id == shared.client_id
    assert assigned[answered_uai_id(sim, "id-shared")].principal_id == shared.principal_id
    # A site without an identity has no `identity` at all, as Azure answers (Azure/azure-cli
    # recording test_functionapp_assign_user_identity, GET before the assign).
    assert orders.identity is None
    assert orders.default_host_name == "orders-api.azurewebsites.net"


def test_get_missing_site_is_404(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    with pytest.raises(ResourceNotFoundError) as info:
        web.web_apps.get(RG, "no-such-site")
    assert info.value.status_code == 404


def test_list_and_get_slots(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    slots = list(web.web_apps.list_slots(RG, "orders-api"))
    staging = web.web_apps.get_slot(RG, "orders-api", "staging")

    assert names(slots) == {"orders-api/staging"}
    assert staging.id == site_id(sim, "orders-api") + "/slots/staging"
    assert staging.type == "Microsoft.Web/sites/slots"
    assert list(web.web_apps.list_slots(RG, "reports-fn")) == []
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.get_slot(RG, "orders-api", "no-such-slot")


# -- Microsoft.Web: managed identity semantics of PATCH ------------------------------------------


def test_enabling_system_identity_with_both_types_keeps_the_user_assigned_one(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    shared = answered_uai_id(sim, "id-shared")

    patched = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned, UserAssigned")))

    assert patched.identity is not None
    assert patched.identity.type == "SystemAssigned, UserAssigned"
    assert patched.identity.principal_id
    assert patched.identity.tenant_id == sim.endpoints.tenant_id
    assert shared in (patched.identity.user_assigned_identities or {})
    again = web.web_apps.get(RG, "reports-fn").identity
    assert again is not None
    assert again.principal_id == patched.identity.principal_id
    assert shared in (again.user_assigned_identities or {})


def test_system_assigned_type_alone_drops_the_user_assigned_identities(sim: Sim) -> None:
    # ARM semantics: the identity type names what remains on the resource.
    web = sim.factory().web(sim.subscription_id)

    patched = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned")))

    assert patched.identity is not None
    assert patched.identity.type == "SystemAssigned"
    assert patched.identity.principal_id
    assert not patched.identity.user_assigned_identities
    again = web.web_apps.get(RG, "reports-fn").identity
    assert again is not None
    assert not again.user_assigned_identities


def test_enabling_system_identity_twice_keeps_the_same_principal(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    patch = SitePatchResource(identity=ManagedServiceIdentity(type="SystemAssigned"))

    first = web.web_apps.update(RG, "orders-api", patch).identity
    second = web.web_apps.update(RG, "orders-api", patch).identity

    assert first is not None
    assert second is not None
    assert first.principal_id
    assert second.principal_id == first.principal_id


def test_identity_type_none_removes_the_system_identity(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    enabled = web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned"))).identity
    assert enabled is not None
    assert enabled.principal_id

    removed = web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="None"))).identity
    # Azure leaves `identity` out of a site that has none (recording
    # test_functionapp_assign_user_identity), so the reader sees no identity object at all.
    assert removed is None
    assert enabled.principal_id not in sim.tenant.service_principals

    # Re-enabling creates a new service principal, as in Azure: the old object id is gone.
    renewed = web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned"))).identity
    assert renewed is not None
    assert renewed.principal_id
    assert renewed.principal_id != enabled.principal_id


def test_a_slot_gets_its_own_system_identity(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    patch = SitePatchResource(identity=ManagedServiceIdentity(type="SystemAssigned"))

    slot = web.web_apps.update_slot(RG, "orders-api", "staging", patch).identity
    site_before = web.web_apps.get(RG, "orders-api").identity
    site = web.web_apps.update(RG, "orders-api", patch).identity

    assert slot is not None
    assert site is not None
    assert site_before is None  # enabling the slot's identity left the site without one
    assert slot.principal_id
    assert site.principal_id
    assert slot.principal_id != site.principal_id
    fetched = web.web_apps.get_slot(RG, "orders-api", "staging").identity
    assert fetched is not None
    assert fetched.principal_id == slot.principal_id


def test_adding_a_new_user_assigned_identity_keeps_the_existing_one(sim: Sim) -> None:
    factory = sim.factory()
    created = factory.msi(sim.subscription_id).user_assigned_identities.create_or_update(
        RG, "id-new", Identity(location="westeurope"))
    web = factory.web(sim.subscription_id)

    patched = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(
            type="UserAssigned",
            user_assigned_identities={str(created.id): UserAssignedIdentity()})))

    assert patched.identity is not None
    assigned = patched.identity.user_assigned_identities or {}
    assert set(assigned) == {answered_uai_id(sim, "id-shared"), answered_uai_id(sim, "id-new")}
    assert assigned[answered_uai_id(sim, "id-new")].client_id == created.client_id


def test_assigning_a_user_assigned_identity_that_does_not_exist_is_refused(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    with pytest.raises(HttpResponseError) as info:
        web.web_apps.update(RG, "orders-api", SitePatchResource(identity=ManagedServiceIdentity(
            type="UserAssigned",
            user_assigned_identities={uai_id(sim, "id-missing"): UserAssignedIdentity()})))
    assert info.value.status_code == 400
    assert web.web_apps.get(RG, "orders-api").identity is None  # nothing was assigned


def test_a_null_entry_removes_one_user_assigned_identity_and_keeps_the_rest(sim: Sim) -> None:
    factory = sim.factory()
    factory.msi(sim.subscription_id).user_assigned_identities.create_or_update(
        RG, "id-new", Identity(location="westeurope"))
    web = factory.web(sim.subscription_id)
    web.web_apps.update(RG, "reports-fn", SitePatchResource(identity=ManagedServiceIdentity(
        type="UserAssigned",
        user_assigned_identities={uai_id(sim, "id-new"): UserAssignedIdentity()})))

    patched = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(
            type="UserAssigned",
            user_assigned_identities={uai_id(sim, "id-shared"): None})))  # type: ignore[dict-item]

    assert patched.identity is not None
    assert list(patched.identity.user_assigned_identities or {}) == [answered_uai_id(sim, "id-new")]


def test_user_assigned_type_alone_drops_the_system_identity(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    both = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned, UserAssigned"))).identity
    assert both is not None
    assert both.principal_id

    patched = web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="UserAssigned"))).identity

    assert patched is not None
    assert patched.type == "UserAssigned"
    assert patched.principal_id is None
    assert list(patched.user_assigned_identities or {}) == [answered_uai_id(sim, "id-shared")]
    assert both.principal_id not in sim.tenant.service_principals


def test_key_vault_reference_identity_must_be_assigned_and_falls_back_to_system(
        sim: Sim) -> None:
    factory = sim.factory()
    factory.msi(sim.subscription_id).user_assigned_identities.create_or_update(
        RG, "id-other", Identity(location="westeurope"))
    web = factory.web(sim.subscription_id)
    shared = uai_id(sim, "id-shared")

    assert web.web_apps.get(RG, "reports-fn").key_vault_reference_identity == "SystemAssigned"
    web.web_apps.update(RG, "reports-fn", SitePatchResource(
        properties=SitePatchResourceProperties(key_vault_reference_identity=shared)))
    assert web.web_apps.get(RG, "reports-fn").key_vault_reference_identity == shared

    with pytest.raises(HttpResponseError) as info:
        web.web_apps.update(RG, "reports-fn", SitePatchResource(
            properties=SitePatchResourceProperties(
                key_vault_reference_identity=uai_id(sim, "id-other"))))
    assert info.value.status_code == 400
    assert web.web_apps.get(RG, "reports-fn").key_vault_reference_identity == shared

    # Dropping the user-assigned identities leaves the references resolved by the system one.
    web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned")))
    assert web.web_apps.get(RG, "reports-fn").key_vault_reference_identity == "SystemAssigned"


def test_assigning_a_user_assigned_identity_needs_assign_rights_on_it(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Website Contributor", site_id(sim, "orders-api"))
    web = sim.factory("nobody-sp").web(sim.subscription_id)
    attach = SitePatchResource(identity=ManagedServiceIdentity(
        type="UserAssigned",
        user_assigned_identities={uai_id(sim, "id-shared"): UserAssignedIdentity()}))

    with pytest.raises(HttpResponseError) as info:
        web.web_apps.update(RG, "orders-api", attach)
    assert info.value.status_code == 403
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action" in str(
        info.value.message)
    assert sim.tenant.sites["orders-api"].identity.user_assigned == []

    grant("nobody-sp", "Contributor", uai_id(sim, "id-shared"))
    patched = web.web_apps.update(RG, "orders-api", attach).identity
    assert patched is not None
    assert list(patched.user_assigned_identities or {}) == [answered_uai_id(sim, "id-shared")]


def test_managed_identity_operator_may_assign_the_identity(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Website Contributor", site_id(sim, "orders-api"))
    grant("nobody-sp", "Managed Identity Operator", uai_id(sim, "id-shared"))
    web = sim.factory("nobody-sp").web(sim.subscription_id)

    patched = web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(
            type="UserAssigned",
            user_assigned_identities={uai_id(sim, "id-shared"): UserAssignedIdentity()})))

    assert patched.identity is not None
    assert list(patched.identity.user_assigned_identities or {}) == [answered_uai_id(sim, "id-shared")]


@pytest.mark.parametrize("role", ["Managed Identity Operator", "Key Vault Reader"])
def test_reader_style_wildcard_roles_read_their_resources(
        sim: Sim, grant: Callable[..., str], role: str) -> None:
    grant("nobody-sp", role, rg_scope(sim))
    factory = sim.factory("nobody-sp")

    if role == "Key Vault Reader":
        assert factory.keyvault(sim.subscription_id).vaults.get(RG, "kv-orders").name == \
            "kv-orders"
    else:
        assert factory.msi(sim.subscription_id).user_assigned_identities.get(
            RG, "id-shared").name == "id-shared"


def test_missing_assign_rights_are_a_linked_authorization_failure(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Website Contributor", site_id(sim, "orders-api"))
    web = sim.factory("nobody-sp").web(sim.subscription_id)

    with pytest.raises(HttpResponseError) as info:
        web.web_apps.update(RG, "orders-api", SitePatchResource(identity=ManagedServiceIdentity(
            type="UserAssigned",
            user_assigned_identities={uai_id(sim, "id-shared"): UserAssignedIdentity()})))
    assert info.value.error is not None
    assert info.value.error.code == "LinkedAuthorizationFailed"


def test_arm_paths_are_case_insensitive(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    assert web.web_apps.get("RG-ORDERS", "Orders-API").id == site_id(sim, "orders-api")
    assert web.web_apps.get_slot("rg-orders", "ORDERS-API", "Staging").name == \
        "orders-api/staging"


# -- Microsoft.Web: configuration ----------------------------------------------------------------


def test_list_app_settings_returns_the_values(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    settings = web.web_apps.list_application_settings(RG, "orders-api").properties

    assert settings is not None
    assert set(settings) == {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET",
                             "WEBSITE_RUN_FROM_PACKAGE"}
    assert settings["AZURE_CLIENT_ID"] == sim.client_id("orders-sp")
    assert settings["AZURE_TENANT_ID"] == sim.endpoints.tenant_id
    assert settings["AZURE_CLIENT_SECRET"] == sim.secret("orders-sp")


def test_update_app_settings_replaces_the_whole_set(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    before = web.web_apps.list_application_settings(RG, "orders-api").properties
    assert before is not None
    kept = {k: v for k, v in before.items() if k != "AZURE_CLIENT_SECRET"}

    result = web.web_apps.update_application_settings(
        RG, "orders-api", StringDictionary(properties=kept | {"NEW": "value"}))

    assert result.properties == kept | {"NEW": "value"}
    after = web.web_apps.list_application_settings(RG, "orders-api").properties
    assert after == kept | {"NEW": "value"}
    assert "AZURE_CLIENT_SECRET" not in (after or {})


def test_slot_app_settings_are_separate_from_the_site(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    web.web_apps.update_application_settings_slot(
        RG, "orders-api", "staging", StringDictionary(properties={"ONLY": "slot"}))

    slot = web.web_apps.list_application_settings_slot(RG, "orders-api", "staging").properties
    site = web.web_apps.list_application_settings(RG, "orders-api").properties
    assert slot == {"ONLY": "slot"}
    assert site is not None
    assert "ONLY" not in site
    assert "AZURE_CLIENT_SECRET" in site


def test_connection_strings_list_and_update(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    listed = web.web_apps.list_connection_strings(RG, "orders-api").properties
    assert listed is not None
    assert set(listed) == {"Db"}
    assert listed["Db"].type == "SQLAzure"
    assert "Server=tcp:sql-orders.database.windows.net,1433" in str(listed["Db"].value)
    assert f"Password={sim.secret('orders-sp')}" in str(listed["Db"].value)

    mi = ("Server=tcp:sql-orders.database.windows.net,1433;Database=orders;"
          "Authentication=Active Directory Managed Identity")
    web.web_apps.update_connection_strings(RG, "orders-api", ConnectionStringDictionary(
        properties={"Orders": ConnStringValueTypePair(value=mi, type="SQLAzure")}))

    after = web.web_apps.list_connection_strings(RG, "orders-api").properties
    assert after is not None
    assert set(after) == {"Orders"}  # replaced, not merged: "Db" is gone
    assert after["Orders"].value == mi
    assert after["Orders"].type == "SQLAzure"


def test_slot_configuration_names_get_and_update(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    names_before = web.web_apps.list_slot_configuration_names(RG, "orders-api")
    assert names_before.app_setting_names == ["AZURE_CLIENT_SECRET"]
    assert not names_before.connection_string_names

    web.web_apps.update_slot_configuration_names(RG, "orders-api", SlotConfigNamesResource(
        properties=SlotConfigNames(app_setting_names=["AZURE_CLIENT_ID", "AZURE_TENANT_ID"],
                                   connection_string_names=["Db"])))

    names_after = web.web_apps.list_slot_configuration_names(RG, "orders-api")
    assert names_after.app_setting_names == ["AZURE_CLIENT_ID", "AZURE_TENANT_ID"]
    assert names_after.connection_string_names == ["Db"]


def test_restart_site_and_slot(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)
    site = sim.tenant.webapp("orders-api")
    slot = sim.tenant.webapp("orders-api", "staging")
    assert site is not None
    assert slot is not None
    site_before, slot_before = site.restarts, slot.restarts

    web.web_apps.restart(RG, "orders-api")
    web.web_apps.restart_slot(RG, "orders-api", "staging", soft_restart=True)

    assert site.restarts == site_before + 1
    assert slot.restarts == slot_before + 1
    with pytest.raises(ResourceNotFoundError):
        web.web_apps.restart(RG, "no-such-site")


def test_the_site_pager_follows_the_absolute_next_link(
        sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrator.sim.arm, "PAGE_SIZE", 1)
    web = sim.factory().web(sim.subscription_id)

    assert names(web.web_apps.list()) == {"orders-api", "reports-fn"}
    assert names(web.web_apps.list_by_resource_group(RG)) == {"orders-api", "reports-fn"}

    # The first page really is one item with an absolute nextLink on the simulator's host.
    token = sim.credential().get_token(sim.profile.arm_scope).token
    with sim.http() as http:
        page = http.get(
            f"{sim.base_url}/subscriptions/{sim.subscription_id}/providers/Microsoft.Web/sites",
            params={"api-version": "2025-05-01"},
            headers={"Authorization": f"Bearer {token}"}).json()
    assert len(page["value"]) == 1
    assert page["nextLink"].startswith(sim.base_url + "/subscriptions/")
    # A token it did not hand out (Azure's are opaque base64) is a 400, not a dropped
    # connection: found replaying the Azure CLI's recorded vault list.
    with sim.http() as http:
        foreign = http.get(
            f"{sim.base_url}/subscriptions/{sim.subscription_id}/providers/Microsoft.Web/sites",
            params={"api-version": "2025-05-01", "$skiptoken": "Y2xpLXRlc3Qta3Y="},
            headers={"Authorization": f"Bearer {token}"})
    assert foreign.status_code == 400
    assert foreign.json()["error"]["code"] == "InvalidSkipToken"


def test_other_pagers_follow_next_links(sim: Sim, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(migrator.sim.arm, "PAGE_SIZE", 1)
    factory = sim.factory()

    assert names(factory.keyvault(sim.subscription_id).vaults.list_by_subscription()) == {
        "kv-orders", "kv-rbac"}
    # azure-mgmt-keyvault's other list, `vaults.list()`, reads `/subscriptions/{id}/resources`
    # with api-version 2015-11-01 but follows its nextLink with the Key Vault api-version,
    # which Microsoft.Resources has never published: ARM refuses page 2, as the simulator does.
    # The product lists vaults with list_by_subscription only (cloud/rights.py).
    with pytest.raises(HttpResponseError) as info:
        list(factory.keyvault(sim.subscription_id).vaults.list())
    assert info.value.error is not None
    assert info.value.error.code == "InvalidApiVersionParameter"
    assignments = list(factory.authorization(sim.subscription_id)
                       .role_assignments.list_for_subscription())
    assert len(assignments) == 4  # the estate's four assignments, one per page


# -- Microsoft.KeyVault ------------------------------------------------------------------------


def test_vaults_list_by_subscription_generic_list_and_resource_group(sim: Sim) -> None:
    kv = sim.factory().keyvault(sim.subscription_id)

    by_sub = list(kv.vaults.list_by_subscription())
    generic = list(kv.vaults.list())
    by_rg = list(kv.vaults.list_by_resource_group(RG))

    assert names(by_sub) == names(generic) == names(by_rg) == {"kv-orders", "kv-rbac"}
    assert {str(v.type) for v in generic} == {"Microsoft.KeyVault/vaults"}
    assert {v.id for v in generic} == {v.id for v in by_sub}


def test_get_vault_shows_access_policies_and_permission_model(sim: Sim) -> None:
    kv = sim.factory().keyvault(sim.subscription_id)

    orders = kv.vaults.get(RG, "kv-orders")
    rbac = kv.vaults.get(RG, "kv-rbac")

    # Azure leaves enableRbacAuthorization out of an access-policy vault (recording
    # test_keyvault_mgmt): a reader must take a missing value for access policies.
    assert not orders.properties.enable_rbac_authorization
    # Azure's vaultUri is https://kv-orders.vault.azure.net/; the simulator serves each
    # vault's data plane on its own 127.0.0.1 port and says so here, as Azure names the host.
    assert orders.properties.vault_uri == sim.server.ctx.vault_urls["kv-orders"]
    assert orders.properties.vault_uri.startswith("https://127.0.0.1:")
    policies = orders.properties.access_policies or []
    assert [p.object_id for p in policies] == [sim.object_id("orders-sp")]
    assert sorted(policies[0].permissions.secrets or []) == ["get", "list"]
    assert rbac.properties.enable_rbac_authorization is True
    assert not rbac.properties.access_policies
    with pytest.raises(ResourceNotFoundError):
        kv.vaults.get(RG, "kv-missing")


def _policy(sim: Sim, object_id: str, secrets: list[str]) -> VaultAccessPolicyParameters:
    return VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=[
        AccessPolicyEntry(tenant_id=sim.endpoints.tenant_id, object_id=object_id,
                          permissions=Permissions(secrets=secrets))]))


def _secret_perms(kv: Any, vault: str) -> dict[str, list[str]]:
    policies = kv.vaults.get(RG, vault).properties.access_policies or []
    return {p.object_id: sorted(p.permissions.secrets or []) for p in policies}


def test_access_policy_add_creates_an_entry_and_merges_into_an_existing_one(sim: Sim) -> None:
    kv = sim.factory().keyvault(sim.subscription_id)
    orders, reports = sim.object_id("orders-sp"), sim.object_id("reports-sp")

    result = kv.vaults.update_access_policy(RG, "kv-orders", "add",
                                            _policy(sim, reports, ["get"]))
    kv.vaults.update_access_policy(RG, "kv-orders", "add", _policy(sim, orders, ["set"]))

    returned = {p.object_id for p in result.properties.access_policies}
    assert returned == {orders, reports}
    assert _secret_perms(kv, "kv-orders") == {orders: ["get", "list", "set"], reports: ["get"]}


def test_access_policy_remove_subtracts_permissions_then_drops_the_entry(sim: Sim) -> None:
    kv = sim.factory().keyvault(sim.subscription_id)
    orders = sim.object_id("orders-sp")

    kv.vaults.update_access_policy(RG, "kv-orders", "remove", _policy(sim, orders, ["list"]))
    assert _secret_perms(kv, "kv-orders") == {orders: ["get"]}

    kv.vaults.update_access_policy(RG, "kv-orders", "remove", _policy(sim, orders, ["get"]))
    assert _secret_perms(kv, "kv-orders") == {}


def test_access_policy_remove_matches_permissions_in_their_stored_casing(sim: Sim) -> None:
    """As in Azure (Azure/azure-rest-api-specs#42963): a remove in another casing than the
    stored one answers 200 and removes nothing; add keeps both casings (azure-cli#12531)."""
    kv = sim.factory().keyvault(sim.subscription_id)
    reports = sim.object_id("reports-sp")
    kv.vaults.update_access_policy(RG, "kv-orders", "add", _policy(sim, reports, ["Get"]))

    kv.vaults.update_access_policy(RG, "kv-orders", "remove", _policy(sim, reports, ["get"]))
    assert _secret_perms(kv, "kv-orders")[reports] == ["Get"]
    kv.vaults.update_access_policy(RG, "kv-orders", "add", _policy(sim, reports, ["get"]))
    assert _secret_perms(kv, "kv-orders")[reports] == ["Get", "get"]

    kv.vaults.update_access_policy(RG, "kv-orders", "remove",
                                   _policy(sim, reports, ["Get", "get"]))
    assert reports not in _secret_perms(kv, "kv-orders")


def test_access_policy_replace_overwrites_the_entry(sim: Sim) -> None:
    kv = sim.factory().keyvault(sim.subscription_id)
    orders = sim.object_id("orders-sp")

    kv.vaults.update_access_policy(RG, "kv-orders", "replace", _policy(sim, orders, ["set"]))

    assert _secret_perms(kv, "kv-orders") == {orders: ["set"]}


def test_reader_can_read_a_vault_but_not_change_its_policies(sim: Sim) -> None:
    kv = sim.factory("reader-sp").keyvault(sim.subscription_id)

    assert kv.vaults.get(RG, "kv-orders").name == "kv-orders"
    with pytest.raises(HttpResponseError) as info:
        kv.vaults.update_access_policy(RG, "kv-orders", "add",
                                       _policy(sim, sim.object_id("reader-sp"), ["get"]))
    assert_forbidden(info.value, "Microsoft.KeyVault/vaults/accessPolicies/write")


# -- Microsoft.ManagedIdentity -----------------------------------------------------------------


def test_user_assigned_identity_lifecycle(sim: Sim) -> None:
    msi = sim.factory().msi(sim.subscription_id)

    created = msi.user_assigned_identities.create_or_update(
        RG, "id-new", Identity(location="westeurope"))
    # Azure writes the id back with a lower-case `resourcegroups` (Azure/azure-cli recording
    # identity/test_identity_management): a client compares ids case-insensitively.
    assert created.id is not None and created.id.lower() == uai_id(sim, "id-new").lower()
    assert "/resourcegroups/" in created.id
    assert created.principal_id
    assert created.client_id
    assert created.tenant_id == sim.endpoints.tenant_id

    fetched = msi.user_assigned_identities.get(RG, "id-new")
    assert (fetched.principal_id, fetched.client_id) == (created.principal_id,
                                                          created.client_id)
    # Creating it again is idempotent: same principal, same client id.
    again = msi.user_assigned_identities.create_or_update(
        RG, "id-new", Identity(location="westeurope"))
    assert again.principal_id == created.principal_id

    assert names(msi.user_assigned_identities.list_by_resource_group(RG)) == {
        "id-shared", "id-new"}
    assert names(msi.user_assigned_identities.list_by_subscription()) == {"id-shared", "id-new"}

    msi.user_assigned_identities.delete(RG, "id-new")

    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.get(RG, "id-new")
    assert names(msi.user_assigned_identities.list_by_subscription()) == {"id-shared"}
    assert created.principal_id not in sim.tenant.service_principals


def test_creating_an_identity_needs_write_rights(sim: Sim) -> None:
    msi = sim.factory("reader-sp").msi(sim.subscription_id)

    assert names(msi.user_assigned_identities.list_by_resource_group(RG)) == {"id-shared"}
    with pytest.raises(HttpResponseError) as info:
        msi.user_assigned_identities.create_or_update(RG, "id-x", Identity(location="westeurope"))
    assert_forbidden(info.value, "Microsoft.ManagedIdentity/userAssignedIdentities/write")


def test_identity_tags_are_kept(sim: Sim) -> None:
    msi = sim.factory().msi(sim.subscription_id)

    msi.user_assigned_identities.create_or_update(
        RG, "id-tagged", Identity(location="westeurope", tags={"owner": "migrator"}))

    assert msi.user_assigned_identities.get(RG, "id-tagged").tags == {"owner": "migrator"}


def test_patching_an_identity_keeps_its_location(sim: Sim) -> None:
    msi = sim.factory().msi(sim.subscription_id)
    msi.user_assigned_identities.create_or_update(RG, "id-north",
                                                  Identity(location="northeurope"))

    patched = msi.user_assigned_identities.update(RG, "id-north", IdentityUpdate(tags={"a": "b"}))

    assert patched.location == "northeurope"


def test_patching_a_missing_identity_is_404(sim: Sim) -> None:
    msi = sim.factory().msi(sim.subscription_id)

    with pytest.raises(ResourceNotFoundError):
        msi.user_assigned_identities.update(RG, "id-missing", IdentityUpdate(tags={"a": "b"}))
    assert uai_id(sim, "id-missing").lower() not in sim.tenant.identities


# -- Microsoft.Authorization -------------------------------------------------------------------


def test_role_definition_by_name_and_by_id(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    scope = f"/subscriptions/{sim.subscription_id}"

    found = list(operator_auth.role_definitions.list(
        scope, filter="roleName eq 'Storage Blob Data Reader'"))

    assert len(found) == 1
    assert found[0].name == STORAGE_BLOB_DATA_READER
    assert str(found[0].id).endswith(f"/roleDefinitions/{STORAGE_BLOB_DATA_READER}")
    by_id = operator_auth.role_definitions.get(scope, STORAGE_BLOB_DATA_READER)
    assert by_id.role_name == "Storage Blob Data Reader"
    assert by_id.role_type == "BuiltInRole"
    data_actions = by_id.permissions[0].data_actions or []
    assert "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read" in data_actions
    assert operator_auth.role_definitions.get_by_id(str(found[0].id)).role_name == \
        "Storage Blob Data Reader"
    with pytest.raises(HttpResponseError) as info:
        operator_auth.role_definitions.get(scope, str(uuid.uuid4()))
    assert info.value.status_code == 404


def test_role_assignments_filtered_by_principal(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    orders = sim.object_id("orders-sp")

    found = list(operator_auth.role_assignments.list_for_subscription(
        filter=f"principalId eq '{orders}'"))

    assert len(found) == 1
    assert found[0].principal_id == orders
    assert found[0].scope == rg_scope(sim)
    assert str(found[0].role_definition_id).endswith(STORAGE_BLOB_DATA_READER)


def test_role_assignments_for_a_scope_include_inherited_ones(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    at_rg = list(operator_auth.role_assignments.list_for_scope(rg_scope(sim)))
    at_site = list(operator_auth.role_assignments.list_for_scope(site_id(sim, "orders-api")))

    principals = {a.principal_id for a in at_rg}
    assert principals == {sim.object_id(n) for n in
                          ("migrator-operator", "orders-sp", "reports-sp", "reader-sp")}
    # A site inherits the subscription's Owner and the resource group's assignments.
    assert {a.principal_id for a in at_site} == principals


def test_role_assignment_create_get_duplicate_and_delete(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    scope = rg_scope(sim)
    principal = sim.object_id("nobody-sp")
    role_id = role_definition_id(operator_auth, scope, "Storage Blob Data Reader")
    params = RoleAssignmentCreateParameters(role_definition_id=role_id, principal_id=principal,
                                            principal_type="ServicePrincipal")
    name = str(uuid.uuid4())

    created = operator_auth.role_assignments.create(scope, name, params)
    assert created.name == name
    assert created.principal_id == principal
    assert created.scope == scope
    assert str(created.role_definition_id).endswith(STORAGE_BLOB_DATA_READER)

    # PUT of the same name and content again is idempotent.
    assert operator_auth.role_assignments.create(scope, name, params).name == name

    with pytest.raises(HttpResponseError) as info:
        operator_auth.role_assignments.create(scope, str(uuid.uuid4()), params)
    assert info.value.status_code == 409
    assert info.value.error is not None
    assert info.value.error.code == "RoleAssignmentExists"

    fetched = operator_auth.role_assignments.get(scope, name)
    assert fetched.id == created.id
    assert {a.name for a in operator_auth.role_assignments.list_for_scope(
        scope, filter=f"principalId eq '{principal}'")} == {name}

    operator_auth.role_assignments.delete(scope, name)

    with pytest.raises(HttpResponseError) as gone:
        operator_auth.role_assignments.get(scope, name)
    assert gone.value.status_code == 404
    assert list(operator_auth.role_assignments.list_for_subscription(
        filter=f"principalId eq '{principal}'")) == []


def test_role_assignments_below_a_scope_are_listed_unless_at_scope_is_asked(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    slot_scope = site_id(sim, "orders-api") + "/slots/staging"
    name = assign(operator_auth, slot_scope, "Reader", sim.object_id("nobody-sp"))

    at_rg = {a.name for a in operator_auth.role_assignments.list_for_scope(rg_scope(sim))}
    at_rg_only = {a.name for a in operator_auth.role_assignments.list_for_scope(
        rg_scope(sim), filter="atScope()")}
    at_slot = operator_auth.role_assignments.get(slot_scope, name)

    assert name in at_rg  # below the resource group: listed
    assert name not in at_rg_only  # atScope(): only at or above
    assert at_slot.scope == slot_scope
    # It is not at the resource group: getting it there is 404.
    with pytest.raises(HttpResponseError) as info:
        operator_auth.role_assignments.get(rg_scope(sim), name)
    assert info.value.status_code == 404


def test_an_owner_of_prod_cannot_assign_roles_in_dev(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    dev = f"/subscriptions/{sim.subscription_id_of('dev')}"

    with pytest.raises(HttpResponseError) as info:
        operator_auth.role_assignments.create(dev, str(uuid.uuid4()),
                                              RoleAssignmentCreateParameters(
            role_definition_id=role_definition_id(operator_auth, rg_scope(sim), "Reader"),
            principal_id=sim.object_id("nobody-sp"), principal_type="ServicePrincipal"))
    assert_forbidden(info.value, "Microsoft.Authorization/roleAssignments/write")


def test_filtered_role_assignment_lists_keep_the_filter_across_pages(
        sim: Sim, operator_auth: AuthorizationManagementClient,
        monkeypatch: pytest.MonkeyPatch) -> None:
    nobody = sim.object_id("nobody-sp")
    for scope in (f"/subscriptions/{sim.subscription_id}", rg_scope(sim),
                  site_id(sim, "orders-api")):
        assign(operator_auth, scope, "Reader", nobody)
    monkeypatch.setattr(migrator.sim.arm, "PAGE_SIZE", 1)

    found = list(operator_auth.role_assignments.list_for_subscription(
        filter=f"principalId eq '{nobody}'"))

    assert len(found) == 3
    assert {a.principal_id for a in found} == {nobody}


def test_role_assignment_for_an_unknown_principal_without_type_is_principal_not_found(
        sim: Sim, operator_auth: AuthorizationManagementClient) -> None:
    scope = rg_scope(sim)

    # The SDK model defaults principalType to "User"; the tool's callers may send none.
    with pytest.raises(HttpResponseError) as info:
        operator_auth.role_assignments.create(scope, str(uuid.uuid4()),
                                              RoleAssignmentCreateParameters(
            role_definition_id=role_definition_id(operator_auth, scope, "Reader"),
            principal_id=str(uuid.uuid4()),
            principal_type=None))  # type: ignore[arg-type]
    assert info.value.status_code == 400
    assert info.value.error is not None
    assert info.value.error.code == "PrincipalNotFound"


# -- authorization semantics -------------------------------------------------------------------


def test_a_request_without_a_token_is_401(sim: Sim) -> None:
    with sim.http() as http:
        response = http.get(SUBSCRIPTIONS_URL.format(base=sim.base_url))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


def test_reader_reads_sites_but_may_not_list_or_change_settings(sim: Sim) -> None:
    web = sim.factory("reader-sp").web(sim.subscription_id)

    assert web.web_apps.get(RG, "orders-api").name == "orders-api"
    assert names(web.web_apps.list()) == {"orders-api", "reports-fn"}

    with pytest.raises(HttpResponseError) as listing:
        web.web_apps.list_application_settings(RG, "orders-api")
    assert_forbidden(listing.value, "Microsoft.Web/sites/config/list/action")

    with pytest.raises(HttpResponseError) as updating:
        web.web_apps.update_application_settings(
            RG, "orders-api", StringDictionary(properties={"X": "y"}))
    assert_forbidden(updating.value, "Microsoft.Web/sites/config/write")
    assert "AZURE_CLIENT_SECRET" in sim.tenant.sites["orders-api"].app_settings


@pytest.mark.parametrize("listing", ["sites", "vaults", "identities"])
def test_listing_in_a_subscription_without_any_role_is_403(sim: Sim, listing: str) -> None:
    dev = sim.subscription_id_of("dev")  # the operator holds no role in dev
    factory = sim.factory()
    calls: dict[str, Callable[[], Any]] = {
        "sites": lambda: list(factory.web(dev).web_apps.list()),
        "vaults": lambda: list(factory.keyvault(dev).vaults.list_by_subscription()),
        "identities": lambda: list(
            factory.msi(dev).user_assigned_identities.list_by_subscription()),
    }

    with pytest.raises(HttpResponseError) as info:
        calls[listing]()
    assert_forbidden(info.value)


def test_a_principal_without_roles_gets_403_even_for_a_missing_site(sim: Sim) -> None:
    web = sim.factory("nobody-sp").web(sim.subscription_id)

    with pytest.raises(HttpResponseError) as existing:
        web.web_apps.get(RG, "orders-api")
    assert_forbidden(existing.value, "Microsoft.Web/sites/read")
    assert sim.object_id("nobody-sp") in str(existing.value.message)

    with pytest.raises(HttpResponseError) as missing:
        web.web_apps.get(RG, "no-such-site")
    assert_forbidden(missing.value)


def test_contributor_changes_settings_but_cannot_assign_roles(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Contributor", rg_scope(sim))
    factory = sim.factory("nobody-sp")
    web = factory.web(sim.subscription_id)

    web.web_apps.update_application_settings(
        RG, "orders-api", StringDictionary(properties={"ONLY": "this"}))
    assert web.web_apps.list_application_settings(RG, "orders-api").properties == {
        "ONLY": "this"}

    auth = factory.authorization(sim.subscription_id)
    with pytest.raises(HttpResponseError) as info:
        assign(auth, rg_scope(sim), "Reader", sim.object_id("reader-sp"))
    assert_forbidden(info.value, "Microsoft.Authorization/roleAssignments/write")


def test_a_site_scoped_role_covers_the_site_and_its_slots_only(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Website Contributor", site_id(sim, "orders-api"))
    web = sim.factory("nobody-sp").web(sim.subscription_id)

    assert web.web_apps.list_application_settings(RG, "orders-api").properties
    assert web.web_apps.list_application_settings_slot(RG, "orders-api", "staging").properties
    with pytest.raises(HttpResponseError) as sibling:
        web.web_apps.get(RG, "reports-fn")
    assert_forbidden(sibling.value)
    # Listing shows only what the caller may read.
    assert names(web.web_apps.list()) == {"orders-api"}


def test_a_resource_group_role_does_not_reach_another_resource_group(
        tmp_path: Path, start_sim: Callable[[Path], Sim]) -> None:
    estate = tmp_path / "two-groups.yaml"
    estate.write_text(
        "tenant: {id: 6f1c3b0e-0000-4000-8000-000000000002, domain: two.onmicrosoft.com}\n"
        "operator: op\n"
        "principals:\n"
        "  - {name: op, secrets: [{}]}\n"
        "  - {name: app-sp, secrets: [{}]}\n"
        "subscriptions:\n"
        "  - name: prod\n"
        "    resource_groups:\n"
        "      - {name: rg-a, sites: [{name: site-a}]}\n"
        "      - {name: rg-b, sites: [{name: site-b}]}\n"
        "role_assignments:\n"
        "  - {principal: op, role: Owner, scope: /subscriptions/prod}\n"
        "  - {principal: app-sp, role: Website Contributor,"
        " scope: /subscriptions/prod/resourceGroups/rg-a}\n",
        encoding="utf-8")
    other = start_sim(estate)
    web = other.factory("app-sp").web(other.subscription_id)

    assert web.web_apps.list_application_settings("rg-a", "site-a").properties == {}
    with pytest.raises(HttpResponseError) as info:
        web.web_apps.get("rg-b", "site-b")
    assert_forbidden(info.value, "Microsoft.Web/sites/read")
    assert names(web.web_apps.list()) == {"site-a"}


def test_owner_at_subscription_scope_can_do_everything(
        sim: Sim, grant: Callable[..., str]) -> None:
    grant("nobody-sp", "Owner", f"/subscriptions/{sim.subscription_id}")
    factory = sim.factory("nobody-sp")
    web = factory.web(sim.subscription_id)

    web.web_apps.update_application_settings(
        RG, "reports-fn", StringDictionary(properties={"A": "b"}))
    web.web_apps.update(RG, "reports-fn", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned, UserAssigned")))
    web.web_apps.restart(RG, "reports-fn")
    factory.keyvault(sim.subscription_id).vaults.update_access_policy(
        RG, "kv-orders", "add", _policy(sim, sim.object_id("reports-sp"), ["get"]))
    factory.msi(sim.subscription_id).user_assigned_identities.create_or_update(
        RG, "id-owner", Identity(location="westeurope"))
    auth = factory.authorization(sim.subscription_id)
    name = assign(auth, rg_scope(sim), "Reader", sim.object_id("reports-sp"))
    auth.role_assignments.delete(rg_scope(sim), name)

    reports = sim.tenant.sites["reports-fn"]
    assert reports.app_settings == {"A": "b"}
    assert reports.identity.system_principal_id
    assert uai_id(sim, "id-owner").lower() in sim.tenant.identities
