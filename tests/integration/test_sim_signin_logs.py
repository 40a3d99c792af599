"""The simulator's sign-in logs over HTTPS: `GET /beta/auditLogs/signIns` with tokens from the
real azure-identity, sites read through azure-mgmt-web, and the admin interface's callers.

msgraph-sdk has no beta client, so the log is read with plain HTTPS and a Graph token obtained
as the product obtains one. The estate holds no secret text: the simulator generates every
secret, and the tests assert that none comes back in any answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from conftest import Sim, running_sim

from migrator.sim.signins import ARM_RESOURCE, GRAPH_RESOURCE, KEYVAULT_RESOURCE, LICENCE_CODE
from migrator.sim.state import Delays

pytestmark = pytest.mark.integration

ESTATE = """\
tenant: {id: 6f1c3b0e-0000-4000-8000-0000000000aa, domain: contoso.onmicrosoft.com%(licence)s}
operator: migrator-operator
principals:
  - name: migrator-operator
    secrets: [{}]
    graph_app_roles: [Application.ReadWrite.All, AuditLog.Read.All]
  - name: orders-sp
    secrets: [{}]
    graph_app_roles: [User.Read.All]
  - name: ci-sp
    secrets: [{}]
  - name: script-sp
    secrets: [{}]
  - name: reports-sp
    secrets: [{}]
subscriptions:
  - name: prod
    resource_groups:
      - name: rg-orders
        key_vaults:
          - name: kv-orders
            access_policies: [{principal: orders-sp, secrets: [get]}]
            secrets: {db-password: not-a-real-password}
        sites:
          - name: orders-api
            app_settings:
              AZURE_CLIENT_ID: "@orders-sp.app_id"
              AZURE_TENANT_ID: "@tenant.id"
              AZURE_CLIENT_SECRET: "@orders-sp.secrets[0]"
            needs:
              - {key_vault_secret: kv-orders/db-password}
              - {graph_app_role: User.Read.All}
            slots:
              - name: staging
                app_settings:
                  AZURE_CLIENT_ID: "@orders-sp.app_id"
                  AZURE_TENANT_ID: "@tenant.id"
                  AZURE_CLIENT_SECRET: "@orders-sp.secrets[0]"
          - {name: mi-api, identity: system}
role_assignments:
  - {principal: migrator-operator, role: Owner, scope: /subscriptions/prod}
external_callers:
  - {name: release-pipeline, principal: ci-sp, ip: 203.0.113.7, every: 60, resource: graph,
     history_days: 1}
  - {name: nightly-script, principal: script-sp, ip: 198.51.100.20, every: 0.2}
"""
NO_INGESTION_DELAY = Delays(replication=0.0, rbac=0.0, sign_in_ingestion=0.0)
SIGN_INS = "/beta/auditLogs/signIns"


def start(tmp_path: Path, licence: str = "", delays: Delays = NO_INGESTION_DELAY
          ) -> Iterator[Sim]:
    path = tmp_path / "estate.yaml"
    path.write_text(ESTATE % {"licence": f", licence: {licence}" if licence else ""})
    with running_sim(path, tmp_path / "sim", delays) as running:
        # These tests read the log's shape, many requests at a time: Graph's reports limit
        # (5 requests per 10 s) has its own test (test_sign_in_evidence.py).
        running.server.faults.graph_throttle_scale = 0.0
        yield running


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    yield from start(tmp_path)


class Reader:
    """Reads the log as a principal, keeping every answer's text for the no-secret check."""

    def __init__(self, sim: Sim, principal: str | None = None) -> None:
        self.sim = sim
        token = sim.credential(principal).get_token(sim.profile.graph_scope).token
        self.client = sim.track(sim.http())
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.seen: list[str] = []

    def get(self, url: str, **params: str) -> httpx.Response:
        response = self.client.get(url, params=params or None)
        self.seen.append(response.text)
        return response

    def events(self, flt: str | None = None, **params: str) -> list[dict[str, Any]]:
        """Every page of the log, following nextLink."""
        if flt is not None:
            params["$filter"] = flt
        response = self.get(SIGN_INS, **params)
        out: list[dict[str, Any]] = []
        while True:
            assert response.status_code == 200, response.text
            body = response.json()
            out += body["value"]
            link = body.get("@odata.nextLink")
            if not link:
                return out
            assert link.startswith(self.sim.base_url + SIGN_INS + "?")
            response = self.get(link)


def of_app(app_id: str) -> str:
    return f"signInEventTypes/any(t: t eq 'servicePrincipal') and (appId eq '{app_id}')"


