"""A plan in the terminal with Rich: what `migrator plan` shows right after planning, and what
`migrator report` shows by default.

Same facts and order as the Markdown and HTML reports (all three lay out `plan_view`). Every
text from the plan goes in as a `rich.text.Text`, never as a markup string, so a setting named
`[bold]` prints as it is; and everything is printed with `highlight=False`, so ids and GUIDs are
not coloured at random by Rich's highlighter.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from migrator.plan.model import Plan
from migrator.report.plan_view import (
    DRY_RUN_NOTE,
    IRREVERSIBLE_NOTE,
    SECRETS_NOTE,
    AppSection,
    PrincipalView,
    StageView,
    app_sections,
    blocked_by_reason,
    gap_line,
    held_stages,
    irreversible_changes,
    plan_facts,
    plural,
    principal_views,
    rights_warning,
    shared_identities,
    summary_rows,
)
from migrator.untrusted import visible_plan

_STATUS_STYLES = {"migratable": "green", "blocked": "red", "advisory": "yellow"}


DETAIL_LIMIT = 40  # apps; above it, one line per app (see `render`)


def render(plan: Plan, console: Console, *, detail: bool | None = None) -> None:
    """Print the report: summary first, then what cannot be undone, then every app.

    Up to `DETAIL_LIMIT` apps (or with `detail=True`), each app gets its stages as tables.
    Above it, each app gets one line, and blocked and advisory apps their reasons in full:
    Rich lays out a table in milliseconds, so ten thousand apps' steps would take minutes to
    print and no one would scroll through them. The Markdown and HTML reports always hold every
    step."""
    plan = visible_plan(plan)  # every text from Azure or the operator, made visible
    detailed = len(plan.apps) <= DETAIL_LIMIT if detail is None else detail

    def show(renderable: RenderableType) -> None:
        console.print(renderable, highlight=False)

    show(Text(f"Migration plan {plan.name}", style="bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column(overflow="fold")
    for fact in plan_facts(plan):
        facts.add_row(Text(fact.label), Text(fact.value))
    show(facts)
    show(Text(DRY_RUN_NOTE, style="dim"))
    show(Text(SECRETS_NOTE, style="dim"))
    if not plan.scan_complete:
        unaccepted = sum(1 for g in plan.gaps if not g.accepted)
        show(Text(f"The scan is incomplete ({plural(len(plan.gaps), 'gap')}, {unaccepted} not "
                  "accepted): rights it could not read are not in this plan.",
                  style="bold yellow"))
    show(Text())
    show(_summary(plan))
    warning = rights_warning(plan)
    if warning is not None:  # one line each, whole, for a log or a grep
        show(Text(warning.title, style="bold yellow" if warning.lines else "bold"))
        for line in warning.lines:
            show(Text.assemble("  • ", (line, "yellow")))
        for line in warning.unchecked:
            show(Text(f"  not checked: {line}", style="dim"))
        show(Text())
    reasons = blocked_by_reason(plan)
    if reasons:
        show(Text("Blocked, by reason", style="bold"))
        for r in reasons:
            show(Text.assemble("  • ", (r.title, "red"), f" ({r.code}): ",
                               f"{plural(r.count, 'app')}: ", ", ".join(r.apps)))
        show(Text())
    show(_irreversible(plan))
    held = held_stages(plan)
    if held:
        show(Panel(Group(*(Text.assemble((h.owner, "bold"), f", {h.stage}: ",
                                         "; ".join(h.reasons)) for h in held)),
                   title=Text("Held stages", style="bold yellow"), title_align="left",
                   border_style="yellow"))
    sections = app_sections(plan)
    if not sections:
        show(Text("The scan found no app holding a credential."))
    if detailed:
        for section in sections:
            show(Text())
            for renderable in _app(section):
                show(renderable)
    elif sections:
        show(Text())
        show(Text(f"Apps ({len(sections)}): one line each; every step is in the Markdown and "
                  "HTML reports (migrator report PLAN --format markdown, or html)", style="bold"))
        show(_app_lines(sections))
    for identity in shared_identities(plan):
        show(Text())
        show(Rule(Text.assemble("Identity to create: ", (identity.name, "bold")), align="left",
                  style="blue"))
        show(Padding(Group(
            Text(f"user-assigned, in {identity.resource_group} "
                 f"({identity.location or 'location unknown'}), used by "
                 f"{', '.join(identity.used_by)}, replacing {', '.join(identity.principals)}"),
            Text(identity.reason, style="dim")), (0, 0, 0, 2)))
    principals = principal_views(plan)
    if not detailed and principals:
        show(Text())
        show(_principal_index(principals))
    for principal in principals if detailed else ():
        show(Text())
        show(Rule(Text.assemble("Principal ", (principal.name, "bold"),
                                " (shared)" if principal.shared else ""),
                  align="left", style="blue"))
        show(Padding(Group(
            Text(f"app id {principal.app_id}, object id {principal.object_id or 'not found'}; "
                 f"used by {', '.join(principal.used_by) or '-'}"),
            Text("credentials this plan removes: "
                 f"{', '.join(principal.credentials_removed) or 'none'}"),
            Text("other valid credentials (kept): "
                 f"{', '.join(principal.other_valid_credentials) or 'none'}"),
            _stage_table(principal.cleanup, principal.cleanup.title)), (0, 0, 0, 2)))
    show(Text())
    if plan.gaps:
        show(Text("Scan gaps", style="bold yellow"))
        for gap in plan.gaps:
            show(Text.assemble("  • ", (gap_line(gap), "yellow" if not gap.accepted else "")))
    else:
        show(Text("Scan gaps: none; the scan read everything in scope.", style="green"))


def _summary(plan: Plan) -> Table:
    table = Table(title=Text("Summary", style="bold"), title_justify="left", box=box.SIMPLE)
    table.add_column("figure")
    table.add_column("count", justify="right")
    table.add_column("what it counts", style="dim", overflow="fold")
    for row in summary_rows(plan):
        style = ""
        if row.value and row.key in ("blocked", "irreversible_steps", "secrets_to_remove"):
            style = "red" if row.key == "blocked" else "bold"
        table.add_row(Text(row.label), Text(str(row.value), style=style), Text(row.note))
    return table


def _app_lines(sections: tuple[AppSection, ...]) -> Text:
    """One line per app, blocked and advisory apps with each reason in full. Plain lines, not a
    table: Rich measures every cell of a table, which takes seconds for thousands of apps."""
    lines = Text()
    for section in sections:
        lines.append("• ")
        lines.append(section.name, style="bold")
        lines.append(f"  {section.status_label}", style=_STATUS_STYLES.get(section.status, ""))
        if section.stages:
            steps = sum(len(stage.steps) for stage in section.stages)
            lines.append(f"  {section.outcome}; {plural(steps, 'step')}")
            if section.irreversible:
                lines.append(f", {section.irreversible} irreversible", style="red")
            held = [stage.stage for stage in section.stages if stage.held]
            if held:
                lines.append(f"; held: {', '.join(held)}", style="yellow")
        elif not section.blocked:
            lines.append(f"  {section.outcome}", style="dim")
        for b in section.blocked:
            lines.append("\n    blocked: ", style="red")
            lines.append(f"{b.title} ({b.code}): {b.message}")
        lines.append("\n")
    lines.rstrip()
    return lines


def _principal_index(principals: tuple[PrincipalView, ...]) -> Table:
    table = Table(title=Text("Principals", style="bold"), title_justify="left",
                  box=box.SIMPLE_HEAD)
    for column in ("principal", "used by", "credentials removed", "cleanup"):
        table.add_column(column, overflow="fold")
    for p in principals:
        cleanup = plural(len(p.cleanup.steps), "step") + (
            ": held: " + "; ".join(p.cleanup.held) if p.cleanup.held else "")
        table.add_row(Text(f"{p.name}\n{p.app_id}"), Text(", ".join(p.used_by) or "-"),
                      Text(", ".join(p.credentials_removed) or "none"), Text(cleanup))
    return table


def _irreversible(plan: Plan) -> Panel:
    changes = irreversible_changes(plan)
    if not changes:
        return Panel(Text("Nothing: every step of this plan has an undo."),
                     title=Text("What cannot be undone", style="bold"), title_align="left")
    lines: list[RenderableType] = [Text(IRREVERSIBLE_NOTE), Text()]
    for c in changes:
        lines.append(Text.assemble(("⚠ ", "bold red"), (c.what, "bold"),
                                   f": in the plan of {', '.join(c.owners)}"))
        lines.append(Text(f"  undo: {c.undo}", style="dim"))
    return Panel(Group(*lines), title=Text("What cannot be undone", style="bold red"),
                 title_align="left", border_style="red")


def _app(section: AppSection) -> Iterable[RenderableType]:
    colour = _STATUS_STYLES.get(section.status, "")
    yield Rule(Text.assemble((section.name, "bold"), "  ",
                             (section.status_label, f"bold {colour}")), align="left", style=colour)
    for line in _app_body(section):
        yield Padding(line, (0, 0, 0, 2))


def _app_body(section: AppSection) -> Iterable[RenderableType]:
    yield Text(f"{section.kind} in {section.resource_group}, subscription "
               f"{section.subscription_id}", style="dim")
    for b in section.blocked:
        yield Text.assemble(("blocked: ", "bold red"), (b.title, "red"), f" ({b.code}): ",
                            b.message)
    if section.identity:
        yield Text.assemble(("signs in as ", "bold"), section.identity, ": ",
                            (section.identity_reason or "", "dim"))
    if section.findings:
        yield Text.assemble(("credentials found (names only): ", "bold"), ", ".join(
            f.setting + (f" (hint {f.hint})" if f.hint else "") + f" [{f.kind}]"
            for f in section.findings))
    for d in section.decisions:
        yield Text.assemble(("decision: ", "bold"), d.topic, f": {d.choice}: ", (d.reason, "dim"))
    if not section.stages:
        yield Text("No steps: " + ("blocked." if section.blocked else "nothing to migrate."),
                   style="italic")
    for stage in section.stages:
        yield _stage_table(stage, f"{stage.number}. {stage.title}")


def _stage_table(stage: StageView, title: str) -> RenderableType:
    parts: list[RenderableType] = [Text(title, style="bold")]
    parts += [Text.assemble(("  held: ", "bold yellow"), reason) for reason in stage.held]
    if not stage.steps:
        return Group(*parts, Text("  No steps.", style="dim"))
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("step", overflow="fold", ratio=3)
    table.add_column("undo", overflow="fold", ratio=2)
    for n, step in enumerate(stage.steps, start=1):
        what = Text(step.title)
        for line in step.details:
            what.append(f"\n• {line}", style="dim")
        if step.shared_with:
            what.append(f"\n• the same change is in the plan of {', '.join(step.shared_with)}: "
                        "undo leaves it while they need it", style="dim")
        what.append(f"\n{step.id}", style="dim cyan")
        undo = (Text.assemble(("⚠ IRREVERSIBLE: ", "bold red"), step.undo) if not step.reversible
                else Text(step.undo))
        table.add_row(Text(str(n)), what, undo)
    return Group(*parts, table)
