"""The plan reports show what a reviewer relies on, in every format: the summary figures, each
blocked app with its reason, every stage's steps, what cannot be undone, held revokes with their
reason, the gaps; they escape what the estate named, and they never show a secret value.

The plan is built by `build_plan` from a small hand-made estate, so the reports are checked
against what the planner really produces (a shared principal, a credential held by a blocked app,
an inbound-only app, a shared-key-only app, a secret with no client id, two gaps). Each app's
findings are the detector's reading of settings that hold real, freshly generated values of
several shapes (a base64 client secret, Entra-format ones, a storage account key, a Service Bus
SAS key, a SQL password, a JWT, a Stripe key), and each secret is matched to its principal's
credential by its hint, as the scanner does: every value goes through the path a scan's
values take, so the test that no value reaches a report can fail."""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import string
from collections.abc import Callable
from datetime import datetime, timezone
from html.parser import HTMLParser
from io import StringIO
from typing import Any
from urllib.parse import quote

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from migrator.cloud.records import (
    IdentityRecord,
    PasswordCredentialRecord,
    PrincipalRecord,
    SiteRecord,
)
from migrator.detect import ConnectionStringValue, SiteSettings, detect, settings_fingerprint
from migrator.detect.findings import FindingKind
from migrator.inventory import (
    AppInventory,
    Gap,
    Inventory,
    PrincipalInventory,
    RoleGrant,
    ScanStats,
    Usage,
    VaultGrant,
)
from migrator.plan.model import (
    BLOCKED_TITLES,
    STAGES,
    AppStatus,
    BlockedCode,
    Plan,
    RemovePasswordCredential,
    SettingEdit,
    Step,
    Undo,
    UpdateAppSettings,
)
from migrator.plan.planner import PlanOptions, build_plan
from migrator.report import (
    json_output,
    plan_html,
    plan_json,
    plan_markdown,
    plan_terminal,
    plan_view,
    terminal,
)
from migrator.scan import match_credential

SUB = "0b5f3c1e-0000-4000-8000-000000000001"
TENANT = "6f1c3b0e-0000-4000-8000-000000000009"
ORDERS_APP, ORDERS_OID, ORDERS_AOID, ORDERS_KEY = (
    "11111111-0000-4000-8000-00000000000a", "11111111-0000-4000-8000-00000000000b",
    "11111111-0000-4000-8000-00000000000c", "11111111-0000-4000-8000-00000000000d")
BILLING_APP, BILLING_OID, BILLING_AOID, BILLING_KEY = (
    "22222222-0000-4000-8000-00000000000a", "22222222-0000-4000-8000-00000000000b",
    "22222222-0000-4000-8000-00000000000c", "22222222-0000-4000-8000-00000000000d")
# A name no SDK reads, beside a client id of its prefix: the detector pairs it by that prefix.
SCRIPT_SETTING = "Legacy__<script>alert(1)</script>"
# A Functions identity-based connection's secret with no client id beside it.
MARKUP_SETTING = "[bold]MYSTERY[/bold]__clientSecret"
LIVE = "2099-01-01T00:00:00+00:00"
GHOST_MESSAGE = "denied | *AuthorizationFailed* for <operator>"  # Markdown and HTML both care
SALT = "00"


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))


def entra_format_secret() -> str:
    """A fresh secret in Entra's current format (3 characters, a digit, 'Q~', 34 more)."""
    chars = string.ascii_letters + string.digits + "_~.-"
    return _random(chars, 3) + secrets.choice(string.digits) + "Q~" + _random(chars, 34)


