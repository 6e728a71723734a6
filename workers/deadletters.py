"""The replay task: dead-letter replay as a Celery task, so it can be triggered remotely or scheduled.

`wavesync celery call wavesync.dlq.replay --kwargs '{"entity": "customers"}'` replays from anywhere that
reaches the broker; a beat entry with the same task name replays on a schedule.
"""

from __future__ import annotations

import logging
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import get_context
from shared.deadletters import DeadLetters, Filter
from shared.settings import load_settings

log = logging.getLogger(__name__)


def send_sync(task_name: str, message: dict[str, Any], queue: str) -> None:
    app.send_task(task_name, args=[message], queue=queue)


def _progress(done: int, total: int) -> None:
    log.info("replayed %d/%d dead letters", done, total)


@app.task(name=keys.REPLAY_TASK, ignore_result=True)
def replay(entity: str | None = None, reason: str | None = None, ids: list[int] | None = None) -> int:
    """Re-enqueue the matching dead letters (all of them when no filter is given)."""
    ctx = get_context(load_settings)
    where = Filter(entity=entity, reason=reason, ids=tuple(ids or ()))
    return DeadLetters(ctx.db, ctx.settings).replay(where, send_sync, _progress)
