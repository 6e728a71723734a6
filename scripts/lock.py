"""The dependency locks in requirements/: how `make lock` writes them and how they are checked against pyproject.toml.

Three locks, every version pinned with its hashes, for Python 3.11 on Linux x86_64 (the CI machine and the image):
- `dev.lock`: runtime + the `dev` extra + the build backend (`make` installs from it),
- `runtime.lock`: the runtime dependencies alone,
- `image.lock`: runtime + the `flower` extra + the build backend (the Dockerfile installs from it).
`runtime.lock` and `image.lock` are compiled with `dev.lock` as a constraint: a package has one version in all three.
Each lock starts with a digest of pyproject's dependency lists, so a pyproject edited without `make lock` is caught
offline (tests/test_lock.py and `make lock-check` both call `problems`).

Usage, from the repository root (pip-compile from pip-tools on PATH or given with --pip-compile):
    python scripts/lock.py lock [--upgrade] [--pip-compile PATH]
    python scripts/lock.py check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO / "requirements"
DIGEST_PREFIX = "# pyproject-deps-sha256: "
LOCKED_PYTHON = (3, 11)


@dataclass(frozen=True)
class Lock:
    """One lock file: which extras of pyproject it holds and whether it also pins the build backend."""

    name: str
    extras: tuple[str, ...]
    build_deps: bool
    constrained_by_dev: bool

    def path(self, requirements: Path = REQUIREMENTS) -> Path:
        return requirements / f"{self.name}.lock"


# dev first: the other two are compiled against it.
LOCKS = (
    Lock("dev", ("dev",), build_deps=True, constrained_by_dev=False),
    Lock("runtime", (), build_deps=False, constrained_by_dev=True),
    Lock("image", ("flower",), build_deps=True, constrained_by_dev=True),
)


def read_pyproject(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        data: dict[str, Any] = tomllib.load(handle)
    return data


def deps_digest(pyproject: dict[str, Any]) -> str:
    """sha256 of every dependency list pyproject declares (runtime, all extras, build-system), order-insensitive."""
    project = pyproject["project"]
    lists = {
        "dependencies": sorted(project.get("dependencies", [])),
        "optional-dependencies": {k: sorted(v) for k, v in sorted(project.get("optional-dependencies", {}).items())},
        "build-system": sorted(pyproject.get("build-system", {}).get("requires", [])),
    }
    return hashlib.sha256(json.dumps(lists, sort_keys=True).encode()).hexdigest()


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


@dataclass(frozen=True)
class LockFile:
    digest: str | None
    pins: dict[str, str]  # canonical name -> version
    unhashed: tuple[str, ...]  # names pinned without a --hash


def parse_lock(text: str) -> LockFile:
    """The pins of a pip-compile lock; a pin's hashes are on the continuation lines that follow it."""
    digest = None
    pins: dict[str, str] = {}
    hashed: set[str] = set()
    current: str | None = None
    for line in text.splitlines():
        if line.startswith(DIGEST_PREFIX):
            digest = line.removeprefix(DIGEST_PREFIX).strip()
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = match.group(2)
        elif stripped.startswith("--hash=") and current is not None:
            hashed.add(current)
    return LockFile(digest, pins, tuple(sorted(set(pins) - hashed)))


def _requirements_of(pyproject: dict[str, Any], lock: Lock) -> list[str]:
    project = pyproject["project"]
    wanted = list(project.get("dependencies", []))
    for extra in lock.extras:
        wanted += project["optional-dependencies"][extra]
    if lock.build_deps:
        wanted += pyproject["build-system"]["requires"]
    return wanted


def problems(pyproject_path: Path = REPO / "pyproject.toml", requirements: Path = REQUIREMENTS) -> list[str]:
    """Every way the locks disagree with pyproject; empty when they agree. Offline: reads files only."""
    pyproject = read_pyproject(pyproject_path)
    digest = deps_digest(pyproject)
    # Markers are judged for the locked target, whatever interpreter runs the check.
    major, minor = LOCKED_PYTHON
    environment = {"python_version": f"{major}.{minor}", "python_full_version": f"{major}.{minor}.0"}
    environment |= {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    environment |= {"os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    found: list[str] = []
    for lock in LOCKS:
        path = lock.path(requirements)
        if not path.exists():
            found.append(f"{path.name}: missing (run `make lock`)")
            continue
        parsed = parse_lock(path.read_text(encoding="utf-8"))
        if parsed.digest != digest:
            found.append(f"{path.name}: written for other pyproject dependencies (run `make lock`)")
        found += [f"{path.name}: {name} has no --hash" for name in parsed.unhashed]
        for text in _requirements_of(pyproject, lock):
            requirement = Requirement(text)
            if requirement.marker is not None and not requirement.marker.evaluate(environment):
                continue
            name = canonicalize_name(requirement.name)
            version = parsed.pins.get(name)
            if version is None:
                found.append(f"{path.name}: {requirement.name} is not pinned")
            elif not requirement.specifier.contains(version, prereleases=True):
                found.append(f"{path.name}: {name}=={version} does not satisfy {text!r}")
    return found


def _stamp(path: Path, digest: str) -> None:
    """Put the digest line first, replacing an older one (pip-compile keeps the rest of the file's comments)."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith(DIGEST_PREFIX)]
    path.write_text(DIGEST_PREFIX + digest + "\n" + "\n".join(lines) + "\n", encoding="utf-8")


def compile_locks(pip_compile: str, upgrade: bool) -> None:
    if sys.version_info[:2] != LOCKED_PYTHON or platform.system() != "Linux" or platform.machine() != "x86_64":
        sys.exit("the locks are for Python {}.{} on Linux x86_64: run `make lock` there".format(*LOCKED_PYTHON))
    pyproject_path = REPO / "pyproject.toml"
    digest = deps_digest(read_pyproject(pyproject_path))
    REQUIREMENTS.mkdir(exist_ok=True)
    # Options that would write this machine's pip configuration (local wheel folders, mirrors) into the file stay out.
    common = ["--quiet", "--generate-hashes", "--allow-unsafe", "--strip-extras"]
    common += ["--no-emit-index-url", "--no-emit-find-links", "--no-emit-trusted-host", "--no-emit-options"]
    if upgrade:
        common.append("--upgrade")
    env = os.environ | {"CUSTOM_COMPILE_COMMAND": "make lock"}
    for lock in LOCKS:
        command = [pip_compile, *common, "--output-file", str(lock.path().relative_to(REPO))]
        command += [f"--extra={extra}" for extra in lock.extras]
        if lock.build_deps:
            command += ["--build-deps-for=wheel"]
        if lock.constrained_by_dev:
            command += ["--constraint", str(LOCKS[0].path().relative_to(REPO))]
        command.append("pyproject.toml")
        print("+", " ".join(command), flush=True)
        subprocess.run(command, cwd=REPO, env=env, check=True)
        _stamp(lock.path(), digest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    lock = sub.add_parser("lock", help="(re)write the locks with pip-compile; existing pins are kept unless --upgrade")
    lock.add_argument("--upgrade", action="store_true", help="move every pin to the newest version pyproject allows")
    lock.add_argument("--pip-compile", default="pip-compile", help="the pip-compile executable (pip-tools)")
    sub.add_parser("check", help="fail when the locks disagree with pyproject.toml (offline)")
    args = parser.parse_args(argv)
    if args.command == "lock":
        compile_locks(args.pip_compile, args.upgrade)
    found = problems()
    for line in found:
        print(f"lock: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