def base64_secret(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


def jwt_like() -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = {"sub": secrets.token_hex(8), "iat": 1764151200, "nonce": secrets.token_hex(16)}
    return ".".join((part(b'{"alg":"HS256","typ":"JWT"}'), part(json.dumps(claims).encode()),
                     part(secrets.token_bytes(32))))


# The principals' secrets: what the plan's apps sign in with. They must never reach a report.
SECRET_VALUES = {
    "orders": base64_secret(48),  # AZURE_CLIENT_SECRET is known by its name, whatever it holds
    "billing": entra_format_secret(),  # billing-legacy's copy is known by its format alone
    "portal": entra_format_secret(),
    "mystery": secrets.token_urlsafe(30),
}
HINTS = {name: value[:3] for name, value in SECRET_VALUES.items()}
# Secret values of other shapes in the same settings: no principal's, never shown either.
OTHER_VALUES = {
    "storage account key": base64_secret(64),
    "service bus SAS key": base64_secret(32),
    "SQL password": secrets.token_urlsafe(18),
    "JWT": jwt_like(),
    "Stripe key": "sk_test_" + _random(string.ascii_letters + string.digits, 32),
}
STORAGE = (f"DefaultEndpointsProtocol=https;AccountName=queueworkerdata;"
           f"AccountKey={OTHER_VALUES['storage account key']};EndpointSuffix=core.windows.net")
SERVICE_BUS = ("Endpoint=sb://queue-worker.servicebus.windows.net/;SharedAccessKeyName="
               f"RootManageSharedAccessKey;SharedAccessKey={OTHER_VALUES['service bus SAS key']}")
SQL_LOGIN = ("Server=tcp:sql-orders.database.windows.net,1433;Database=orders;User ID=reporting;"
             f"Password={OTHER_VALUES['SQL password']};Encrypt=True")


def site(name: str, slot: str | None = None, rg: str = "rg-app", kind: str = "app") -> SiteRecord:
    sid = f"/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{name}"
    return SiteRecord(id=sid + (f"/slots/{slot}" if slot else ""), subscription_id=SUB,
                      resource_group=rg, name=name, slot=slot, kind=kind,
                      identity=IdentityRecord("None", None, ()),
                      key_vault_reference_identity=None, location="westeurope")


def azure_identity(client_id: str, secret: str) -> dict[str, str]:
    return {"AZURE_CLIENT_ID": client_id, "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_SECRET": secret}


ORDERS, STAGING = site("orders-api", rg="rg-orders"), site("orders-api", "staging", "rg-orders")
BILLING, LEGACY = site("billing-api", rg="rg-billing"), site("billing-legacy", rg="rg-billing")
PORTAL, WORKER = site("portal"), site("queue-worker", kind="functionapp")
MYSTERY, NO_SECRETS = site("mystery"), site("no-secrets")
GHOST = f"/subscriptions/{SUB}/resourceGroups/rg-x/providers/Microsoft.Web/sites/ghost"
PHANTOM = f"/subscriptions/{SUB}/resourceGroups/rg-x/providers/Microsoft.Web/sites/phantom"

# Each app's settings as a scan reads them, real values in them.
SETTINGS: dict[str, SiteSettings] = {
    ORDERS.id: SiteSettings(
        app_settings={**azure_identity(ORDERS_APP, SECRET_VALUES["orders"]),
                      "Session__SigningToken": OTHER_VALUES["JWT"],
                      "STRIPE_API_KEY": OTHER_VALUES["Stripe key"]},
        connection_strings={"Reporting": ConnectionStringValue("SQLAzure", SQL_LOGIN)}),
    STAGING.id: SiteSettings(app_settings=azure_identity(ORDERS_APP, SECRET_VALUES["orders"])),
    BILLING.id: SiteSettings(app_settings=azure_identity(BILLING_APP, SECRET_VALUES["billing"])),
    # the same credential, read by the app's own code under a name no SDK reads: blocked, and
    # so billing-api's revoke is held
    LEGACY.id: SiteSettings(app_settings={
        "Legacy__ClientId": BILLING_APP, "Legacy__TenantId": TENANT,
        SCRIPT_SETTING: SECRET_VALUES["billing"]}),
    PORTAL.id: SiteSettings(app_settings={
        "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET": SECRET_VALUES["portal"]}),
    WORKER.id: SiteSettings(app_settings={"AzureWebJobsStorage": STORAGE,
                                          "Orders__ServiceBus": SERVICE_BUS}),
    MYSTERY.id: SiteSettings(app_settings={
        MARKUP_SETTING: SECRET_VALUES["mystery"],
        "[bold]MYSTERY[/bold]__fullyQualifiedNamespace": "mystery.servicebus.windows.net"}),
    NO_SECRETS.id: SiteSettings(app_settings={"WEBSITE_RUN_FROM_PACKAGE": "1"}),
}
# What the detector must read in them: (app, setting, rule, client id) of each finding.
EXPECTED_FINDINGS = {
    ("orders-api", "AZURE_CLIENT_SECRET", "azure-identity-env", ORDERS_APP),
    ("orders-api/staging", "AZURE_CLIENT_SECRET", "azure-identity-env", ORDERS_APP),
    ("billing-api", "AZURE_CLIENT_SECRET", "azure-identity-env", BILLING_APP),
    ("billing-legacy", SCRIPT_SETTING, "entra-secret-format", BILLING_APP),
    ("portal", "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET", "easy-auth-secret", None),
    ("queue-worker", "AzureWebJobsStorage", "storage-account-key", None),
    ("queue-worker", "Orders__ServiceBus", "servicebus-sas", None),
    ("mystery", MARKUP_SETTING, "functions-connection-secret", None),
}


def app_inventory(s: SiteRecord) -> AppInventory:
    """What the scanner makes of one site: the detector's findings and the settings' stamp."""
    settings = SETTINGS[s.id]
    salt = bytes.fromhex(SALT)
    return AppInventory(s, detect(settings, salt=salt), settings_fingerprint(settings, salt))


def usages(principal: PrincipalRecord, apps: tuple[AppInventory, ...]) -> tuple[Usage, ...]:
    """The apps holding the principal's secret, each matched to its credential by the hint the
    detector read from the value, as the scanner matches them."""
    return tuple(sorted(
        (Usage(a.site.display, a.site.id, f.secret.name, f.kind.value, f.secret.sticky,
               match_credential(f, principal)) for a in apps for f in a.findings
         if f.outbound and f.client_id == principal.app_id),
        key=lambda u: (u.app, u.setting)))


def inventory() -> Inventory:
    apps = tuple(app_inventory(s) for s in (ORDERS, STAGING, BILLING, LEGACY, PORTAL, WORKER,
                                             MYSTERY, NO_SECRETS))
    orders_sp = PrincipalRecord(ORDERS_APP, ORDERS_OID, "orders-sp", True, "Application",
                                ORDERS_AOID, (PasswordCredentialRecord(
                                    ORDERS_KEY, HINTS["orders"], "ci", None, LIVE),), ())
    billing_sp = PrincipalRecord(BILLING_APP, BILLING_OID, "billing-sp", True, "Application",
                                 BILLING_AOID, (PasswordCredentialRecord(
                                     BILLING_KEY, HINTS["billing"], None, None, LIVE),), ())
    orders = PrincipalInventory(
        ORDERS_APP, orders_sp,
        role_assignments=(RoleGrant(f"/subscriptions/{SUB}/resourceGroups/rg-orders",
                                    "2a2b9908-6ea1-4ae2-8e65-a410df84e7d1",
                                    "Storage Blob Data Reader"),),
        vault_policies=(VaultGrant(
            f"/subscriptions/{SUB}/resourceGroups/rg-orders/providers/Microsoft.KeyVault/"
            "vaults/kv-orders", "kv-orders", False, ("get", "list"), (), ()),),
        graph_roles=(), used_by=usages(orders_sp, apps))
    billing = PrincipalInventory(
        BILLING_APP, billing_sp,
        role_assignments=(RoleGrant(f"/subscriptions/{SUB}/resourceGroups/rg-billing",
                                    "4633458b-17de-408a-b874-0445c86b69e6",
                                    "Key Vault Secrets User"),),
        vault_policies=(), graph_roles=(), used_by=usages(billing_sp, apps))
    gaps = (Gap(GHOST, "list app settings", 403, "AuthorizationFailed", GHOST_MESSAGE),
            Gap(PHANTOM, "list app settings", 403, "AuthorizationFailed",
                "the operator cannot read its settings"))
    return Inventory(tenant_id=TENANT, scanned_at="2026-11-26T10:00:00+00:00", subscriptions=(),
                     apps=apps, principals=(orders, billing), gaps=gaps,
                     stats=ScanStats(1.0, 8, 1, 0, 0.0), settings_salt=SALT)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(inventory(), PlanOptions(
        name="review", tool_version="0.1.0", accept_gaps=("phantom",),
        created_at=datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)))


