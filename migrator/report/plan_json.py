"""A plan's report as JSON for machines: dashboards, change tickets, a pipeline gate.

The plan file itself is JSON too, but it is the executor's input: every parameter, digests,
salts. This is the reviewer's view of it in a small stable shape (`schema_version` "1"): the
summary, each app's status and reasons, its stages' steps with whether each can be undone, the
principals and the scan's gaps. Like the plan, it holds names, ids and Entra hints, never a
secret value.
"""

from __future__ import annotations

import json
from typing import Any

from migrator.plan.model import STAGES, AppPlan, Plan, StagePlan
from migrator.report.plan_view import blocked_title, irreversible_changes, undo_text
from migrator.untrusted import json_visible

SCHEMA_VERSION = "1"


def _stage(stage: StagePlan) -> dict[str, Any]:
    return {"held": list(stage.held),
            "steps": [{"id": s.id, "title": s.title, "kind": s.params.kind,
                       "reversible": s.undo.reversible, "undo": undo_text(s),
                       "shared_with": list(s.shared_with)} for s in stage.steps]}


def _app(app: AppPlan, identity_names: dict[str, str]) -> dict[str, Any]:
    identity: dict[str, Any] | None = None
    if app.identity is not None:
        key = app.identity.identity
        identity = {"type": app.identity.type,
                    "name": identity_names.get(key, key) if key else None,
                    "reason": app.identity.reason}
    by_stage = {s.stage: s for s in app.stages}
    return {
        "name": app.name,
        "site_id": app.site_id,
        "status": app.status.value,
        "blocked": [{"code": b.code.value, "title": blocked_title(b.code), "message": b.message}
                    for b in app.blocked],
        "identity": identity,
        "principals": list(app.principals),
        "settings": [f.setting for f in app.findings],
        "stages": {stage.value: _stage(by_stage[stage]) for stage in STAGES
                   if stage in by_stage},
        "digest": app.digest,
    }


def render(plan: Plan) -> str:
    """The report document, indented, with a trailing newline."""
    identity_names = {i.key: i.name for i in plan.identities}
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "plan": plan.name,
        "created_at": plan.created_at,
        "tool_version": plan.tool_version,
        "tenant_id": plan.tenant_id,
        "scan_complete": plan.scan_complete,
        "plan_digest": plan.digest,
        "summary": plan.summary.model_dump(mode="json"),
        "irreversible": [{"what": c.what, "key_id": c.key_id, "hint": c.hint,
                          "apps": list(c.owners), "steps": list(c.step_ids), "undo": c.undo}
                         for c in irreversible_changes(plan)],
        "apps": [_app(app, identity_names) for app in plan.apps],
        "identities": [{"name": i.name, "resource_id": i.resource_id, "location": i.location,
                        "used_by": list(i.used_by), "principals": list(i.principals),
                        "reason": i.reason} for i in plan.identities],
        "principals": [{"app_id": p.app_id, "name": p.name, "object_id": p.object_id,
                        "used_by": list(p.used_by),
                        "credentials_removed": list(p.credentials_removed),
                        "other_valid_credentials": list(p.other_valid_credentials),
                        "cleanup": _stage(p.cleanup)} for p in plan.principals],
        "gaps": [g.model_dump(mode="json") for g in plan.gaps],
        "operator_rights": plan.operator_rights.model_dump(mode="json")
        if plan.operator_rights is not None else None,
    }
    return json_visible(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"
