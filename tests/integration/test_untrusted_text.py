"""Names an attacker controls never crash or restyle output (issue 11, items 4-7).

Anyone who can register an application chooses its display name, and Entra shows a secret's
first three characters as its hint. Before the fix a principal named `[/]` crashed
`migrator scan` with a Rich MarkupError; `[bold red]RED[/bold red] [link=...]` printed styled
with a link; the operator's own `--name`, `-a`, `-s` and `-o` arguments crashed the error
lines; and ESC sequences and bidi overrides reached the terminal and the reports raw.

The rule (migrator/report/untrusted.py) is checked here with generated names: fed through
scan (table and JSON), plan, report (terminal, Markdown, HTML, JSON), the apply preview,
status and the error lines, nothing raises, every name is shown literally (so no markup was
interpreted), and no raw control, format or bidi character is in any output.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import markupsafe
import pytest
from conftest import running_sim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console
from typer.testing import CliRunner, Result

from migrator.cli import app
from migrator.plan import Plan, PlanOptions, build_plan
from migrator.report import plan_html, plan_markdown, plan_terminal
from migrator.scan import Scanner
from migrator.untrusted import markup, visible, visible_plan

if TYPE_CHECKING:
    from conftest import Sim

FIXTURES = Path(__file__).parents[1] / "fixtures"

# What a hostile name is made of: Rich markup, Markdown and HTML specials, ESC sequences,
# C1 controls, bidi overrides and isolates, zero-width characters, line breaks, NUL.
TOKENS = ["a", "Z", "7", " ", "-", "[", "]", "/", "=", "\\", "<", ">", "&", "|", "*", "_", "`",
          "#", "[/]", "[bold red]", "[/bold red]", "[link=https://evil.example]", "[/link]",
          "\x1b[31m", "\x1b]8;;https://evil.example\x07", "\x9b", "\u202e", "\u2066", "\u200b",
          "\ufeff", ":skull:", "\n", "\r", "\t", "\x00", "\x7f", "\u2028", "é", "名"]
names = st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12).map("".join).filter(
    lambda s: s.strip() != "")

HOSTILE = ["[/]", "[bold red]RED[/bold red] [link=https://evil.example]click-me[/link]",
           "evil\x1b[31mred\x1b[0m\u202eexe.txt"]


def raw_characters(text: str) -> list[str]:
    """Characters that must never reach a terminal or report as they are."""
    return sorted({f"U+{ord(c):04X}" for c in text
                   if c not in "\n" and unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"}})


# -- the rule itself ---------------------------------------------------------------------------


@given(names)
def test_visible_leaves_no_hidden_character_and_is_idempotent(name: str) -> None:
    shown = visible(name)
    assert raw_characters(shown) == [] and "\n" not in shown
    assert visible(shown) == shown
    assert visible("AZURE_CLIENT_SECRET of orders-sp é 名") == "AZURE_CLIENT_SECRET of orders-sp é 名"


@given(names)
def test_markup_prints_literally_in_rich(name: str) -> None:
    console = Console(file=StringIO(), width=500, color_system=None, soft_wrap=True,
                      emoji=False)
    console.print(f"[bold]x[/] {markup(name)}", highlight=False)
    expected = visible(name)
    if expected.endswith("\\"):  # a trailing backslash is shown as its escape (see markup)
        expected = expected[:-1] + "\\x5c"
    assert console.file.getvalue() == f"x {expected}\n"  # type: ignore[attr-defined]


def test_escapes_are_readable() -> None:
    assert visible("a\x1b[31mb\u202ec\u200bd\ne") == "a\\x1b[31mb\\u202ec\\u200bd\\x0ae"
    assert visible("line\nnext\ttab", keep_newlines=True) == "line\nnext\ttab"


# -- every renderer of a plan ------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_plan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plan]:
    with running_sim(FIXTURES / "plan_estate.yaml", tmp_path_factory.mktemp("sim")) as sim:
        inventory = Scanner(sim.factory(), workers=8).run()
        yield build_plan(inventory, PlanOptions(name="t", tool_version="test"))


def _renamed(plan: Plan, old: str, new: str) -> Plan:
    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(old, new)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        return value
    return Plan.model_validate(walk(plan.model_dump(mode="python")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, setting=names)
def test_every_plan_renderer_shows_hostile_text_literally(base_plan: Plan, name: str,
                                                          setting: str) -> None:
    # The principal's name and a setting's name are everywhere in the plan: titles,
    # reasons, undo descriptions, tables.
    plan = _renamed(_renamed(base_plan, "orders-sp", name), "AZURE_CLIENT_SECRET", setting)
    console = Console(file=StringIO(), width=400, color_system=None)
    plan_terminal.render(plan, console, detail=True)
    terminal = console.file.getvalue()  # type: ignore[attr-defined]
    markdown = plan_markdown.render(plan)
    page = plan_html.render(plan)
    for text in (terminal, markdown, page):
        assert raw_characters(text) == []
    one_line = " ".join(visible(name).split())
    assert one_line in " ".join(terminal.split())  # printed as it is: no markup interpreted
    assert str(markupsafe.escape(visible(name))) in page
    assert "<script" not in page.lower().replace("&lt;script", "")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resource=names, address=names)
def test_sign_in_evidence_shows_hostile_resources_and_addresses_literally(
        base_plan: Plan, resource: str, address: str) -> None:
    # A resource's display name is chosen by whoever registered it, and the logs' address
    # field is Entra's text: the evidence lines, the held revoke and the grant warning show
    # both as they are.
    from migrator.plan.model import AddressEvidence, CredentialUse, SignInEvidencePlan

    app = next(a for a in base_plan.apps if a.credentials)
    cred = app.credentials[0]
    use = CredentialUse(app_id=cred.app_id.lower(), principal_name=cred.principal_name,
                        key_id=cred.key_id.lower(), hint=cred.hint, held_by=(app.name,),
                        sign_ins=3, failures=0, last="2026-12-01T08:00:00+00:00",
                        addresses=(AddressEvidence(ip=address, sign_ins=3,
                                                   last="2026-12-01T08:00:00+00:00", apps=()),),
                        resources=(resource,), uncovered=(resource,))
    plan = base_plan.model_copy(update={"sign_ins": SignInEvidencePlan(
        source="graph", since="2026-11-01T00:00:00+00:00", until="2026-12-01T00:00:00+00:00",
        credentials=(use,))})
    console = Console(file=StringIO(), width=400, color_system=None)
    plan_terminal.render(plan, console, detail=True)
    terminal = console.file.getvalue()  # type: ignore[attr-defined]
    page = plan_html.render(plan)
    for text in (terminal, plan_markdown.render(plan), page):
        assert raw_characters(text) == []
    for name in (resource, address):
        assert " ".join(visible(name).split()) in " ".join(terminal.split())
        assert str(markupsafe.escape(visible(name))) in page


def test_visible_plan_keeps_scripts_multi_line(base_plan: Plan) -> None:
    plan = visible_plan(_renamed(base_plan, "sql-sp", "sql\u202esp"))
    scripts = [s.params.model_dump().get("script") for a in plan.apps for st_ in a.stages
               for s in st_.steps if "script" in s.params.model_dump()]
    assert scripts and all("\n" in s and "sql\\u202esp" in s for s in scripts if s)


# -- the CLI against the simulator, end to end -------------------------------------------------


@pytest.fixture
def estate_path() -> Path:
    return FIXTURES / "execute_estate.yaml"


class Hostile:
    """The simulator's principals, setting names and secrets renamed to hostile text."""

    def __init__(self, sim: Sim, tmp_path: Path) -> None:
        self.sim = sim
        self.tmp = tmp_path
        self.env = {**sim.endpoints.environment(), "COLUMNS": "1000",
                    "MIGRATOR_STASH_KEY_FILE": str(tmp_path / "stash.key")}
        self.outputs: list[str] = []
        self.runs = 0

    def rename(self, principal: str, new: str) -> None:
        t = self.sim.tenant
        with t.lock:
            sp = t.service_principals[t.names[principal]]
            sp.display_name = new
            application = t.app_by_app_id(sp.app_id)
            assert application is not None
            application.display_name = new

    def hint(self, principal: str, site: str, prefix: str) -> str:
        """Give the principal's secret (and the app's copy of it) a hostile first three
        characters: Entra shows them as the hint."""
        t = self.sim.tenant
        with t.lock:
            sp = t.service_principals[t.names[principal]]
            application = t.app_by_app_id(sp.app_id)
            assert application is not None
            password = application.passwords[0]
            password.secret = (prefix + "xxx")[:3] + password.secret[3:]
            t.sites[site].app_settings["AZURE_CLIENT_SECRET"] = password.secret
            return password.hint

    def setting(self, site: str, name: str) -> None:
        t = self.sim.tenant
        with t.lock:
            app_settings = t.sites[site].app_settings
            app_settings[name] = app_settings["AZURE_CLIENT_SECRET"]

    def __call__(self, *args: str) -> Result:
        result = CliRunner().invoke(app, list(args), env=self.env)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            args, repr(result.exception), result.output)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert raw_characters(result.output) == [], (args, result.output)
        self.outputs.append(result.output)
        return result

    def plan_and_report(self) -> tuple[str, Path]:
        self.runs += 1
        plans = self.tmp / f"plans{self.runs}"
        outputs = [self("scan").output]
        scanned = self("scan", "--output", "json")
        json.loads(scanned.output)
        made = self("plan", "--name", "p", "--dir", str(plans))
        outputs.append(made.output)
        plan = plans / "p.json"
        assert plan.exists(), made.output
        outputs.append(self("report", str(plan)).output)
        for fmt in ("markdown", "html", "json"):
            written = plans / f"out.{fmt}"
            self("report", str(plan), "--format", fmt, "-o", str(written))
            assert raw_characters(written.read_text()) == [], fmt
        outputs.append(self("apply", str(plan), "--app", "solo-api").output)  # preview only
        outputs.append(self("status", str(plan)).output)
        return "\n".join(outputs), plan


