"""Inventory → Plan, pure: the reviewable document of everything a migration will do."""

from migrator.plan.integrity import PlanError, dump_plan, load_plan, parse_plan, seal
from migrator.plan.model import SCHEMA_VERSION, Plan
from migrator.plan.planner import PlanOptions, build_plan

__all__ = ["SCHEMA_VERSION", "Plan", "PlanError", "PlanOptions", "build_plan", "dump_plan",
           "load_plan", "parse_plan", "seal"]
