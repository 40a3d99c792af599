"""A plan's integrity: digests that make a hand edit visible, and the one way to load a plan.

The digest of an app's section covers every step and parameter in it; the plan's digest covers
everything, the app digests included. Editing a step without recomputing both is refused, so
what `apply` runs is what was reviewed. (A digest is not a signature: someone who means to
forge a plan can recompute it. It catches edits and corruption, not attacks.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from migrator.plan.model import AppPlan, Plan
from migrator.untrusted import json_visible


class PlanError(Exception):
    """A plan file that cannot be used: unreadable, not a plan, or edited after planning."""


def _digest(document: dict[str, Any]) -> str:
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def app_digest(app: AppPlan) -> str:
    return _digest(app.model_dump(mode="json", exclude={"digest"}))


def plan_digest(plan: Plan) -> str:
    return _digest(plan.model_dump(mode="json", exclude={"digest"}))


def seal(plan: Plan) -> Plan:
    """The plan with every digest filled in."""
    apps = tuple(a.model_copy(update={"digest": app_digest(a)}) for a in plan.apps)
    sealed = plan.model_copy(update={"apps": apps})
    return sealed.model_copy(update={"digest": plan_digest(sealed)})


def integrity_problems(plan: Plan) -> list[str]:
    """What was changed since the plan was sealed (empty: nothing)."""
    problems = [f"app {a.name}: its steps were edited after planning (digest mismatch)"
                for a in plan.apps if a.digest != app_digest(a)]
    if plan.digest != plan_digest(plan):
        problems.append("the plan was edited after planning (digest mismatch)")
    return problems


def dump_plan(plan: Plan) -> str:
    return json_visible(plan.model_dump_json(indent=2)) + "\n"


def parse_plan(text: str, source: str = "plan") -> Plan:
    """Parse, validate against the schema and check integrity; one-line PlanError otherwise."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanError(f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: "
                        f"{exc.msg})") from None
    if not isinstance(document, dict):
        raise PlanError(f"{source}: not a plan (expected a JSON object)")
    version = document.get("schema_version")
    if version != "1":
        raise PlanError(f"{source}: schema_version {version!r} is not supported (expected '1')")
    try:
        plan = Plan.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise PlanError(f"{source}: does not match the plan schema at {where}: "
                        f"{first['msg']}{more}") from None
    problems = integrity_problems(plan)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise PlanError(f"{source}: {problems[0]}{more}; make a new plan with `migrator plan` "
                        "instead of editing one")
    return plan


def load_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path}: not UTF-8 text") from None
    return parse_plan(text, str(path))
