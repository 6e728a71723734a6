"""The soak is long: it runs with `make soak` (`pytest tests/soak -m soak`) or WAVESYNC_SOAK=1, never in `make test`."""

from __future__ import annotations

import os

import pytest

from tests.convergence.conftest import boxes, running

__all__ = ["boxes", "running"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: a long randomised run; `make soak` runs it, `make test` does not")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    asked = "soak" in (config.getoption("markexpr", "") or "") or os.environ.get("WAVESYNC_SOAK") == "1"
    if asked:
        return
    skip = pytest.mark.skip(reason="the soak runs with `make soak` (pytest tests/soak -m soak)")
    for item in items:
        if item.get_closest_marker("soak"):
            item.add_marker(skip)
