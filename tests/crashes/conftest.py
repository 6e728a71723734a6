"""Crash tests: the deployed configuration (message leases, record-lock leases, default timeouts) after a SIGKILL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.settings import Settings
from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes", "crashable", "in_production_settings"]

# The tests harness shortens timeouts and retry delays to keep the suite fast; a crash test must prove what ships,
# so it puts every timing that recovery depends on back to its default (the message lease was never overridden).
PRODUCTION_TIMINGS = ("http_timeout", "retry_backoff_base", "retry_backoff_max", "max_retries", "task_time_limit")
# Outages of Redis or the database are not about leases: retries that come back quickly keep those tests short.
FAST_RETRIES = {
    "http_timeout": 1.0,
    "retry_backoff_base": 0.1,
    "retry_backoff_max": 1.5,
    "max_retries": 30,
    "task_time_limit": 8.0,
}


def in_production_settings() -> dict[str, object]:
    return {name: Settings.model_fields[name].default for name in PRODUCTION_TIMINGS}


@pytest.fixture
def crashable(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, **in_production_settings())
    yield system
    system.close()


@pytest.fixture
def outage_system(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, **FAST_RETRIES)
    yield system
    system.close()
