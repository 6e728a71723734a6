"""The session's sandboxes, shared with the other integration suites."""

from __future__ import annotations

from tests.workers.conftest import boxes

__all__ = ["boxes"]
