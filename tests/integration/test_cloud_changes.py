"""The write side of the cloud layer (`migrator.cloud.changes`) against `migrator.sim`.

Every call goes through the real SDKs (azure-mgmt-*, msgraph-sdk) to the simulator, which
checks the result independently: its state for what a change did, and its app runtimes for
whether an app still works. Each write is run twice where the executor may repeat it, and the
tests look for secret text in everything a failure or a minted secret could print.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.web.models import ManagedServiceIdentity, SitePatchResource, UserAssignedIdentity
from conftest import FIXTURES, Sim

from migrator.cloud.changes import (
    CloudChanges,
    NewSecret,
    SiteAddress,
    SiteState,
    parse_site_id,
    role_assignment_name,
)
from migrator.cloud.errors import AzureCallError, InvalidResourceId, PrincipalNotReplicated
from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.execute.steps import while_replicating

pytestmark = pytest.mark.integration

RG = "rg-orders"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
USER_READ_ALL = "df021288-bdef-4463-88db-98f22de89214"
TRIO = ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET")


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "changes_estate.yaml"


@pytest.fixture
def cloud(sim: Sim) -> CloudChanges:
    return CloudChanges(sim.factory())


def site_id(sim: Sim, name: str, slot: str | None = None) -> str:
    base = (f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}"
            f"/providers/Microsoft.Web/sites/{name}")
    return f"{base}/slots/{slot}" if slot else base


def uai_id(sim: Sim, name: str) -> str:
    return (f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}"
            f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{name}")


def vault_id(sim: Sim, name: str = "kv-orders") -> str:
    return (f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}"
            f"/providers/Microsoft.KeyVault/vaults/{name}")


def rg_scope(sim: Sim) -> str:
    return f"/subscriptions/{sim.subscription_id}/resourceGroups/{RG}"


def app_object_id(sim: Sim, principal: str) -> str:
    app = sim.tenant.app_by_app_id(sim.client_id(principal))
    assert app is not None
    return app.object_id


def sim_site(sim: Sim, name: str, slot: str | None = None) -> dict[str, object]:
    with sim.http() as http:
        sites = http.get("/_sim/state").json()["sites"]
    wanted = f"{name}/{slot}" if slot else name
    return next(s for s in sites if s["name"] == wanted)


@pytest.fixture
def replication_delay(sim: Sim) -> Iterator[None]:
    """New managed identities stay unknown to RBAC and Graph for an hour (this test's life)."""
    with sim.http() as http:
        assert http.post("/_sim/faults", json={"replication_delay": 3600}).status_code == 200
    yield
    sim.tenant.replication_delay = 0.0


# --- ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app",
     SiteAddress("s1", "rg", "app", None)),
    ("/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/slots/staging",
     SiteAddress("s1", "rg", "app", "staging")),
    ("/SUBSCRIPTIONS/s1/resourcegroups/RG-X/providers/microsoft.web/SITES/App/SLOTS/Blue/",
     SiteAddress("s1", "RG-X", "App", "Blue")),
])
def test_parse_site_id_reads_sites_and_slots_in_any_case(text: str,
                                                         expected: SiteAddress) -> None:
    assert parse_site_id(text) == expected


@pytest.mark.parametrize("text", [
    "", "app",
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv",
    "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Web/sites/app/config/web",
])
def test_parse_site_id_refuses_other_ids(text: str) -> None:
    with pytest.raises(InvalidResourceId):
        parse_site_id(text)


def test_role_assignment_name_is_uuid5_of_scope_principal_and_role() -> None:
    scope, principal = "/subscriptions/S1/resourceGroups/RG", "AAAA-BBBB"
    expected = str(uuid.uuid5(uuid.NAMESPACE_URL,
                              f"/subscriptions/s1/resourcegroups/rg|aaaa-bbbb|{READER}"))
    assert role_assignment_name(scope, principal, READER) == expected
    full = f"/subscriptions/s1/providers/Microsoft.Authorization/roleDefinitions/{READER}"
    assert role_assignment_name(scope.lower(), principal.lower(), full.upper()) == expected


# --- sites --------------------------------------------------------------------------------------