def all_secrets(sim: Sim) -> list[str]:
    found = [p.secret for a in sim.tenant.applications.values() for p in a.passwords]
    found += [c.secret for c in sim.tenant.external_callers.values()]
    assert found and all(len(s) > 20 for s in found)
    return found


def assert_no_secret(sim: Sim, texts: list[str]) -> None:
    joined = "\n".join(texts)
    assert not [s for s in all_secrets(sim) if s in joined]


def test_reading_the_log_needs_audit_log_read_all(sim: Sim) -> None:
    refused = Reader(sim, "reports-sp").get(SIGN_INS)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "Authorization_RequestDenied"
    assert Reader(sim).get(SIGN_INS).status_code == 200


def test_a_tenant_without_a_premium_licence_gets_graphs_licence_error(tmp_path: Path) -> None:
    for running in start(tmp_path, licence="free"):
        refused = Reader(running).get(SIGN_INS)
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == LICENCE_CODE
        assert error["message"] == "Neither tenant is B2C or tenant doesn't have premium license"


def test_an_external_callers_sign_ins_carry_its_address_key_id_and_resource(sim: Sim) -> None:
    reader = Reader(sim)
    ci_app = sim.client_id("ci-sp")
    app = sim.tenant.app_by_app_id(ci_app)
    assert app is not None
    events = reader.events(of_app(ci_app))
    assert 1440 <= len(events) <= 1442  # a day of sign-ins a minute apart, then today's
    assert {(e["ipAddress"], e["servicePrincipalCredentialKeyId"], e["resourceId"],
             e["resourceDisplayName"], e["appId"], e["status"]["errorCode"])
            for e in events} == {("203.0.113.7", app.passwords[0].key_id, GRAPH_RESOURCE[0],
                                  GRAPH_RESOURCE[1], ci_app, 0)}
    first = events[0]
    assert first["signInEventTypes"] == ["servicePrincipal"]
    assert first["clientCredentialType"] == "clientSecret" and first["isInteractive"] is False
    assert first["servicePrincipalId"] == sim.object_id("ci-sp")
    times = [e["createdDateTime"] for e in events]
    assert times == sorted(times, reverse=True)
    assert_no_secret(sim, reader.seen)


