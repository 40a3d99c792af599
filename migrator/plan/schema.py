"""The published JSON Schema of a plan (`plans/plan.schema.json`), generated from the models.

Reviewers and other tools validate plans against the file; a test keeps it equal to what the
models generate, so the two cannot drift. Regenerate with `python -m migrator.plan.schema`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from migrator.plan.model import Plan

SCHEMA_ID = "https://msi-migrator.invalid/schemas/plan-1.json"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "plans" / "plan.schema.json"


def plan_schema() -> dict[str, Any]:
    schema = Plan.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema}


def schema_text() -> str:
    return json.dumps(plan_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_PATH
    target.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {target}")