def test_site_reads_identity_host_and_health_path_of_sites_and_slots(
        sim: Sim, cloud: CloudChanges) -> None:
    site = cloud.site(site_id(sim, "orders-api"))
    slot = cloud.site(site_id(sim, "orders-api", "staging"))
    shared = cloud.site(site_id(sim, "shared-api"))

    assert (site.record.name, site.record.slot, site.record.resource_group) == (
        "orders-api", None, RG)
    assert site.record.identity.type == "None"
    assert site.default_host_name == "orders-api.azurewebsites.net"
    assert site.health_check_path == "/api/health"
    assert (slot.record.name, slot.record.slot) == ("orders-api", "staging")
    assert slot.default_host_name == "orders-api-staging.azurewebsites.net"
    assert slot.health_check_path == "/api/health"  # the slot inherits the site's
    assert shared.record.identity.type == "SystemAssigned, UserAssigned"
    assert shared.record.identity.principal_id == sim.object_id("shared-api")
    assert [r.lower() for r in shared.record.identity.user_assigned] == [
        uai_id(sim, "id-shared").lower()]
    assert shared.health_check_path == "/healthz"


def test_the_simulator_serves_the_site_configuration(sim: Sim) -> None:
    web = sim.factory().web(sim.subscription_id)

    assert web.web_apps.get_configuration(RG, "orders-api").health_check_path == "/api/health"
    assert web.web_apps.get_configuration_slot(
        RG, "orders-api", "staging").health_check_path == "/api/health"
    # As in Azure, GET site's siteConfig holds nulls for the configuration (the health path
    # among them): site() above found the paths through config/web, its fallback read.
    got = web.web_apps.get(RG, "shared-api")
    assert got.site_config is not None
    assert got.site_config.health_check_path is None
    assert got.site_config.app_settings is None
    assert web.web_apps.get_configuration(RG, "shared-api").health_check_path == "/healthz"


def test_a_missing_site_is_a_one_line_404(sim: Sim, cloud: CloudChanges) -> None:
    with pytest.raises(AzureCallError) as info:
        cloud.site(site_id(sim, "no-such-app"))
    assert info.value.status == 404
    assert "\n" not in str(info.value)


# --- identities on sites ------------------------------------------------------------------------


def test_set_identity_enables_the_system_identity_once(sim: Sim, cloud: CloudChanges) -> None:
    target = site_id(sim, "orders-api")

    first = cloud.set_identity(target, "SystemAssigned", ())
    again = cloud.set_identity(target, "systemassigned", ())

    assert first.type == "SystemAssigned"
    assert first.principal_id
    assert again.principal_id == first.principal_id
    assert cloud.site(target).record.identity == first
    # The production site's identity is its own: the slot still has none.
    assert cloud.site(site_id(sim, "orders-api", "staging")).record.identity.type == "None"


def test_set_identity_removes_one_user_assigned_identity_and_keeps_the_rest(
        sim: Sim, cloud: CloudChanges) -> None:
    target = site_id(sim, "shared-api")
    system = sim.object_id("shared-api")
    shared, other = uai_id(sim, "id-shared"), uai_id(sim, "id-other")

    both = cloud.set_identity(target, "SystemAssigned, UserAssigned", (shared, other))
    assert {r.lower() for r in both.user_assigned} == {shared.lower(), other.lower()}
    assert both.principal_id == system

    kept = cloud.set_identity(target, "SystemAssigned, UserAssigned", (other,))
    assert kept.type == "SystemAssigned, UserAssigned"
    assert [r.lower() for r in kept.user_assigned] == [other.lower()]
    assert kept.principal_id == system  # the system identity was never dropped
    state = sim_site(sim, "shared-api")
    assert state["identity"] == {"type": "SystemAssigned, UserAssigned", "principalId": system,
                                 "userAssignedIdentities": [other]}

    only_user = cloud.set_identity(target, "UserAssigned", (other,))
    assert (only_user.type, only_user.principal_id) == ("UserAssigned", None)

    none = cloud.set_identity(target, "None", ())
    assert (none.type, none.principal_id, none.user_assigned) == ("None", None, ())


