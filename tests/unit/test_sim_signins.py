"""The simulator's sign-in logs without a server: the `$filter` grammar Graph accepts (and what
it refuses), ingestion delay, the paging cursor, external callers' lazily made history and its
bounds, the estate's `external_callers` validation, and the sites' outbound addresses."""

from __future__ import annotations

import base64
import ipaddress
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from migrator.sim.estate import EstateError, parse_estate
from migrator.sim.faults import service_of
from migrator.sim.signins import (
    ARM_RESOURCE,
    CALLER_EVENT_CAP,
    GRAPH_RESOURCE,
    ExternalCaller,
    FilterError,
    SignInEvent,
    SignInLog,
    SkipTokenError,
    new_event,
    page_after,
    parse_filter,
    parse_skiptoken,
    skiptoken_after,
)
from migrator.sim.state import build_tenant, outbound_addresses, utcnow

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
APP_A = "0a5e3c1d-0000-4000-8000-00000000000a"
APP_B = "0a5e3c1d-0000-4000-8000-00000000000b"
APP_C = "0a5e3c1d-0000-4000-8000-00000000000c"
SP_A = "5b000000-0000-4000-8000-00000000000a"
SMALL = Path(__file__).parents[1] / "fixtures" / "small.yaml"


def event(app_id: str, at: datetime, kind: str = "servicePrincipal",
          sp: str = SP_A) -> SignInEvent:
    return new_event(created=at, event_type=kind, app_id=app_id, app_display_name="x",
                     service_principal_id=sp, ip_address="203.0.113.9",
                     resource_id=ARM_RESOURCE[0], resource_display_name=ARM_RESOURCE[1],
                     tenant_id="t")


EVENTS = {
    "a-old": event(APP_A, T0 - timedelta(days=1)),
    "a-new": event(APP_A, T0 + timedelta(hours=1)),
    "b-new": event(APP_B, T0 + timedelta(hours=2)),
    "c-new": event(APP_C, T0 + timedelta(hours=3), sp="5b000000-0000-4000-8000-00000000000c"),
    "a-mi": event(APP_A, T0 + timedelta(hours=4), kind="managedIdentity"),
    "a-at-t0": event(APP_A, T0),
}


def matching(text: str) -> set[str]:
    predicate = parse_filter(text)
    return {name for name, e in EVENTS.items() if predicate(e)}


SP = "signInEventTypes/any(t: t eq 'servicePrincipal')"


@pytest.mark.parametrize(("text", "expected"), [
    # the product's exact form
    (f"{SP} and (appId eq '{APP_A}' or appId eq '{APP_B}') and "
     "createdDateTime ge 2026-12-01T00:00:00Z", {"a-new", "b-new", "a-at-t0"}),
    (f"{SP} and appId eq '{APP_A}'", {"a-old", "a-new", "a-at-t0"}),
    ("signInEventTypes/any(x: x eq 'managedIdentity')", {"a-mi"}),
    (f"appId eq '{APP_A.upper()}'", {"a-old", "a-new", "a-at-t0", "a-mi"}),  # GUIDs: any case
    (f"(appId eq '{APP_C}')", {"c-new"}),
    (f"servicePrincipalId eq '{SP_A}' and createdDateTime lt 2026-12-01T02:00:00Z",
     {"a-old", "a-new", "a-at-t0"}),
    ("createdDateTime gt 2026-12-01T00:00:00Z and createdDateTime le 2026-12-01T02:00:00.0000000Z",
     {"a-new", "b-new"}),
    (f"  {SP}   AND  createdDateTime GE 2026-12-01T03:00:00Z  ", {"c-new"}),
])
def test_the_filter_subset_selects_what_graph_would(text: str, expected: set[str]) -> None:
    assert matching(text) == expected


