"""The one way a change reaches a worker: its entity's sync task, sent onto its entity's queue."""

from __future__ import annotations

from shared import keys
from shared.celery_app import app
from shared.messages import ChangeMessage


def enqueue(message: ChangeMessage) -> None:
    """Send `message` to its entity's sync task on its entity's queue (one queue per entity: see celery_app)."""
    app.send_task(
        keys.SYNC_TASK[message.entity],
        args=[message.to_json()],
        queue=message.entity,
        argsrepr=task_repr(message),
        kwargsrepr="{}",
    )


def task_repr(message: ChangeMessage) -> str:
    """What Flower and Celery's logs show for a sync task, sent or retried: the record's key, not the snapshot
    (personal data, and Celery's own repr of it was a sixth of an enqueue's CPU)."""
    return f"({message.key()} @ {message.version or 'unversioned'})"