def test_set_identity_of_a_slot_changes_the_slot_only(sim: Sim, cloud: CloudChanges) -> None:
    slot = cloud.set_identity(site_id(sim, "orders-api", "staging"), "UserAssigned",
                              (uai_id(sim, "id-shared"),))

    assert slot.type == "UserAssigned"
    assert sim_site(sim, "orders-api", "staging")["identity"] == {
        "type": "UserAssigned", "principalId": None,
        "userAssignedIdentities": [uai_id(sim, "id-shared")]}
    assert sim_site(sim, "orders-api")["identity"] == {
        "type": "None", "principalId": None, "userAssignedIdentities": []}


@pytest.mark.parametrize(("kind", "user_assigned"), [
    ("UserAssigned", ()), ("SystemAssigned", ("/x",)), ("Both", ()),
])
def test_set_identity_refuses_a_contradictory_request(sim: Sim, cloud: CloudChanges, kind: str,
                                                      user_assigned: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"identity type"):
        cloud.set_identity(site_id(sim, "orders-api"), kind, user_assigned)


# --- settings -----------------------------------------------------------------------------------


def test_app_settings_are_replaced_whole(sim: Sim, cloud: CloudChanges) -> None:
    target = site_id(sim, "orders-api")
    before = cloud.app_settings(target)
    assert set(before) == {*TRIO, "WEBSITE_RUN_FROM_PACKAGE"}
    assert before["AZURE_CLIENT_SECRET"] == sim.secret("orders-sp")

    wanted = {"WEBSITE_RUN_FROM_PACKAGE": "1", "Storage__credential": "managedidentity"}
    cloud.set_app_settings(target, wanted)

    assert cloud.app_settings(target) == wanted
    assert sim_site(sim, "orders-api")["appSettings"] == wanted
    # The slot's settings are its own.
    assert cloud.app_settings(site_id(sim, "orders-api", "staging"))[
        "AZURE_CLIENT_SECRET"] == sim.secret("orders-sp", 1)


def test_slot_app_settings_are_written_to_the_slot(sim: Sim, cloud: CloudChanges) -> None:
    target = site_id(sim, "orders-api", "staging")
    cloud.set_app_settings(target, {"ONLY": "this"})

    assert cloud.app_settings(target) == {"ONLY": "this"}
    assert "AZURE_CLIENT_SECRET" in cloud.app_settings(site_id(sim, "orders-api"))


def test_connection_strings_round_trip(sim: Sim, cloud: CloudChanges) -> None:
    target = site_id(sim, "orders-api")
    assert cloud.connection_strings(target) == {"Events": (
        "Custom", "Endpoint=sb://orders.servicebus.windows.net/;SharedAccessKeyName=send")}

    wanted = {"Db": ("SQLAzure", "Server=tcp:sql.database.windows.net;Authentication="
                                 "Active Directory Managed Identity"),
              "Other": ("Custom", "x=y")}
    cloud.set_connection_strings(target, wanted)

    assert cloud.connection_strings(target) == wanted
    assert cloud.connection_strings(site_id(sim, "orders-api", "staging")) == {}


def test_slot_config_names_belong_to_the_site(sim: Sim, cloud: CloudChanges) -> None:
    site, slot = site_id(sim, "orders-api"), site_id(sim, "orders-api", "staging")
    assert cloud.slot_config_names(site) == (frozenset({"AZURE_CLIENT_SECRET"}), frozenset())
    assert cloud.slot_config_names(slot) == cloud.slot_config_names(site)

    cloud.set_slot_config_names(slot, frozenset({"AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"}),
                                frozenset({"Events"}))

    assert cloud.slot_config_names(site) == (
        frozenset({"AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"}), frozenset({"Events"}))
    assert sim_site(sim, "orders-api")["slotSettingNames"] == [
        "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"]


def test_a_refused_settings_write_never_quotes_a_value(sim: Sim) -> None:
    reader = CloudChanges(sim.factory("reader-sp"))
    secret = sim.secret("orders-sp")
    target = site_id(sim, "orders-api")

    with pytest.raises(AzureCallError) as write:
        reader.set_app_settings(target, {"AZURE_CLIENT_SECRET": secret})
    with pytest.raises(AzureCallError) as strings:
        reader.set_connection_strings(target, {"Db": ("SQLAzure", f"Password={secret}")})
    with pytest.raises(AzureCallError) as read:
        reader.app_settings(target)

    for err in (write.value, strings.value, read.value):
        assert err.forbidden
        assert secret not in str(err)
        assert secret not in repr(err)
        assert "\n" not in str(err)


