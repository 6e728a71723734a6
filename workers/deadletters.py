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
from shared.enqueue import enqueue
from shared.messages import ChangeMessage
from shared.settings import load_settings

log = logging.getLogger(__name__)


def send_sync(task_name: str, message: dict[str, Any], queue: str) -> None:
    """The `Send` of replay and the console: a sync message as JSON, validated, then enqueued like any other.

    Validating here keeps a malformed stored message from reaching a worker; the task and queue are implied by
    the message, so ones that disagree with it are a caller's bug.
    """
    change = ChangeMessage.model_validate(message)
    if (task_name, queue) != (keys.SYNC_TASK[change.entity], change.entity):
        raise ValueError(f"a {change.entity} change goes to {keys.SYNC_TASK[change.entity]} on {change.entity!r}")
    enqueue(change)


def _progress(done: int, total: int) -> None:
    log.info("replayed %d/%d dead letters", done, total)


@app.task(name=keys.REPLAY_TASK, ignore_result=True)
def replay(entity: str | None = None, reason: str | None = None, ids: list[int] | None = None) -> int:
    """Re-enqueue the matching dead letters (all of them when no filter is given)."""
    ctx = get_context(load_settings)
    where = Filter(entity=entity, reason=reason, ids=tuple(ids or ()))
    return DeadLetters(ctx.db, ctx.settings).replay(where, send_sync, _progress)
