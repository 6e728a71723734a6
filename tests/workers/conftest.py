"""Integration fixtures: the sandboxes for the session, a fresh system (link store, worker) per test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from shared import keys
from tests.harness import Sandboxes, System
from wavesync.embedded import EmbeddedRedis


@pytest.fixture(scope="session")
def boxes() -> Iterator[Sandboxes]:
    sandboxes = Sandboxes()
    yield sandboxes
    sandboxes.stop()


def clean_redis(url: str) -> None:
    """Forget the previous test's messages and markers; keep kombu's queue bindings (they outlive tests)."""
    client = redis.Redis.from_url(url)
    doomed = [*client.scan_iter(f"{keys.PREFIX}:*"), *keys.QUEUES, "unacked", "unacked_index"]
    client.delete(*doomed)
    client.close()


@contextmanager
def fresh_system(boxes: Sandboxes, redis_url: str, workdir: Path, **overrides: Any) -> Iterator[System]:
    """Empty sandboxes, a clean Redis and a new link store, with no worker yet (a test may play the worker's part)."""
    boxes.reset()
    clean_redis(redis_url)
    made = System(boxes, redis_url, workdir, **overrides)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def system(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    with fresh_system(boxes, redis_server.url, tmp_path) as running:
        running.start_worker()
        yield running