# --- each format as text a test can search -------------------------------------------------------


_BLOCKS = {"p", "li", "td", "th", "tr", "div", "h1", "h2", "h3", "h4", "dt", "dd", "summary",
           "br", "ul", "table", "section", "pre", "header", "footer", "details"}


class _TextOf(HTMLParser):
    """The text a browser shows, and every tag that opened."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs
        self._in_style = tag == "style"
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag in _BLOCKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._in_style:
            self.parts.append(data)


def parse_html(document: str) -> _TextOf:
    parser = _TextOf()
    parser.feed(document)
    parser.close()
    return parser


def html_text(document: str) -> str:
    """What a browser shows (entities decoded), whitespace collapsed."""
    return " ".join("".join(parse_html(document).parts).split())


def terminal_text(plan: Plan) -> str:
    buffer = StringIO()
    plan_terminal.render(plan, Console(file=buffer, width=1000, color_system=None))
    return buffer.getvalue()


def markdown_unescaped(document: str) -> str:
    """Roughly what a reader sees of the Markdown: no backslash escapes, code-span backticks,
    bold markers or line breaks."""
    plain = document.replace("`", "").replace("**", "").replace("<br>", " ")
    return re.sub(r"\\(.)", r"\1", plain)


@pytest.fixture(scope="module")
def shown(plan: Plan) -> dict[str, str]:
    """Each human format as the plain text a reader sees, whitespace collapsed."""
    return {
        "markdown": " ".join(markdown_unescaped(plan_markdown.render(plan)).split()),
        "html": html_text(plan_html.render(plan)),
        "terminal": " ".join(terminal_text(plan).split()),
    }


def flat(value: str) -> str:
    return " ".join(value.split())


FORMATS = ["markdown", "html", "terminal"]


# --- the plan these tests rely on ------------------------------------------------------------------


def test_the_hand_made_estate_plans_as_expected(plan: Plan) -> None:
    status = {a.name: a.status for a in plan.apps}
    assert status == {
        "billing-api": AppStatus.MIGRATABLE, "billing-legacy": AppStatus.BLOCKED,
        "mystery": AppStatus.BLOCKED, "orders-api": AppStatus.MIGRATABLE,
        "orders-api/staging": AppStatus.MIGRATABLE, "portal": AppStatus.BLOCKED,
        "queue-worker": AppStatus.ADVISORY}
    billing = next(a for a in plan.apps if a.name == "billing-api")
    assert billing.stages[-1].held  # its credential is also held by the blocked billing-legacy
    assert plan.summary.irreversible_steps == 3  # orders (in two apps' plans) and billing


# --- summary ---------------------------------------------------------------------------------------


def test_summary_rows_carry_the_plans_figures(plan: Plan) -> None:
    rows = {r.key: r.value for r in plan_view.summary_rows(plan)}
    assert rows == {
        "apps_found": 7, "migratable": 3, "blocked": 3, "advisory": 1, "secrets_to_remove": 2,
        "rights_to_grant": plan.summary.rights_to_grant, "shared_principals": 2,
        "identities_to_create": 1, "system_identities": 1, "irreversible_steps": 3, "gaps": 2}


@pytest.mark.parametrize(("fmt", "pattern"), [
    ("markdown", r"\| \*\*{label}\*\* \| {value} \|"),
    ("html", r'<td>{label}</td><td class="num">{value}</td>'),
    ("terminal", r"\n\s*{label}\s+{value}\s"),
])
def test_every_format_leads_with_the_summary(plan: Plan, fmt: str, pattern: str) -> None:
    document = {"markdown": plan_markdown.render, "html": plan_html.render,
                "terminal": terminal_text}[fmt](plan)
    summary_at = document.index("Summary")
    for row in plan_view.summary_rows(plan):
        found = re.search(pattern.format(label=re.escape(row.label), value=row.value), document)
        assert found, f"{fmt}: {row.label} = {row.value} missing"
        assert found.start() > summary_at
    first_app = min(document.index(a.name) for a in plan.apps)
    assert summary_at < first_app, "the summary comes before the apps"


def test_json_summary_is_the_plans(plan: Plan) -> None:
    document = json.loads(plan_json.render(plan))
    assert document["schema_version"] == "1"
    assert document["plan"] == "review"
    assert document["created_at"] == "2026-11-26T12:00:00+00:00"
    assert document["summary"] == plan.summary.model_dump(mode="json")
    assert document["summary"]["blocked_by_reason"] == {
        "code-needs-secret": 1, "inbound-credential": 1, "principal-unknown": 1}


@pytest.mark.parametrize("fmt", FORMATS)
def test_blocked_by_reason_uses_the_human_titles(shown: dict[str, str], fmt: str) -> None:
    for code, app in [(BlockedCode.CODE_NEEDS_SECRET, "billing-legacy"),
                      (BlockedCode.INBOUND_CREDENTIAL, "portal"),
                      (BlockedCode.PRINCIPAL_UNKNOWN, "mystery")]:
        assert f"{BLOCKED_TITLES[code]} ({code.value}): 1 app: {app}" in shown[fmt]


# --- apps ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_app_appears_blocked_and_advisory_ones_with_their_reasons(
        plan: Plan, shown: dict[str, str], fmt: str) -> None:
    text = shown[fmt]
    for app in plan.apps:
        assert app.name in text
        for blocked in app.blocked:
            assert flat(blocked.message) in text, f"{fmt}: {app.name}: {blocked.message}"
            assert BLOCKED_TITLES[blocked.code] in text
    advisory = next(a for a in plan.apps if a.status is AppStatus.ADVISORY)
    assert "advisory (shared keys only)" in text
    assert flat(advisory.decisions[0].reason) in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_stage_shows_its_steps_and_their_undo(
        plan: Plan, shown: dict[str, str], fmt: str) -> None:
    text = shown[fmt]
    for app in plan.apps:
        for stage in app.stages:
            assert plan_view.stage_title(stage.stage) in text
            for step in stage.steps:
                assert step.id in text, f"{fmt}: {step.id}"
                assert flat(step.title) in text, f"{fmt}: {step.title}"
                assert flat(plan_view.undo_text(step)) in text, f"{fmt}: undo of {step.id}"
    for principal in plan.principals:
        for step in principal.cleanup.steps:
            assert step.id in text and flat(step.title) in text


def test_json_apps_have_their_stages_in_order(plan: Plan) -> None:
    document = json.loads(plan_json.render(plan))
    by_name = {a["name"]: a for a in document["apps"]}
    assert list(by_name) == [a.name for a in plan.apps]
    orders = by_name["orders-api"]
    assert orders["status"] == "migratable"
    assert orders["identity"]["type"] == "user-assigned"
    assert orders["identity"]["name"] == plan.identities[0].name
    assert list(orders["stages"]) == [s.value for s in STAGES]
    plan_orders = next(a for a in plan.apps if a.name == "orders-api")
    for stage in plan_orders.stages:
        assert [(s["id"], s["title"], s["reversible"])
                for s in orders["stages"][stage.stage.value]["steps"]] == [
            (s.id, s.title, s.undo.reversible) for s in stage.steps]
    assert by_name["portal"]["blocked"] == [
        {"code": "inbound-credential", "title": BLOCKED_TITLES[BlockedCode.INBOUND_CREDENTIAL],
         "message": next(a for a in plan.apps if a.name == "portal").blocked[0].message}]
    assert by_name["portal"]["stages"] == {}
    assert by_name["portal"]["identity"] is None


# --- what cannot be undone, what waits ----------------------------------------------------------------


def test_irreversible_changes_group_a_shared_credential(plan: Plan) -> None:
    changes = plan_view.irreversible_changes(plan)
    assert [(c.key_id, c.owners) for c in changes] == [
        (BILLING_KEY, ("billing-api",)), (ORDERS_KEY, ("orders-api", "orders-api/staging"))]
    assert all("mints a new secret" in c.undo for c in changes)
    assert changes[1].hint == HINTS["orders"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_irreversible_steps_are_called_out(plan: Plan, shown: dict[str, str], fmt: str) -> None:
    text = shown[fmt]
    assert plan_view.IRREVERSIBLE_NOTE in text
    notice = text.index("What cannot be undone")
    for change in plan_view.irreversible_changes(plan):
        assert change.what in text[notice:]
    marker = {"markdown": "⚠ irreversible:", "html": "⚠ Irreversible:",
              "terminal": "⚠ IRREVERSIBLE:"}[fmt]
    irreversible_steps = [s for a in plan.apps for st in a.stages for s in st.steps
                          if not s.undo.reversible]
    assert text.count(marker) == len(irreversible_steps) == 3
    for step in irreversible_steps:
        assert f"{marker} {plan_view.undo_text(step)}" in text


def test_json_lists_irreversible_changes(plan: Plan) -> None:
    document = json.loads(plan_json.render(plan))
    assert [(c["key_id"], c["apps"]) for c in document["irreversible"]] == [
        (BILLING_KEY, ["billing-api"]), (ORDERS_KEY, ["orders-api", "orders-api/staging"])]
    revoke = document["apps"][0]["stages"]["revoke"]  # billing-api
    assert [s["reversible"] for s in revoke["steps"]] == [False]


@pytest.mark.parametrize("fmt", FORMATS)
def test_held_revokes_show_their_reason(plan: Plan, shown: dict[str, str], fmt: str) -> None:
    billing = next(a for a in plan.apps if a.name == "billing-api")
    reason = billing.stages[-1].held[0]
    assert "billing-legacy" in reason and BILLING_KEY in reason
    assert f"billing-api, revoke: {reason}" in shown[fmt]  # the list of held stages
    assert shown[fmt].count(reason) >= 2  # and in the app's own revoke stage


def test_held_stages_list_app_stages_and_principal_cleanups(plan: Plan) -> None:
    held = plan_view.held_stages(plan)
    assert [(h.owner, h.stage, h.cleanup) for h in held] == [
        ("billing-api", "revoke", False), ("principal billing-sp", "cleanup", True)]
    json_revoke = json.loads(plan_json.render(plan))["apps"][0]["stages"]["revoke"]
    assert json_revoke["held"] == list(held[0].reasons)


# --- identities, principals, gaps ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_shared_identities_and_principals_are_shown(
        plan: Plan, shown: dict[str, str], fmt: str) -> None:
    text = shown[fmt]
    identity = plan.identities[0]
    assert identity.name in text and flat(identity.reason) in text
    for principal in plan.principals:
        assert principal.name in text and principal.app_id in text
        for held in principal.cleanup.held:
            assert held in text


def test_gaps_appear_with_whether_they_are_accepted(plan: Plan, shown: dict[str, str]) -> None:
    markdown = plan_markdown.render(plan)
    for scope, message, accepted in [(GHOST, GHOST_MESSAGE, "**no**"),
                                     (PHANTOM, "the operator cannot read its settings", "yes")]:
        assert (f"| {plan_markdown.code(scope)} | list app settings | "
                f"{plan_markdown.text(message)} | {accepted} |") in markdown
        assert (f"{scope} list app settings {message} {accepted.strip('*')}"
                in shown["html"])
    assert (f"{GHOST}: list app settings: {GHOST_MESSAGE} (not accepted)"
            in shown["terminal"])
    assert (f"{PHANTOM}: list app settings: the operator cannot read its settings (accepted)"
            in shown["terminal"])
    for fmt in FORMATS:
        assert "1 accepted by the operator, 1 not" in shown[fmt]


def test_json_gaps_and_principals(plan: Plan) -> None:
    document = json.loads(plan_json.render(plan))
    assert [(g["scope"], g["accepted"]) for g in document["gaps"]] == [
        (GHOST, False), (PHANTOM, True)]
    principals = {p["name"]: p for p in document["principals"]}
    assert principals["orders-sp"]["credentials_removed"] == [ORDERS_KEY]
    assert principals["orders-sp"]["used_by"] == ["orders-api", "orders-api/staging"]
    assert principals["billing-sp"]["cleanup"]["held"]


# --- escaping and secrets ------------------------------------------------------------------------------


def test_html_escapes_what_the_estate_named(plan: Plan) -> None:
    document = plan_html.render(plan)
    parser = parse_html(document)
    assert "script" not in parser.tags  # no element came from a setting name
    assert "<script" not in document.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document
    assert SCRIPT_SETTING in html_text(document)  # shown to the reader as it is named


def test_html_is_self_contained(plan: Plan) -> None:
    document = plan_html.render(plan)
    assert document.startswith("<!DOCTYPE html>")
    parser = parse_html(document)
    links = [value or "" for name, value in parser.attributes if name in ("href", "src")]
    assert links and all(link.startswith("#") for link in links), "only links within the page"
    assert not {"script", "link", "img", "iframe", "object"} & set(parser.tags)
    assert "@import" not in document and "url(" not in document
    assert parser.tags.count("details") >= len(plan.apps)


def test_markdown_escapes_what_the_estate_named(plan: Plan) -> None:
    document = plan_markdown.render(plan)
    outside_code = re.sub(r"(`+).*?\1", "", document)
    assert not re.search(r"(?<!\\)<script", outside_code)
    assert "\\<script\\>" in outside_code
    # the T-SQL <details> blocks are the report's own; nothing else opens a tag
    assert set(re.findall(r"(?<!\\)<(/?[a-z]+)", outside_code)) <= {"br", "details", "/details",
                                                              "summary", "/summary"}


def test_markdown_renders_as_written(plan: Plan) -> None:
    """Through a CommonMark renderer with GFM tables (markdown-it-py, which Rich depends on):
    names and messages come out as the same text, and no table cell splits."""
    rendered = MarkdownIt("commonmark").enable("table").render(plan_markdown.render(plan))
    parser = parse_html(rendered)
    assert "script" not in parser.tags
    text = html_text(rendered)
    assert f"{SCRIPT_SETTING}: the value is an Entra secret" in text
    assert f"{GHOST} list app settings {GHOST_MESSAGE} no" in text
    for step in (s for a in plan.apps for st in a.stages for s in st.steps):
        assert flat(step.title) in text


def test_terminal_gives_a_large_plan_one_line_per_app(plan: Plan) -> None:
    many = plan.model_copy(update={"apps": tuple(
        a.model_copy(update={"name": f"{a.name}-{n}"})
        for n in range(plan_terminal.DETAIL_LIMIT // len(plan.apps) + 1) for a in plan.apps)})
    assert len(many.apps) > plan_terminal.DETAIL_LIMIT
    assert "one line each" not in terminal_text(plan)
    buffer = StringIO()
    plan_terminal.render(many, Console(file=buffer, width=1000, color_system=None))
    text = buffer.getvalue()
    assert "one line each" in text
    for app in many.apps:
        assert f"• {app.name}  {plan_view.status_label(app.status)}" in text
        for blocked in app.blocked:
            assert f"blocked: {BLOCKED_TITLES[blocked.code]} ({blocked.code.value}): " \
                   f"{blocked.message}" in text
    assert "billing-api-0  migratable  signs in as its own system-assigned identity; 6 steps, " \
           "1 irreversible; held: revoke" in text
    assert plan_view.IRREVERSIBLE_NOTE in " ".join(text.split())
    assert "Apps found" in text and "Held stages" in text


def test_terminal_prints_rich_markup_in_names_literally(plan: Plan) -> None:
    assert MARKUP_SETTING in terminal_text(plan)


def test_the_findings_are_the_detectors_reading_of_the_values(plan: Plan) -> None:
    """The values really went through the detector: it found each where it sits, read each
    principal secret's hint from the value, and the hints matched the credentials."""
    apps = inventory().apps
    assert {(a.site.display, f.secret.name, f.rule, f.client_id)
            for a in apps for f in a.findings} == EXPECTED_FINDINGS
    by_setting = {(a.site.display, f.secret.name): f for a in apps for f in a.findings}
    for app, setting, value in [("orders-api", "AZURE_CLIENT_SECRET", "orders"),
                                ("billing-legacy", SCRIPT_SETTING, "billing"),
                                ("portal", "MICROSOFT_PROVIDER_AUTHENTICATION_SECRET", "portal"),
                                ("mystery", MARKUP_SETTING, "mystery")]:
        assert by_setting[(app, setting)].hint == SECRET_VALUES[value][:3]
    assert {(by_setting[("queue-worker", n)].kind, by_setting[("queue-worker", n)].service)
            for n in ("AzureWebJobsStorage", "Orders__ServiceBus")} == {
        (FindingKind.SHARED_KEY, "storage"), (FindingKind.SHARED_KEY, "servicebus")}
    fingerprints = {k: f.fingerprint for k, f in by_setting.items()}
    assert fingerprints[("orders-api", "AZURE_CLIENT_SECRET")] == fingerprints[
        ("orders-api/staging", "AZURE_CLIENT_SECRET")]  # one value, held twice
    assert fingerprints[("billing-api", "AZURE_CLIENT_SECRET")] == fingerprints[
        ("billing-legacy", SCRIPT_SETTING)]
    assert len(set(fingerprints.values())) == len(fingerprints) - 2
    assert {u.match.status for p in inventory().principals for u in p.used_by} == {"matched"}
    assert [(c.key_id, c.hint) for c in plan_view.irreversible_changes(plan)] == [
        (BILLING_KEY, HINTS["billing"]), (ORDERS_KEY, HINTS["orders"])]


