"""A plan as GitHub-flavoured Markdown: the report reviewers read in a pull request or beside the
plan file before anyone approves it.

It leads with the summary and what cannot be undone, then gives one section per app (blocked and
advisory apps too, with their reasons), then the shared identities, the principals and the scan's
gaps. Every text taken from the plan is escaped, so a setting named `<b>` or `a|b` shows as it
is and cannot break a table or inject HTML into the rendered page.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from migrator.plan.model import Plan
from migrator.report.plan_view import (
    DRY_RUN_NOTE,
    IRREVERSIBLE_NOTE,
    SECRETS_NOTE,
    AppSection,
    StageView,
    StepView,
    app_sections,
    blocked_by_reason,
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

_ESCAPED = re.compile(r"([\\`*\[\]<>|~])")
_UNDERSCORES = re.compile(r"_+")
_ENTITY = re.compile(r"&(?=#?\w+;)")


def text(value: str) -> str:
    """Plan text as literal Markdown prose, on one line.

    Backslash escapes for what GFM would read as markup; underscores only where they could
    open or close emphasis, so `AZURE_CLIENT_ID` stays readable in the raw file."""
    escaped = _ESCAPED.sub(r"\\\1", " ".join(value.split()))

    def underscores(match: re.Match[str]) -> str:
        start, end = match.span()
        inside = (start > 0 and escaped[start - 1].isalnum()
                  and end < len(escaped) and escaped[end].isalnum())
        return match.group() if inside else "\\_" * len(match.group())

    escaped = _UNDERSCORES.sub(underscores, escaped)
    escaped = _ENTITY.sub(r"\\&", escaped)  # "&lt;" stays those four characters
    if escaped[:1] in ("#", "+", "-", "=") or re.match(r"\d+[.)]", escaped):
        escaped = "\\" + escaped
    return escaped


def code(value: str) -> str:
    """Plan text as an inline code span (ids, names), on one line; `|` escaped for tables."""
    flat = " ".join(value.split())
    longest = max((len(m) for m in re.findall(r"`+", flat)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat else ""
    return f"{fence}{pad}{flat}{pad}{fence}".replace("|", "\\|")


def _fenced(body: str, info: str = "") -> list[str]:
    longest = max((len(m) for m in re.findall(r"`{3,}", body)), default=2)
    fence = "`" * (longest + 1)
    return [f"{fence}{info}", body.rstrip("\n"), fence]


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]],
           align: tuple[str, ...] = ()) -> list[str]:
    marks = [align[i] if i < len(align) else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _list(items: Sequence[str], style: Callable[[str], str] = code) -> str:
    return ", ".join(style(i) for i in items)


def render(plan: Plan) -> str:
    """The whole report as one Markdown document."""
    plan = visible_plan(plan)  # every text from Azure or the operator, made visible
    lines: list[str] = [f"# Migration plan {code(plan.name)}", ""]
    lines += [f"> {text(DRY_RUN_NOTE)}", ">", f"> {text(SECRETS_NOTE)}", ""]
    lines += _table(("", ""), [(f.label, code(f.value) if f.is_id else text(f.value))
                              for f in plan_facts(plan)])
    if not plan.scan_complete:
        unaccepted = sum(1 for g in plan.gaps if not g.accepted)
        lines += [f"> **Warning:** the scan is incomplete ({plural(len(plan.gaps), 'gap')}, "
                  f"{unaccepted} not accepted): rights it could not read are not in this "
                  "plan. See [Scan gaps](#scan-gaps).", ""]
    lines += _summary(plan)
    lines += _rights(plan)
    lines += _irreversible(plan)
    lines += _held(plan)
    lines += _index(plan)
    for section in app_sections(plan):
        lines += _app(section)
    lines += _identities(plan)
    lines += _principals(plan)
    lines += _gaps(plan)
    return "\n".join(lines).rstrip("\n") + "\n"


def _summary(plan: Plan) -> list[str]:
    lines = ["## Summary", ""]
    lines += _table(("Figure", "Count", "What it counts"),
                    [(f"**{row.label}**", str(row.value), text(row.note))
                     for row in summary_rows(plan)], ("---", "---:", "---"))
    reasons = blocked_by_reason(plan)
    if reasons:
        lines += ["### Blocked, by reason", ""]
        lines += [f"- **{text(r.title)}** ({code(r.code)}): {plural(r.count, 'app')}: "
                  f"{_list(r.apps)}" for r in reasons]
        lines.append("")
    return lines


def _irreversible(plan: Plan) -> list[str]:
    changes = irreversible_changes(plan)
    lines = ["## What cannot be undone", ""]
    if not changes:
        return [*lines, "Nothing: every step of this plan has an undo.", ""]
    lines += [f"**{text(IRREVERSIBLE_NOTE)}**", ""]
    lines += [f"- ⚠ **{text(c.what)}**: in the plan of {_list(c.owners)}. "
              f"Undo: {text(c.undo)}." for c in changes]
    return [*lines, ""]


def _rights(plan: Plan) -> list[str]:
    warning = rights_warning(plan)
    if warning is None:
        return []
    lines = ["## The operator's own rights", "", f"> **Warning:** {text(warning.title)}", ""]
    lines += [f"- {text(line)}" for line in warning.lines]
    if warning.unchecked:
        lines += ["", "Not checked up front (each step is still authorized by Azure as it "
                      "runs):", ""]
        lines += [f"- {text(line)}" for line in warning.unchecked]
    return [*lines, ""]


def _held(plan: Plan) -> list[str]:
    held = held_stages(plan)
    if not held:
        return []
    lines = ["## Held stages", "", "These wait for something beyond their own order:", ""]
    for h in held:
        lines.append(f"- {code(h.owner)}, {text(h.stage)}: "
                     + "; ".join(text(r) for r in h.reasons))
    return [*lines, ""]


def _index(plan: Plan) -> list[str]:
    sections = app_sections(plan)
    lines = ["## Apps", ""]
    if not sections:
        return [*lines, "The scan found no app holding a credential.", ""]
    return lines + _table(("App", "Status", "Outcome"), [
        (code(s.name), s.status_label, text(s.outcome)) for s in sections])


def _app(section: AppSection) -> list[str]:
    lines = [f"### {text(section.name)}: {section.status_label}", ""]
    lines += [f"Kind {code(section.kind)}, resource group {code(section.resource_group)}, "
              f"subscription {code(section.subscription_id)}  ", f"Site: {code(section.site_id)}",
              ""]
    if section.blocked:
        lines += ["**Blocked:**", ""]
        lines += [f"- **{text(b.title)}** ({code(b.code)}): {text(b.message)}"
                  for b in section.blocked]
        lines.append("")
    if section.identity:
        lines += [f"**Signs in as:** {text(section.identity)}: "
                  f"{text(section.identity_reason or '')}", ""]
    if section.principals:
        lines += [f"**Principals it signs in as today:** {_list(section.principals, text)}", ""]
    if section.findings:
        lines += ["**Credentials found** (names only):", ""]
        lines += _table(("Setting", "Where", "Kind", "Principal", "Hint", "Note"), [
            (code(f.setting), text(f.where), text(f"{f.kind} ({f.rule})"),
             text(f.principal) if f.principal else "-",
             code(f.hint) if f.hint else (text(f"vault {f.key_vault}") if f.key_vault else "-"),
             text(f.note)) for f in section.findings])
    if section.credentials:
        lines += ["**Matched password credentials:**", ""]
        lines += [f"- {code(c.key_id)} of {text(c.principal)}"
                  + (f", hint {code(c.hint)}" if c.hint else "")
                  + (f", named {code(c.display_name)}" if c.display_name else "")
                  + (f", expires {text(c.expires)}" if c.expires else "")
                  for c in section.credentials]
        lines.append("")
    if section.decisions:
        lines += ["**Decisions:**", ""]
        lines += [f"- {text(d.topic)}: **{text(d.choice)}**: {text(d.reason)}"
                  for d in section.decisions]
        lines.append("")
    if not section.stages:
        lines += [f"*No steps: {'blocked' if section.blocked else 'nothing to migrate'}.*", ""]
    for stage in section.stages:
        lines += _stage(stage, f"#### {stage.number}. {text(stage.title)}")
    return lines


def _stage(stage: StageView, heading: str) -> list[str]:
    lines = [heading, ""]
    if stage.held:
        lines += [f"> **Held:** {text(reason)}" for reason in stage.held]
        lines.append("")
    if not stage.steps:
        return [*lines, "*No steps.*", ""]
    scripts: list[StepView] = []
    rows = []
    for n, step in enumerate(stage.steps, start=1):
        what = text(step.title)
        if step.details:
            what += "<br>" + "<br>".join("• " + text(d) for d in step.details)
        if step.shared_with:
            what += ("<br>" + f"the same change is in the plan of {_list(step.shared_with)}: "
                     "undo leaves it while they need it")
        what += f"<br>{code(step.id)}"
        undo = (f"⚠ **irreversible**: {text(step.undo)}" if not step.reversible
                else text(step.undo))
        rows.append((str(n), what, undo))
        if step.script:
            scripts.append(step)
    lines += _table(("#", "Step", "Undo"), rows, ("---:", "---", "---"))
    for step in scripts:
        lines += [f"<details><summary>T-SQL for {text(step.id)}</summary>", ""]
        lines += _fenced(step.script or "", "sql")
        if step.undo_script:
            lines += ["", "Undo:", "", *_fenced(step.undo_script, "sql")]
        lines += ["", "</details>", ""]
    return lines


def _identities(plan: Plan) -> list[str]:
    identities = shared_identities(plan)
    if not identities:
        return []
    lines = ["## Identities to create", ""]
    for i in identities:
        lines += [f"### {text(i.name)}", "",
                  f"User-assigned, in resource group {code(i.resource_group)} "
                  f"({text(i.location or 'location unknown')}), used by {_list(i.used_by)}, "
                  f"replacing {_list(i.principals, text)}.", "",
                  f"{text(i.reason)}.", "", f"Resource: {code(i.resource_id)}", ""]
    return lines


def _principals(plan: Plan) -> list[str]:
    principals = principal_views(plan)
    if not principals:
        return []
    lines = ["## Principals", ""]
    for p in principals:
        lines += [f"### {text(p.name)}" + (" (shared)" if p.shared else ""), "",
                  f"App id {code(p.app_id)}, object id {code(p.object_id or 'not found')}; "
                  f"used by {_list(p.used_by)}.", ""]
        lines.append("- Credentials this plan removes: "
                     + (_list(p.credentials_removed) if p.credentials_removed else "none"))
        lines.append("- Other valid credentials (kept): "
                     + (_list(p.other_valid_credentials) if p.other_valid_credentials
                        else "none"))
        lines.append("")
        lines += _stage(p.cleanup, f"#### {text(p.cleanup.title)}")
    return lines


def _gaps(plan: Plan) -> list[str]:
    lines = ["## Scan gaps", ""]
    if not plan.gaps:
        return [*lines, "None: the scan read everything in scope.", ""]
    return lines + _table(("Scope", "Operation", "What happened", "Accepted"), [
        (code(g.scope), text(g.operation), text(g.message), "yes" if g.accepted else "**no**")
        for g in plan.gaps])