# --- user-assigned identities -------------------------------------------------------------------


def test_user_assigned_identity_lifecycle(sim: Sim, cloud: CloudChanges) -> None:
    rid = uai_id(sim, "id-orders-api")
    assert cloud.user_assigned_identity(rid) is None

    made = cloud.create_user_assigned_identity(rid, "westeurope", {"msi-migrator": "plan-1"})
    again = cloud.create_user_assigned_identity(rid, "westeurope", {"msi-migrator": "plan-1"})

    assert made == again  # same principal, same client id: repeating the step is harmless
    assert (made.id.lower(), made.name, made.location) == (rid.lower(), "id-orders-api",
                                                           "westeurope")
    assert made.client_id and made.principal_id
    assert cloud.user_assigned_identity(rid) == made
    held = sim.tenant.identities[rid.lower()]
    assert (held.tags, held.principal_id) == ({"msi-migrator": "plan-1"}, made.principal_id)

    cloud.delete_user_assigned_identity(rid)
    cloud.delete_user_assigned_identity(rid)  # already gone: fine
    assert cloud.user_assigned_identity(rid) is None


def test_user_assigned_identity_refuses_other_ids(sim: Sim, cloud: CloudChanges) -> None:
    with pytest.raises(InvalidResourceId):
        cloud.user_assigned_identity(site_id(sim, "orders-api"))


# --- role assignments ---------------------------------------------------------------------------


def test_role_assignments_for_a_principal(sim: Sim, cloud: CloudChanges) -> None:
    found = cloud.role_assignments_for(sim.object_id("orders-sp"), sim.subscription_id)

    assert [(a.scope, a.role_definition_id, a.principal_id) for a in found] == [
        (rg_scope(sim), STORAGE_BLOB_DATA_READER, sim.object_id("orders-sp"))]
    assert cloud.role_assignments_for(str(uuid.uuid4()), sim.subscription_id) == []


def test_create_role_assignment_is_deterministic_and_idempotent(
        sim: Sim, cloud: CloudChanges) -> None:
    principal = sim.object_id("shared-api")
    scope = rg_scope(sim)

    made = cloud.create_role_assignment(scope, STORAGE_BLOB_DATA_READER, principal)
    full_role = (f"/subscriptions/{sim.subscription_id}/providers/Microsoft.Authorization/"
                 f"roleDefinitions/{STORAGE_BLOB_DATA_READER}")
    again = cloud.create_role_assignment(scope, full_role, principal)

    name = role_assignment_name(scope, principal, STORAGE_BLOB_DATA_READER)
    assert made == again
    assert made.id.endswith(f"/roleAssignments/{name}")
    assert (made.scope, made.role_definition_id, made.principal_id, made.principal_type) == (
        scope, STORAGE_BLOB_DATA_READER, principal, "ServicePrincipal")
    assert sim.tenant.role_assignments[name].principal_type == "ServicePrincipal"

    assert cloud.delete_role_assignment(scope, STORAGE_BLOB_DATA_READER, principal) is True
    assert cloud.delete_role_assignment(scope, full_role, principal) is False
    assert name not in sim.tenant.role_assignments


def test_an_assignment_made_under_another_name_is_found_and_deleted(
        sim: Sim, cloud: CloudChanges) -> None:
    principal = sim.object_id("reader-sp")
    scope = rg_scope(sim)
    foreign = str(uuid.uuid4())
    sim.factory().authorization(sim.subscription_id).role_assignments.create(
        scope, foreign, RoleAssignmentCreateParameters(
            role_definition_id=(f"/subscriptions/{sim.subscription_id}/providers/"
                                f"Microsoft.Authorization/roleDefinitions/"
                                f"{STORAGE_BLOB_DATA_READER}"),
            principal_id=principal, principal_type="ServicePrincipal"))

    existing = cloud.create_role_assignment(scope, STORAGE_BLOB_DATA_READER, principal)

    assert existing.id.endswith(f"/roleAssignments/{foreign}")  # the 409 named it
    assert cloud.delete_role_assignment(scope, STORAGE_BLOB_DATA_READER, principal) is True
    assert foreign not in sim.tenant.role_assignments
    # The Reader assignment of the same principal at the same scope is another role: kept.
    assert [a.role_definition_id for a in cloud.role_assignments_for(
        principal, sim.subscription_id)] == [READER]


