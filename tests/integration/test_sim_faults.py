"""A hostile cloud on demand: throttling, injected faults and replication delay, as SDKs see them.

Each test starts `migrator.sim` on tests/fixtures/faults_estate.yaml and drives it through the
real azure-identity and azure-mgmt-* clients (raw HTTP with a bearer token where a header has to
be read). Buckets follow ../shared/AZURE-FACTS.md ("Azure Resource Manager limits") scaled by
`throttle_scale`; counts are coarse on purpose (no timing beyond "at least the latency" and
"about rate x seconds").
"""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.web import WebSiteManagementClient
from azure.mgmt.web.models import ManagedServiceIdentity, SitePatchResource

from migrator.cloud.factory import RETRY_TOTAL, ClientFactory, secret_credential
from migrator.cloud.profiles import load_profile
from migrator.sim.estate import load_estate
from migrator.sim.faults import FaultConfig, FaultError
from migrator.sim.server import SimEndpoints, SimServer
from migrator.sim.state import NO_DELAYS

pytestmark = pytest.mark.integration

ESTATE = Path(__file__).resolve().parents[1] / "fixtures" / "faults_estate.yaml"
RG = "rg-orders"
WEB_API = "2025-05-01"
STORAGE_BLOB_DATA_READER = "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


@dataclass(frozen=True)
class Failure:
    """What an SDK call raised, copied out so that the exception (whose traceback holds the
    response's TLS socket, and so uvicorn's shutdown) is not kept alive."""

    kind: type[BaseException]
    status: int | None
    code: str | None
    message: str
    headers: dict[str, str]


def failure(call: Callable[[], object]) -> Failure:
    try:
        call()
    except AzureError as err:
        response = getattr(err, "response", None)
        headers = ({k.lower(): v for k, v in response.headers.items()}
                   if response is not None else {})
        error = getattr(err, "error", None)
        return Failure(type(err), getattr(err, "status_code", None),
                       getattr(error, "code", None), str(err), headers)
    raise AssertionError("the call succeeded")


class Sim:
    """One running simulator, the operator's credential, and clients closed on teardown."""

    def __init__(self, server: SimServer, ep: SimEndpoints) -> None:
        self.server = server
        self.ep = ep
        self.profile = load_profile(str(ep.profile_path))
        self.sub_id = next(s.id for s in server.tenant.subscriptions.values()
                           if s.name == "prod")
        self.http = httpx.Client(base_url=ep.base_url, timeout=30,
                                 verify=ssl.create_default_context(cafile=str(ep.ca_bundle)))
        self._closables: list[Any] = [self.http]
        self.cred = self.credential()

    def close(self) -> None:
        # An open keep-alive TLS connection can hold up the server's stop: close everything.
        for item in reversed(self._closables):
            item.close()

    def credential(self, principal: str | None = None, *, track: bool = True
                   ) -> TokenCredential:
        if principal is None:
            cred = secret_credential(self.profile, self.ep.tenant_id,
                                     self.ep.operator_client_id, self.ep.operator_secret)
        else:
            t = self.server.tenant
            sp = t.service_principals[t.names[principal]]
            app = t.app_by_app_id(sp.app_id)
            assert app is not None
            cred = secret_credential(self.profile, self.ep.tenant_id, sp.app_id,
                                     app.passwords[0].secret)
        if track:
            self._closables.append(cred)
        return cred

    # -- SDK clients

    def factory(self) -> ClientFactory:
        """The project's own factory (RETRY_TOTAL retries, azure-core's backoff)."""
        made = ClientFactory(self.profile, self.cred)
        self._closables.append(made)
        return made

    def web(self, *, retry_total: int, credential: TokenCredential | None = None
            ) -> WebSiteManagementClient:
        """A raw azure-mgmt-web client with few retries and a tiny backoff, so that injected
        faults reach the test quickly."""
        client = WebSiteManagementClient(
            credential or self.cred, self.sub_id, base_url=self.profile.arm_endpoint,
            credential_scopes=[self.profile.arm_scope], connection_verify=self.profile.ca_bundle,
            retry_total=retry_total, retry_backoff_factor=0.01)
        self._closables.append(client)
        return client

    # -- raw HTTP with a bearer token

    def token(self, scope: str | None = None, credential: TokenCredential | None = None) -> str:
        return (credential or self.cred).get_token(scope or self.profile.arm_scope).token

    def site_url(self, site: str = "orders-api") -> str:
        return (f"/subscriptions/{self.sub_id}/resourceGroups/{RG}/providers/Microsoft.Web/"
                f"sites/{site}")

    def arm(self, method: str, path: str, token: str) -> httpx.Response:
        return self.http.request(method, path, params={"api-version": WEB_API},
                                 headers={"Authorization": f"Bearer {token}"})

    def faults(self, body: object | None = None) -> httpx.Response:
        if body is None:
            return self.http.get("/_sim/faults")
        return self.http.post("/_sim/faults", json=body)

    def counts(self) -> dict[str, int]:
        return dict(self.server.middleware.counts)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    # The simulator's own behaviour, without Azure's delays (test_sim_propagation pins those).
    server = SimServer(load_estate(ESTATE), tmp_path / "sim", delays=NO_DELAYS)
    with server as ep:
        running = Sim(server, ep)
        try:
            yield running
        finally:
            running.close()


