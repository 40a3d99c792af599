"""Sign-in evidence, the pure layers: Graph's sign-in JSON to records, records to the per
credential summary (attributed to the apps that call out from each address), the summary to
the plan's evidence and the lines that hold a revoke or warn a grant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from migrator.cloud.records import (
    AppRoleGrantRecord,
    IdentityRecord,
    PasswordCredentialRecord,
    PrincipalRecord,
    SiteRecord,
)
from migrator.cloud.signins import (
    RESOURCE_NAMES,
    SignInRecord,
    record_from_json,
    sign_in_filter,
)
from migrator.inventory import (
    AppInventory,
    Inventory,
    PrincipalInventory,
    RoleGrant,
    ScanStats,
    SignInEvidence,
)
from migrator.plan.evidence import ARM, outside_line, uncovered_line
from migrator.plan.model import Credential
from migrator.report.plan_view import evidence_decisions
from migrator.scan import credential_sign_ins

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
APP, KEY, OTHER_KEY = "0a5e3c1d-0000-4000-8000-000000000001", "k-1", "k-2"
GRAPH = "00000003-0000-0000-c000-000000000000"
API = "5d0f2b2e-0000-4000-8000-0000000000aa"


def site(name: str, ips: tuple[str, ...]) -> SiteRecord:
    return SiteRecord(f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/{name}",
                      "s", "rg", name, None, "app", IdentityRecord("None", None, ()), None,
                      outbound_ips=ips)


def principal(*, graph: bool = True, roles: bool = False) -> PrincipalInventory:
    record = PrincipalRecord(APP, "oid", "orders-sp", True, "Application", "aoid", (
        PasswordCredentialRecord(KEY, "abc", None, None, None),
        PasswordCredentialRecord(OTHER_KEY, "xyz", None, None, None)),
        (AppRoleGrantRecord("g", "rid", GRAPH, "Microsoft Graph", "r", "User.Read.All"),)
        if graph else ())
    return PrincipalInventory(APP, record, (RoleGrant("/subscriptions/s", "r", "Reader"),)
                              if roles else (), (), record.app_role_grants, ())


def event(minutes: int, ip: str, resource: str = GRAPH, key: str | None = KEY,
          error: int = 0) -> SignInRecord:
    return SignInRecord(T0 + timedelta(minutes=minutes), APP, key, ip, resource,
                        RESOURCE_NAMES.get(resource, "orders-api"), error)


def test_graphs_sign_in_json_becomes_a_record_with_seven_fraction_digits() -> None:
    record = record_from_json({
        "createdDateTime": "2026-12-01T08:00:00.1234567Z", "appId": APP.upper(),
        "servicePrincipalCredentialKeyId": "K-1", "ipAddress": "203.0.113.7",
        "resourceId": GRAPH, "resourceDisplayName": "", "status": {"errorCode": 0}})
    assert record.created == T0 + timedelta(microseconds=123456)
    assert (record.app_id, record.key_id, record.resource_name) == (APP, "k-1",
                                                                    "Microsoft Graph")
    assert record.succeeded
    failed = record_from_json({"createdDateTime": "2026-12-01T08:00:00Z", "appId": APP,
                               "status": {"errorCode": 7000215, "failureReason": "Invalid"}})
    assert (failed.key_id, failed.succeeded, failed.failure) == (None, False, "Invalid")


def test_the_filter_names_each_principal_and_the_window() -> None:
    text = sign_in_filter([APP.upper(), "b"], T0)
    assert text == ("signInEventTypes/any(t: t eq 'servicePrincipal') and "
                    f"(appId eq '{APP}' or appId eq 'b') and createdDateTime ge "
                    "2026-12-01T08:00:00Z")


def test_sign_ins_are_summarised_per_credential_and_attributed_to_the_apps() -> None:
    apps = [AppInventory(site("orders-api", ("20.1.1.1", "20.1.1.2")), ()),
            AppInventory(site("orders-worker", ("20.1.1.2",)), ())]
    records = [event(0, "20.1.1.1"), event(5, "20.1.1.2"), event(10, "203.0.113.7", API),
               event(11, "203.0.113.7", API), event(12, "198.51.100.1", error=7000215,
                                                    key=KEY),
               event(13, "20.1.1.1", key=None, error=7000215)]
    [used, unused] = credential_sign_ins([principal()], apps, records)
    assert (used.key_id, used.sign_ins, used.failures) == (KEY, 4, 1)
    assert used.last == (T0 + timedelta(minutes=11)).isoformat()
    assert [(a.ip, a.sign_ins, a.apps) for a in used.addresses] == [
        ("203.0.113.7", 2, ()), ("20.1.1.1", 1, ("orders-api",)),
        ("20.1.1.2", 1, ("orders-api", "orders-worker"))]
    assert [a.ip for a in used.outside] == ["203.0.113.7"]
    assert used.resources == ("Microsoft Graph", "orders-api")  # a tie: by name
    # a credential no app holds and nothing used: an entry, so the report can say so
    assert (unused.key_id, unused.sign_ins, unused.last, unused.addresses) == (
        OTHER_KEY, 0, None, ())


def inventory(records: list[SignInRecord], *, graph: bool = True) -> Inventory:
    apps = (AppInventory(site("orders-api", ("20.1.1.1",)), ()),)
    found = principal(graph=graph)
    evidence = SignInEvidence("graph", T0.isoformat(), T0.isoformat(), None,
                              credential_sign_ins([found], apps, records))
    return Inventory(None, "", (), apps, (found,), (), ScanStats(0, 1, 0, 0, 0),
                     sign_ins=evidence)


def plan_evidence(records: list[SignInRecord], *, graph: bool = True
                  ) -> tuple[object, list[object]]:
    from migrator.plan.evidence import evidence_plan
    from migrator.plan.model import AppPlan, AppStatus

    app = AppPlan(name="orders-api", site_id="x", subscription_id="s", resource_group="rg",
                  kind="app", status=AppStatus.MIGRATABLE, findings=(), principals=(APP,),
                  credentials=(Credential(app_id=APP, principal_name="orders-sp",
                                          application_object_id="aoid", key_id=KEY, hint="abc",
                                          display_name=None, expires=None),),
                  settings_fingerprint="")
    found = evidence_plan(inventory(records, graph=graph), [app])
    assert found is not None
    return found, [app]


def test_a_credential_used_from_outside_its_apps_holds_the_revoke_with_the_address() -> None:
    found, [app] = plan_evidence([event(0, "20.1.1.1"), event(3, "203.0.113.7")])
    use = found.of(APP, KEY)  # type: ignore[attr-defined]
    assert use.held_by == ("orders-api",)
    line = outside_line(use)
    assert line is not None and "203.0.113.7" in line and "20.1.1.1" not in line
    assert "Microsoft Graph" in line
    [decision] = [d for d in evidence_decisions_of(found, app) if d.topic == "sign-in evidence"]
    assert decision.choice == "revoke held"


def test_sign_ins_from_the_apps_own_addresses_hold_nothing() -> None:
    found, [app] = plan_evidence([event(0, "20.1.1.1")])
    use = found.of(APP, KEY)  # type: ignore[attr-defined]
    assert outside_line(use) is None
    assert [d.choice for d in evidence_decisions_of(found, app)] == ["in use by its apps only"]


def test_a_resource_the_copied_rights_do_not_reach_warns_the_grant() -> None:
    found, _ = plan_evidence([event(0, "20.1.1.1", API), event(1, "20.1.1.1", GRAPH)])
    use = found.of(APP, KEY)  # type: ignore[attr-defined]
    assert use.uncovered == ("orders-api",)  # Graph is granted, the estate API is not
    warning = uncovered_line(use)
    assert warning is not None and "orders-api" in warning
    # ARM with no role assignment to copy: the identity will not reach it either
    found_arm, _ = plan_evidence([event(0, "20.1.1.1", ARM)], graph=False)
    assert found_arm.of(APP, KEY).uncovered == (  # type: ignore[attr-defined]
        "Azure Resource Manager",)


def evidence_decisions_of(found: object, app: object) -> list[object]:
    from migrator.plan.model import AppPlan, Plan, SignInEvidencePlan

    assert isinstance(found, SignInEvidencePlan) and isinstance(app, AppPlan)
    plan = Plan.model_construct(sign_ins=found, apps=(app,))
    return list(evidence_decisions(plan, app))


def test_the_workspace_query_holds_only_guids_and_reads_the_window() -> None:
    from migrator.cloud.signins import workspace_query

    query = workspace_query([APP.upper()], T0)
    assert query.splitlines() == [
        "AADServicePrincipalSignInLogs",
        "| where TimeGenerated >= datetime(2026-12-01T08:00:00Z)",
        f'| where AppId in~ ("{APP}")',
        "| project TimeGenerated, AppId, ServicePrincipalCredentialKeyId, IPAddress, "
        "ResourceIdentity, ResourceDisplayName, ResultType",
        "| order by TimeGenerated asc",
        "| take 50001"]
    # an app id comes from an app setting: text that would change the query is refused
    with pytest.raises(ValueError, match="not an application id"):
        workspace_query([APP, '") | union (SigninLogs'], T0)


def test_a_workspace_row_becomes_the_same_record_as_graphs_event() -> None:
    from migrator.cloud.signins import record_from_row

    row = {"TimeGenerated": T0, "AppId": APP.upper(), "ServicePrincipalCredentialKeyId": "K-1",
           "IPAddress": "203.0.113.7", "ResourceIdentity": GRAPH, "ResourceDisplayName": "",
           "ResultType": "0"}
    graph = record_from_json({
        "createdDateTime": "2026-12-01T08:00:00Z", "appId": APP,
        "servicePrincipalCredentialKeyId": "k-1", "ipAddress": "203.0.113.7",
        "resourceId": GRAPH, "status": {"errorCode": 0}})
    assert record_from_row(row) == graph
    failed = record_from_row({**row, "ResultType": "7000215"})
    assert (failed.succeeded, failed.error_code) == (False, 7000215)


@pytest.mark.parametrize(("text", "workspace"), [
    ("graph", None), ("GRAPH", None),
    ("workspace:6F1C3B0E-0000-4000-8000-000000000001", "6f1c3b0e-0000-4000-8000-000000000001"),
])
def test_the_sign_in_source_is_graph_or_a_workspace_id(text: str, workspace: str | None
                                                       ) -> None:
    from migrator.cloud.signins import parse_source

    assert parse_source(text) == workspace


@pytest.mark.parametrize("text", ["", "workspace:", "workspace:law-entra", "kusto"])
def test_another_sign_in_source_says_what_to_write(text: str) -> None:
    from migrator.cloud.signins import parse_source

    with pytest.raises(ValueError, match="workspace:<id>"):
        parse_source(text)


def test_the_reports_pacer_keeps_to_five_requests_in_ten_seconds() -> None:
    from migrator.cloud.reports_pacing import ReportsPacer

    clock = [0.0]
    sent: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    pacer = ReportsPacer(clock=lambda: clock[0], sleep=sleep)
    for _ in range(12):
        pacer.wait()
        sent.append(clock[0])
        clock[0] += 0.5
    for i in range(len(sent) - 5):
        assert sent[i + 5] - sent[i] >= 10.0  # any six span the window
    assert sent[:5] == [0.0, 0.5, 1.0, 1.5, 2.0]  # no wait while under the limit
    assert pacer.waited > 0