# --- replication delay --------------------------------------------------------------------------


@pytest.mark.usefixtures("replication_delay")
def test_a_new_identity_is_not_replicated_yet(sim: Sim, cloud: CloudChanges) -> None:
    identity = cloud.set_identity(site_id(sim, "orders-api"), "SystemAssigned", ())
    principal = str(identity.principal_id)
    graph = sim.tenant.graph_sp.object_id

    with pytest.raises(PrincipalNotReplicated) as info:
        cloud.assign_app_role(principal, graph, USER_READ_ALL)
    assert isinstance(info.value, AzureCallError)
    assert info.value.status == 404
    assert "\n" not in str(info.value)
    # ARM takes the assignment all the same: principalType is sent.
    made = cloud.create_role_assignment(rg_scope(sim), STORAGE_BLOB_DATA_READER, principal)
    assert made.principal_type == "ServicePrincipal"

    with sim.tenant.lock:  # replication completes
        sim.tenant.service_principals[principal].visible_at = 0.0
    granted = cloud.assign_app_role(principal, graph, USER_READ_ALL)
    assert [g.id for g in cloud.app_role_assignments(principal)] == [granted]


# --- Key Vault ----------------------------------------------------------------------------------


def test_access_policies_are_added_merged_and_removed_whole(sim: Sim,
                                                             cloud: CloudChanges) -> None:
    target = vault_id(sim)
    identity = sim.object_id("shared-api")
    orders = sim.object_id("orders-sp")

    before = cloud.vault(target)
    assert (before.name, before.rbac, before.subscription_id) == (
        "kv-orders", False, sim.subscription_id)
    assert [(p.object_id, sorted(p.secrets)) for p in before.access_policies] == [
        (orders, ["get", "list"])]

    cloud.add_access_policy(target, identity, ("get",), (), ())
    cloud.add_access_policy(target, identity, ("get", "list"), ("get",), ())
    mine = next(p for p in cloud.vault(target).access_policies if p.object_id == identity)
    assert (sorted(mine.secrets), list(mine.keys), list(mine.certificates)) == (
        ["get", "list"], ["get"], [])

    cloud.remove_access_policy(target, orders)
    cloud.remove_access_policy(target, orders)  # no entry: nothing to do
    assert [p.object_id for p in cloud.vault(target).access_policies] == [identity]


def test_an_access_policy_stored_in_portal_casing_is_removed_whole(sim: Sim,
                                                                   cloud: CloudChanges) -> None:
    """The portal stores "Get", az stores "get", and Key Vault's remove matches the stored
    casing exactly (a mismatch is a silent 200): the revoke must remove the entry anyway."""
    target = vault_id(sim)
    orders = sim.object_id("orders-sp")
    (policy,) = sim.tenant.vaults["kv-orders"].access_policies
    policy.secrets = ["Get", "List"]
    policy.keys = ["unwrapKey"]

    cloud.remove_access_policy(target, orders)

    assert [p.object_id for p in cloud.vault(target).access_policies] == []


# --- Graph: app roles, principals, passwords ----------------------------------------------------


def test_app_role_assignment_is_idempotent_and_removable(sim: Sim, cloud: CloudChanges) -> None:
    identity = sim.object_id("shared-api")
    graph = sim.tenant.graph_sp.object_id
    held = cloud.app_role_assignments(sim.object_id("orders-sp"))
    assert [(g.resource_id, g.app_role_id, g.app_role_value) for g in held] == [
        (graph, USER_READ_ALL, "User.Read.All")]

    first = cloud.assign_app_role(identity, graph, USER_READ_ALL)
    again = cloud.assign_app_role(identity, graph, USER_READ_ALL.upper())

    assert again == first
    assert [g.id for g in cloud.app_role_assignments(identity)] == [first]
    assert sim.tenant.graph_roles_of(identity) == ["User.Read.All"]

    cloud.remove_app_role_assignment(identity, first)
    cloud.remove_app_role_assignment(identity, first)  # already gone: fine
    assert cloud.app_role_assignments(identity) == []