def scan_table_text() -> str:
    buffer = StringIO()
    terminal.render_inventory(inventory(), Console(file=buffer, width=1000, color_system=None))
    return buffer.getvalue()


def _searched(document: str, reader_text: str) -> list[str]:
    """A document as written and as read (escapes undone), each also without white space (a
    terminal wraps lines)."""
    texts = [document, reader_text]
    return texts + ["".join(t.split()) for t in texts]


def _leaked(value: str, texts: list[str], *, parts: bool = True) -> str | None:
    """How a value shows in one of the texts, or None: whole, encoded (HTML, URL, JSON), and
    (`parts`) without its first three characters (the hint that may be shown) or any 16
    characters of it."""
    forms = {value, html.escape(value), quote(value, safe=""), json.dumps(value)[1:-1]}
    if parts:
        forms |= {value[3:], *(value[i:i + 16] for i in range(len(value) - 15))}
    return next((f for f in sorted(forms, key=len, reverse=True) for t in texts if f in t), None)


REPORTS = ["markdown", "html", "terminal", "json", "scan-json", "scan-table"]


@pytest.mark.parametrize("fmt", REPORTS)
def test_no_secret_value_reaches_a_report(plan: Plan, fmt: str) -> None:
    renders: dict[str, Callable[[Plan], str]] = {
        "markdown": plan_markdown.render, "html": plan_html.render, "terminal": terminal_text,
        "json": plan_json.render,
        "scan-json": lambda _: json_output.render_inventory(inventory()),
        "scan-table": lambda _: scan_table_text()}
    document = renders[fmt](plan)
    reader = {"markdown": markdown_unescaped, "html": html_text}.get(fmt, str)(document)
    texts = _searched(document, reader)
    values = {**{f"the {k} secret": v for k, v in SECRET_VALUES.items()},
              **{f"the {k}": v for k, v in OTHER_VALUES.items()}}
    for what, value in values.items():
        shown = _leaked(value, texts)
        leaked = shown is not None  # a bool: pytest must not print the value itself
        assert not leaked, f"{fmt}: {what} is in the report ({len(shown or '')} characters of it)"
    for what, value in [("storage", STORAGE), ("Service Bus", SERVICE_BUS), ("SQL", SQL_LOGIN)]:
        leaked = _leaked(value, texts, parts=False) is not None
        assert not leaked, f"{fmt}: the {what} connection string is in the report"
    if fmt in ("markdown", "html", "terminal", "json"):
        assert HINTS["orders"] in reader  # the hint is Entra's own and may be shown


