"""The replay task: dead-letter replay as a Celery task, so it can be triggered remotely or scheduled."""

from __future__ import annotations

from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import get_context
from shared.deadletters import DeadLetters, Filter
from shared.settings import load_settings


def send_sync(task_name: str, message: dict[str, Any], queue: str) -> None:
    app.send_task(task_name, args=[message], queue=queue)


@app.task(name=keys.REPLAY_TASK, ignore_result=True)
def replay(entity: str | None = None, reason: str | None = None, ids: list[int] | None = None) -> int:
    ctx = get_context(load_settings)
    return DeadLetters(ctx.db).replay(Filter(entity=entity, reason=reason, ids=tuple(ids or ())), send_sync)
