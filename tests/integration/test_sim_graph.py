"""The simulator's Microsoft Graph, driven through the real msgraph-sdk and azure-identity.

Each test signs in as a principal of tests/fixtures/small.yaml with its own secret and checks
what Graph would do: shapes msgraph-sdk parses, paging by absolute nextLink, secrets that never
come back after addPassword, permissions taken from the token's roles, and sign-in effects of
removePassword and accountEnabled. Tests that change state use their own principal, so they do
not depend on each other's order.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import TokenCredential
from azure.core.exceptions import ClientAuthenticationError
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph.generated.applications.applications_request_builder import (
    ApplicationsRequestBuilder,
)
from msgraph.generated.applications.item.add_password.add_password_post_request_body import (
    AddPasswordPostRequestBody,
)
from msgraph.generated.applications.item.remove_password.remove_password_post_request_body import (
    RemovePasswordPostRequestBody,
)
from msgraph.generated.models.app_role_assignment import AppRoleAssignment
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.password_credential import PasswordCredential
from msgraph.generated.models.service_principal import ServicePrincipal
from msgraph.generated.service_principals.service_principals_request_builder import (
    ServicePrincipalsRequestBuilder,
)

from migrator.cloud.factory import ClientFactory, secret_credential
from migrator.cloud.profiles import CloudProfile, load_profile
from migrator.sim.catalog import GRAPH_APP_ID, GRAPH_APP_ROLES
from migrator.sim.estate import load_estate
from migrator.sim.server import SimEndpoints, SimServer
from migrator.sim.state import NO_DELAYS, Tenant

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "fixtures" / "small.yaml"
USER_READ_ALL = "df021288-bdef-4463-88db-98f22de89214"
NOT_FOUND_TAIL = "does not exist or one of its queried reference-property objects are not present."


@dataclass
class Sim:
    """A running simulator plus Graph clients signed in as the estate's principals."""

    server: SimServer
    ep: SimEndpoints
    profile: CloudProfile
    factories: dict[str, ClientFactory] = field(default_factory=dict)

    @property
    def tenant(self) -> Tenant:
        return self.server.tenant

    def object_id(self, name: str) -> str:
        return self.tenant.names[name]

    def app_id(self, name: str) -> str:
        return self.tenant.service_principals[self.object_id(name)].app_id

    def app_object_id(self, name: str) -> str:
        app = self.tenant.app_by_app_id(self.app_id(name))
        assert app is not None
        return app.object_id

    def secret(self, name: str) -> str:
        app = self.tenant.app_by_app_id(self.app_id(name))
        assert app is not None
        return app.passwords[0].secret

    def credential(self, name: str, secret: str | None = None) -> TokenCredential:
        return secret_credential(self.profile, self.ep.tenant_id, self.app_id(name),
                                 secret if secret is not None else self.secret(name))

    def as_(self, name: str) -> ClientFactory:
        """A client factory signed in as `name` (cached: one token per principal)."""
        if name not in self.factories:
            self.factories[name] = ClientFactory(self.profile, self.credential(name))
        return self.factories[name]

    def fresh(self, name: str) -> ClientFactory:
        """A new factory, so the token is issued now (with the principal's current roles)."""
        factory = ClientFactory(self.profile, self.credential(name))
        self.factories[f"{name}#{uuid.uuid4()}"] = factory
        return factory

    def run(self, name: str, call: Any) -> Any:
        return self.as_(name).run_graph(call)

    def graph(self, name: str) -> Any:
        return self.as_(name).graph()

    def raw(self, method: str, path: str, *, token: str | None = None,
            json: Any = None, params: dict[str, str] | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, f"{self.ep.base_url}{path}", headers=headers, json=json,
                             params=params, verify=str(self.ep.ca_bundle), timeout=30)

    def graph_token(self, name: str) -> str:
        return self.credential(name).get_token(self.profile.graph_scope).token


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    spec = load_estate(FIXTURE)
    # The simulator's own behaviour, without Azure's delays (test_sim_propagation pins those).
    server = SimServer(spec, tmp_path_factory.mktemp("sim-graph"), delays=NO_DELAYS)
    with server as ep:
        state = Sim(server, ep, load_profile(str(ep.profile_path)))
        yield state
        for factory in state.factories.values():
            factory.close()