def drain(sim: Sim, method: str, path: str, token: str, limit: int = 100
          ) -> tuple[int, httpx.Response]:
    """Send until the first 429: how many got through, and the 429."""
    for sent in range(limit):
        response = sim.arm(method, path, token)
        if response.status_code == 429:
            return sent, response
        assert response.status_code == 200, response.text
    raise AssertionError(f"no 429 after {limit} requests")


# --- ARM throttling ----------------------------------------------------------------------------


def test_read_burst_is_throttled_with_retry_after_and_remaining_reads(sim: Sim) -> None:
    token = sim.token()
    sim.server.faults.throttle_scale = 0.02  # reads: bucket 5, +0.5/s

    answers = [sim.arm("GET", sim.site_url(), token) for _ in range(7)]

    assert [r.status_code for r in answers] == [200] * 5 + [429] * 2
    remaining = [int(r.headers["x-ms-ratelimit-remaining-subscription-reads"]) for r in answers]
    assert remaining[:5] == [4, 3, 2, 1, 0]
    throttled = answers[5]
    assert remaining[5] == 0
    assert int(throttled.headers["retry-after"]) >= 1
    error = throttled.json()["error"]
    assert error["code"] == "SubscriptionRequestsThrottled"
    assert "Number of 'read' requests for subscription exceeded" in error["message"]
    assert sim.counts()["arm:throttled"] == 2
    # Buckets are per principal: another caller in the same subscription is not throttled.
    reader = sim.token(credential=sim.credential("reader-sp"))
    assert sim.arm("GET", sim.site_url(), reader).status_code == 200


def test_sdk_rides_out_throttling_by_honouring_retry_after(sim: Sim) -> None:
    web = sim.factory().web(sim.sub_id)
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"  # sign in first
    sim.server.faults.throttle_scale = 0.04  # reads: bucket 10, +1/s

    names = [web.web_apps.get(RG, site).name for site in ["orders-api", "reports-api"] * 6]

    assert names == ["orders-api", "reports-api"] * 6
    assert sim.counts().get("arm:throttled", 0) > 0


def test_read_bucket_refills_at_the_configured_rate(sim: Sim) -> None:
    token = sim.token()
    capacity, rate = 25, 2.5
    sim.server.faults.throttle_scale = 0.1  # reads: bucket 25, +2.5/s

    started = time.monotonic()
    first, _ = drain(sim, "GET", sim.site_url(), token)
    drained = time.monotonic()
    # The full bucket, plus what trickled back while the burst was being sent.
    assert capacity <= first <= capacity + rate * (drained - started) + 1
    time.sleep(2.0)
    refilled, _ = drain(sim, "GET", sim.site_url(), token)
    ended = time.monotonic()

    # About 2 s x 2.5 tokens/s (plus the burst's own time), never the whole bucket again.
    assert int(rate * 2.0) - 1 <= refilled <= rate * (ended - drained) + 1

    assert sim.http.post("/_sim/throttle/reset").status_code == 204
    full = sim.arm("GET", sim.site_url(), token)
    assert full.headers["x-ms-ratelimit-remaining-subscription-reads"] == str(capacity - 1)


