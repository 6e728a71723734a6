"""A running system per history: both sandboxes (shared by the session), a fresh link store, a worker, beat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.convergence.history import SYSTEM_SETTINGS
from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes", "running"]


@pytest.fixture
def running(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, **SYSTEM_SETTINGS)
    system.start_worker(concurrency=4)
    yield system
    system.close()
