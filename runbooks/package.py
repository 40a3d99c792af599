"""Build the wheel set that the runbook's Azure Automation runtime environment imports.

Azure Automation runs Python runbooks on CPython 3.10 in a Linux x86_64 sandbox with nothing
preinstalled, and it imports packages one wheel at a time: it neither builds sdists nor
resolves dependencies. So this command produces the whole closure up front, as wheels that the
sandbox can load, and refuses anything else:

    python runbooks/package.py --dest DIR [--dry-run] [--clean] [--with-sim-deps]

1. `pip wheel --no-deps .` builds the project's own (pure Python) wheel.
2. `pip download --only-binary=:all: --platform manylinux… --python-version 3.10 …` fetches
   every dependency of the runbook for the sandbox's platform, whatever machine runs this.
   pip evaluates environment markers against the interpreter running it, not the target
   (pypa/pip#11198), so on Python 3.11+ it silently drops 3.10-only backports such as
   `exceptiongroup; python_version < "3.11"`. The closure is therefore re-walked from the
   wheels' own metadata with 3.10 Linux markers, and whatever is missing is downloaded in
   further rounds, pinned to the versions already chosen.
3. Every file name is checked against the tags a CPython 3.10 manylinux x86_64 interpreter
   accepts (packaging.tags), because a wrong wheel only fails later, inside a scheduled job.
4. DIR/manifest.json records names, sizes and SHA-256 digests (what was uploaded is what was
   built), and DIR/wheels.parameters.json is an ARM parameters file whose `wheels` value lists
   the files, so the deployment imports exactly this set.

The simulator's server-only dependencies (starlette, uvicorn, trustme) are left out by default:
only `migrator.sim` and the Typer CLI import them, and the runbook imports neither.
`--with-sim-deps` keeps them, in case the runtime environment turns out to check the project
wheel's declared requirements.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import (
    InvalidWheelFilename,
    NormalizedName,
    canonicalize_name,
    parse_wheel_filename,
)
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# The sandbox: CPython 3.10 on glibc Linux x86_64. manylinux_2_28 is the newest policy the
# download accepts, so glibc 2.28 is the floor this set assumes of the sandbox.
PYTHON_VERSION = (3, 10)
PLATFORMS: tuple[str, ...] = (
    "manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
ABIS: tuple[str, ...] = ("cp310", "abi3", "none")
GLIBC_MINOR_MAX = 28
# PEP 508 marker values of the sandbox, for re-walking the closure (the patch level is a guess;
# no dependency of this project keys on it).
TARGET_ENVIRONMENT: dict[str, str] = {
    "implementation_name": "cpython", "implementation_version": "3.10.0", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython",
    "platform_release": "", "platform_system": "Linux", "platform_version": "",
    "python_full_version": "3.10.0", "python_version": "3.10", "sys_platform": "linux",
}
MAX_FIXUP_ROUNDS = 5

# Imported by the runbook (its state lives in Azure Storage); added unless the project
# declares them itself.
RUNBOOK_EXTRAS: tuple[str, ...] = ("azure-data-tables", "azure-storage-blob")
# Needed only to *serve* the simulated cloud (migrator.sim.server and friends).
SIM_SERVER_ONLY = frozenset(canonicalize_name(n) for n in ("starlette", "uvicorn", "trustme"))

MANIFEST = "manifest.json"
PARAMETERS = "wheels.parameters.json"


class PackagingError(Exception):
    """The wheel set cannot be built or is not fit for the sandbox; the message says why."""


class BadInputError(PackagingError):
    """The command line or the project files are wrong (exit code 2)."""


@dataclass(frozen=True)
class WheelFile:
    """One produced wheel as the manifest records it."""

    name: str
    size: int
    sha256: str


def _sandbox_platforms() -> list[str]:
    """Every platform tag a glibc ≤ 2.28 x86_64 pip accepts, newest first, the legacy
    aliases included (manylinux2014 = 2_17, manylinux2010 = 2_12, manylinux1 = 2_5)."""
    platforms = [f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR_MAX, 4, -1)]
    return [*platforms, "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]


def sandbox_tags() -> frozenset[Tag]:
    """The wheel tags CPython 3.10 on manylinux x86_64 installs: cp310 and older abi3
    builds for the platform, py3 builds for it, and pure (`any`) wheels."""
    platforms = _sandbox_platforms()
    tags = set(cpython_tags(PYTHON_VERSION, abis=["cp310"], platforms=platforms))
    tags.update(compatible_tags(PYTHON_VERSION, interpreter="cp310", platforms=platforms))
    return frozenset(tags)


_SANDBOX_TAGS = sandbox_tags()


def is_sandbox_wheel(filename: str) -> bool:
    """Whether the sandbox can import this file: a wheel with at least one accepted tag.
    Anything else (sdists, cp311, Windows, macOS, musllinux, aarch64) is refused."""
    try:
        _name, _version, _build, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    return not tags.isdisjoint(_SANDBOX_TAGS)


def runbook_requirements(pyproject: Path, *, with_sim_deps: bool = False) -> list[str]:
    """The runbook's requirements: the project's own dependencies (minus the simulator's
    server-only ones unless asked) plus the storage SDKs the runbook alone imports."""
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        declared = [str(item) for item in project["dependencies"]]
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise BadInputError(f"{pyproject}: no readable [project.dependencies] ({exc})") from None
    requirements: list[str] = []
    names: set[NormalizedName] = set()
    for text in [*declared, *RUNBOOK_EXTRAS]:
        try:
            name = canonicalize_name(Requirement(text).name)
        except InvalidRequirement as exc:
            raise BadInputError(f"{pyproject}: bad requirement {text!r}: {exc}") from None
        if (name in SIM_SERVER_ONLY and not with_sim_deps) or name in names:
            continue  # an extra the project already declares keeps the project's specifier
        names.add(name)
        requirements.append(text)
    return requirements


def build_command(python: str, project: Path, dest: Path) -> list[str]:
    """pip run 1: the project's own wheel, without its dependencies (pip download fetches
    those for the sandbox's platform, not this machine's)."""
    return [python, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(dest), str(project)]


def download_command(python: str, dest: Path, requirements: Sequence[str],
                     constraints: Path | None = None) -> list[str]:
    """pip run 2 (and each fix-up round): binary wheels only, resolved for CPython 3.10 on
    manylinux x86_64 by the --platform/--python-version/--implementation/--abi flags."""
    command = [python, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:"]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    command += ["--python-version", ".".join(str(p) for p in PYTHON_VERSION),
                "--implementation", "cp"]
    for abi in ABIS:
        command += ["--abi", abi]
    if constraints is not None:
        command += ["--constraint", str(constraints)]
    return command + list(requirements)


def pip_commands(python: str, project: Path, dest: Path,
                 requirements: Sequence[str]) -> list[list[str]]:
    """The two pip runs every build makes (fix-up rounds come on top, when needed)."""
    return [build_command(python, project, dest), download_command(python, dest, requirements)]


@dataclass(frozen=True)
class Distribution:
    """A downloaded wheel's name, version and declared requirements (from its METADATA)."""

    name: NormalizedName
    version: Version
    requires: tuple[Requirement, ...]


