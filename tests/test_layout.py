"""The layout tells the architecture: `shared/` is used by producers and workers and imports neither."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_shared_imports_neither_producers_nor_workers() -> None:
    offenders = []
    for path in sorted((REPO / "shared").rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] in {"producers", "workers", "wavesync"}:
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert offenders == []


def test_the_checker_sees_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from workers.engine import Flow\nimport producers.pollers\n")
    assert {"workers.engine", "producers.pollers"} <= imported_modules(module)


def test_producers_do_not_import_the_sync_workers() -> None:
    """Producers enqueue by task name; reconcile compares records through the entity definitions in shared/."""
    offenders = [
        f"{path.relative_to(REPO)} imports {name}"
        for path in sorted((REPO / "producers").rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] == "workers"
    ]
    assert offenders == []


def test_the_sync_decision_is_pure() -> None:
    """workers/plan.py decides without I/O: no client, store, Redis, Celery, settings loader or clock."""
    allowed = {
        "__future__",
        "collections.abc",
        "dataclasses",
        "datetime",
        "typing",
        "shared.mapping.fields",
        "shared.merge",
        "shared.messages",
        "shared.settings",
        "shared.store.link_state",
        "shared.versions",
    }
    assert imported_modules(REPO / "workers" / "plan.py") - allowed == set()


# Paths that leave the checkout: a fresh clone (or CI's) has nothing there. Built from parts so that this file does not
# match itself; the test below checks each pattern on a sample before it checks the project.
_OUTSIDE = re.compile(
    "|".join(
        [
            r"\.\./",  # a relative path up and out (code runs from the repository root)
            r"[\"']\.\.[\"']",  # Path(".."), os.path.join(x, "..")
            "/" + r"work/",  # this machine's absolute layout
            r"\b(?:REPO|REPO_ROOT|ROOT|repo_root|repo)\.parent\b",  # the folder above the checkout
        ]
    )
)
_UP_FROM_FILE = re.compile(r"__file__\)(?:\.resolve\(\))?((?:\.parent\b)+|\.parents\[(\d+)\])")


def paths_outside_the_repository(relative: Path, text: str) -> list[str]:
    """Lines of a project file (at `relative` in the repository) that name a path outside the repository."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        climbed = [
            len(chain) // len(".parent") if not index else int(index) + 1
            for chain, index in _UP_FROM_FILE.findall(line)
        ]
        # Path(__file__) climbs one folder per .parent (parents[k] is k + 1 of them): more than the file's depth is out.
        if _OUTSIDE.search(line) or any(up > len(relative.parts) for up in climbed):
            found.append(f"{relative}:{number}: {line.strip()}")
    return found


def test_no_project_file_names_a_path_outside_the_repository() -> None:
    samples = {
        "x = '..' + '/shared/reference/wave'\n": True,
        "Path('..') / 'shared'\n": True,
        "REFERENCE = '/" + "work/shared/reference'\n": True,
        "TOOLS = REPO.parent / 'shared' / 'tools'\n": True,
        "ROOT = Path(__file__).resolve().parents[2]\n": True,  # tests/x.py has only one folder above it
        "ROOT = Path(__file__).resolve().parent.parent.parent\n": True,
        "ROOT = Path(__file__).resolve().parents[1]\n": False,
        "ROOT = Path(__file__).parent.parent\n": False,
        "# see sandboxes/wave/reference/SOURCE.md\n": False,
    }
    judged = {text: bool(paths_outside_the_repository(Path("tests/x.py"), text)) for text in samples}
    assert judged == samples
    offenders = []
    roots = ["shared", "producers", "workers", "sandboxes", "wavesync", "bench", "tests", "scripts"]
    files = [path for root in roots for path in sorted((REPO / root).rglob("*.py"))]
    files += [REPO / name for name in ("Makefile", "Dockerfile", "docker-compose.yml", "pyproject.toml", ".ci/run")]
    for path in files:
        if path.exists() and path != Path(__file__).resolve():
            relative = path.relative_to(REPO)
            offenders += paths_outside_the_repository(relative, path.read_text(encoding="utf-8"))
    assert offenders == []
