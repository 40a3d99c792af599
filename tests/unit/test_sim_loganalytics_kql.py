"""The simulator's Log Analytics workspace without a server (the HTTPS side is
tests/integration/test_sim_loganalytics.py; this file's name differs because pytest's default
import mode refuses two test modules of one basename): the KQL subset it runs (and what it
refuses, with Log Analytics' error codes), the rows Entra's diagnostic settings write, the
request's timespan, result truncation, ingestion delay, and the estate's workspaces."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from migrator.sim.entra import audience_known
from migrator.sim.estate import EstateError, parse_estate
from migrator.sim.faults import service_of
from migrator.sim.loganalytics import (
    COLUMN_TYPES,
    TABLE,
    QueryError,
    parse_datetime_literal,
    parse_query,
    parse_timespan,
    row_of,
    rows_of,
    run_query,
    workspace_rows,
)
from migrator.sim.rbac import ROLES_BY_ID, ROLES_BY_NAME
from migrator.sim.signins import ARM_RESOURCE, GRAPH_RESOURCE, SignInEvent, new_event
from migrator.sim.state import build_tenant

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
APP_A = "0a5e3c1d-0000-4000-8000-00000000000a"
APP_B = "0a5e3c1d-0000-4000-8000-00000000000b"
KEY_A = "11111111-0000-4000-8000-00000000000a"
TENANT = "6f1c3b0e-0000-4000-8000-0000000000a7"
ESTATE = Path(__file__).parents[1] / "fixtures" / "loganalytics_estate.yaml"

PRODUCT_QUERY = f"""{TABLE}
| where TimeGenerated >= datetime(2026-12-01T00:00:00Z)
| where AppId in~ ("{APP_A.upper()}", "{APP_B}")
| project TimeGenerated, AppId, ServicePrincipalCredentialKeyId, IPAddress, ResourceIdentity, ResourceDisplayName, ResultType
| order by TimeGenerated asc
| take 50000
"""


def event(minutes: float, app_id: str = APP_A, *, key_id: str | None = KEY_A,
          ip: str = "203.0.113.7", error: int = 0, kind: str = "servicePrincipal",
          resource: tuple[str, str] = ARM_RESOURCE) -> SignInEvent:
    return new_event(created=T0 + timedelta(minutes=minutes), event_type=kind, app_id=app_id,
                     app_display_name="orders-sp", service_principal_id="5b000000-0000-4000-"
                     "8000-00000000000a", ip_address=ip, resource_id=resource[0],
                     resource_display_name=resource[1], tenant_id=TENANT, key_id=key_id,
                     error_code=error,
                     failure_reason="AADSTS7000215: Invalid client secret provided." if error
                     else None)


EVENTS = [event(-10), event(1, APP_B, ip="198.51.100.20", resource=GRAPH_RESOURCE),
          event(2, key_id=None, error=7000215), event(3, "0a5e3c1d-0000-4000-8000-00000000000c"),
          event(4, kind="managedIdentity")]
ROWS = rows_of(EVENTS)


def run(text: str, rows: list[dict[str, object]] | None = None, **kwargs: object
        ) -> tuple[tuple[str, ...], list[list[object]]]:
    answer = run_query(parse_query(text), ROWS if rows is None else rows, **kwargs)  # type: ignore[arg-type]
    return answer.columns, answer.rows


def refusal(text: str) -> QueryError:
    with pytest.raises(QueryError) as info:
        parse_query(text)
    return info.value


# --- rows --------------------------------------------------------------------------------------


def test_a_row_is_what_diagnostic_settings_write_and_holds_no_secret() -> None:
    ok = row_of(EVENTS[0])
    assert set(ok) == set(COLUMN_TYPES)
    assert (ok["AppId"], ok["ServicePrincipalCredentialKeyId"], ok["IPAddress"],
            ok["ResourceIdentity"], ok["ResourceDisplayName"], ok["ResultType"],
            ok["ResultDescription"], ok["Type"]) == (
        APP_A, KEY_A, "203.0.113.7", ARM_RESOURCE[0], ARM_RESOURCE[1], "0", "", TABLE)
    assert ok["TimeGenerated"] == T0 - timedelta(minutes=10)
    failed = row_of(EVENTS[2])
    # Kusto has no null string; the AADSTS number is the result type, as text
    assert (failed["ResultType"], failed["ServicePrincipalCredentialKeyId"]) == ("7000215", "")
    assert failed["ResultSignature"] == "FAILURE"
    assert COLUMN_TYPES["TimeGenerated"] == "datetime" and COLUMN_TYPES["ResultType"] == "string"


def test_only_service_principal_sign_ins_are_rows_oldest_first() -> None:
    assert len(ROWS) == 4  # the managed identity's sign-in goes to another table
    assert [r["TimeGenerated"] for r in ROWS] == sorted(r["TimeGenerated"] for r in ROWS)


# --- the query the product sends ---------------------------------------------------------------


def test_the_product_query_filters_projects_in_order_and_sorts() -> None:
    columns, rows = run(PRODUCT_QUERY)
    assert columns == ("TimeGenerated", "AppId", "ServicePrincipalCredentialKeyId", "IPAddress",
                       "ResourceIdentity", "ResourceDisplayName", "ResultType")
    # before T0 left out; app C left out; in~ matched APP_A given in upper case
    assert [(r[1], r[6]) for r in rows] == [(APP_B, "0"), (APP_A, "7000215")]
    assert rows[0][0] == "2026-12-01T00:01:00.0000000Z"  # Log Analytics' datetime text
    assert rows[0][2:6] == [KEY_A, "198.51.100.20", GRAPH_RESOURCE[0], GRAPH_RESOURCE[1]]


def test_whitespace_newlines_and_comments_may_vary() -> None:
    text = (f"  {TABLE}|where TimeGenerated>=datetime( 2026-12-01T00:00:00Z )\n\n"
            f"// the apps\n|  where   AppId in~ ( '{APP_A}' ,\n'{APP_B}' )|project AppId\n"
            "|order by TimeGenerated asc|take 50000")
    with pytest.raises(QueryError):  # TimeGenerated was projected away before the order
        parse_query(text)
    columns, rows = run(text.replace("|project AppId\n", "") + "| project AppId")
    assert columns == ("AppId",) and rows == [[APP_B], [APP_A]]


def test_in_is_case_sensitive_and_in_tilde_is_not() -> None:
    upper = APP_A.upper()
    assert run(f'{TABLE} | where AppId in ("{upper}") | project AppId')[1] == []
    assert len(run(f'{TABLE} | where AppId in~ ("{upper}") | project AppId')[1]) == 2
    assert len(run(f'{TABLE} | where AppId in ("{APP_A}") | project AppId')[1]) == 2
    assert len(run(f'{TABLE} | where AppId !in~ ("{upper}") | project AppId')[1]) == 2
    assert len(run(f'{TABLE} | where AppId =~ "{upper}" | project AppId')[1]) == 2
    assert run(f'{TABLE} | where AppId == "{upper}" | project AppId')[1] == []


def test_time_comparisons_and_order() -> None:
    at = "datetime(2026-12-01T00:02:00Z)"
    assert len(run(f"{TABLE} | where TimeGenerated > {at}")[1]) == 1
    assert len(run(f"{TABLE} | where TimeGenerated >= {at}")[1]) == 2
    assert len(run(f"{TABLE} | where TimeGenerated < {at} and AppId == '{APP_A}'")[1]) == 1
    asc = run(f"{TABLE} | order by TimeGenerated asc | project TimeGenerated")[1]
    desc = run(f"{TABLE} | order by TimeGenerated desc | project TimeGenerated")[1]
    default = run(f"{TABLE} | sort by TimeGenerated | project TimeGenerated")[1]
    assert asc == sorted(asc) and desc == asc[::-1] and default == desc  # Kusto: desc


def test_take_and_project_order() -> None:
    assert len(run(f"{TABLE} | take 2")[1]) == 2
    assert len(run(f"{TABLE} | limit 0")[1]) == 0
    newest = run(f"{TABLE} | order by TimeGenerated desc | take 1 | project IPAddress, AppId")
    assert newest == (("IPAddress", "AppId"),
                      [["203.0.113.7", "0a5e3c1d-0000-4000-8000-00000000000c"]])
    assert run(f"{TABLE} | take 1")[0] == tuple(COLUMN_TYPES)  # every column, table order


def test_timespan_intersects_the_query() -> None:
    window = (T0 + timedelta(seconds=30), T0 + timedelta(minutes=2))
    _, rows = run(PRODUCT_QUERY, window=window)
    assert [r[1] for r in rows] == [APP_B, APP_A]
    _, rows = run(PRODUCT_QUERY, window=(T0 - timedelta(hours=1), T0 + timedelta(minutes=1)))
    assert [r[1] for r in rows] == [APP_B]  # the query's own bound still holds


@pytest.mark.parametrize(("text", "start", "end"), [
    ("PT3600.0S", timedelta(hours=-1), timedelta(0)),  # what the SDK sends for a timedelta
    ("P1D", timedelta(days=-1), timedelta(0)),
    ("2026-12-01T00:00:00.000Z/2026-12-01T06:00:00.000Z", -timedelta(days=1),
     -timedelta(hours=18)),
    ("2026-12-01T00:00:00Z/PT6H", -timedelta(days=1), -timedelta(hours=18)),
    ("PT6H/2026-12-01T06:00:00Z", -timedelta(days=1), -timedelta(hours=18)),
])
def test_timespans(text: str, start: timedelta, end: timedelta) -> None:
    now = T0 + timedelta(days=1)
    assert parse_timespan(text, now) == (now + start, now + end)


@pytest.mark.parametrize("text", ["", "yesterday", "P", "PT", "2026-12-01", "a/b/c"])
def test_bad_timespans(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        parse_timespan(text, T0)


def test_datetime_literals() -> None:
    assert parse_datetime_literal("2026-12-01") == T0
    assert parse_datetime_literal('"2026-12-01T01:02:03.1234567Z"') == T0.replace(
        hour=1, minute=2, second=3, microsecond=123456)
    assert parse_datetime_literal("2026-12-01T01:00:00+01:00") == T0


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "inner", "innermost", "says"), [
    (f"{TABLE} | Where AppId == 'x'", "SyntaxError", "SYN0002", "parsed at 'Where'"),
    (f"{TABLE} | where AppId in~ ('x'", "SyntaxError", "SYN0002", "<EOF>"),
    (f"{TABLE} | where AppId in~ ('x)", "SyntaxError", "SYN0002", "parsed at '''"),
    (f"{TABLE} | where TimeGenerated >= datetime(yesterday)", "SyntaxError", "SYN0002",
     "yesterday"),
    (f"{TABLE} | where appid in~ ('x')", "SemanticError", "SEM0100",
     "'where' operator: Failed to resolve scalar expression named 'appid'"),
    (f"{TABLE} | project AppId, Secret", "SemanticError", "SEM0100", "named 'Secret'"),
    (f"{TABLE} | project AppId | where IPAddress == 'x'", "SemanticError", "SEM0100",
     "named 'IPAddress'"),
    ("SigninLogs | where AppId == 'x'", "SemanticError", "SEM0100",
     "'where' operator: Failed to resolve table or column expression named 'SigninLogs'"),
    (f"{TABLE} | summarize count() by AppId", "SemanticError", "SemanticError",
     "'summarize' operator is not implemented by the simulator"),
    (f"{TABLE} | where TimeGenerated > ago(1d)", "SemanticError", "SemanticError",
     "not implemented by the simulator"),
    (f"{TABLE} | where AppId >= datetime(2026-12-01)", "SemanticError", "SemanticError",
     "Cannot compare values of types string and datetime"),
    (f"{TABLE} | take 5.5", "SemanticError", "SemanticError", "not implemented"),
    (f"{TABLE} | order by TimeGenerated asc, AppId", "SemanticError", "SemanticError",
     "more than one column"),
    (f"{TABLE}; {TABLE}", "SyntaxError", "SYN0002", "parsed at ';'"),
    ("print 1", "SemanticError", "SemanticError", "starting with 'print'"),
])
def test_queries_outside_the_subset_are_a_400_with_log_analytics_codes(
        text: str, inner: str, innermost: str, says: str) -> None:
    err = refusal(text)
    body = err.body()["error"]
    assert (err.status, body["code"], body["message"]) == (
        400, "BadArgumentError", "The request had some invalid properties")
    assert body["innererror"]["code"] == inner
    assert body["innererror"]["innererror"]["code"] == innermost
    assert says in body["innererror"]["innererror"]["message"], body


def test_an_empty_or_huge_query_is_refused() -> None:
    assert refusal("  \n").body()["error"]["innererror"]["code"] == "EmptyQueryError"
    assert refusal(TABLE + " " * 70_000).status == 400


def test_a_syntax_error_names_line_and_column() -> None:
    inner = refusal(f"{TABLE}\n| where AppId ~= 'x'").body()["error"]["innererror"]
    assert inner["innererror"]["message"] == "Query could not be parsed at '~' on line [2,15]"


# --- limits and ingestion ----------------------------------------------------------------------


def test_a_result_beyond_the_row_cap_is_a_partial_error() -> None:
    answer = run_query(parse_query(f"{TABLE} | project AppId"), ROWS, row_cap=3)
    assert len(answer.rows) == 3
    body = answer.body()
    assert body["error"]["code"] == "PartialError"
    detail = body["error"]["details"][0]["innererror"]["message"]
    assert "exceeded the internal record count limit 3 (E_QUERY_RESULT_SET_TOO_LARGE)" in detail
    assert len(body["tables"][0]["rows"]) == 3
    # take below the cap: no truncation
    assert "error" not in run_query(parse_query(f"{TABLE} | take 3"), ROWS, row_cap=3).body()
    sized = run_query(parse_query(f"{TABLE} | project AppId"), ROWS, size_cap=100)
    assert len(sized.rows) == 2 and sized.truncated is not None
    assert "internal data size limit 100" in sized.truncated


def test_the_workspace_sees_sign_ins_only_after_its_ingestion_delay() -> None:
    tenant = build_tenant(parse_estate(ESTATE.read_text()))
    tenant.external_callers.clear()
    tenant.sign_ins.extend(EVENTS)
    tenant.workspace_delay = 300.0
    assert len(workspace_rows(tenant, T0 + timedelta(minutes=6))) == 2  # -10 and +1 minutes
    assert len(workspace_rows(tenant, T0 + timedelta(minutes=9))) == 4
    tenant.workspace_delay = 0.0
    assert len(workspace_rows(tenant, T0)) == 1


# --- wiring ------------------------------------------------------------------------------------


def test_tokens_fault_injection_and_roles_know_log_analytics() -> None:
    assert audience_known("https://api.loganalytics.io/")
    assert audience_known("https://api.loganalytics.io")
    assert service_of("/v1/workspaces/5b02755b-5bf4-430c-9487-45502a2a7e62/query") == \
        "loganalytics"
    assert service_of("/v1.0/applications") == "graph"
    reader = ROLES_BY_ID["73c42c96-874c-492b-b04d-ab87d138a893"]
    assert reader is ROLES_BY_NAME["log analytics reader"]
    action = "Microsoft.OperationalInsights/workspaces/query/read"
    assert reader.allows(action, data=False)
    assert ROLES_BY_NAME["reader"].allows(action, data=False)
    assert not ROLES_BY_NAME["storage blob data reader"].allows(action, data=False)


def test_the_fixture_estate_builds_its_workspaces() -> None:
    tenant = build_tenant(parse_estate(ESTATE.read_text()))
    by_name = {w.name: w for w in tenant.workspaces.values()}
    assert by_name["law-entra"].sign_in_logs and not by_name["law-apps"].sign_in_logs
    assert by_name["law-entra"].customer_id == "5b02755b-5bf4-430c-9487-45502a2a7e62"
    with pytest.raises(EstateError, match=r"log_analytics_workspaces\[0\]\.sign_in_logs"):
        parse_estate(ESTATE.read_text().replace("sign_in_logs: true", "sign_in_logs: maybe"))