@pytest.mark.parametrize(("text", "code"), [
    ("", "BadRequest"),
    (f"appId eq '{APP_A}' or appId eq '{APP_B}'", "BadRequest"),  # `or` only in parentheses
    (f"appId ne '{APP_A}'", "BadRequest"),
    ("appId eq 'not-a-guid'", "BadRequest"),
    (f"appId eq {APP_A}", "BadRequest"),  # unquoted
    (f"appId eq '{APP_A}", "BadRequest"),  # unterminated
    ("createdDateTime ge '2026-12-01T00:00:00Z'", "BadRequest"),  # quoted date-time
    ("createdDateTime ge 2026-12-01", "BadRequest"),  # no time
    ("createdDateTime ge 2026-12-01T00:00:00+01:00", "BadRequest"),  # not UTC
    ("createdDateTime eq 2026-12-01T00:00:00Z", "BadRequest"),
    ("createdDateTime ge 2026-13-01T00:00:00Z", "BadRequest"),
    ("signInEventTypes/any(t: u eq 'servicePrincipal')", "BadRequest"),
    ("signInEventTypes/any(t: t eq 'robot')", "BadRequest"),
    ("signInEventTypes/all(t: t eq 'servicePrincipal')", "BadRequest"),
    (f"{SP} and", "BadRequest"),
    (f"({SP})", "Request_UnsupportedQuery"),  # parentheses hold comparisons only
    (f"appId eq '{APP_A}'; drop table", "BadRequest"),
    ("ipAddress eq '203.0.113.7'", "Request_UnsupportedQuery"),
    ("startswith(appDisplayName, 'x')", "Request_UnsupportedQuery"),
    ("status/errorCode eq 0", "Request_UnsupportedQuery"),
    ("appId eq '" + "a" * 5000 + "'", "BadRequest"),
])
def test_anything_outside_the_subset_is_refused(text: str, code: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(text)
    assert err.value.code == code


def test_a_refused_filter_quotes_at_most_a_bounded_part_of_it() -> None:
    with pytest.raises(FilterError) as err:
        parse_filter("status eq " + "x" * 3000)
    assert len(err.value.message) < 400


def test_events_stay_hidden_until_ingested_and_come_newest_first() -> None:
    log = SignInLog()
    old, fresh = event(APP_A, T0), event(APP_A, T0 + timedelta(seconds=100))
    log.append(fresh)
    log.append(old)  # out of order: a backfilled one
    assert log.select(None, T0 + timedelta(seconds=150), delay=180) == []
    assert log.select(None, T0 + timedelta(seconds=180), delay=180) == [old]
    assert log.select(None, T0 + timedelta(seconds=280), delay=180) == [fresh, old]
    assert log.select(None, T0 + timedelta(seconds=100), delay=0) == [fresh, old]


def test_the_log_keeps_only_its_newest_events() -> None:
    log = SignInLog(cap=100)
    for i in range(500):
        log.append(event(APP_A, T0 + timedelta(seconds=i)))
    assert len(log) <= 110
    kept = log.select(None, T0 + timedelta(days=1), delay=0)
    assert kept[0].created == T0 + timedelta(seconds=499)


def test_the_cursor_continues_below_the_last_event_served_while_new_ones_arrive() -> None:
    log = SignInLog()
    for i in range(25):
        log.append(event(APP_A, T0 + timedelta(seconds=i // 2)))  # pairs share a second
    now = T0 + timedelta(hours=1)
    first, more = page_after(log.select(None, now, 0), None, 10)
    assert more and len(first) == 10
    log.append(event(APP_A, T0 + timedelta(minutes=30)))  # arrives between pages
    token = skiptoken_after(first[-1])
    second, more = page_after(log.select(None, now, 0), token, 10)
    third, more_after = page_after(log.select(None, now, 0), skiptoken_after(second[-1]), 10)
    assert more and not more_after
    served = [e.id for e in first + second + third]
    assert len(served) == len(set(served)) == 25
    created = [e.created for e in first + second + third]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("token", [
    "garbage!!", base64.urlsafe_b64encode(b"sim1:some-directory-object").decode(),
    base64.urlsafe_b64encode(b"simsignin1:not-a-time|x").decode(),
    base64.urlsafe_b64encode(b"simsignin1:2026-12-01T00:00:00|x").decode(),  # no zone
])
def test_a_foreign_or_garbled_skiptoken_is_refused(token: str) -> None:
    with pytest.raises(SkipTokenError):
        parse_skiptoken(token)


def caller(**changes: object) -> ExternalCaller:
    fields: dict[str, object] = {
        "name": "ci", "principal": "p", "app_id": APP_A, "secret_index": 0,
        "ip": "203.0.113.7", "every": 60.0, "resource": GRAPH_RESOURCE, "active": True,
        "history_days": 0.0, "origin": T0, "secret": "s"}
    fields.update(changes)
    return ExternalCaller(**fields)  # type: ignore[arg-type]


def test_a_caller_signs_in_every_interval_once_each() -> None:
    c = caller()
    assert c.due(T0 - timedelta(seconds=1)) == []
    assert c.due(T0 + timedelta(seconds=130)) == [T0, T0 + timedelta(seconds=60),
                                                   T0 + timedelta(seconds=120)]
    assert c.due(T0 + timedelta(seconds=170)) == []
    assert c.due(T0 + timedelta(seconds=180)) == [T0 + timedelta(seconds=180)]


def test_a_long_history_is_cut_to_the_newest_events() -> None:
    c = caller(every=1.0, origin=T0 - timedelta(days=365))
    due = c.due(T0)
    assert len(due) == CALLER_EVENT_CAP
    assert due[-1] == T0 and due[0] == T0 - timedelta(seconds=CALLER_EVENT_CAP - 1)
    assert c.due(T0 + timedelta(seconds=2)) == [T0 + timedelta(seconds=1),
                                                T0 + timedelta(seconds=2)]


def test_a_stopped_caller_signs_in_no_more_and_starts_again_an_interval_later() -> None:
    c = caller()
    c.due(T0)
    c.set_active(False, T0 + timedelta(seconds=30))
    assert c.due(T0 + timedelta(hours=1)) == []
    c.set_active(True, T0 + timedelta(hours=1))
    assert c.due(T0 + timedelta(hours=1, seconds=59)) == []
    assert c.due(T0 + timedelta(hours=1, seconds=60)) == [T0 + timedelta(hours=1, seconds=60)]


CALLERS = """
external_callers:
  - {name: ci, principal: orders-sp, ip: 203.0.113.7, every: 3600, history_days: 2,
     resource: graph}
  - {name: old-copy, principal: orders-sp, secret: 1, ip: "2001:db8::7", every: 3600,
     history_days: 2}
  - {name: stopped, principal: reports-sp, ip: 198.51.100.1, active: false, history_days: 1}
"""


def test_callers_history_is_made_lazily_judged_by_the_secret_it_holds() -> None:
    tenant = build_tenant(parse_estate(SMALL.read_text() + CALLERS))
    assert len(tenant.sign_ins) == 0  # nothing made before someone looks
    tenant.catch_up_sign_ins()
    events = tenant.sign_ins.select(None, utcnow(), 0)
    by_ip: dict[str, list[SignInEvent]] = {}
    for e in events:
        by_ip.setdefault(e.ip_address, []).append(e)
    app = tenant.app_by_app_id(tenant.external_callers["ci"].app_id)
    assert app is not None
    ci = by_ip["203.0.113.7"]
    assert len(ci) == 49  # two days of hourly sign-ins, the first at the start of its history
    assert {e.key_id for e in ci} == {app.passwords[0].key_id}
    assert {(e.resource_id, e.error_code) for e in ci} == {(GRAPH_RESOURCE[0], 0)}
    # secret 1 of orders-sp expired in 2020: every sign-in with it fails, naming no keyId
    old = by_ip["2001:db8::7"]
    assert {(e.error_code, e.key_id) for e in old} == {(7000222, None)}
    assert "198.51.100.1" not in by_ip
    # once its secret is removed, a caller's sign-ins fail as an invalid secret
    app.passwords.pop(0)
    tenant.external_callers["ci"].next_at = utcnow()
    tenant.catch_up_sign_ins()
    newest = next(e for e in tenant.sign_ins.select(None, utcnow(), 0)
                  if e.ip_address == "203.0.113.7")
    assert (newest.error_code, newest.key_id) == (7000215, None)
    secrets = [p.secret for a in tenant.applications.values() for p in a.passwords]
    secrets.append(tenant.external_callers["ci"].secret)
    shown = repr([e.as_graph() for e in tenant.sign_ins]) + repr(
        [c.as_json(tenant.caller_key_id(c)) for c in tenant.external_callers.values()])
    shown += repr(tenant.external_callers["ci"])
    assert not [s for s in secrets if s in shown]


@pytest.mark.parametrize(("callers", "place", "problem"), [
    ("[{name: x, principal: ghost, ip: 203.0.113.7}]", r"line \d+, external_callers\[0\]"
     r"\.principal", "unknown principal 'ghost'"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.7, secret: 2}]",
     r"line \d+, external_callers\[0\]\.secret", "no secret 2"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.999}]",
     r"line \d+, external_callers\[0\]\.ip", "not an IP address"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.7, every: 0}]",
     r"line \d+, external_callers\[0\]\.every", "greater than 0"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.7, resource: mainframe}]",
     r"line \d+, external_callers\[0\]\.resource", "'mainframe' is not one of"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.7},\n"
     "   {name: x, principal: orders-sp, ip: 203.0.113.8}]",
     r"line \d+, external_callers\[1\]\.name", "duplicate external caller name 'x'"),
    ("[{name: x, principal: orders-sp, ip: 203.0.113.7, colour: red}]",
     r"line \d+, external_callers\[0\]\.colour", "Extra inputs"),
])
def test_bad_external_callers_are_refused_in_one_line(callers: str, place: str,
                                                      problem: str) -> None:
    with pytest.raises(EstateError) as err:
        parse_estate(SMALL.read_text() + f"\nexternal_callers: {callers}\n", "e.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert re.search(rf"^e\.yaml: {place}: .*{re.escape(problem)}", message), message


def test_an_estate_api_may_be_a_callers_resource_and_licence_defaults_to_p2() -> None:
    text = SMALL.read_text().replace(
        "  - name: reports-sp\n    secrets: [{}]\n",
        "  - name: reports-sp\n    secrets: [{}]\n    app_roles: [Reports.Read]\n")
    spec = parse_estate(text + "\nexternal_callers: [{name: x, principal: orders-sp, "
                        "ip: 203.0.113.7, resource: reports-sp}]\n")
    tenant = build_tenant(spec)
    assert tenant.licence == "P2"
    reports = tenant.service_principals[tenant.names["reports-sp"]]
    assert tenant.external_callers["x"].resource == (reports.app_id, "reports-sp")
    free = parse_estate(SMALL.read_text().replace(
        "domain: contoso.onmicrosoft.com}", "domain: contoso.onmicrosoft.com, licence: free}"))
    assert build_tenant(free).licence == "free"


def test_outbound_addresses_are_per_site_deterministic_and_shared_by_slots() -> None:
    tenant = build_tenant(parse_estate(SMALL.read_text()))
    site = tenant.webapp("orders-api")
    slot = tenant.webapp("orders-api", "staging")
    other = tenant.webapp("reports-fn")
    assert site is not None and slot is not None and other is not None
    assert len(site.outbound_ips) == 5 and len(site.possible_outbound_ips) == 10
    assert site.possible_outbound_ips[:5] == site.outbound_ips
    assert len(set(site.possible_outbound_ips)) == 10
    assert slot.outbound_ips == site.outbound_ips
    assert other.outbound_ips != site.outbound_ips
    assert outbound_addresses(site.id.upper()) == site.possible_outbound_ips
    for address in site.possible_outbound_ips:
        parsed = ipaddress.ip_address(address)
        assert parsed in ipaddress.ip_network("20.0.0.0/8") and parsed.version == 4


def test_beta_graph_paths_are_graph_for_throttling_and_faults() -> None:
    assert service_of("/beta/auditLogs/signIns") == "graph"
    assert service_of("/v1.0/applications") == "graph"
    assert service_of("/betamax/x") == "arm"
