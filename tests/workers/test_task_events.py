"""Workers send no Celery task events until something asks for them, as Flower does while it runs (its
`enable_events`, on by default): the shipped worker, a real broker, the same control command Flower sends."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.celery_app import app
from tests.harness import REPO, Sandboxes
from tests.workers.support import running, wait_for
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@contextmanager
def task_events() -> Iterator[list[dict[str, Any]]]:
    """The task events on the broker while inside, as Flower's receiver sees them."""
    seen: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"*": seen.append})
        listening = threading.Thread(target=lambda: receiver.capture(limit=None, timeout=None), daemon=True)
        listening.start()
        time.sleep(0.5)  # bound to the event exchange before anything is sent
        try:
            yield seen
        finally:
            receiver.should_stop = True
            listening.join(timeout=5)


def finished(events: list[dict[str, Any]], task_id: str) -> bool:
    return any(e.get("type") == "task-succeeded" and e.get("uuid") == task_id for e in events)


def test_task_events_are_off_until_flowers_command_turns_them_on(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with running(boxes, redis_server.url, tmp_path) as system:
        system.stop_worker()
        # The worker as compose runs it (`wavesync worker -Q control`): Celery's heartbeat on, which keeps the event
        # dispatcher that Flower's command switches task events on in (the test harness's workers run without it).
        command = [
            sys.executable,
            "-m",
            "wavesync",
            "worker",
            "-Q",
            keys.CONTROL_QUEUE,
            "-n",
            f"shipped-{os.getpid()}@%h",
        ]
        with (tmp_path / "shipped-worker.log").open("ab") as log:  # the child keeps its own descriptor
            worker = subprocess.Popen(command, env=system.env(), stdout=log, stderr=log, cwd=REPO)
        try:
            with task_events() as events:
                wait_for("the worker to answer", lambda: bool(app.control.ping(timeout=0.5)), timeout=60)
                quiet = app.send_task(keys.NOOP_TASK, args=[{}], queue=keys.CONTROL_QUEUE)
                system.wait_idle()
                time.sleep(1.0)
                assert not [e for e in events if str(e.get("type", "")).startswith("task-")], quiet.id

                replies = app.control.enable_events(reply=True, timeout=5)  # what Flower sends
                assert [next(iter(r.values())) for r in replies] == [{"ok": "task events enabled"}]
                watched = app.send_task(keys.NOOP_TASK, args=[{}], queue=keys.CONTROL_QUEUE)
                wait_for("the task's succeeded event", lambda: finished(events, watched.id), timeout=20)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