def read_distributions(wheel_dir: Path) -> dict[NormalizedName, Distribution]:
    """Read each wheel's METADATA: the closure is re-walked from what was really fetched."""
    found: dict[NormalizedName, Distribution] = {}
    for path in sorted(wheel_dir.glob("*.whl")):
        name, version, _build, _tags = parse_wheel_filename(path.name)
        try:
            with zipfile.ZipFile(path) as archive:
                member = next(m for m in archive.namelist()
                              if m.count("/") == 1 and m.endswith(".dist-info/METADATA"))
                text = archive.read(member).decode("utf-8")
            message = Parser().parsestr(text, headersonly=True)
            requires = tuple(Requirement(r) for r in message.get_all("Requires-Dist") or [])
        except (OSError, StopIteration, zipfile.BadZipFile, UnicodeDecodeError,
                InvalidRequirement) as exc:
            raise PackagingError(f"{path.name}: unreadable wheel metadata ({exc!r})") from None
        found[name] = Distribution(name, version, requires)
    return found


def _applies(requirement: Requirement, extra: str) -> bool:
    """Whether the sandbox installs this requirement, for a dependent asked with `extra`."""
    marker = requirement.marker
    return marker is None or marker.evaluate({**TARGET_ENVIRONMENT, "extra": extra})