def test_paging_with_top_serves_each_event_once(sim: Sim) -> None:
    reader = Reader(sim)
    ci_app = sim.client_id("ci-sp")
    first = reader.get(SIGN_INS, **{"$top": "500", "$filter": of_app(ci_app)}).json()
    assert len(first["value"]) == 500 and "$skiptoken=" in first["@odata.nextLink"]
    paged = reader.events(of_app(ci_app), **{"$top": "500"})
    assert len({e["id"] for e in paged}) == len(paged) >= 1440
    assert reader.get(SIGN_INS, **{"$top": "1001"}).status_code == 400
    garbled = reader.get(SIGN_INS, **{"$skiptoken": "c2ltMTpub3QtYS1zaWduLWlu"})
    assert garbled.status_code == 400
    bad = reader.get(SIGN_INS, **{"$filter": "appId eq 'x' or 1 eq 1"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"


def test_a_sites_probe_signs_in_from_its_first_outbound_address(sim: Sim) -> None:
    sid = sim.subscription_id
    web = sim.factory().web(sid)
    site = web.web_apps.get("rg-orders", "orders-api")
    slot = web.web_apps.get_slot("rg-orders", "orders-api", "staging")
    outbound = str(site.outbound_ip_addresses).split(",")
    possible = str(site.possible_outbound_ip_addresses).split(",")
    assert len(outbound) == 5 and possible[:5] == outbound and len(possible) == 10
    assert slot.outbound_ip_addresses == site.outbound_ip_addresses
    with sim.http() as http:
        assert http.get("/_sites/orders-api/healthz").status_code == 200
    orders = sim.client_id("orders-sp")
    events = Reader(sim).events(of_app(orders))
    app = sim.tenant.app_by_app_id(orders)
    assert app is not None
    assert {(e["ipAddress"], e["resourceId"], e["servicePrincipalCredentialKeyId"])
            for e in events} == {(outbound[0], KEYVAULT_RESOURCE[0], app.passwords[0].key_id),
                                 (outbound[0], GRAPH_RESOURCE[0], app.passwords[0].key_id)}


def test_managed_identity_sign_ins_are_their_own_event_type(sim: Sim) -> None:
    with sim.http() as http:
        assert http.get("/_sites/mi-api/healthz").status_code == 200
    mi_app = sim.tenant.service_principals[sim.object_id("mi-api")].app_id
    reader = Reader(sim)
    assert reader.events(of_app(mi_app)) == []
    managed = reader.events(f"signInEventTypes/any(t: t eq 'managedIdentity') and "
                            f"appId eq '{mi_app}'")
    assert len(managed) == 1
    assert managed[0]["clientCredentialType"] == "managedIdentity"
    assert managed[0]["resourceId"] == ARM_RESOURCE[0]
    assert managed[0]["servicePrincipalCredentialKeyId"] is None


def test_the_token_endpoint_logs_each_attempt_with_the_callers_address(
        sim: Sim, quiet_identity_warnings: None) -> None:
    reports = sim.client_id("reports-sp")
    sim.credential("reports-sp").get_token("https://vault.azure.net/.default")
    with pytest.raises(Exception, match="AADSTS7000215"):
        sim.credential("reports-sp", secret="not-the-secret-" + "x" * 30).get_token(
            "https://management.azure.com/.default")
    events = Reader(sim).events(of_app(reports))
    assert [(e["ipAddress"], e["resourceId"], e["status"]["errorCode"],
             e["servicePrincipalCredentialKeyId"] is None) for e in events] == [
        ("127.0.0.1", ARM_RESOURCE[0], 7000215, True),
        ("127.0.0.1", KEYVAULT_RESOURCE[0], 0, False)]


def test_fresh_sign_ins_stay_hidden_for_the_ingestion_delay(sim: Sim) -> None:
    reader = Reader(sim)
    orders = sim.client_id("orders-sp")
    with sim.http() as http:
        assert http.post("/_sim/faults", json={"sign_in_delay": 3600}).status_code == 200
        assert http.get("/_sites/orders-api/healthz").status_code == 200
        hidden = reader.events(of_app(orders))
        assert http.post("/_sim/faults", json={"sign_in_delay": 0}).status_code == 200
    assert hidden == []
    assert len(reader.events(of_app(orders))) == 2


def test_a_stopped_caller_signs_in_no_more(sim: Sim) -> None:
    reader = Reader(sim)
    script = sim.client_id("script-sp")
    time.sleep(0.5)
    with sim.http() as http:
        stopped = http.post("/_sim/callers/nightly-script", json={"active": False})
        assert stopped.status_code == 200 and stopped.json()["active"] is False
        before = reader.events(of_app(script))
        assert len(before) >= 2
        time.sleep(0.6)
        assert reader.events(of_app(script)) == before
        assert http.post("/_sim/callers/nobody", json={"active": False}).status_code == 404
        assert http.post("/_sim/callers/nightly-script", json={"active": "no"}
                         ).status_code == 400
        listed = http.get("/_sim/callers")
        reader.seen += [stopped.text, listed.text]
        ci = next(c for c in listed.json()["callers"] if c["name"] == "release-pipeline")
        assert ci["active"] is True and ci["ip"] == "203.0.113.7" and ci["signIns"] >= 1440
    assert_no_secret(sim, reader.seen)


def test_a_caller_whose_secret_is_removed_fails_without_a_key_id(sim: Sim) -> None:
    reader = Reader(sim)
    script = sim.client_id("script-sp")
    app = sim.tenant.app_by_app_id(script)
    assert app is not None
    key_id = app.passwords[0].key_id
    time.sleep(0.3)
    with sim.http() as http:
        token = sim.credential().get_token(sim.profile.graph_scope).token
        removed = http.post(f"/v1.0/applications/{app.object_id}/removePassword",
                            json={"keyId": key_id},
                            headers={"Authorization": f"Bearer {token}"})
        assert removed.status_code == 204
    time.sleep(0.5)
    events = reader.events(of_app(script) + " and createdDateTime ge 2020-01-01T00:00:00Z")
    outcomes = [(e["status"]["errorCode"], e["servicePrincipalCredentialKeyId"])
                for e in reversed(events)]  # oldest first
    assert (0, key_id) in outcomes and (7000215, None) in outcomes
    first_failure = outcomes.index((7000215, None))
    assert set(outcomes[:first_failure]) == {(0, key_id)}
    assert set(outcomes[first_failure:]) == {(7000215, None)}
    assert all("AADSTS7000215" in e["status"]["failureReason"]
               for e in events if e["status"]["errorCode"])
    assert_no_secret(sim, reader.seen)


def test_a_sign_in_is_served_by_its_id(sim: Sim) -> None:
    reader = Reader(sim)
    newest = reader.get(SIGN_INS, **{"$top": "1"}).json()["value"][0]
    one = reader.get(f"{SIGN_INS}/{quote(newest['id'])}")
    assert one.status_code == 200 and one.json()["id"] == newest["id"]
    assert reader.get(f"{SIGN_INS}/00000000-0000-0000-0000-000000000000").status_code == 404