def test_writes_have_their_own_bucket_and_appsettings_list_is_a_write(sim: Sim) -> None:
    token = sim.token()
    sim.server.faults.throttle_scale = 0.02  # reads: bucket 5; writes: bucket 4, +0.2/s
    listing = sim.site_url() + "/config/appsettings/list"

    answers = [sim.arm("POST", listing, token) for _ in range(5)]

    assert [r.status_code for r in answers] == [200] * 4 + [429]
    assert [int(r.headers["x-ms-ratelimit-remaining-subscription-writes"])
            for r in answers] == [3, 2, 1, 0, 0]
    assert all("x-ms-ratelimit-remaining-subscription-reads" not in r.headers for r in answers)
    assert "Number of 'write' requests" in answers[-1].json()["error"]["message"]
    assert int(answers[-1].headers["retry-after"]) >= 1
    # The read bucket is untouched by the writes.
    read = sim.arm("GET", sim.site_url(), token)
    assert read.status_code == 200
    assert read.headers["x-ms-ratelimit-remaining-subscription-reads"] == "4"


def test_graph_throttling_answers_429_with_retry_after(sim: Sim) -> None:
    token = sim.token(sim.profile.graph_scope)
    sim.server.faults.throttle_scale = 0.001  # Graph (tenant size S): 3.5 units, +0.35/s
    headers = {"Authorization": f"Bearer {token}"}

    answers = [sim.http.get("/v1.0/servicePrincipals", headers=headers) for _ in range(4)]

    assert [r.status_code for r in answers] == [200] * 3 + [429]  # 1 unit each
    assert int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].json()["error"]["code"] == "TooManyRequests"
    assert sim.counts()["graph:throttled"] == 1


# --- injected faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "code"), [("500", "InternalServerError"),
                                            ("503", "ServiceUnavailable")])
def test_certain_server_error_reaches_the_sdk_after_its_retries(sim: Sim, kind: str,
                                                                 code: str) -> None:
    web = sim.web(retry_total=2)
    sim.token()  # sign in before the fault
    sim.server.faults.retry_after = 0  # no Retry-After wait: azure-core's (tiny) backoff
    sim.server.faults.set_rate("arm", kind, 1.0)

    got = failure(lambda: web.web_apps.get(RG, "orders-api"))

    assert got.kind is HttpResponseError
    assert got.status == int(kind)
    assert got.code == code
    assert sim.counts()[f"arm:{kind}"] == 3  # the first try and two retries


@pytest.mark.parametrize("kind", ["500", "503"])
def test_sdk_retries_through_intermittent_server_errors(sim: Sim, kind: str) -> None:
    web = sim.web(retry_total=RETRY_TOTAL)
    sim.token()
    sim.server.faults.update({"seed": 20240601, "retry_after": 0,
                              "rates": {"arm": {kind: 0.3}}})

    names = [web.web_apps.get(RG, site).name for site in ["orders-api", "reports-api"] * 5]

    assert names == ["orders-api", "reports-api"] * 5
    assert sim.counts().get(f"arm:{kind}", 0) > 0


def test_injected_429_carries_retry_after(sim: Sim) -> None:
    web = sim.web(retry_total=0)
    token = sim.token()
    sim.server.faults.set_rate("arm", "429", 1.0)

    got = failure(lambda: web.web_apps.get(RG, "orders-api"))

    assert got.kind is HttpResponseError
    assert got.status == 429
    assert got.code == "TooManyRequests"
    assert got.headers["retry-after"] == "1"
    raw = sim.arm("GET", sim.site_url(), token)
    assert raw.status_code == 429
    assert raw.headers["retry-after"] == "1"


def test_dropped_connection_is_a_service_error(sim: Sim) -> None:
    web = sim.web(retry_total=0)
    sim.token()
    sim.server.faults.set_rate("arm", "drop", 1.0)

    got = failure(lambda: web.web_apps.get(RG, "orders-api"))

    assert issubclass(got.kind, (ServiceRequestError, ServiceResponseError))
    assert got.status is None
    assert sim.counts()["arm:drop"] == 1