def missing_requirements(roots: Sequence[str],
                         available: dict[NormalizedName, Distribution]) -> list[str]:
    """Walk the closure from `roots` with the sandbox's markers and return, marker-free, the
    requirements that no available wheel provides. A wheel whose version breaks a
    specifier is an error: adding wheels cannot repair it."""
    queue: list[tuple[Requirement, str]] = [(Requirement(text), "") for text in roots]
    walked: set[tuple[NormalizedName, str]] = set()
    missing: dict[NormalizedName, Requirement] = {}
    while queue:
        requirement, context_extra = queue.pop()
        if not _applies(requirement, context_extra):
            continue
        name = canonicalize_name(requirement.name)
        dist = available.get(name)
        if dist is None:
            if name in missing:  # merge what several dependents ask of it
                missing[name].specifier &= requirement.specifier
                missing[name].extras |= requirement.extras
            else:
                missing[name] = Requirement(str(requirement).split(";", 1)[0])
            continue
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise PackagingError(f"{dist.name} {dist.version} does not satisfy "
                                 f"{requirement} (as CPython 3.10 on Linux evaluates it)")
        for extra in ("", *sorted(canonicalize_name(e) for e in requirement.extras)):
            if (name, extra) not in walked:
                walked.add((name, extra))
                queue.extend((dependency, extra) for dependency in dist.requires)
    return sorted(str(r) for r in missing.values())


def complete_closure(python: str, dest: Path, roots: Sequence[str]) -> None:
    """Download, in rounds pinned to the versions already chosen, what pip skipped because
    it judged markers by this interpreter instead of CPython 3.10."""
    for _round in range(MAX_FIXUP_ROUNDS):
        available = read_distributions(dest)
        missing = missing_requirements(roots, available)
        if not missing:
            return
        print(f"pip left out {len(missing)} requirement(s) that CPython 3.10 needs: "
              + ", ".join(missing), flush=True)
        with tempfile.TemporaryDirectory(prefix="runbook-pins-") as scratch:
            pins = Path(scratch) / "constraints.txt"
            pins.write_text("".join(f"{d.name}=={d.version}\n" for d in available.values()),
                            encoding="utf-8")
            _run(download_command(python, dest, missing, constraints=pins))
    missing = missing_requirements(roots, read_distributions(dest))
    if missing:
        raise PackagingError(f"still missing after {MAX_FIXUP_ROUNDS} rounds: "
                             + ", ".join(missing))


