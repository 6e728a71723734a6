"""Messages that are not ours never stop a worker: Celery accepts JSON only, and the base task drops what is not a
change message, with a log line, instead of crashing or retrying it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared import keys
from shared.celery_app import app
from tests.harness import Sandboxes, System
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def test_messages_that_are_not_ours_are_dropped_without_stopping_the_worker(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A pickle (Celery accepts JSON only), a message of the wrong shape, and one that is not even an object."""
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path)
    system.start_worker()
    try:
        app.send_task(
            keys.SYNC_TASK["customers"], args=[{"entity": "customers"}], queue="customers", serializer="pickle"
        )
        app.send_task(keys.SYNC_TASK["customers"], args=[{"entity": "invoices", "source": "x"}], queue="customers")
        app.send_task(keys.SYNC_TASK["customers"], args=["not a message"], queue="customers")
        boxes.cp("POST", "customers", {"company_name": "After the poison"})
        system.settle()
        assert [c["name"] for c in boxes.snapshot("wave")["customers"]] == ["After the poison"]
        assert system.dead_letters() == []
        log = system.log.read_text()
        assert "dropping a malformed message" in log
        assert re.search(r"(?i)refusing to deserialize|ContentDisallowed|untrusted content", log)
    finally:
        system.close()