@pytest.mark.parametrize(("kind", "raised"), [
    ("500_after", (HttpResponseError,)),
    ("drop_after", (ServiceRequestError, ServiceResponseError)),
])
def test_answer_lost_after_the_write_is_committed(sim: Sim, kind: str,
                                                  raised: tuple[type[BaseException], ...]) -> None:
    """The harder fault: Azure commits the write and the answer never arrives, so the client
    sees a failure for a change that is in place (a retry must find it done)."""
    web = sim.web(retry_total=0)
    settings = web.web_apps.list_application_settings(RG, "orders-api")
    settings.properties["FAULT_PROBE"] = kind
    sim.server.faults.set_rate("arm", kind, 1.0)

    got = failure(lambda: web.web_apps.update_application_settings(RG, "orders-api", settings))

    assert issubclass(got.kind, raised), got
    if kind == "500_after":
        assert got.status == 500
    assert sim.counts()[f"arm:{kind}"] == 1
    assert sim.server.tenant.sites["orders-api"].app_settings["FAULT_PROBE"] == kind
    sim.server.faults.set_rate("arm", kind, 0.0)
    assert web.web_apps.list_application_settings(
        RG, "orders-api").properties["FAULT_PROBE"] == kind


def test_latency_is_added_to_every_call(sim: Sim) -> None:
    web = sim.web(retry_total=0)
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"  # sign in first
    sim.server.faults.latency_ms = 300

    started = time.monotonic()
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"

    assert time.monotonic() - started >= 0.3


def test_entra_outage_fails_token_acquisition(sim: Sim,
                                             caplog: pytest.LogCaptureFixture) -> None:
    sim.server.faults.set_rate("entra", "503", 1.0)
    # Nothing cached, and not kept past the test: azure-identity's MsalClient holds the last
    # failed response (so its TLS connection, and the server's stop) while it lives, and so
    # does the warning it logs (the exception is the record's argument).
    fresh = sim.credential(track=False)
    try:
        got = failure(lambda: fresh.get_token(sim.profile.arm_scope))
    finally:
        fresh.close()  # type: ignore[attr-defined]
        caplog.clear()

    assert got.kind is ClientAuthenticationError
    assert "503" in got.message
    assert sim.counts()["entra:503"] >= 1


# --- replication delay -------------------------------------------------------------------------


def test_new_identity_needs_principal_type_until_replicated(sim: Sim) -> None:
    delay = 3.0
    factory = sim.factory()
    web, authz = factory.web(sim.sub_id), factory.authorization(sim.sub_id)
    web.web_apps.get(RG, "orders-api")  # sign in first
    assert sim.faults({"replication_delay": delay}).status_code == 200
    scope = f"/subscriptions/{sim.sub_id}/resourceGroups/{RG}"

    def assign(role: str, principal: str, principal_type: str | None) -> Any:
        params = RoleAssignmentCreateParameters(
            role_definition_id=(f"/subscriptions/{sim.sub_id}/providers/"
                                f"Microsoft.Authorization/roleDefinitions/{role}"),
            principal_id=principal, principal_type=principal_type)
        return authz.role_assignments.create(scope, str(uuid.uuid4()), params)

    started = time.monotonic()
    site = web.web_apps.update(RG, "orders-api", SitePatchResource(
        identity=ManagedServiceIdentity(type="SystemAssigned")))
    principal = str(site.identity.principal_id)

    got = failure(lambda: assign(STORAGE_BLOB_DATA_READER, principal, None))
    assert time.monotonic() - started < delay, "the steps took longer than the delay"
    assert got.kind is HttpResponseError
    assert got.status == 400
    assert got.code == "PrincipalNotFound"
    assert "replication delay" in got.message

    made = assign(STORAGE_BLOB_DATA_READER, principal, "ServicePrincipal")
    assert made.principal_id == principal
    assert made.principal_type == "ServicePrincipal"

    time.sleep(max(0.0, started + delay - time.monotonic()) + 0.05)
    later = assign(READER, principal, None)
    assert later.principal_id == principal


# --- changing faults at run time ---------------------------------------------------------------


def test_faults_change_at_run_time(sim: Sim) -> None:
    web = sim.web(retry_total=0)
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"

    posted = sim.faults({"rates": {"arm": {"500": 1.0}}, "retry_after": 0})
    assert posted.status_code == 200
    assert posted.json()["rates"] == {"arm": {"500": 1.0}}
    assert failure(lambda: web.web_apps.get(RG, "orders-api")).status == 500

    assert sim.faults({"rates": {}}).status_code == 200
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"

    sim.server.faults.set_rate("arm", "503", 1.0)
    assert sim.faults().json()["rates"] == {"arm": {"503": 1.0}}
    assert failure(lambda: web.web_apps.get(RG, "orders-api")).status == 503
    sim.server.faults.rates.clear()
    assert web.web_apps.get(RG, "orders-api").name == "orders-api"

    shown = sim.faults().json()
    assert shown["injected"] == {"arm:500": 1, "arm:503": 1}
    assert shown["replication_delay"] == 0.0