def test_service_principal_by_object_id(sim: Sim, cloud: CloudChanges) -> None:
    orders = cloud.service_principal_by_object_id(sim.object_id("orders-sp"))
    managed = cloud.service_principal_by_object_id(sim.object_id("shared-api"))

    assert orders is not None
    assert (orders.app_id, orders.kind, orders.enabled) == (
        sim.client_id("orders-sp"), "Application", True)
    assert orders.application_object_id == app_object_id(sim, "orders-sp")
    assert len(orders.password_credentials) == 2
    assert [g.app_role_value for g in orders.app_role_grants] == ["User.Read.All"]
    assert managed is not None
    assert (managed.kind, managed.application_object_id) == ("ManagedIdentity", None)
    assert cloud.service_principal_by_object_id(str(uuid.uuid4())) is None


def test_passwords_are_listed_added_and_removed(sim: Sim, cloud: CloudChanges) -> None:
    app = app_object_id(sim, "orders-sp")
    before = cloud.password_credentials(app)
    assert [c.hint for c in before] == [sim.secret("orders-sp")[:3],
                                        sim.secret("orders-sp", 1)[:3]]

    record, secret = cloud.add_password(app, "msi-migrator rollback")

    text = secret.reveal()
    assert record.hint == text[:3]
    assert record.display_name == "msi-migrator rollback"
    assert isinstance(secret, NewSecret)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>60}",
                  repr((record, secret)), str([secret])):
        assert text not in shown
    assert repr(secret) == str(secret) == "NewSecret(<hidden>)"
    assert text not in repr(record)
    # The new secret works: the principal signs in with it.
    credential = sim.track(secret_credential(sim.profile, sim.endpoints.tenant_id,
                                             sim.client_id("orders-sp"), text))
    assert credential.get_token(sim.profile.arm_scope).token
    assert [c.key_id for c in cloud.password_credentials(app)] == [
        *(c.key_id for c in before), record.key_id]

    cloud.remove_password(app, before[0].key_id)
    cloud.remove_password(app, before[0].key_id)  # already removed: fine
    assert [c.key_id for c in cloud.password_credentials(app)] == [
        before[1].key_id, record.key_id]


def test_remove_password_of_a_missing_application_fails(sim: Sim, cloud: CloudChanges) -> None:
    with pytest.raises(AzureCallError) as info:
        cloud.remove_password(str(uuid.uuid4()), str(uuid.uuid4()))
    assert info.value.status == 404


# --- health -------------------------------------------------------------------------------------


def test_probe_health_turns_healthy_when_the_settings_are_fixed(sim: Sim,
                                                                cloud: CloudChanges) -> None:
    target = site_id(sim, "broken-api")
    state = cloud.site(target)

    sick = cloud.probe_health(state)
    assert (sick.ok, sick.status) == (False, 503)
    assert "no credential" in sick.detail
    assert len(sick.detail) <= 200

    secret = sim.secret("orders-sp")
    cloud.set_app_settings(target, cloud.app_settings(target) | {"AZURE_CLIENT_SECRET": secret})

    well = cloud.probe_health(state)
    assert (well.ok, well.status) == (True, 200)
    assert secret not in sick.detail + well.detail


def test_probe_health_of_a_slot_and_of_a_wrong_path(sim: Sim, cloud: CloudChanges) -> None:
    slot = cloud.site(site_id(sim, "orders-api", "staging"))
    assert cloud.probe_health(slot).ok

    wrong = SiteState(slot.record, slot.default_host_name, "/not-the-health-path")
    probe = cloud.probe_health(wrong)
    assert (probe.ok, probe.status) == (False, 404)
    assert len(probe.detail) <= 200


