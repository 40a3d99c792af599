"""The `migrator` command: thin Typer commands that parse, call the core and render.

Only this module chooses exit codes: 0 done, 1 a step failed or something is blocked, 2 bad input.
Library errors arrive typed; each becomes one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import enum
import io
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from typing_extensions import assert_never

from migrator import __version__
from migrator.cloud.errors import CloudError
from migrator.sim.estate import EstateError
from migrator.sim.state import REALISTIC_DELAYS
from migrator.untrusted import markup, visible

if TYPE_CHECKING:
    from migrator.cloud.factory import ClientFactory
    from migrator.execute.engine import AppOutcome, Engine, EngineEvent
    from migrator.plan.model import Plan
    from migrator.scan import ScanEvent

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

app = typer.Typer(
    help="Move Azure apps from service-principal secrets to managed identities, reversibly.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
sim_app = typer.Typer(help="The simulated Azure cloud the demo and the tests run against.",
                      no_args_is_help=True)
app.add_typer(sim_app, name="sim")
# Line-oriented output: one message is one line, whatever the width at import time (the
# terminal wraps it; a log or a grep sees it whole). Tables get a console made per run.
err = Console(stderr=True, soft_wrap=True, emoji=False)
out = Console(soft_wrap=True, emoji=False)


def fail(message: str, code: int = EXIT_BAD_INPUT, *more: str) -> NoReturn:
    """One line on stderr (and `more` lines under it, each escaped on its own: a line break
    inside an untrusted text is shown, never obeyed), then exit."""
    err.print(f"[bold red]error:[/] {markup(message)}", highlight=False, soft_wrap=True)
    for line in more:
        err.print(markup(line), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
    log_file: Annotated[Path | None, typer.Option(
        "--log-file", envvar="MIGRATOR_LOG_FILE", dir_okay=False,
        help="Append JSON lines to this file: every Azure call (method, path, status, "
             "request ids, duration, attempt) and every scan and executor decision; never a "
             "secret or a setting's value. Give it before the command.")] = None,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also write those events to stderr, and let azure-identity "
             "log why sign-in failed.")] = False,
) -> None:
    if version:
        out.print(f"msi-migrator {__version__}")
        raise typer.Exit(EXIT_OK)
    if log_file is None and not verbose:
        return
    import logging

    from migrator import calllog

    if verbose:  # the factory keeps a level someone set: azure-identity's warnings show
        logging.getLogger("azure.identity").setLevel(logging.WARNING)
    try:
        calllog.configure(log_file, verbose=verbose)
    except calllog.CallLogError as exc:
        fail(str(exc))
    ctx.call_on_close(calllog.close)
    calllog.event("run", command=ctx.invoked_subcommand, version=__version__,
                  python=sys.version.split()[0])


@sim_app.command("serve")
def sim_serve(
    estate: Annotated[Path, typer.Option(help="Estate YAML file describing the tenant.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
    state_dir: Annotated[Path | None, typer.Option(
        help="Where to write the CA bundle and the cloud profile (default: a new temp dir).")
    ] = None,
    throttle_scale: Annotated[float, typer.Option(
        help="Multiply ARM/Graph throttling bucket sizes and refill rates (0 turns it off).")
    ] = 1.0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per request, ms.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Random extra latency up to this, ms.")] = 0.0,
    fault: Annotated[list[str] | None, typer.Option(
        help="Inject faults: SERVICE:KIND=RATE, e.g. arm:429=0.05, graph:503=0.01, "
             "arm:drop=0.01 (SERVICE arm|graph|entra|msi|keyvault; KIND "
             "429|500|503|drop, refused before it is handled; 500_after|drop_after, handled "
             "and then the answer lost).")] = None,
    replication_delay: Annotated[float, typer.Option(
        help="Seconds a new managed identity stays unknown to RBAC and Graph, as in Azure "
             "(Entra replication).")] = REALISTIC_DELAYS.replication,
    rbac_delay: Annotated[float, typer.Option(
        help="Seconds before a new role assignment reaches data-plane checks (the apps' "
             "needs, Key Vault references); minutes in Azure.")] = REALISTIC_DELAYS.rbac,
    sign_in_delay: Annotated[float, typer.Option(
        help="Seconds before a sign-in shows in Graph's sign-in logs (Entra's ingestion "
             "latency).")] = REALISTIC_DELAYS.sign_in_ingestion,
    workspace_delay: Annotated[float, typer.Option(
        help="Seconds before a sign-in reaches a Log Analytics workspace fed by Entra's "
             "diagnostic settings.")] = REALISTIC_DELAYS.workspace_ingestion,
    any_api_version: Annotated[bool, typer.Option(
        help="Accept ARM api-versions Azure has not published or the simulator has not been "
             "checked against (by default refused as ARM refuses them), e.g. to try an SDK "
             "newer than constraints.txt.")] = False,
) -> None:
    """Serve an estate over HTTPS on 127.0.0.1 until SIGINT/SIGTERM.

    ARM is authorized by simulated RBAC: the published built-in roles and the estate's custom
    roles (`role_definitions:`), with their notActions and ABAC conditions; each caller's
    effective permissions are served at `{scope}/providers/Microsoft.Authorization/
    permissions`. Delays are Azure's unless shortened here. The estate format and every
    harsh behaviour modelled are in the README ("The simulated cloud")."""
    from migrator.sim.estate import load_estate
    from migrator.sim.faults import FaultConfig, FaultError
    from migrator.sim.server import SimServer
    from migrator.sim.state import Delays

    try:
        spec = load_estate(estate)
        faults = FaultConfig.from_cli(fault or [], latency_ms=latency_ms, jitter_ms=jitter_ms,
                                      throttle_scale=throttle_scale)
    except (EstateError, FaultError) as exc:
        fail(str(exc))
    directory = state_dir or Path(tempfile.mkdtemp(prefix="migrator-sim-"))
    server = SimServer(spec, directory, port=port, faults=faults,
                       delays=Delays(replication=replication_delay, rbac=rbac_delay,
                                     sign_in_ingestion=sign_in_delay,
                                     workspace_ingestion=workspace_delay),
                       any_api_version=any_api_version)

    def ready(endpoints: object) -> None:
        from migrator.sim.server import SimEndpoints

        assert isinstance(endpoints, SimEndpoints)
        print(f"# migrator.sim serving {visible(str(estate))} at {endpoints.base_url}")
        for name, value in endpoints.environment().items():
            print(f"export {name}={shlex.quote(value)}")
        print("# Ctrl-C stops it.", flush=True)

    try:
        server.serve_forever(on_ready=ready)
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}")
    err.print("migrator.sim stopped.")


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"


CloudOption = Annotated[str, typer.Option(
    "--cloud", envvar="MIGRATOR_CLOUD_PROFILE",
    help="AzureCloud, AzureChinaCloud, AzureUSGovernment, or a profile file (the simulator "
         "writes one).")]


@app.command()
def scan(
    subscription: Annotated[list[str] | None, typer.Option(
        "--subscription", "-s", help="Only this subscription (id or name); repeatable.")] = None,
    resource_group: Annotated[list[str] | None, typer.Option(
        "--resource-group", "-g", help="Only this resource group; repeatable.")] = None,
    output: Annotated[OutputFormat, typer.Option(help="table for people, json for machines.")
                      ] = OutputFormat.table,
    sign_in_days: Annotated[int, typer.Option(
        min=0, max=30, help="Days of Entra sign-in logs to read as evidence of who uses each "
                            "secret (needs AuditLog.Read.All and a P1/P2 licence; 0: none).")
    ] = 30,
    sign_in_logs: Annotated[str, typer.Option(
        help="Where to read them: `graph` (AuditLog.Read.All, P1/P2 licence) or "
             "`workspace:<id>`, a Log Analytics workspace that receives Entra's sign-in logs "
             "(Log Analytics Reader there).")] = "graph",
    cloud: CloudOption = "AzureCloud",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Concurrent requests.")] = 16,
) -> None:
    """Find every service-principal secret in app settings, and what each principal may do.

    Exit code 0: complete; 1: incomplete (something could not be read: see the gaps);
    2: bad input or the operator could not sign in.
    """
    from migrator.cloud.factory import ClientFactory
    from migrator.cloud.profiles import load_profile
    from migrator.report import json_output, terminal
    from migrator.scan import Scanner, ScanScope

    try:
        profile = load_profile(cloud)
        with _read_only_run("the scan"), ClientFactory(profile) as factory, scan_progress(
                enabled=output is OutputFormat.table) as progress:
            inventory = Scanner(factory, workers=workers, progress=progress,
                                sign_in_days=sign_in_days,
                                sign_in_workspace=_sign_in_source(sign_in_logs)).run(
                ScanScope(tuple(subscription or ()), tuple(resource_group or ())))
    except CloudError as exc:
        fail(str(exc))
    if output is OutputFormat.json:
        sys.stdout.write(json_output.render_inventory(inventory))
    elif output is OutputFormat.table:
        terminal.render_inventory(inventory, Console(emoji=False))
    else:
        assert_never(output)
    raise typer.Exit(EXIT_OK if inventory.complete else EXIT_FAILED)


@contextlib.contextmanager
def _read_only_run(what: str) -> Iterator[None]:
    """Ctrl-C during a command that only reads Azure: say so, and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(f"interrupted: {markup(what)} stopped before it finished; it only reads, so "
                  "nothing changed in Azure and nothing was written: run it again",
                  highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _emit(text: str, output: Path | None, about: str = "") -> None:
    """Standard output, or a file (then a line on stderr says so)."""
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{output}: cannot write: {exc.strerror or exc}")
    err.print(f"wrote {markup(output)}{markup(about)}", highlight=False)


def _default_plan_name() -> str:
    from datetime import datetime, timezone

    return "plan-" + datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


@app.command()
def plan(
    subscription: Annotated[list[str] | None, typer.Option(
        "--subscription", "-s", help="Only this subscription (id or name); repeatable.")] = None,
    resource_group: Annotated[list[str] | None, typer.Option(
        "--resource-group", "-g", help="Only this resource group; repeatable.")] = None,
    name: Annotated[str | None, typer.Option(
        help="Plan name: writes DIR/NAME.json, .md and .html (default: plan-<UTC time>).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--dir", help="Where plans are written.")
                       ] = Path("plans"),
    accept_gap: Annotated[list[str] | None, typer.Option(
        "--accept-gap", help="Plan apps although the scan could not read this scope (a "
             "subscription name or id, 'graph', or part of a gap's scope): its rights there "
             "stay unknown; repeatable. A value that matches no gap is refused.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing plan of that name.")
                         ] = False,
    sign_in_days: Annotated[int, typer.Option(
        min=0, max=30, help="Days of Entra sign-in logs to read as evidence of who uses each "
                            "secret (needs AuditLog.Read.All and a P1/P2 licence; 0: none).")
    ] = 30,
    sign_in_logs: Annotated[str, typer.Option(
        help="Where to read them: `graph` (AuditLog.Read.All, P1/P2 licence) or "
             "`workspace:<id>`, a Log Analytics workspace that receives Entra's sign-in logs "
             "(Log Analytics Reader there).")] = "graph",
    cloud: CloudOption = "AzureCloud",
    workers: Annotated[int, typer.Option(min=1, max=64, help="Concurrent requests.")] = 16,
) -> None:
    """Scan, then write a plan (JSON) and its report (Markdown, HTML) for review. Changes
    nothing in Azure.

    Exit code 0: every app found can be migrated; 1: some app is blocked or the scan is
    incomplete (see the report); 2: bad input or the operator could not sign in.
    """
    from migrator.cloud.factory import ClientFactory
    from migrator.cloud.profiles import load_profile
    from migrator.execute.journal import JournalError
    from migrator.execute.workspace import journal_in_use
    from migrator.plan import PlanOptions, build_plan
    from migrator.plan.planner import unmatched_accepts
    from migrator.report import plan_terminal
    from migrator.report.plan_files import PlanFileError, check_name, write_plan_files
    from migrator.scan import Scanner, ScanScope

    try:
        plan_name = check_name(name or _default_plan_name())
        profile = load_profile(cloud)
        with _read_only_run("the scan for the plan"), ClientFactory(profile) as factory:
            with scan_progress(enabled=True) as progress:
                inventory = Scanner(factory, workers=workers, progress=progress,
                                    sign_in_days=sign_in_days,
                                    sign_in_workspace=_sign_in_source(sign_in_logs)).run(
                    ScanScope(tuple(subscription or ()), tuple(resource_group or ())))
            if unmatched := unmatched_accepts(inventory, accept_gap or ()):
                gaps = ", ".join(g.scope for g in inventory.gaps) or "none"
                fail(f"--accept-gap {', '.join(unmatched)}: matches no gap of this scan (its "
                     f"gaps: {gaps}); give a subscription name or id, 'graph', or a part of a "
                     "gap's scope")
            made = _with_operator_rights(factory, build_plan(inventory, PlanOptions(
                name=plan_name, tool_version=__version__, accept_gaps=tuple(accept_gap or ()))))
        in_use = journal_in_use(out_dir / f"{plan_name}.json", plan_name)
        if overwrite and in_use is not None:
            fail(f"{in_use} holds the steps of the plan {plan_name!r} being replaced: finish or "
                 "roll back its apps, then move the journal away, or choose another --name")
        paths = write_plan_files(made, out_dir, overwrite=overwrite)
    except (CloudError, PlanFileError, JournalError) as exc:
        fail(str(exc))
    plan_terminal.render(made, out)
    out.print("wrote " + ", ".join(markup(p) for p in paths), highlight=False)
    complete = made.scan_complete and made.summary.blocked == 0
    raise typer.Exit(EXIT_OK if complete else EXIT_FAILED)


def _with_operator_rights(factory: ClientFactory, made: Plan) -> Plan:
    from migrator.execute.rights import with_operator_rights

    checked, problem = with_operator_rights(factory, made)
    if problem:
        err.print(markup(f"warning: {problem}"), highlight=False)
    return checked


class ReportFormat(str, enum.Enum):
    terminal = "terminal"
    markdown = "markdown"
    html = "html"
    json = "json"


@app.command()
def report(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (JSON).")],
    format: Annotated[ReportFormat, typer.Option(
        "--format", "-f", help="terminal, markdown, html or json.")] = ReportFormat.terminal,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write here instead of standard output.")] = None,
) -> None:
    """Show a plan: summary first, then every app's stages and what cannot be undone.

    Exit code 0: shown; 2: the plan is unreadable, not a plan, or was edited after planning.
    """
    from migrator.plan import PlanError, load_plan
    from migrator.report import plan_html, plan_json, plan_markdown, plan_terminal

    try:
        loaded = load_plan(plan_file)
    except PlanError as exc:
        fail(str(exc))
    if format is ReportFormat.terminal:
        if output is None:
            plan_terminal.render(loaded, out)
            return
        buffer = io.StringIO()
        plan_terminal.render(loaded, Console(file=buffer, width=120, color_system=None,
                                             emoji=False))
        text = buffer.getvalue()
    elif format is ReportFormat.markdown:
        text = plan_markdown.render(loaded)
    elif format is ReportFormat.html:
        text = plan_html.render(loaded)
    elif format is ReportFormat.json:
        text = plan_json.render(loaded)
    else:
        assert_never(format)
    _emit(text, output)


class StageChoice(str, enum.Enum):
    identity = "identity"
    grant = "grant"
    swap = "swap"
    revoke = "revoke"
    all = "all"


def _sign_in_source(text: str) -> str | None:
    from migrator.cloud.signins import parse_source

    try:
        return parse_source(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--sign-in-logs") from None


def _parse_duration(text: str, option: str = "--soak") -> timedelta:
    from migrator.execute.engine import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


@contextlib.contextmanager
def _engine(plan_file: Path, cloud: str, events: Callable[[EngineEvent], None], *,
            readonly: bool = False) -> Iterator[Engine]:
    """Load the plan, sign in, open its journal and stash: every failure here is one line,
    and Ctrl-C says what it interrupted and how to go on."""
    from migrator.cloud.changes import CloudChanges
    from migrator.cloud.factory import ClientFactory
    from migrator.cloud.profiles import load_profile
    from migrator.execute.engine import EngineError, MissingRights
    from migrator.execute.journal import JournalError
    from migrator.execute.stash import StashError
    from migrator.execute.workspace import open_engine
    from migrator.plan import PlanError, load_plan

    opened: list[Engine] = []
    try:
        loaded = load_plan(plan_file)
        profile = load_profile(cloud)
        with ClientFactory(profile) as factory, open_engine(
                loaded, plan_file, CloudChanges(factory), events=events,
                readonly=readonly) as engine:
            opened.append(engine)
            yield engine
    except MissingRights as exc:
        fail(exc.lines[0], EXIT_FAILED, *exc.lines[1:])
    except (PlanError, JournalError, StashError, CloudError, EngineError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(plan_file, opened[0].activity if opened else None)



def _interrupted(plan_file: Path, activity: tuple[str, str, str] | None) -> NoReturn:
    """Ctrl-C in apply or rollback: what was under way, and the command that goes on. The
    journal has every step up to here, so nothing is lost."""
    if activity is None:
        err.print("interrupted: no step was under way; run the command again", highlight=False)
    else:
        what, app_name, step = activity
        plan_arg, app_arg = shlex.quote(str(plan_file)), shlex.quote(app_name)
        resume = (f"migrator apply {plan_arg} --app {app_arg}" if what == "apply"
                  else f"migrator rollback {plan_arg} --app {app_arg}")
        other = (f"migrator rollback {plan_arg} --app {app_arg}" if what == "apply"
                 else f"migrator status {plan_arg}")
        err.print(markup(f"interrupted during {what} of {app_name}, at: {step}. The journal "
                         f"holds every step up to here: run `{resume}` to finish it (the "
                         f"interrupted step is checked against Azure first), or `{other}`."),
                  highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_INTERRUPTED)


def _events(console: Console) -> Callable[[EngineEvent], None]:
    marks = {"stage": "[bold]▸[/]", "step": "  …", "step-done": "  [green]✓[/]",
             "step-failed": "  [red]✗[/]", "undo": "  ↶", "undone": "  [yellow]↶[/]",
             "note": "  [cyan]note:[/]"}

    def show(event: EngineEvent) -> None:
        if event.kind in ("step", "undo"):
            return
        text = f"{event.app} {event.text}" if event.kind == "stage" else event.text
        console.print(f"{marks[event.kind]} {markup(text)}", highlight=False)
    return show


def _outcomes(outcomes: list[AppOutcome], ok: tuple[str, ...] = ("done", "waiting")) -> int:
    colours = {"done": "green", "waiting": "yellow", "refused": "red", "failed": "red",
               "rolled-back": "yellow"}
    for o in outcomes:
        stages = ", ".join(o.stages_done) or "none"
        out.print(f"[{colours[o.outcome]}]{o.outcome}[/] {markup(o.app)} (stages done: "
                  f"{stages}){': ' + markup(o.message) if o.message else ''}", highlight=False)
        if o.script:
            out.print(markup(o.script), highlight=False, soft_wrap=True)
    return EXIT_OK if all(o.outcome in ok for o in outcomes) else EXIT_FAILED


@app.command()
def apply(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (JSON).")],
    app_name: Annotated[list[str] | None, typer.Option(
        "--app", "-a", help="Only this app (site or site/slot); repeatable. Default: every "
                            "migratable app.")] = None,
    stage: Annotated[StageChoice, typer.Option(
        help="Run up to this stage (earlier ones first, if not done), or all.")
    ] = StageChoice.all,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    soak: Annotated[str, typer.Option(
        help="How long after the swap the revoke waits (e.g. 24h, 30m, 0); with sign-in "
             "evidence, also how long the old secret must have been unused.")] = "24h",
    sign_in_delay: Annotated[str, typer.Option(
        help="How late Entra's sign-in logs may arrive: a revoke judged on them waits this "
             "long after the swap (e.g. 15m).")] = "15m",
    confirm_sql: Annotated[bool, typer.Option(
        help="The T-SQL the plan asked for has been run by an operator.")] = False,
    health_timeout: Annotated[float | None, typer.Option(
        help="Seconds to wait for the app's health check after the swap (default: the "
             "plan's).")] = None,
    rbac_propagation: Annotated[float, typer.Option(
        min=0.0, help="Seconds a new role assignment may take to reach data-plane "
                      "authorization: an unhealthy swap is not rolled back before its app's new "
                      "role assignments are this old (Azure documents up to 10 minutes).")
    ] = 600.0,
    cleanup: Annotated[bool, typer.Option(
        help="Instead: remove the rights of principals that nothing uses any more (every "
             "app that used one is revoked; the plan holds nothing back).")] = False,
    cloud: CloudOption = "AzureCloud",
) -> None:
    """Carry out a plan, stage by stage, journalling every step; a swap that leaves the app
    unhealthy is rolled back at once.

    Before anything changes (and before the prompt) the operator's own permissions are
    checked against every chosen step: ARM's effective permissions at each scope a step acts
    on, and the Graph application permissions in its token.

    Exit code 0: done (or waiting for a soak period or a confirmation); 1: a step failed, the
    swap was rolled back, an app was refused (drifted, blocked, stages out of order), or the
    operator lacks a permission a chosen step needs; 2: bad input.
    """
    from migrator.execute.engine import ApplyOptions
    from migrator.plan.model import STAGES, Stage

    wanted = STAGES if stage is StageChoice.all else STAGES[:STAGES.index(Stage(stage.value)) + 1]
    options = ApplyOptions(apps=tuple(app_name or ()), stages=wanted,
                           soak=_parse_duration(soak), confirm_sql=confirm_sql,
                           health_timeout=health_timeout, rbac_propagation=rbac_propagation,
                           sign_in_delay=_parse_duration(sign_in_delay, "--sign-in-delay"))
    with _engine(plan_file, cloud, _events(out)) as engine:
        if cleanup:
            if not yes:
                if not sys.stdin.isatty():
                    fail("not a terminal: pass --yes to clean up without a prompt")
                typer.confirm("Remove the rights of principals nothing uses any more?",
                              abort=True)
            raise typer.Exit(_outcomes(engine.cleanup(options)))
        steps = engine.preview(options)
        engine.check_rights(engine.rights_needed(options))  # before the prompt, not at step N
        if not steps:
            out.print("Nothing to do: every chosen stage is done already.")
        else:
            out.print(f"[bold]{len(steps)} steps[/] will run:", highlight=False)
            for name, st, step in steps:
                out.print(f"  {markup(name)} [dim]{st.value}[/] {markup(step.title)}",
                          highlight=False)
            if not yes:
                if not sys.stdin.isatty():
                    fail("not a terminal: pass --yes to apply without a prompt")
                typer.confirm("Apply these changes to Azure?", abort=True)
        code = _outcomes(engine.apply(options))
    raise typer.Exit(code)


@app.command()
def status(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (JSON).")],
    cloud: CloudOption = "AzureCloud",
) -> None:
    """Per app: the stage reached and when, what is pending or failed, and what to do next."""
    from rich.table import Table

    with _engine(plan_file, cloud, lambda _: None, readonly=True) as engine:
        progress = engine.status()
        used = engine.old_secret_use()
    table = Table(title=f"Plan {markup(plan_file.name)}", highlight=False)
    columns = ("app", "reached", "identity", "grant", "swap", "revoke", "next")
    for column in columns + (("old secret last used",) if used else ()):
        table.add_column(column)
    for p in progress:
        cells = {s.stage: s for s in p.stages}
        table.add_row(markup(p.app), p.reached, *(
            (f"{cells[st].state} {cells[st].at:%Y-%m-%d %H:%M}" if cells[st].at else
             cells[st].state) + (f"\n{markup(cells[st].message)}" if cells[st].message else "")
            if st in cells else "-" for st in ("identity", "grant", "swap", "revoke")),
            markup(p.next), *((markup(used.get(p.app, "-")),) if used else ()))
    # made per run: it reads the terminal's width (COLUMNS) when built
    Console(emoji=False).print(table)


@app.command()
def rollback(
    plan_file: Annotated[Path, typer.Argument(metavar="PLAN", help="A plan file (JSON).")],
    app_name: Annotated[str, typer.Option(
        "--app", "-a", help="The app to roll back (or principal/<name> to undo a cleanup).")],
    to_stage: Annotated[StageChoice | None, typer.Option(
        help="Keep this stage and the ones before it (default: undo everything).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
                   ] = False,
    health_timeout: Annotated[float | None, typer.Option(
        help="Seconds to wait for the app's health check after the rollback (default: the "
             "plan's).")] = None,
    cloud: CloudOption = "AzureCloud",
) -> None:
    """Undo an app's done steps, latest first. After a revoke the old secret is gone: rollback
    mints a new one on the application and swaps it back in (and says so)."""
    from migrator.execute.engine import ApplyOptions
    from migrator.plan.model import Stage

    keep = None if to_stage in (None, StageChoice.all) else Stage(to_stage.value)
    with _engine(plan_file, cloud, _events(out)) as engine:
        if app_name.startswith("principal/"):  # undo a principal's cleanup
            if not yes and not sys.stdin.isatty():
                fail("not a terminal: pass --yes to roll back without a prompt")
            raise typer.Exit(_outcomes([engine.rollback_cleanup(app_name)],
                                       ok=("rolled-back",)))
        engine.app(app_name)
        if not yes:
            if not sys.stdin.isatty():
                fail("not a terminal: pass --yes to roll back without a prompt")
            typer.confirm(f"Roll {app_name} back"
                          + (f" to its {keep.value} stage?" if keep else " completely?"),
                          abort=True)
        options = ApplyOptions(health_timeout=health_timeout)
        code = _outcomes([engine.rollback(app_name, keep, options)], ok=("rolled-back",))
    raise typer.Exit(code)


@contextlib.contextmanager
def scan_progress(*, enabled: bool) -> Iterator[Callable[[ScanEvent], None]]:
    """A Rich progress bar on a terminal (stderr); silence elsewhere."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if not enabled or not err.is_terminal:
        yield lambda _: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("scanning", total=0)

        def on_event(event: ScanEvent) -> None:
            if event.kind == "sites-found":
                bar.update(task, total=(bar.tasks[0].total or 0) + event.count)
            elif event.kind == "site-done":
                bar.update(task, advance=1, description=f"scanning {event.subject}")
            elif event.kind == "principal-done":
                bar.update(task, description=f"principal {event.subject}")

        yield on_event


@sim_app.command("generate")
def sim_generate(
    subscriptions: Annotated[int, typer.Option(min=1, help="How many subscriptions.")] = 1,
    apps: Annotated[int, typer.Option(min=1, help="How many sites in all.")] = 100,
    secret_share: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of sites holding a service principal's secret.")] = 0.6,
    shared_principals: Annotated[int, typer.Option(
        min=0, help="Principals each used by several sites.")] = 0,
    slots: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Share of sites with a staging slot.")] = 0.1,
    seed: Annotated[int, typer.Option(help="Same seed, same estate, byte for byte.")] = 0,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write here instead of standard output.")] = None,
) -> None:
    """Write a large, valid estate for benchmarks and load tests (no secret text in it)."""
    from migrator.sim.generate import render_estate_yaml

    try:
        text = render_estate_yaml(subscriptions=subscriptions, apps=apps,
                                  secret_share=secret_share,
                                  shared_principals=shared_principals, slots=slots, seed=seed)
    except ValueError as exc:
        fail(str(exc))
    _emit(text, output, f" ({len(text.encode()):,} bytes, {apps} apps)")


@app.command()
def demo(
    estate: Annotated[Path | None, typer.Option(
        help="Estate to use instead of the bundled sample tenant.")] = None,
    out_dir: Annotated[Path, typer.Option(
        "--dir", help="Where the demo's plan and report are written.")] = Path("plans"),
) -> None:
    """Run the tool against the built-in simulated tenant: what it sees, then its plan."""
    from migrator.demo import run_demo
    from migrator.report import plan_terminal
    from migrator.report.plan_files import PlanFileError, write_plan_files
    from migrator.report.terminal import render_demo, render_demo_acts

    console = Console(emoji=False)  # made per run: it reads COLUMNS when built
    try:
        with console.status("starting the simulated tenant…") as status:
            result = run_demo(estate, plan_name="demo", progress=status.update)
        paths = write_plan_files(result.plan, out_dir, overwrite=True)
    except (EstateError, CloudError, PlanFileError) as exc:
        fail(str(exc))
    render_demo(result, console)
    console.rule("The plan (dry run: nothing has changed)")
    plan_terminal.render(result.plan, console)
    console.print("wrote " + ", ".join(markup(p) for p in paths), highlight=False)
    console.rule("Carrying out part of the plan")
    render_demo_acts(result, console)


def main() -> None:
    """Console entry point: run the app, turning any stray library error into one line."""
    try:
        app()
    except (EstateError, CloudError) as exc:
        err.print(f"[bold red]error:[/] {markup(exc)}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