# --- the pure helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("AZURE_CLIENT_ID", "AZURE_CLIENT_ID"),
    ("Reporting__ClientSecret", "Reporting__ClientSecret"),
    ("_private_", "\\_private\\_"),
    ("<script>x</script>", "\\<script\\>x\\</script\\>"),
    ("a|b", "a\\|b"),
    ("Tom & Jerry &lt;b&gt;", "Tom & Jerry \\&lt;b\\&gt;"),
    ("*bold* [link](x)", "\\*bold\\* \\[link\\](x)"),
    ("# heading", "\\# heading"),
    ("1. item", "\\1. item"),
    ("two\nlines", "two lines"),
    ("back\\slash `tick`", "back\\\\slash \\`tick\\`"),
])
def test_markdown_text_escaping(raw: str, expected: str) -> None:
    assert plan_markdown.text(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("orders-api", "`orders-api`"),
    ("a`b", "``a`b``"),
    ("`x", "`` `x ``"),
    ("a|b", "`a\\|b`"),
])
def test_markdown_code_spans(raw: str, expected: str) -> None:
    assert plan_markdown.code(raw) == expected


@pytest.mark.parametrize(("code", "title"), [
    (BlockedCode.RIGHTS_UNKNOWN, BLOCKED_TITLES[BlockedCode.RIGHTS_UNKNOWN]),
    ("principal-not-found", BLOCKED_TITLES[BlockedCode.PRINCIPAL_NOT_FOUND]),
    ("from-a-newer-planner", "from-a-newer-planner"),
])
def test_blocked_title(code: Any, title: str) -> None:
    assert plan_view.blocked_title(code) == title


