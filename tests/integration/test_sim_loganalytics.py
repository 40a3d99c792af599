"""The simulator's Log Analytics query API over HTTPS, read with the real
`azure.monitor.query.LogsQueryClient` and tokens from the real azure-identity, exactly as the
product reads a workspace that Entra's diagnostic settings feed: only the endpoint differs.

The estate (tests/fixtures/loganalytics_estate.yaml) holds no secret text; the tests assert
that none of the secrets the simulator generated comes back in any answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.monitor.query import LogsQueryClient, LogsQueryPartialResult, LogsQueryResult
from conftest import FIXTURES, Sim, running_sim

from migrator.sim.loganalytics import TABLE
from migrator.sim.signins import GRAPH_RESOURCE
from migrator.sim.state import Delays

pytestmark = pytest.mark.integration

ESTATE = FIXTURES / "loganalytics_estate.yaml"
LAW_ENTRA = "5b02755b-5bf4-430c-9487-45502a2a7e62"
AUDIENCE = "https://api.loganalytics.io"
NOW_VISIBLE = Delays(replication=0.0, rbac=0.0, sign_in_ingestion=0.0, workspace_ingestion=0.0)


def product_query(*app_ids: str) -> str:
    listed = ", ".join(f'"{a}"' for a in app_ids)
    return f"""{TABLE}
| where TimeGenerated >= datetime(2020-01-01T00:00:00Z)
| where AppId in~ ({listed})
| project TimeGenerated, AppId, ServicePrincipalCredentialKeyId, IPAddress, ResourceIdentity, ResourceDisplayName, ResultType
| order by TimeGenerated asc
| take 50000"""


def start(tmp_path: Path, delays: Delays = NOW_VISIBLE) -> Iterator[Sim]:
    with running_sim(ESTATE, tmp_path / "sim", delays) as sim:
        yield sim


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    yield from start(tmp_path)


def client(sim: Sim, principal: str | None = None) -> LogsQueryClient:
    """As the product makes one: the profile's endpoint and audience, the simulator's CA."""
    assert sim.profile.log_analytics_endpoint == sim.base_url
    assert sim.profile.log_analytics_audience == AUDIENCE
    return sim.track(LogsQueryClient(
        sim.credential(principal), endpoint=sim.profile.log_analytics_endpoint,
        audience=sim.profile.log_analytics_audience, connection_verify=sim.ca_bundle))


def probe(sim: Sim, site: str = "orders-api") -> None:
    """Run the app's health check: its code signs in with its secret (a sign-in Entra logs)."""
    with sim.http() as http:
        assert http.get(f"/_sites/{site}/healthz").status_code == 200


def secrets(sim: Sim) -> list[str]:
    return [p.secret for app in sim.tenant.applications.values() for p in app.passwords]


def test_query_returns_the_apps_sign_ins_with_key_ip_and_resource(sim: Sim) -> None:
    probe(sim)
    probe(sim, "mi-api")  # a managed identity: not in this table
    orders = sim.client_id("orders-sp")
    key_id = sim.tenant.app_by_app_id(orders).passwords[0].key_id  # type: ignore[union-attr]
    outbound = sim.tenant.sites["orders-api"].outbound_ips[0]
    result = client(sim).query_workspace(LAW_ENTRA, product_query(orders.upper()),
                                         timespan=timedelta(days=1))
    assert isinstance(result, LogsQueryResult)
    (table,) = result.tables
    assert table.columns == ["TimeGenerated", "AppId", "ServicePrincipalCredentialKeyId",
                             "IPAddress", "ResourceIdentity", "ResourceDisplayName",
                             "ResultType"]
    assert table.columns_types[0] == "datetime"
    rows = [list(r) for r in table.rows]
    assert rows, "the probe's sign-in is in the workspace"
    assert {tuple(r[1:]) for r in rows} == {
        (orders, key_id, outbound, GRAPH_RESOURCE[0], GRAPH_RESOURCE[1], "0")}
    assert rows[0][0].tzinfo is not None  # the SDK parsed Log Analytics' datetime text
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)

    # The release pipeline's history (one a minute for a day) is there, from its own address.
    ci = sim.client_id("ci-sp")
    history = client(sim).query_workspace(LAW_ENTRA, product_query(ci), timespan=None)
    assert isinstance(history, LogsQueryResult)
    assert len(history.tables[0].rows) > 1000
    assert {r[3] for r in history.tables[0].rows} == {"203.0.113.7"}
    # A timespan narrows the query: the last two hours only.
    recent = client(sim).query_workspace(LAW_ENTRA, product_query(ci),
                                         timespan=timedelta(hours=2))
    assert isinstance(recent, LogsQueryResult)
    assert 100 < len(recent.tables[0].rows) < 200


