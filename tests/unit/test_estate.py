"""The estate file is a contract: valid files load the same tenant every time, and every
malformed file is refused in one line naming the file, the place and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from migrator.sim.catalog import GRAPH_APP_ROLES, app_role_id, derive_id
from migrator.sim.estate import EstateError, load_estate, parse_estate
from migrator.sim.state import build_tenant

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLE = Path(__file__).parents[2] / "migrator" / "sim" / "samples" / "contoso.yaml"
ENTRA_SECRET = re.compile(r"[a-zA-Z0-9_~.-]{3}\dQ~[a-zA-Z0-9_~.-]{31,34}")

BASE = """\
tenant: {id: 6f1c3b0e-0000-4000-8000-000000000001}
operator: op
principals:
  - name: op
    secrets: [{}]
  - name: app-sp
    secrets: [{}]
subscriptions:
  - name: prod
    resource_groups:
      - name: rg
        sites:
          - name: web
            app_settings: {AZURE_CLIENT_ID: "@app-sp.app_id", AZURE_CLIENT_SECRET: "@app-sp.secrets[0]"}
role_assignments:
  - {principal: op, role: Owner, scope: /subscriptions/prod}
"""


@pytest.mark.parametrize("path", [FIXTURES / "small.yaml", SAMPLE,
                                  FIXTURES / "loganalytics_estate.yaml"])
def test_shipped_estates_load(path: Path) -> None:
    spec = load_estate(path)
    tenant = build_tenant(spec)
    assert tenant.operator == spec.operator
    assert list(tenant.webapps())


def test_ids_are_deterministic_and_secrets_fresh() -> None:
    first, second = build_tenant(parse_estate(BASE)), build_tenant(parse_estate(BASE))
    assert first.names == second.names
    app_id = derive_id("app", "app-sp")
    assert first.sites["web"].app_settings["AZURE_CLIENT_ID"] == app_id
    one = first.sites["web"].app_settings["AZURE_CLIENT_SECRET"]
    two = second.sites["web"].app_settings["AZURE_CLIENT_SECRET"]
    assert ENTRA_SECRET.fullmatch(one) and ENTRA_SECRET.fullmatch(two)
    assert one != two  # generated per load, never stored in a file
    app = first.app_by_app_id(app_id)
    assert app is not None and app.passwords[0].secret == one


def test_subscription_names_in_scopes_become_ids() -> None:
    tenant = build_tenant(parse_estate(BASE))
    (assignment,) = tenant.role_assignments.values()
    sub_id = derive_id("subscription", "prod")
    assert assignment.scope == f"/subscriptions/{sub_id}"


BAD = [
    ("bad YAML", BASE.replace("principals:", "principals: [", 1), r"line \d+.*bad YAML"),
    ("unknown reference", BASE.replace("@app-sp.app_id", "@ghost-sp.app_id"),
     r"line 14, subscriptions\[0\].resource_groups\[0\].sites\[0\].app_settings"
     r".AZURE_CLIENT_ID: unknown reference @ghost-sp.app_id"),
    ("secret index out of range", BASE.replace("secrets[0]", "secrets[3]"),
     r"unknown reference @app-sp.secrets\[3\]"),
    ("unknown role", BASE.replace("role: Owner", "role: Overlord"),
     r"line 16, role_assignments\[0\].role: unknown role 'Overlord'"),
    ("duplicate principal", BASE.replace("name: app-sp", "name: op"),
     r"principals\[1\].name: duplicate principal name 'op'"),
    ("duplicate key", BASE.replace("operator: op", "operator: op\noperator: op"),
     r"key 'operator' given twice"),
    ("operator missing", BASE.replace("operator: op", "operator: nobody"),
     r"operator: operator 'nobody' is not one of the principals"),
    ("unknown field", BASE.replace("kind_placeholder", "").replace(
        "          - name: web\n", "          - name: web\n            colour: blue\n"),
     r"sites\[0\].colour: Extra inputs are not permitted"),
    ("bad kind", BASE.replace("          - name: web\n",
                              "          - name: web\n            kind: vm\n"),
     r"sites\[0\].kind: kind is app or functionapp"),
    ("unknown graph role", BASE.replace("    secrets: [{}]\n  - name: app-sp",
                                        "    graph_app_roles: [Fly.All]\n  - name: app-sp"),
     r"principals\[0\].graph_app_roles\[0\]: unknown Graph app role 'Fly.All'"),
    ("scope with unknown subscription", BASE.replace("scope: /subscriptions/prod",
                                                     "scope: /subscriptions/qa"),
     r"role_assignments\[0\].scope: scope '/subscriptions/qa' names an unknown subscription"),
    ("not a mapping", "- just\n- a list\n", r"the estate is a YAML mapping"),
    ("grant of an app role no API exposes",
     BASE.replace("  - name: app-sp\n", "  - name: app-sp\n    api_app_roles: [op/Orders.Read]\n"),
     r"principals\[1\].api_app_roles\[0\]: principal 'op' exposes no app role 'Orders.Read'"),
    ("grant of an unknown API",
     BASE.replace("  - name: app-sp\n", "  - name: app-sp\n    api_app_roles: [Orders.Read]\n"),
     r"api_app_roles\[0\]: 'Orders.Read' is not 'api-principal/Role.Value'"),
    ("app role with a space",
     BASE.replace("  - name: app-sp\n", "  - name: app-sp\n    app_roles: [Orders Read]\n"),
     r"principals\[1\].app_roles\[0\]: app role value 'Orders Read' is not"),
    ("condition the simulator cannot evaluate", BASE.replace(
        "role: Owner, scope: /subscriptions/prod}",
        "role: Owner, scope: /subscriptions/prod, condition: \"@Resource[x] Resembles 'y'\"}"),
     r"role_assignments\[0\].condition: operator 'Resembles' is not one the simulator"),
    ("owner that is no principal", BASE.replace(
        "  - name: app-sp\n", "  - name: app-sp\n    owners: [ghost]\n"),
     r"principals\[1\].owners\[0\]: unknown principal 'ghost'"),
    ("workspace name Azure refuses", BASE.replace(
        "        sites:\n", "        log_analytics_workspaces: [{name: la}]\n        sites:\n"),
     r"line 12, subscriptions\[0\].resource_groups\[0\].log_analytics_workspaces\[0\].name: "
     r"workspace name 'la' is not 4-63 letters"),
    ("workspace id that is no GUID", BASE.replace(
        "        sites:\n",
        "        log_analytics_workspaces: [{name: law-entra, id: 42}]\n        sites:\n"),
     r"log_analytics_workspaces\[0\].id: "),
    ("two workspaces with one id", BASE.replace(
        "        sites:\n",
        "        log_analytics_workspaces:\n"
        "          - {name: law-a, id: 5b02755b-5bf4-430c-9487-45502a2a7e62}\n"
        "          - {name: law-b, id: 5B02755B-5BF4-430C-9487-45502A2A7E62}\n        sites:\n"),
     r"line 14, .*log_analytics_workspaces\[1\].id: workspace id "
     r"5b02755b-5bf4-430c-9487-45502a2a7e62 is another workspace's"),
    ("two workspaces with one name", BASE.replace(
        "        sites:\n",
        "        log_analytics_workspaces: [{name: law-a}, {name: LAW-A}]\n        sites:\n"),
     r"log_analytics_workspaces\[1\].name: duplicate Log Analytics workspace in prod/rg name"),
    ("need of an app role no API exposes", BASE.replace(
        "            app_settings:",
        "            needs: [{app_role: app-sp/Orders.Read}]\n            app_settings:"),
     r"sites\[0\].needs\[0\]: principal 'app-sp' exposes no app role 'Orders.Read'"),
]


@pytest.mark.parametrize(("case", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_malformed_estates_get_one_line_naming_file_place_problem(
        case: str, text: str, expected: str) -> None:
    with pytest.raises(EstateError) as info:
        parse_estate(text, "estate.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("estate.yaml: ")
    assert re.search(expected, message), message


def test_an_estate_api_exposes_app_roles_that_principals_are_granted() -> None:
    text = BASE.replace("  - name: app-sp\n", "  - name: orders-api\n    app_roles: [Orders.Read]\n"
                        "  - name: app-sp\n    api_app_roles: [orders-api/Orders.Read]\n")
    tenant = build_tenant(parse_estate(text))
    api, caller = tenant.names["orders-api"], tenant.names["app-sp"]
    assert tenant.service_principals[api].app_roles == {
        "Orders.Read": app_role_id("orders-api", "Orders.Read")}
    assert tenant.app_roles_of(caller, api) == ["Orders.Read"]
    assert tenant.graph_roles_of(caller) == []


def test_the_graph_catalog_holds_microsofts_published_application_permission_ids() -> None:
    # Spot checks against microsoft-graph-docs-contrib concepts/includes/permissions-ids.md
    # ("Application" rows), not the delegated ids of the same names.
    assert len(GRAPH_APP_ROLES) >= 40
    assert len(set(GRAPH_APP_ROLES.values())) == len(GRAPH_APP_ROLES)
    assert GRAPH_APP_ROLES["User.Read.All"] == "df021288-bdef-4463-88db-98f22de89214"
    assert GRAPH_APP_ROLES["Sites.Manage.All"] == "0c0bf378-bf22-4481-8f81-9e89a9b4960a"
    assert GRAPH_APP_ROLES["Group.ReadWrite.All"] == "62a82d76-70ea-41e2-9197-370581804d09"
    assert GRAPH_APP_ROLES["Mail.Send"] == "b633e1c5-b582-4048-a93e-9f11b44c7e96"


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(EstateError, match=r"missing.yaml: cannot read"):
        load_estate(tmp_path / "missing.yaml")


def test_need_must_name_one_kind() -> None:
    text = BASE.replace(
        '            app_settings:',
        '            needs: [{graph_app_role: User.Read.All, sql: Db}]\n            app_settings:')
    with pytest.raises(EstateError, match=r"needs\[0\].*exactly one of"):
        parse_estate(text, "e.yaml")


def test_identity_forms() -> None:
    text = BASE.replace("      - name: rg\n", "      - name: rg\n        user_assigned_identities: [id-a]\n")
    for identity, expected in [("system", "SystemAssigned"), ("[id-a]", "UserAssigned"),
                               ("both", "SystemAssigned, UserAssigned"),
                               ("[system, id-a]", "SystemAssigned, UserAssigned"),
                               ("none", "None")]:
        estate = text.replace("          - name: web\n",
                              f"          - name: web\n            identity: {identity}\n")
        tenant = build_tenant(parse_estate(estate))
        assert tenant.sites["web"].identity.type == expected, identity


def test_licence_and_external_callers_are_optional_and_checked() -> None:
    spec = parse_estate(BASE)
    assert spec.tenant.licence == "P2" and spec.external_callers == []
    with pytest.raises(EstateError, match=r"^<estate>: line 1, tenant\.licence: "):
        parse_estate(BASE.replace("0001}", "0001, licence: E5}", 1))
    with_caller = parse_estate(BASE + "external_callers:\n"
                               "  - {name: ci, principal: app-sp, ip: 203.0.113.7}\n")
    caller = with_caller.external_callers[0]
    assert (caller.secret, caller.every, caller.resource, caller.active,
            caller.history_days) == (0, 300.0, "arm", True, 0.0)


def test_log_analytics_workspaces_are_optional_with_derived_ids() -> None:
    assert parse_estate(BASE).subscriptions[0].resource_groups[0].log_analytics_workspaces == []
    text = BASE.replace("        sites:\n", "        log_analytics_workspaces:\n"
                        "          - {name: law-entra, sign_in_logs: true}\n"
                        "          - {name: law-apps, id: 5B02755B-5BF4-430C-9487-45502A2A7E62}\n"
                        "        sites:\n")
    first, second = build_tenant(parse_estate(text)), build_tenant(parse_estate(text))
    entra, apps = sorted(first.workspaces.values(), key=lambda w: w.name, reverse=True)
    assert (entra.name, entra.sign_in_logs, apps.sign_in_logs) == ("law-entra", True, False)
    assert entra.customer_id == derive_id("log-analytics-workspace", "prod/rg/law-entra")
    assert apps.customer_id == "5b02755b-5bf4-430c-9487-45502a2a7e62"  # lower case, as Azure
    assert [w.customer_id for w in second.workspaces.values()] == \
        [w.customer_id for w in first.workspaces.values()]
    assert first.workspace_by_customer_id(apps.customer_id.upper()) is apps
    assert entra.id == (f"/subscriptions/{derive_id('subscription', 'prod')}/resourceGroups/rg/"
                        "providers/Microsoft.OperationalInsights/workspaces/law-entra")
