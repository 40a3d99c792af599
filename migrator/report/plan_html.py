"""A plan as one self-contained HTML5 page: the report an approver opens in a browser or prints.

Inline CSS, no script, nothing fetched: the file can be mailed, attached to a change request or
opened offline and looks the same. It says what the Markdown report says (both lay out
`plan_view`), with each app in a `<details>` section that a reader can fold away.

Setting names, messages and titles come from the scanned estate, so they are untrusted text:
Jinja2 escapes every value put into the page (`autoescape=True`); nothing is marked safe (the
stylesheet is template text, inside `{% raw %}`), and `StrictUndefined` turns a misspelt field
into an error instead of an empty cell.
"""

from __future__ import annotations

import functools

from jinja2 import Environment, StrictUndefined, Template
from markupsafe import Markup

from migrator.plan.model import Plan
from migrator.report.plan_view import (
    DRY_RUN_NOTE,
    IRREVERSIBLE_NOTE,
    SECRETS_NOTE,
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
from migrator.untrusted import visible, visible_plan

_CSS = """
:root { color-scheme: light; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0;
  --soft: #f6f8fa; --red: #b42318; --red-bg: #fef3f2; --amber: #9a6700; --amber-bg: #fff8c5;
  --green: #1a7f37; --green-bg: #dafbe1; --blue: #0969da; --blue-bg: #ddf4ff; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1.5rem 2rem 3rem; color: var(--ink);
  background: #fff; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
h1 { font-size: 1.7rem; margin: 0 0 .5rem; }
h2 { font-size: 1.3rem; margin: 2rem 0 .6rem; padding-bottom: .3rem;
  border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
h4 { font-size: .98rem; margin: 1rem 0 .3rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: .87em; }
code { background: var(--soft); padding: 0 .25em; border-radius: 4px; overflow-wrap: anywhere; }
pre { background: var(--soft); padding: .6rem .8rem; border-radius: 6px; overflow-x: auto;
  white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 .8rem; }
th, td { border: 1px solid var(--line); padding: .35rem .55rem; text-align: left;
  vertical-align: top; overflow-wrap: anywhere; }
th { background: var(--soft); font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; width: 4rem; }
table.steps td.num { width: 2.5rem; }
table.steps td:last-child { width: 32%; }
table.findings td:first-child { width: 24%; }
table.findings td:nth-child(4) { width: 22%; }
table.summary td:first-child { font-weight: 600; width: 18rem; }
table.index td:first-child { white-space: nowrap; }
.note { color: var(--muted); margin: .2rem 0; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .8rem 0; }
.facts dt { color: var(--muted); }
.facts dd { margin: 0; }
.callout { border-left: 4px solid var(--blue); background: var(--blue-bg); padding: .6rem .9rem;
  border-radius: 0 6px 6px 0; margin: .6rem 0; }
.callout.danger { border-color: var(--red); background: var(--red-bg); }
.callout.warning { border-color: var(--amber); background: var(--amber-bg); }
.badge { display: inline-block; padding: 0 .5em; border-radius: 1em; font-size: .82rem;
  font-weight: 600; border: 1px solid currentColor; white-space: nowrap; }
.badge.migratable { color: var(--green); background: var(--green-bg); }
.badge.blocked { color: var(--red); background: var(--red-bg); }
.badge.advisory { color: var(--amber); background: var(--amber-bg); }
.irreversible { color: var(--red); font-weight: 700; }
tr.irreversible-step td { background: var(--red-bg); }
.held { color: var(--amber); font-weight: 600; }
details.app { border: 1px solid var(--line); border-radius: 8px; margin: .8rem 0;
  padding: 0 1rem .6rem; }
details.app > summary { cursor: pointer; padding: .6rem 0; font-size: 1.08rem; }
details.app > summary .outcome { color: var(--muted); font-size: .9rem; margin-left: .4rem; }
details.app.blocked { border-left: 4px solid var(--red); }
details.app.advisory { border-left: 4px solid var(--amber); }
details.app.migratable { border-left: 4px solid var(--green); }
ul.details { margin: .2rem 0 0; padding-left: 1.1rem; color: var(--muted); }
.step-id { color: var(--muted); font-size: .8rem; }
footer { margin-top: 2.5rem; color: var(--muted); font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  a { color: inherit; text-decoration: none; }
  details.app { break-inside: auto; }
  details.app > summary { list-style: none; }
  tr, .callout { break-inside: avoid; }
  h2, h3, h4 { break-after: avoid; }
}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="msi-migrator {{ plan.tool_version }}">
<title>Migration plan {{ plan.name }}</title>
<style>{% raw %}""" + _CSS + """{% endraw %}</style>
</head>
<body>
{% macro codes(items, empty="none") %}
{%- for item in items %}<code>{{ item }}</code>{{ ", " if not loop.last }}
{%- else %}{{ empty }}{% endfor -%}
{% endmacro %}
{% macro stage_table(stage, heading) %}
<h4>{{ heading }}</h4>
{% for reason in stage.held %}
<p class="callout warning"><span class="held">Held:</span> {{ reason }}</p>
{% endfor %}
{% if stage.steps %}
<table class="steps" data-stage="{{ stage.stage }}">
<thead><tr><th>#</th><th>Step</th><th>Undo</th></tr></thead>
<tbody>
{% for step in stage.steps %}
<tr class="step{{ '' if step.reversible else ' irreversible-step' }}"
    data-step-id="{{ step.id }}">
<td class="num">{{ loop.index }}</td>
<td>{{ step.title }}
{% if step.details or step.shared_with %}
<ul class="details">
{% for line in step.details %}
<li>{{ line }}</li>
{% endfor %}
{% if step.shared_with %}
<li>the same change is in the plan of {{ step.shared_with | join(", ") }}:
  undo leaves it while they need it</li>
{% endif %}
</ul>
{% endif %}
{% if step.script %}
<details><summary>T-SQL (run and confirmed by an operator)</summary>
<pre><code>{{ step.script }}</code></pre>
{% if step.undo_script %}
<p>Undo:</p><pre><code>{{ step.undo_script }}</code></pre>
{% endif %}
</details>
{% endif %}
<div class="step-id"><code>{{ step.id }}</code></div>
</td>
<td>
{%- if not step.reversible %}<span class="irreversible">⚠ Irreversible:</span> {% endif -%}
{{ step.undo }}</td>
</tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p class="note">No steps.</p>
{% endif %}
{% endmacro %}

<header>
<h1>Migration plan <code>{{ plan.name }}</code></h1>
<p class="note">{{ dry_run_note }}</p>
<p class="note">{{ secrets_note }}</p>
<dl class="facts">
{% for fact in facts %}
<dt>{{ fact.label }}</dt>
<dd>{% if fact.is_id %}<code>{{ fact.value }}</code>{% else %}{{ fact.value }}{% endif %}</dd>
{% endfor %}
</dl>
{% if not plan.scan_complete %}
<p class="callout warning"><strong>The scan is incomplete</strong>
  ({{ gap_count }}, {{ unaccepted_gaps }} not accepted): rights it could not read are not in
  this plan. See <a href="#gaps">Scan gaps</a>.</p>
{% endif %}
</header>

<main>
<section id="summary">
<h2>Summary</h2>
<table class="summary">
<thead><tr><th>Figure</th><th>Count</th><th>What it counts</th></tr></thead>
<tbody>
{% for row in summary %}
<tr data-figure="{{ row.key }}"><td>{{ row.label }}</td><td class="num">{{ row.value }}</td>
  <td>{{ row.note }}</td></tr>
{% endfor %}
</tbody>
</table>
{% if reasons %}
<h3>Blocked, by reason</h3>
<ul class="reasons">
{% for r in reasons %}
<li data-code="{{ r.code }}"><strong>{{ r.title }}</strong> (<code>{{ r.code }}</code>):
  {{ plural(r.count, "app") }}: {{ codes(r.apps) }}</li>
{% endfor %}
</ul>
{% endif %}
</section>

{% if rights %}
<section id="operator-rights">
<h2>The operator's own rights</h2>
<p class="callout warning"><strong>{{ rights.title }}</strong></p>
{% if rights.lines %}
<ul class="missing-rights">
{% for line in rights.lines %}
<li>{{ line }}</li>
{% endfor %}
</ul>
{% endif %}
{% if rights.unchecked %}
<p>Not checked up front (each step is still authorized by Azure as it runs):</p>
<ul>
{% for line in rights.unchecked %}
<li>{{ line }}</li>
{% endfor %}
</ul>
{% endif %}
</section>
{% endif %}

<section id="irreversible">
<h2>What cannot be undone</h2>
{% if changes %}
<p class="callout danger"><strong>{{ irreversible_note }}</strong></p>
<ul>
{% for c in changes %}
<li><span class="irreversible">⚠ {{ c.what }}</span>: in the plan of {{ codes(c.owners) }}.
  Undo: {{ c.undo }}.</li>
{% endfor %}
</ul>
{% else %}
<p>Nothing: every step of this plan has an undo.</p>
{% endif %}
</section>

{% if held %}
<section id="held">
<h2>Held stages</h2>
<p>These wait for something beyond their own order:</p>
<ul>
{% for h in held %}
<li><code>{{ h.owner }}</code>, {{ h.stage }}: {{ h.reasons | join("; ") }}</li>
{% endfor %}
</ul>
</section>
{% endif %}

<section id="apps">
<h2>Apps</h2>
{% if apps %}
<table class="index">
<thead><tr><th>App</th><th>Status</th><th>Outcome</th></tr></thead>
<tbody>
{% for app in apps %}
<tr><td><a href="#{{ app.anchor }}"><code>{{ app.name }}</code></a></td>
  <td><span class="badge {{ app.status }}">{{ app.status_label }}</span></td>
  <td>{{ app.outcome }}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>The scan found no app holding a credential.</p>
{% endif %}

{% for app in apps %}
<details class="app {{ app.status }}" id="{{ app.anchor }}" data-app="{{ app.name }}" open>
<summary><strong>{{ app.name }}</strong>
  <span class="badge {{ app.status }}">{{ app.status_label }}</span>
  <span class="outcome">{{ app.outcome }}</span></summary>
<dl class="facts">
<dt>Kind</dt><dd><code>{{ app.kind }}</code></dd>
<dt>Resource group</dt><dd><code>{{ app.resource_group }}</code></dd>
<dt>Subscription</dt><dd><code>{{ app.subscription_id }}</code></dd>
<dt>Site</dt><dd><code>{{ app.site_id }}</code></dd>
{% if app.identity %}
<dt>Signs in as</dt><dd>{{ app.identity }}: {{ app.identity_reason }}</dd>
{% endif %}
{% if app.principals %}
<dt>Principals today</dt><dd>{{ app.principals | join(", ") }}</dd>
{% endif %}
</dl>
{% if app.blocked %}
<div class="callout danger">
<strong>Blocked:</strong>
<ul class="blocked">
{% for b in app.blocked %}
<li data-code="{{ b.code }}"><strong>{{ b.title }}</strong> (<code>{{ b.code }}</code>):
  {{ b.message }}</li>
{% endfor %}
</ul>
</div>
{% endif %}
{% if app.findings %}
<h3>Credentials found <span class="note">(names only)</span></h3>
<table class="findings">
<thead><tr><th>Setting</th><th>Where</th><th>Kind</th><th>Principal</th><th>Hint</th>
  <th>Note</th></tr></thead>
<tbody>
{% for f in app.findings %}
<tr><td><code>{{ f.setting }}</code></td><td>{{ f.where }}</td><td>{{ f.kind }} ({{ f.rule }})</td>
  <td>{{ f.principal or "-" }}</td>
  <td>{% if f.hint %}<code>{{ f.hint }}</code>{% elif f.key_vault %}vault {{ f.key_vault }}
      {%- else %}-{% endif %}</td>
  <td>{{ f.note }}</td></tr>
{% endfor %}
</tbody>
</table>
{% endif %}
{% if app.credentials %}
<h3>Matched password credentials</h3>
<ul>
{% for c in app.credentials %}
<li><code>{{ c.key_id }}</code> of {{ c.principal }}
  {%- if c.hint %}, hint <code>{{ c.hint }}</code>{% endif %}
  {%- if c.display_name %}, named <code>{{ c.display_name }}</code>{% endif %}
  {%- if c.expires %}, expires {{ c.expires }}{% endif %}</li>
{% endfor %}
</ul>
{% endif %}
{% if app.decisions %}
<h3>Decisions</h3>
<ul>
{% for d in app.decisions %}
<li>{{ d.topic }}: <strong>{{ d.choice }}</strong>: {{ d.reason }}</li>
{% endfor %}
</ul>
{% endif %}
{% for stage in app.stages %}
{{ stage_table(stage, stage.number ~ ". " ~ stage.title) }}
{% else %}
<p class="note"><em>No steps: {{ "blocked" if app.blocked else "nothing to migrate" }}.</em></p>
{% endfor %}
</details>
{% endfor %}
</section>

{% if identities %}
<section id="identities">
<h2>Identities to create</h2>
{% for i in identities %}
<h3>{{ i.name }}</h3>
<p>User-assigned, in resource group <code>{{ i.resource_group }}</code>
  ({{ i.location or "location unknown" }}), used by {{ codes(i.used_by) }},
  replacing {{ i.principals | join(", ") }}.</p>
<p>{{ i.reason }}.</p>
<p class="note">Resource: <code>{{ i.resource_id }}</code></p>
{% endfor %}
</section>
{% endif %}

{% if principals %}
<section id="principals">
<h2>Principals</h2>
{% for p in principals %}
<h3>{{ p.name }}{% if p.shared %} <span class="badge advisory">shared</span>{% endif %}</h3>
<p>App id <code>{{ p.app_id }}</code>, object id <code>{{ p.object_id or "not found" }}</code>;
  used by {{ codes(p.used_by) }}.</p>
<ul>
<li>Credentials this plan removes: {{ codes(p.credentials_removed) }}</li>
<li>Other valid credentials (kept): {{ codes(p.other_valid_credentials) }}</li>
</ul>
{{ stage_table(p.cleanup, p.cleanup.title) }}
{% endfor %}
</section>
{% endif %}

<section id="gaps">
<h2>Scan gaps</h2>
{% if plan.gaps %}
<table class="gaps">
<thead><tr><th>Scope</th><th>Operation</th><th>What happened</th><th>Accepted</th></tr></thead>
<tbody>
{% for g in plan.gaps %}
<tr><td><code>{{ g.scope }}</code></td><td>{{ g.operation }}</td><td>{{ g.message }}</td>
  <td>{% if g.accepted %}yes{% else %}<strong>no</strong>{% endif %}</td></tr>
{% endfor %}
</tbody>
</table>
{% else %}
<p>None: the scan read everything in scope.</p>
{% endif %}
</section>
</main>

<footer>msi-migrator {{ plan.tool_version }} · plan {{ plan.name }} · {{ plan.digest }}</footer>
</body>
</html>
"""


def _visible_value(value: object) -> object:
    """Every `{{ }}` output, before Jinja escapes it: untrusted text made visible (the plan
    already is; this covers any value that does not come from it)."""
    if isinstance(value, Markup):  # the template's own HTML (a macro's), values inside done
        return value
    return visible(value) if isinstance(value, str) else value


@functools.cache
def _template() -> Template:
    environment = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True,
                              finalize=_visible_value,
                              lstrip_blocks=True, keep_trailing_newline=True)
    return environment.from_string(_TEMPLATE)


def render(plan: Plan) -> str:
    """The whole report as one HTML5 document, every plan text escaped."""
    plan = visible_plan(plan)  # every text from Azure or the operator, made visible
    unaccepted = sum(1 for g in plan.gaps if not g.accepted)
    return _template().render(
        plan=plan, facts=plan_facts(plan), summary=summary_rows(plan),
        reasons=blocked_by_reason(plan), changes=irreversible_changes(plan),
        held=held_stages(plan), rights=rights_warning(plan), apps=app_sections(plan),
        identities=shared_identities(plan),
        principals=principal_views(plan), plural=plural,
        gap_count=plural(len(plan.gaps), "gap"), unaccepted_gaps=unaccepted,
        dry_run_note=DRY_RUN_NOTE, secrets_note=SECRETS_NOTE,
        irreversible_note=IRREVERSIBLE_NOTE)
