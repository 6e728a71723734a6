"""The dependency locks in requirements/ agree with pyproject.toml: every requirement pinned, hashed, and relocked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scripts.lock import LOCKS, REPO, deps_digest, parse_lock, problems, read_pyproject


@pytest.fixture
def spoilable(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of pyproject.toml and the locks to spoil."""
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(REPO / "requirements", tmp_path / "requirements")
    return tmp_path / "pyproject.toml", tmp_path / "requirements"


def test_the_locks_agree_with_pyproject() -> None:
    assert problems() == [], "run `make lock` (requirements/README.md)"


def test_the_image_lock_holds_no_development_tool() -> None:
    pins = parse_lock((REPO / "requirements" / "image.lock").read_text(encoding="utf-8")).pins
    tools = {"pytest", "mypy", "ruff", "hypothesis", "schemathesis", "playwright", "pyinstrument", "pytest-xdist"}
    assert tools & set(pins) == set()
    assert "flower" in pins


def test_one_package_has_one_version_in_every_lock() -> None:
    seen: dict[str, set[str]] = {}
    for lock in LOCKS:
        for name, version in parse_lock(lock.path().read_text(encoding="utf-8")).pins.items():
            seen.setdefault(name, set()).add(version)
    assert {name: versions for name, versions in seen.items() if len(versions) > 1} == {}


def test_a_dependency_edited_without_relocking_is_caught(spoilable: tuple[Path, Path]) -> None:
    pyproject, requirements = spoilable
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('"redis>=5.0",', '"redis>=5.0,<9",'), encoding="utf-8")
    assert deps_digest(read_pyproject(pyproject)) != deps_digest(read_pyproject(REPO / "pyproject.toml"))
    found = problems(pyproject, requirements)
    assert len(found) == len(LOCKS)
    assert all("written for other pyproject dependencies" in line for line in found)


def test_a_pin_outside_the_specifier_is_caught(spoilable: tuple[Path, Path]) -> None:
    pyproject, requirements = spoilable
    dev = requirements / "dev.lock"
    pinned = parse_lock(dev.read_text(encoding="utf-8")).pins["httpx"]
    dev.write_text(dev.read_text(encoding="utf-8").replace(f"httpx=={pinned} ", "httpx==0.20.0 "), encoding="utf-8")
    assert problems(pyproject, requirements) == ["dev.lock: httpx==0.20.0 does not satisfy 'httpx>=0.27'"]


def test_a_missing_pin_is_caught(spoilable: tuple[Path, Path]) -> None:
    pyproject, requirements = spoilable
    image = requirements / "image.lock"
    lines = image.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("flower=="))
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith(" "))
    image.write_text("\n".join(lines[:start] + lines[end:]) + "\n", encoding="utf-8")
    assert problems(pyproject, requirements) == ["image.lock: flower is not pinned"]


def test_a_pin_without_a_hash_is_caught() -> None:
    text = "# pyproject-deps-sha256: abc\nalpha==1.0 \\\n    --hash=sha256:00\n    # via x\nbeta==2.0\n"
    parsed = parse_lock(text)
    assert (parsed.digest, parsed.pins, parsed.unhashed) == ("abc", {"alpha": "1.0", "beta": "2.0"}, ("beta",))
