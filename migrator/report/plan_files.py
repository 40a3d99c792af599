"""Writing a plan and its report files: `plans/<name>.json`, `.md` and `.html` beside it.

Each file is written to a temporary name and renamed into place, so a crash never leaves half
a plan. An existing plan is not replaced unless asked: a plan may already be in use by `apply`,
whose journal refers to its steps.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from migrator.plan import Plan, dump_plan
from migrator.report import plan_html, plan_markdown

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class PlanFileError(Exception):
    """A plan name or directory that cannot be used."""


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.endswith((".json", ".md", ".html")):
        raise PlanFileError(f"plan name {name!r}: use letters, digits, '.', '_' and '-' "
                            "(up to 100), without an extension")
    return name


def plan_paths(directory: Path, name: str) -> tuple[Path, Path, Path]:
    check_name(name)
    return (directory / f"{name}.json", directory / f"{name}.md", directory / f"{name}.html")


def write_plan_files(plan: Plan, directory: Path, *, overwrite: bool = False
                     ) -> tuple[Path, Path, Path]:
    """Write the plan and its Markdown and HTML reports; returns their paths."""
    paths = plan_paths(directory, plan.name)
    if not overwrite and paths[0].exists():
        raise PlanFileError(f"{paths[0]} exists already (it may be in use by `migrator "
                            "apply`); choose another --name, or pass --overwrite")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for path, text in zip(paths, (dump_plan(plan), plan_markdown.render(plan),
                                      plan_html.render(plan)), strict=True):
            _atomic_write(path, text)
    except OSError as exc:
        raise PlanFileError(f"{directory}: cannot write the plan: {exc.strerror or exc}"
                            ) from None
    return paths


def _atomic_write(path: Path, text: str) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # a plan and its reports hold no secret: shareable
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