def test_a_fault_rule_takes_the_requests_it_names_and_no_others(sim: Sim) -> None:
    """A rule aims a fault at particular requests (method, path pattern, how many times), so
    a test can lose the answer of exactly one write; it comes before the random rates."""
    web = sim.web(retry_total=0)
    settings = web.web_apps.list_application_settings(RG, "orders-api")
    answer = sim.faults({"rules": [{"kind": "500_after", "method": "put",
                                    "path": "/sites/orders-api/config/appsettings$"}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["rules"] == [{"kind": "500_after", "path":
                                       "/sites/orders-api/config/appsettings$",
                                       "method": "PUT", "times": 1}]

    assert web.web_apps.get(RG, "orders-api").name == "orders-api"  # not a PUT: untouched
    settings.properties["RULED"] = "1"
    got = failure(lambda: web.web_apps.update_application_settings(RG, "orders-api", settings))
    assert got.status == 500
    assert sim.server.tenant.sites["orders-api"].app_settings["RULED"] == "1"  # committed
    web.web_apps.update_application_settings(RG, "orders-api", settings)  # used up: answered

    assert sim.faults().json()["rules"][0]["times"] == 0
    assert sim.counts() == {"arm:500_after": 1}
    aimed = [(m, p) for m, p, k in sim.server.middleware.requests if k is not None]
    assert aimed == [("PUT", sim.site_url() + "/config/appsettings")]


def test_a_dropped_post_is_a_transient_call_error_not_a_traceback(sim: Sim) -> None:
    """azure-core does not resend a POST that got no answer (Microsoft.Web lists app settings
    with a POST), so the drop reaches the product: it must be the cloud layer's transient
    AzureCallError, which the executor retries and a scan records as a gap. It escaped as
    azure-core's ServiceResponseError before."""
    from migrator.cloud.changes import CloudChanges
    from migrator.cloud.errors import AzureCallError

    changes = CloudChanges(sim.factory())
    site_id = sim.site_url().lower()
    assert "FAULT" not in changes.app_settings(site_id)
    sim.server.faults.set_rate("arm", "drop", 1.0)

    with pytest.raises(AzureCallError) as raised:
        changes.app_settings(site_id)

    assert raised.value.transient
    assert raised.value.status is None
    assert "the connection failed" in str(raised.value)
    assert "\n" not in str(raised.value)


BAD_FAULT_SPECS: list[object] = [
    {"bogus": 1},
    {"rates": {"arm": {"500": 1.5}}},
    {"rates": {"arm": {"418": 0.5}}},
    {"rates": {"nowhere": {"500": 0.5}}},
    {"latency_ms": -1},
    {"throttle_scale": "fast"},
    {"replication_delay": -1},
    ["rates"],
    {"rules": [{"kind": "teapot", "path": "sites"}]},
    {"rules": [{"kind": "500", "path": "sites("}]},
    {"rules": [{"kind": "500", "times": -1}]},
    {"rules": [{"kind": "500", "colour": "red"}]},
    {"rules": "500"},
]


def test_bad_fault_specs_are_refused(sim: Sim) -> None:
    before = sim.faults().json()
    for body in BAD_FAULT_SPECS:
        answer = sim.faults(body)

        assert answer.status_code == 400, body
        assert answer.json()["error"], body
        assert sim.faults().json() == before, body
    bad_json = sim.http.post("/_sim/faults", content=b"{not json",
                             headers={"content-type": "application/json"})
    assert bad_json.status_code == 400


def test_refused_fault_update_changes_nothing(sim: Sim) -> None:
    assert sim.faults({"rates": {"arm": {"429": 0.1}}}).status_code == 200
    before = sim.faults().json()

    answer = sim.faults({"latency_ms": 250, "rates": {"arm": {"500": 0.5, "503": 2}}})

    assert answer.status_code == 400
    assert sim.faults().json() == before


def test_fault_specs_from_the_command_line() -> None:
    config = FaultConfig.from_cli(["arm:429=0.5"])
    assert config.rates == {"arm": {"429": 0.5}}
    with pytest.raises(FaultError):
        FaultConfig.from_cli(["bogus"])
