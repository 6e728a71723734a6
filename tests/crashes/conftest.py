"""Crash tests: a system whose worker gets its killed peers' messages back within seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes", "crashable"]

SHORT_VT_WORKER = ("-m", "tests.crashes.short_vt_worker")
# A killed worker's record locks expire after task_time_limit + 5 s: keep that short, and the retry budget large
# enough to outlast it.
SETTINGS = {
    "http_timeout": 1.0,
    "retry_backoff_base": 0.1,
    "retry_backoff_max": 1.5,
    "max_retries": 30,
    "task_time_limit": 8.0,
}


@pytest.fixture
def crashable(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, **SETTINGS)
    yield system
    system.close()
