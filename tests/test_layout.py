"""The layout tells the architecture: `shared/` is used by producers and workers and imports neither."""

from __future__ import annotations

import ast
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
    """Pollers enqueue by task name; only reconcile reuses the flows (to compare records)."""
    for path in sorted((REPO / "producers").rglob("*.py")):
        if path.name == "reconcile.py":
            continue
        assert not any(n.startswith("workers") for n in imported_modules(path)), path