def test_reader_may_query_and_a_principal_without_a_role_may_not(
        sim: Sim, quiet_identity_warnings: None) -> None:
    probe(sim)
    text = product_query(sim.client_id("orders-sp"))
    allowed = client(sim, "reader-sp").query_workspace(LAW_ENTRA, text, timespan=None)
    assert isinstance(allowed, LogsQueryResult) and allowed.tables[0].rows
    with pytest.raises(HttpResponseError) as info:
        client(sim, "auditor-sp").query_workspace(LAW_ENTRA, text, timespan=None)
    assert info.value.status_code == 403
    assert info.value.model.code == "InsufficientAccessError"  # type: ignore[union-attr]
    assert "insufficient access" in str(info.value)


def test_an_unknown_workspace_is_404_and_one_without_the_diagnostic_setting_has_no_table(
        sim: Sim) -> None:
    # azure-monitor-query re-raises azure-core's ResourceNotFoundError as HttpResponseError
    with pytest.raises(HttpResponseError) as info:
        client(sim).query_workspace("c3e93b56-0b50-5361-8b33-dd2ce76704f0", TABLE,
                                    timespan=None)
    assert info.value.status_code == 404
    assert "WorkspaceNotFoundError" in str(info.value)
    law_apps = next(w for w in sim.tenant.workspaces.values() if w.name == "law-apps")
    with pytest.raises(HttpResponseError) as refused:
        client(sim).query_workspace(law_apps.customer_id, f"{TABLE} | take 1", timespan=None)
    assert refused.value.status_code == 400
    assert "Failed to resolve table or column expression named 'AADServicePrincipalSignInLogs'" \
        in str(refused.value)


def test_unsupported_kql_is_a_400_the_sdk_raises(sim: Sim) -> None:
    for text, says in [(f"{TABLE} | summarize count() by AppId", "not implemented"),
                       (f"{TABLE} | where appid == 'x'", "named 'appid'"),
                       (f"{TABLE} | Where AppId == 'x'", "could not be parsed at 'Where'")]:
        with pytest.raises(HttpResponseError) as info:
            client(sim).query_workspace(LAW_ENTRA, text, timespan=None)
        assert info.value.status_code == 400, text
        assert info.value.model.code == "BadArgumentError"  # type: ignore[union-attr]
        assert says in str(info.value), text


def test_fresh_sign_ins_are_hidden_until_the_workspace_ingests_them(tmp_path: Path) -> None:
    delays = Delays(replication=0.0, rbac=0.0, sign_in_ingestion=0.0, workspace_ingestion=1.5)
    for sim in start(tmp_path, delays):
        probe(sim)
        text = product_query(sim.client_id("orders-sp"))
        early = client(sim).query_workspace(LAW_ENTRA, text, timespan=None)
        assert isinstance(early, LogsQueryResult) and early.tables[0].rows == []
        # Graph has it already: the workspace lags behind Entra's own log.
        orders = sim.client_id("orders-sp")
        token = sim.credential().get_token(sim.profile.graph_scope).token
        with sim.http() as http:
            graph = http.get("/beta/auditLogs/signIns",
                             params={"$filter": f"appId eq '{orders}'"},
                             headers={"Authorization": f"Bearer {token}"})
        assert graph.status_code == 200 and graph.json()["value"]
        time.sleep(1.7)
        late = client(sim).query_workspace(LAW_ENTRA, text, timespan=None)
        assert isinstance(late, LogsQueryResult) and late.tables[0].rows