def test_probe_health_never_raises_for_the_network(sim: Sim) -> None:
    # The Azure way (no site_url): https://{defaultHostName}{path}, here a closed port.
    profile = sim.profile.model_copy(update={"site_url": None})
    factory = sim.track(ClientFactory(profile, sim.credential()))
    state = CloudChanges(sim.factory()).site(site_id(sim, "orders-api"))
    unreachable = SiteState(state.record, "127.0.0.1:1", state.health_check_path)

    started = time.monotonic()
    probe = CloudChanges(factory).probe_health(unreachable, timeout=5)

    assert (probe.ok, probe.status) == (False, None)
    assert "https://127.0.0.1:1/api/health" in probe.detail
    assert time.monotonic() - started < 5


# --- all of it: a migration, step by step --------------------------------------------------------


def test_a_migration_made_of_these_calls_keeps_the_app_healthy(sim: Sim,
                                                               cloud: CloudChanges) -> None:
    """The executor's stages in miniature: identity, grants copied from the old principal,
    swap, and the app runtime's verdict that the app now runs on its managed identity."""
    target = site_id(sim, "orders-api")
    old = sim.object_id("orders-sp")
    state = cloud.site(target)
    assert cloud.probe_health(state).ok  # on the secret

    identity = cloud.set_identity(target, "SystemAssigned", ())
    principal = str(identity.principal_id)

    def replicated(call: Callable[[], object]) -> None:
        # A new identity is unknown to RBAC and Graph for a while (the simulator's replication
        # delay, as in Entra): the executor retries such calls, and so does this miniature.
        while_replicating(call, timeout=sim.tenant.replication_delay + 10, sleep=time.sleep,
                          max_wait=1)

    for ra in cloud.role_assignments_for(old, sim.subscription_id):
        replicated(lambda ra=ra: cloud.create_role_assignment(ra.scope, ra.role_definition_id,
                                                               principal))
    for policy in cloud.vault(vault_id(sim)).access_policies:
        if policy.object_id == old:
            cloud.add_access_policy(vault_id(sim), principal, policy.secrets, policy.keys,
                                    policy.certificates)
    for grant in cloud.app_role_assignments(old):
        replicated(lambda grant=grant: cloud.assign_app_role(principal, grant.resource_id,
                                                             grant.app_role_id))

    settings = cloud.app_settings(target)
    cloud.set_app_settings(target, {k: v for k, v in settings.items() if k not in TRIO})

    # The new role assignment reaches the data plane after the simulator's RBAC delay, as in
    # Azure (minutes there): the app is healthy once it has.
    deadline = time.monotonic() + sim.tenant.rbac_delay + 10
    probe = cloud.probe_health(state)
    while not probe.ok and time.monotonic() < deadline:
        time.sleep(0.2)
        probe = cloud.probe_health(state)
    assert (probe.ok, probe.status) == (True, 200), probe.detail
    with sim.http() as http:
        health = http.get("/_sites/orders-api/api/health").json()
    assert health["principalId"] == principal
    assert "ManagedIdentityCredential" in health["credential"]


# --- Microsoft.Web's own error shape -------------------------------------------------------------


def test_a_refusal_in_microsoft_webs_error_shape_still_names_code_and_message(
        sim: Sim, cloud: CloudChanges) -> None:
    """App Service answers its own refusals as `{"Code", "Message", "Details", ...}`, with no
    `error` wrapper, which azure-core does not parse (its error code comes back None): the
    one-line error must still say what Azure said."""
    missing = uai_id(sim, "id-never-made")
    web = sim.factory().web(sim.subscription_id)
    with pytest.raises(HttpResponseError) as raw:
        web.web_apps.update(RG, "orders-api", SitePatchResource(identity=ManagedServiceIdentity(
            type="UserAssigned", user_assigned_identities={missing: UserAssignedIdentity()})))
    assert raw.value.status_code == 400
    assert raw.value.response is not None
    assert set(raw.value.response.json()) == {"Code", "Message", "Target", "Details",
                                              "Innererror"}
    assert getattr(raw.value.error, "code", None) is None  # what azure-core makes of it

    with pytest.raises(AzureCallError) as caught:
        cloud.set_identity(site_id(sim, "orders-api"), "UserAssigned", (missing,))
    text = str(caught.value)
    assert caught.value.code == "BadRequest"
    assert "400 BadRequest" in text
    assert "must exist before it is assigned" in text
    assert "\n" not in text