def operator(sim: Sim) -> str:
    return sim.tenant.operator


def odata_error(excinfo: pytest.ExceptionInfo[ODataError]) -> tuple[int, str, str]:
    err = excinfo.value
    assert err.error is not None
    assert err.response_status_code is not None
    return err.response_status_code, str(err.error.code), str(err.error.message)


def app_query(**kwargs: Any) -> RequestConfiguration[Any]:
    qp = ApplicationsRequestBuilder.ApplicationsRequestBuilderGetQueryParameters(**kwargs)
    return RequestConfiguration(query_parameters=qp)


def sp_query(**kwargs: Any) -> RequestConfiguration[Any]:
    qp = ServicePrincipalsRequestBuilder.ServicePrincipalsRequestBuilderGetQueryParameters(
        **kwargs)
    return RequestConfiguration(query_parameters=qp)


# --- applications ------------------------------------------------------------------------------


def test_applications_page_by_absolute_next_link(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    page = sim.run(op, graph.applications.get(app_query(top=2)))
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        assert 1 <= len(page.value) <= 2
        seen += [str(a.id) for a in page.value]
        if not page.odata_next_link:
            break
        assert page.odata_next_link.startswith(f"{sim.ep.base_url}/v1.0/applications?")
        assert "$top=2" in page.odata_next_link
        page = sim.run(op, graph.applications.with_url(page.odata_next_link).get())
        assert pages < 20, "paging does not terminate"
    with sim.tenant.lock:
        expected = set(sim.tenant.applications)
    assert len(seen) == len(set(seen)), "a page repeated an application"
    assert set(seen) == expected
    assert pages == -(-len(expected) // 2)


def test_application_filters_and_alternate_key(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    app_id = sim.app_id("orders-sp")
    by_app_id = sim.run(op, graph.applications.get(app_query(filter=f"appId eq '{app_id}'")))
    assert [a.display_name for a in by_app_id.value] == ["orders-sp"]
    by_name = sim.run(op, graph.applications.get(app_query(filter="displayName eq 'reports-sp'")))
    assert [str(a.app_id) for a in by_name.value] == [sim.app_id("reports-sp")]
    none = sim.run(op, graph.applications.get(app_query(filter="displayName eq 'no-such-app'")))
    assert none.value == []

    alt = sim.run(op, graph.applications_with_app_id(app_id).get())
    direct = sim.run(op, graph.applications.by_application_id(sim.app_object_id("orders-sp"))
                     .get())
    assert str(alt.id) == str(direct.id) == sim.app_object_id("orders-sp")
    assert alt.display_name == "orders-sp"


def test_unsupported_filter_is_refused_like_graph(sim: Sim) -> None:
    op = operator(sim)
    with pytest.raises(ODataError) as excinfo:
        sim.run(op, sim.graph(op).applications.get(app_query(filter="homepage eq 'x'")))
    status, code, message = odata_error(excinfo)
    assert (status, code) == (400, "Request_UnsupportedQuery")
    assert "'homepage'" in message


def test_unknown_application_is_404(sim: Sim) -> None:
    op = operator(sim)
    missing = str(uuid.uuid4())
    with pytest.raises(ODataError) as excinfo:
        sim.run(op, sim.graph(op).applications.by_application_id(missing).get())
    assert odata_error(excinfo) == (404, "Request_ResourceNotFound",
                                    f"Resource '{missing}' {NOT_FOUND_TAIL}")
    with pytest.raises(ODataError) as excinfo:
        sim.run(op, sim.graph(op).applications_with_app_id(missing).get())
    assert odata_error(excinfo)[:2] == (404, "Request_ResourceNotFound")


def test_password_credentials_show_hint_never_secret(sim: Sim) -> None:
    op = operator(sim)
    app = sim.run(op, sim.graph(op).applications.by_application_id(
        sim.app_object_id("orders-sp")).get())
    with sim.tenant.lock:
        stored = {p.key_id: p for p in sim.tenant.applications[str(app.id)].passwords}
    assert len(app.password_credentials) == 2
    for cred in app.password_credentials:
        secret = stored[str(cred.key_id)].secret
        assert cred.hint == secret[:3]
        assert cred.secret_text is None
        assert cred.custom_key_identifier is None
    expired = [c for c in app.password_credentials if c.end_date_time.year == 2020]
    assert len(expired) == 1

    # The wire itself never carries a secret: check the raw JSON of the list and of one object.
    token = sim.graph_token(op)
    for path in ("/v1.0/applications", f"/v1.0/applications/{app.id}"):
        response = sim.raw("GET", path, token=token)
        assert response.status_code == 200
        for p in stored.values():
            assert p.secret not in response.text
    body = sim.raw("GET", "/v1.0/applications", token=token).json()
    assert body["@odata.context"] == f"{sim.ep.base_url}/v1.0/$metadata#applications"
    creds = [c for a in body["value"] for c in a["passwordCredentials"]]
    assert creds
    assert all(c["secretText"] is None for c in creds)
    assert set(creds[0]) == {"customKeyIdentifier", "displayName", "endDateTime", "hint",
                             "keyId", "secretText", "startDateTime"}


def test_add_password_signs_in_and_remove_password_stops_it(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    app_oid = sim.app_object_id("orders-sp")
    end = datetime.now(timezone.utc) + timedelta(days=30)
    added = sim.run(op, graph.applications.by_application_id(app_oid).add_password.post(
        AddPasswordPostRequestBody(password_credential=PasswordCredential(
            display_name="rotation-test", end_date_time=end))))
    secret = added.secret_text
    assert secret
    assert added.hint == secret[:3]
    assert added.display_name == "rotation-test"
    assert abs((added.end_date_time - end).total_seconds()) < 1

    # The new secret signs in; reads list it with its hint and without its text.
    token = sim.credential("orders-sp", secret).get_token(sim.profile.arm_scope)
    assert token.token
    app = sim.run(op, graph.applications.by_application_id(app_oid).get())
    listed = {str(c.key_id): c for c in app.password_credentials}
    assert listed[str(added.key_id)].hint == secret[:3]
    assert listed[str(added.key_id)].secret_text is None

    assert sim.run(op, graph.applications.by_application_id(app_oid).remove_password.post(
        RemovePasswordPostRequestBody(key_id=added.key_id))) is None
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
        sim.credential("orders-sp", secret).get_token(sim.profile.arm_scope)
    app = sim.run(op, graph.applications.by_application_id(app_oid).get())
    assert str(added.key_id) not in {str(c.key_id) for c in app.password_credentials}
    # The estate's own secret is untouched.
    assert sim.credential("orders-sp").get_token(sim.profile.arm_scope).token

    with pytest.raises(ODataError) as excinfo:
        sim.run(op, graph.applications.by_application_id(app_oid).remove_password.post(
            RemovePasswordPostRequestBody(key_id=added.key_id)))
    status, code, message = odata_error(excinfo)
    assert (status, code) == (400, "Request_BadRequest")
    assert message == f"No password credential found with keyId {added.key_id}."


def test_add_password_without_end_gets_two_years(sim: Sim) -> None:
    op = operator(sim)
    app_oid = sim.app_object_id("reports-sp")
    added = sim.run(op, sim.graph(op).applications.by_application_id(app_oid).add_password.post(
        AddPasswordPostRequestBody(password_credential=PasswordCredential())))
    try:
        lifetime = added.end_date_time - added.start_date_time
        assert timedelta(days=729) < lifetime <= timedelta(days=731)
    finally:
        sim.run(op, sim.graph(op).applications.by_application_id(app_oid).remove_password.post(
            RemovePasswordPostRequestBody(key_id=added.key_id)))


# --- service principals ------------------------------------------------------------------------


def test_graph_service_principal_publishes_its_app_roles(sim: Sim) -> None:
    op = operator(sim)
    graph_sp = sim.run(op, sim.graph(op).service_principals_with_app_id(GRAPH_APP_ID).get())
    assert graph_sp.display_name == "Microsoft Graph"
    roles = {r.value: r for r in graph_sp.app_roles}
    assert set(roles) == set(GRAPH_APP_ROLES)
    user_read = roles["User.Read.All"]
    assert str(user_read.id) == USER_READ_ALL
    assert user_read.allowed_member_types == ["Application"]
    assert user_read.is_enabled is True
    assert user_read.origin == "Application"
    assert user_read.display_name == "Read all users' full profiles"


def test_service_principal_filters(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    managed = sim.run(op, graph.service_principals.get(
        sp_query(filter="servicePrincipalType eq 'ManagedIdentity'")))
    names = {sp.display_name for sp in managed.value}
    assert names == {"id-shared", "dev-api"}
    assert {sp.service_principal_type for sp in managed.value} == {"ManagedIdentity"}

    uai = sim.tenant.service_principals[sim.object_id("id-shared")]
    resource_id = uai.alternative_names[-1]
    by_resource = sim.run(op, graph.service_principals.get(
        sp_query(filter=f"alternativeNames/any(x:x eq '{resource_id}')")))
    assert [str(sp.id) for sp in by_resource.value] == [uai.object_id]

    by_app_id = sim.run(op, graph.service_principals.get(
        sp_query(filter=f"appId eq '{sim.app_id('reader-sp')}'")))
    assert [sp.display_name for sp in by_app_id.value] == ["reader-sp"]
    assert by_app_id.value[0].service_principal_type == "Application"
    assert by_app_id.value[0].account_enabled is True

    one = sim.run(op, graph.service_principals.by_service_principal_id(
        sim.object_id("disabled-sp")).get())
    assert one.account_enabled is False


def test_service_principals_page_by_absolute_next_link(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    page = sim.run(op, graph.service_principals.get(sp_query(top=2)))
    seen = [str(sp.id) for sp in page.value]
    while page.odata_next_link:
        assert page.odata_next_link.startswith(sim.ep.base_url)
        page = sim.run(op, graph.service_principals.with_url(page.odata_next_link).get())
        seen += [str(sp.id) for sp in page.value]
    with sim.tenant.lock:
        expected = {o for o, sp in sim.tenant.service_principals.items()
                    if sim.tenant.is_visible(sp)}
    assert sorted(seen) == sorted(expected)


def test_next_link_keeps_the_filter(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    first = sim.run(op, graph.service_principals.get(
        sp_query(filter="servicePrincipalType eq 'ManagedIdentity'", top=1)))
    assert len(first.value) == 1
    assert first.odata_next_link
    second = sim.run(op, graph.service_principals.with_url(first.odata_next_link).get())
    assert len(second.value) == 1
    assert second.odata_next_link is None
    names = {first.value[0].display_name, second.value[0].display_name}
    assert names == {"id-shared", "dev-api"}


def test_disabling_a_principal_stops_its_sign_in(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    oid = sim.object_id("nobody-sp")
    assert sim.credential("nobody-sp").get_token(sim.profile.arm_scope).token
    try:
        result = sim.run(op, graph.service_principals.by_service_principal_id(oid).patch(
            ServicePrincipal(account_enabled=False)))
        assert result is None  # 204 No Content, as Graph answers a PATCH
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000112"):
            sim.credential("nobody-sp").get_token(sim.profile.arm_scope)
        sp = sim.run(op, graph.service_principals_with_app_id(sim.app_id("nobody-sp")).get())
        assert sp.account_enabled is False
    finally:  # reversible, as Entra's accountEnabled is
        sim.run(op, graph.service_principals.by_service_principal_id(oid).patch(
            ServicePrincipal(account_enabled=True)))
    assert sim.credential("nobody-sp").get_token(sim.profile.arm_scope).token


def test_already_disabled_principal_cannot_sign_in(sim: Sim) -> None:
    with pytest.raises(ClientAuthenticationError, match="AADSTS7000112"):
        sim.credential("disabled-sp").get_token(sim.profile.arm_scope)


# --- authentication and authorization ----------------------------------------------------------


def test_no_token_is_401(sim: Sim) -> None:
    response = sim.raw("GET", "/v1.0/applications")
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "InvalidAuthenticationToken"
    assert error["innerError"]["request-id"]


def test_arm_token_is_not_a_graph_token(sim: Sim) -> None:
    arm_token = sim.credential(operator(sim)).get_token(sim.profile.arm_scope).token
    response = sim.raw("GET", "/v1.0/applications", token=arm_token)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "InvalidAuthenticationToken"


@pytest.mark.parametrize("name", ["reader-sp", "orders-sp"])  # no roles; only User.Read.All
def test_principal_without_directory_roles_is_403(sim: Sim, name: str) -> None:
    with pytest.raises(ODataError) as excinfo:
        sim.run(name, sim.graph(name).applications.get())
    assert odata_error(excinfo) == (403, "Authorization_RequestDenied",
                                    "Insufficient privileges to complete the operation.")
    with pytest.raises(ODataError) as excinfo:
        sim.run(name, sim.graph(name).service_principals.by_service_principal_id(
            sim.object_id(name)).get())
    assert odata_error(excinfo)[0] == 403


def test_a_granted_read_role_reads_but_does_not_write(sim: Sim) -> None:
    """Grant Application.Read.All through Graph; the principal's next token carries it."""
    op = operator(sim)
    graph_sp_id = sim.tenant.graph_sp.object_id
    grant = sim.run(op, sim.graph(op).service_principals.by_service_principal_id(graph_sp_id)
                    .app_role_assigned_to.post(AppRoleAssignment(
                        principal_id=uuid.UUID(sim.object_id("reports-sp")),
                        resource_id=uuid.UUID(graph_sp_id),
                        app_role_id=uuid.UUID(GRAPH_APP_ROLES["Application.Read.All"]))))
    try:
        reports = sim.fresh("reports-sp")
        graph = reports.graph()
        apps = reports.run_graph(graph.applications.get())
        assert apps is not None
        assert apps.value is not None
        assert "reports-sp" in {a.display_name for a in apps.value}
        with pytest.raises(ODataError) as excinfo:
            reports.run_graph(graph.applications.by_application_id(
                sim.app_object_id("reports-sp")).add_password.post(
                    AddPasswordPostRequestBody(password_credential=PasswordCredential())))
        assert odata_error(excinfo)[:2] == (403, "Authorization_RequestDenied")
        with pytest.raises(ODataError) as excinfo:
            reports.run_graph(graph.service_principals.by_service_principal_id(
                sim.object_id("reader-sp")).patch(ServicePrincipal(account_enabled=False)))
        assert odata_error(excinfo)[0] == 403
        assert sim.tenant.service_principals[sim.object_id("reader-sp")].account_enabled
    finally:
        sim.run(op, sim.graph(op).service_principals.by_service_principal_id(graph_sp_id)
                .app_role_assigned_to.by_app_role_assignment_id(str(grant.id)).delete())


def test_app_role_assignment_needs_app_role_assignment_permission(sim: Sim) -> None:
    """Application.ReadWrite.All alone cannot grant app roles: Graph wants
    AppRoleAssignment.ReadWrite.All. A caller with no Graph roles is refused the same way."""
    graph_sp_id = sim.tenant.graph_sp.object_id
    body = AppRoleAssignment(principal_id=uuid.UUID(sim.object_id("reader-sp")),
                             resource_id=uuid.UUID(graph_sp_id),
                             app_role_id=uuid.UUID(USER_READ_ALL))
    with pytest.raises(ODataError) as excinfo:
        sim.run("reader-sp", sim.graph("reader-sp").service_principals.by_service_principal_id(
            graph_sp_id).app_role_assigned_to.post(body))
    assert odata_error(excinfo)[:2] == (403, "Authorization_RequestDenied")
    assert sim.tenant.graph_roles_of(sim.object_id("reader-sp")) == []


# --- app-role assignments ----------------------------------------------------------------------


def test_app_role_assigned_to_post_list_delete(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    graph_sp_id = sim.tenant.graph_sp.object_id
    mi = sim.object_id("id-shared")
    assigned_to = graph.service_principals.by_service_principal_id(graph_sp_id) \
        .app_role_assigned_to
    body = AppRoleAssignment(principal_id=uuid.UUID(mi), resource_id=uuid.UUID(graph_sp_id),
                             app_role_id=uuid.UUID(USER_READ_ALL))
    before = sim.tenant.graph_roles_of(mi)

    created = sim.run(op, assigned_to.post(body))
    assert str(created.principal_id) == mi
    assert str(created.resource_id) == graph_sp_id
    assert str(created.app_role_id) == USER_READ_ALL
    assert created.principal_display_name == "id-shared"
    assert created.principal_type == "ServicePrincipal"
    assert created.resource_display_name == "Microsoft Graph"
    assert created.deleted_date_time is None
    assert abs((datetime.now(timezone.utc) - created.created_date_time).total_seconds()) < 60
    assert len(str(created.id)) == 43  # Graph's base64url assignment id
    assert sim.tenant.graph_roles_of(mi) == sorted([*before, "User.Read.All"])

    on_resource = sim.run(op, assigned_to.get())
    assert str(created.id) in {str(a.id) for a in on_resource.value}
    held = sim.run(op, graph.service_principals.by_service_principal_id(mi)
                   .app_role_assignments.get())
    assert [(str(a.id), str(a.app_role_id)) for a in held.value] == [
        (str(created.id), USER_READ_ALL)]

    with pytest.raises(ODataError) as excinfo:
        sim.run(op, assigned_to.post(body))
    assert odata_error(excinfo) == (400, "Request_BadRequest",
                                    "Permission being assigned already exists on the object.")

    assert sim.run(op, assigned_to.by_app_role_assignment_id(str(created.id)).delete()) is None
    assert str(created.id) not in {str(a.id) for a in sim.run(op, assigned_to.get()).value}
    assert sim.tenant.graph_roles_of(mi) == before
    with pytest.raises(ODataError) as excinfo:
        sim.run(op, assigned_to.by_app_role_assignment_id(str(created.id)).delete())
    assert odata_error(excinfo)[:2] == (404, "Request_ResourceNotFound")


def test_estate_grants_are_listed_on_both_sides(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    orders = sim.object_id("orders-sp")
    held = sim.run(op, graph.service_principals.by_service_principal_id(orders)
                   .app_role_assignments.get())
    assert [str(a.app_role_id) for a in held.value] == [USER_READ_ALL]
    on_graph = sim.run(op, graph.service_principals.by_service_principal_id(
        sim.tenant.graph_sp.object_id).app_role_assigned_to.get())
    principals = {str(a.principal_id) for a in on_graph.value}
    assert {orders, sim.object_id(op)} <= principals
    assert sim.object_id("reader-sp") not in principals


def test_unknown_app_role_is_refused(sim: Sim) -> None:
    op = operator(sim)
    graph_sp_id = sim.tenant.graph_sp.object_id
    with pytest.raises(ODataError) as excinfo:
        sim.run(op, sim.graph(op).service_principals.by_service_principal_id(graph_sp_id)
                .app_role_assigned_to.post(AppRoleAssignment(
                    principal_id=uuid.UUID(sim.object_id("reader-sp")),
                    resource_id=uuid.UUID(graph_sp_id), app_role_id=uuid.uuid4())))
    status, code, message = odata_error(excinfo)
    assert (status, code) == (400, "Request_BadRequest")
    assert message.startswith("Permission being assigned was not found on application")


def test_replicating_managed_identity_does_not_exist_yet(sim: Sim) -> None:
    op = operator(sim)
    graph = sim.graph(op)
    tenant = sim.tenant
    with tenant.lock:
        sub = next(iter(tenant.subscriptions))
        tenant.replication_delay = 3600.0
        try:
            uai = tenant.create_identity(sub, "rg-orders", "id-replicating", "westeurope")
        finally:
            tenant.replication_delay = 0.0
    mi = uai.principal_id
    try:
        with pytest.raises(ODataError) as excinfo:
            sim.run(op, graph.service_principals.by_service_principal_id(mi).get())
        assert odata_error(excinfo) == (404, "Request_ResourceNotFound",
                                        f"Resource '{mi}' {NOT_FOUND_TAIL}")
        listed = sim.run(op, graph.service_principals.get(
            sp_query(filter="servicePrincipalType eq 'ManagedIdentity'")))
        assert mi not in {str(sp.id) for sp in listed.value}

        graph_sp_id = tenant.graph_sp.object_id
        assigned_to = graph.service_principals.by_service_principal_id(graph_sp_id) \
            .app_role_assigned_to
        body = AppRoleAssignment(principal_id=uuid.UUID(mi), resource_id=uuid.UUID(graph_sp_id),
                                 app_role_id=uuid.UUID(USER_READ_ALL))
        with pytest.raises(ODataError) as excinfo:
            sim.run(op, assigned_to.post(body))
        assert odata_error(excinfo) == (400, "Request_BadRequest",
                                        "Not a valid reference update.")
        assert tenant.graph_roles_of(mi) == []

        # Once replicated, the same grant goes through.
        with tenant.lock:
            tenant.service_principals[mi].visible_at = time.monotonic()
        created = sim.run(op, assigned_to.post(body))
        assert str(created.principal_id) == mi
        assert sim.run(op, graph.service_principals.by_service_principal_id(mi).get()) \
            .service_principal_type == "ManagedIdentity"
        sim.run(op, assigned_to.by_app_role_assignment_id(str(created.id)).delete())
    finally:  # leave the estate's managed identities as the other tests expect them
        with tenant.lock:
            tenant.identities.pop(uai.id.lower(), None)
            tenant.service_principals.pop(mi, None)
            for aid in [a.id for a in tenant.app_role_assignments.values()
                        if a.principal_id == mi]:
                del tenant.app_role_assignments[aid]


# --- wire details ------------------------------------------------------------------------------


def test_wire_shapes_and_odd_requests(sim: Sim) -> None:
    token = sim.graph_token(operator(sim))
    graph_sp_id = sim.tenant.graph_sp.object_id

    one = sim.raw("GET", f"/v1.0/servicePrincipals/{graph_sp_id}", token=token)
    assert one.status_code == 200
    assert one.headers["content-type"].startswith("application/json;odata.metadata=minimal")
    assert one.json()["@odata.context"] == (
        f"{sim.ep.base_url}/v1.0/$metadata#servicePrincipals/$entity")

    selected = sim.raw("GET", "/v1.0/servicePrincipals", token=token,
                       params={"$select": "id,appId", "$filter": f"appId eq '{GRAPH_APP_ID}'"})
    assert selected.json()["value"] == [{"id": graph_sp_id, "appId": GRAPH_APP_ID}]

    bad_token = sim.raw("GET", "/v1.0/applications", token=token,
                        params={"$skiptoken": "not-a-token"})
    assert bad_token.status_code == 400
    assert bad_token.json()["error"]["code"] == "Directory_ExpiredPageToken"

    bad_top = sim.raw("GET", "/v1.0/applications", token=token, params={"$top": "0"})
    assert bad_top.status_code == 400

    unknown = sim.raw("GET", "/v1.0/usersz", token=token)
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {**unknown.json()["error"], "code": "BadRequest",
                                       "message": "Resource not found for the segment 'usersz'."}

    wrong_method = sim.raw("DELETE", "/v1.0/applications", token=token)
    assert wrong_method.status_code == 405

    not_json = httpx.post(
        f"{sim.ep.base_url}/v1.0/applications/{sim.app_object_id('reader-sp')}/removePassword",
        content=b"{nope", headers={"Authorization": f"Bearer {token}",
                                   "Content-Type": "application/json"},
        verify=str(sim.ep.ca_bundle))
    assert not_json.status_code == 400
    assert not_json.json()["error"]["code"] == "BadRequest"


def test_add_and_remove_password_by_the_app_id_alternate_key(sim: Sim) -> None:
    """Graph serves `applications(appId='…')/addPassword|removePassword` as well as the object
    id form (learn.microsoft.com/graph/api/application-addpassword, HTTP request)."""
    token = sim.graph_token(operator(sim))
    app_id = sim.app_id("reader-sp")
    by_app_id = f"/v1.0/applications(appId='{app_id}')"
    before = {p["keyId"] for p in sim.raw("GET", by_app_id, token=token).json()[
        "passwordCredentials"]}

    added = sim.raw("POST", f"{by_app_id}/addPassword", token=token,
                    json={"passwordCredential": {"displayName": "alternate key"}})
    assert added.status_code == 200, added.text
    made = added.json()
    assert made["secretText"] and made["displayName"] == "alternate key"
    by_id = sim.raw("GET", f"/v1.0/applications/{sim.app_object_id('reader-sp')}", token=token)
    assert {p["keyId"] for p in by_id.json()["passwordCredentials"]} == before | {made["keyId"]}

    removed = sim.raw("POST", f"{by_app_id}/removePassword", token=token,
                      json={"keyId": made["keyId"]})
    assert removed.status_code == 204, removed.text
    assert {p["keyId"] for p in sim.raw("GET", by_app_id, token=token).json()[
        "passwordCredentials"]} == before
    unknown = sim.raw("POST", "/v1.0/applications(appId='00000000-0000-0000-0000-000000000000')"
                      "/removePassword", token=token, json={"keyId": made["keyId"]})
    assert unknown.status_code == 404


def test_expand_app_role_assignments_on_a_filtered_list(sim: Sim) -> None:
    token = sim.graph_token(operator(sim))
    app_ids = [sim.server.tenant.service_principals[sim.server.tenant.names[n]].app_id
               for n in ("orders-sp", "reports-sp")]
    flt = "appId in (" + ",".join(f"'{a}'" for a in app_ids) + ")"
    response = sim.raw("GET", "/v1.0/servicePrincipals", token=token,
                       params={"$filter": flt, "$expand": "appRoleAssignments"})
    assert response.status_code == 200
    grants = {sp["displayName"]: [a["appRoleId"] for a in sp["appRoleAssignments"]]
              for sp in response.json()["value"]}
    assert grants == {"orders-sp": ["df021288-bdef-4463-88db-98f22de89214"], "reports-sp": []}
    unknown = sim.raw("GET", "/v1.0/servicePrincipals", token=token,
                      params={"$expand": "owners"})
    assert unknown.status_code == 400


def test_every_answer_carries_request_ids_as_graph_does(sim: Sim) -> None:
    # Graph answers each request with a request-id and the caller's client-request-id (what
    # Microsoft support asks for; Dev Proxy's GraphClientRequestIdGuidancePlugin urges callers
    # to send one). The call log records both.
    op = operator(sim)
    token = sim.graph_token(op)
    sent = str(uuid.uuid4())
    with httpx.Client(verify=str(sim.ep.ca_bundle), timeout=30) as client:
        ok = client.get(f"{sim.ep.base_url}/v1.0/applications", headers={
            "Authorization": f"Bearer {token}", "client-request-id": sent})
        missing = client.get(f"{sim.ep.base_url}/v1.0/applications/{uuid.uuid4()}",
                             headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.headers["client-request-id"] == sent
    assert uuid.UUID(ok.headers["request-id"])
    assert missing.status_code == 404
    assert missing.headers["request-id"] == missing.json()["error"]["innerError"]["request-id"]
    assert missing.headers["client-request-id"]