def _run(command: Sequence[str]) -> None:
    print("+ " + shlex.join(command), flush=True)
    completed = subprocess.run(command, check=False)  # noqa: S603 - our own argv
    if completed.returncode != 0:
        raise PackagingError(f"pip {command[3]} exited with {completed.returncode}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_wheels(names: Iterable[str]) -> None:
    """Refuse a set the runtime environment could not import: a non-wheel or a wheel for
    another interpreter or platform, or two wheels of one distribution (the template names
    each package after its distribution, so they would collide)."""
    names = sorted(names)
    unfit = [n for n in names if not is_sandbox_wheel(n)]
    if unfit:
        raise PackagingError("not a CPython 3.10 manylinux x86_64 wheel: " + ", ".join(unfit))
    seen: dict[str, str] = {}
    for name in names:
        dist = str(parse_wheel_filename(name)[0])
        if dist in seen:
            raise PackagingError(f"two wheels of {dist}: {seen[dist]} and {name}")
        seen[dist] = name


def write_manifest(dest: Path) -> list[WheelFile]:
    """Check DEST's files and record them: manifest.json for whoever uploads (sizes and
    digests to compare with the blobs), wheels.parameters.json for the deployment."""
    files = sorted(p for p in dest.iterdir() if p.name not in (MANIFEST, PARAMETERS))
    check_wheels(p.name for p in files)
    wheels = [WheelFile(p.name, p.stat().st_size, _sha256(p)) for p in files]
    manifest = {
        "python": "cp310",
        "platforms": list(PLATFORMS),
        "count": len(wheels),
        "total_bytes": sum(w.size for w in wheels),
        "wheels": [{"name": w.name, "size": w.size, "sha256": w.sha256} for w in wheels],
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    parameters = {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/"
                   "deploymentParameters.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {"wheels": {"value": [w.name for w in wheels]}},
    }
    (dest / PARAMETERS).write_text(json.dumps(parameters, indent=2) + "\n", encoding="utf-8")
    return wheels


def _prepare(dest: Path, *, clean: bool) -> None:
    """DEST must hold only this run's wheels: a stale wheel would be uploaded and imported
    beside its newer version."""
    if dest.exists() and not dest.is_dir():
        raise BadInputError(f"{dest} is not a directory")
    leftovers = sorted(dest.iterdir()) if dest.exists() else []
    if leftovers and not clean:
        raise BadInputError(f"{dest} is not empty ({len(leftovers)} entries); "
                            "use --clean to empty it first")
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    dest.mkdir(parents=True, exist_ok=True)


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} MiB"  # pragma: no cover - the loop always returns


def build(dest: Path, *, dry_run: bool, clean: bool, with_sim_deps: bool,
          python: str = sys.executable, project: Path = PROJECT_ROOT) -> list[WheelFile]:
    """Run (or, dry, print) the pip commands and check and record what they produced."""
    requirements = runbook_requirements(project / "pyproject.toml", with_sim_deps=with_sim_deps)
    commands = pip_commands(python, project, dest, requirements)
    if dry_run:
        for command in commands:
            print(shlex.join(command))
        print("# then, only if pip left out requirements that CPython 3.10 needs: the same "
              "download with --constraint <versions chosen> and those requirements")
        return []
    _prepare(dest, clean=clean)
    for command in commands:
        _run(command)
    complete_closure(python, dest, requirements)
    wheels = write_manifest(dest)
    width = max(len(w.name) for w in wheels)
    for wheel in wheels:
        print(f"{wheel.name:<{width}}  {_human(wheel.size):>10}")
    total = sum(w.size for w in wheels)
    print(f"{len(wheels)} wheels, {_human(total)} ({total} bytes) in {dest}; "
          f"{MANIFEST} and {PARAMETERS} written")
    return wheels


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: 0 built, 1 a pip run failed or a wheel is unfit, 2 bad input."""
    parser = argparse.ArgumentParser(
        prog="package.py", description=__doc__.split("\n\n", 1)[0] if __doc__ else None)
    parser.add_argument("--dest", required=True, type=Path, help="directory for the wheels")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the pip commands without running them")
    parser.add_argument("--clean", action="store_true",
                        help="empty DEST first (by default a non-empty DEST is refused)")
    parser.add_argument("--with-sim-deps", action="store_true",
                        help="keep starlette, uvicorn and trustme (the simulator's server)")
    args = parser.parse_args(argv)
    try:
        build(args.dest.resolve(), dry_run=args.dry_run, clean=args.clean,
              with_sim_deps=args.with_sim_deps)
    except BadInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PackagingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