def test_rows_beyond_the_cap_are_a_partial_result(sim: Sim) -> None:
    sim.tenant.log_analytics_row_cap = 10
    result = client(sim).query_workspace(LAW_ENTRA, f"{TABLE} | project AppId", timespan=None)
    assert isinstance(result, LogsQueryPartialResult)
    assert len(result.partial_data[0].rows) == 10
    assert result.partial_error is not None and result.partial_error.code == "PartialError"
    assert "record count limit 10" in str(result.partial_error.details)


def test_a_token_for_another_audience_is_refused(sim: Sim) -> None:
    token = sim.credential().get_token(sim.profile.arm_scope).token
    with sim.http() as http:
        wrong = http.post(f"/v1/workspaces/{LAW_ENTRA}/query", json={"query": TABLE},
                          headers={"Authorization": f"Bearer {token}"})
        missing = http.post(f"/v1/workspaces/{LAW_ENTRA}/query", json={"query": TABLE})
        lost = http.post("/v1/workspaces/nothing/search", json={"query": TABLE})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "InvalidTokenError")
    assert (missing.status_code, missing.json()["error"]["code"]) == (
        401, "AuthorizationRequiredError")
    assert (lost.status_code, lost.json()["error"]["code"]) == (404, "PathNotFoundError")


def test_arm_serves_the_workspace_with_its_customer_id(sim: Sim) -> None:
    token = sim.credential("reader-sp").get_token(sim.profile.arm_scope).token
    path = (f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-logs/providers/"
            "Microsoft.OperationalInsights/workspaces/law-entra")
    with sim.http() as http:
        got = http.get(path, params={"api-version": "2023-09-01"},
                       headers={"Authorization": f"Bearer {token}"})
        listed = http.get(f"/subscriptions/{sim.subscription_id}/resourceGroups/rg-logs/"
                          "providers/Microsoft.OperationalInsights/workspaces",
                          params={"api-version": "2023-09-01"},
                          headers={"Authorization": f"Bearer {token}"})
        old = http.get(path, params={"api-version": "2099-01-01"},
                       headers={"Authorization": f"Bearer {token}"})
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["properties"]["customerId"] == LAW_ENTRA
    assert body["id"] == path.lower()  # the provider writes its ids in lower case
    assert body["type"] == "Microsoft.OperationalInsights/workspaces"
    assert sorted(w["name"] for w in listed.json()["value"]) == ["law-apps", "law-entra"]
    assert old.json()["error"]["code"] == "NoRegisteredProviderFound"


def test_no_secret_in_any_answer(sim: Sim, quiet_identity_warnings: None) -> None:
    probe(sim)
    answers: list[str] = []
    text = f"{TABLE} | order by TimeGenerated desc"
    result = client(sim).query_workspace(LAW_ENTRA, text, timespan=None)
    assert isinstance(result, LogsQueryResult)
    answers.append(json.dumps([list(r) for r in result.tables[0].rows], default=str))
    for bad in (f"{TABLE} | summarize count()", f"{TABLE} | where Nope == 'x'"):
        with pytest.raises(HttpResponseError) as info:
            client(sim).query_workspace(LAW_ENTRA, bad, timespan=None)
        answers.append(str(info.value))
    with pytest.raises(HttpResponseError) as denied:
        client(sim, "auditor-sp").query_workspace(LAW_ENTRA, text, timespan=None)
    answers.append(str(denied.value))
    joined = "\n".join(answers)
    assert len(joined) > 1000
    for secret in secrets(sim):
        assert secret not in joined