@pytest.fixture
def hostile(sim: Sim, tmp_path: Path) -> Hostile:
    return Hostile(sim, tmp_path)


def test_the_names_of_the_review_print_as_they_are(hostile: Hostile) -> None:
    hostile.rename("solo-sp", HOSTILE[0])
    hostile.rename("shared-sp", HOSTILE[1])
    hostile.rename("sql-sp", HOSTILE[2])
    hint = hostile.hint("orders-sp", "orders-api", "[/]")
    assert hint == "[/]"
    hostile.setting("solo-api", "[green]FAKE[/green]__ClientSecret")
    shown, plan = hostile.plan_and_report()
    flat = " ".join(shown.split())
    for name in (*HOSTILE, "[green]FAKE[/green]__ClientSecret", "hint [/]"):
        assert " ".join(visible(name).split()) in flat, name
    assert "\\x1b[31m" in shown and "\\u202e" in shown

    # The operator's own input, echoed in error and "wrote" lines.
    for args, echoed in (
            (("plan", "--name", "[/]"), "'[/]'"),
            (("plan", "--name", "a[bold]b"), "a[bold]b"),
            (("apply", str(plan), "-a", "[/]"), "'[/]'"),
            (("apply", str(plan), "-a", "x\x1b[2Jy"), "x\\x1b[2Jy"),
            (("scan", "-s", "[/]"), "[/]"),
            (("report", str(plan), "-o", str(hostile.tmp / "[b]out.md")), "[b]out.md")):
        result = hostile(*args)
        assert echoed in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) >= 1


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(principal=names, prefix=names)
def test_generated_names_through_scan_plan_report_apply_and_status(
        hostile: Hostile, principal: str, prefix: str) -> None:
    hostile.rename("solo-sp", principal)
    hostile.hint("solo-sp", "solo-api", prefix)
    shown, plan = hostile.plan_and_report()
    assert " ".join(visible(principal).split()) in " ".join(shown.split())
    failed = hostile("apply", str(plan), "-a", principal)
    assert failed.exit_code == 2 and "unknown app" in failed.output