def test_step_details_spell_out_setting_edits() -> None:
    step = Step(id="a/swap/01-update-app-settings", title="Update", params=UpdateAppSettings(
        site_id="s", edits=(SettingEdit(name="AZURE_CLIENT_SECRET", action="remove"),
                            SettingEdit(name="AZURE_CLIENT_ID", action="set",
                                        value="{identity.client_id}", sticky=True))),
        undo=Undo(action="restore-settings", description="restore"))
    assert plan_view.step_details(step) == (
        "remove AZURE_CLIENT_SECRET", "set AZURE_CLIENT_ID = {identity.client_id} (slot setting)")


def test_undo_text_drops_a_redundant_irreversible_prefix() -> None:
    params = RemovePasswordCredential(app_id="a", application_object_id="o", key_id="k",
                                      hint=None)
    gone = Step(id="x", title="t", params=params, undo=Undo(
        action="mint", description="irreversible: the secret is gone", reversible=False))
    kept = Step(id="x", title="t", params=params, undo=Undo(
        action="mint", description="irreversible: but flagged reversible"))
    assert plan_view.undo_text(gone) == "the secret is gone"
    assert plan_view.undo_text(kept) == "irreversible: but flagged reversible"


def test_an_empty_plan_still_reports(plan: Plan) -> None:
    empty = plan.model_copy(update={"apps": (), "principals": (), "identities": (), "gaps": ()})
    assert "The scan found no app holding a credential." in plan_markdown.render(empty)
    assert "The scan found no app holding a credential." in html_text(plan_html.render(empty))
    assert "Nothing: every step of this plan has an undo." in terminal_text(empty)
    assert json.loads(plan_json.render(empty))["apps"] == []
