"""The one way a change reaches a worker: its entity's sync task, sent onto its entity's queue."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kombu.exceptions import BatchPublishError  # type: ignore[attr-defined]  # kombu 5.7; kombu-stubs predate it

from shared import keys
from shared.celery_app import app
from shared.errors import RetryableError
from shared.messages import ChangeMessage


def enqueue(message: ChangeMessage) -> None:
    """Send `message` to its entity's sync task on its entity's queue (one queue per entity: see celery_app)."""
    _send(message, None)


@contextmanager
def batched() -> Iterator[Callable[[ChangeMessage], None]]:
    """Send several messages in one Redis round trip: yields an `enqueue` whose messages go when the block ends.

    kombu's publish batch (`Producer.batch`, Redis transport) pipelines the pushes: a poll page of a hundred changes
    is one round trip instead of a hundred. Should the pipeline fail, some of the messages may be in Redis and some
    not: that is reported as a RetryableError, as a lost connection would be, and the caller must not count them as
    sent (a poller keeps its watermark and forgets the page's pending markers, so its next run sends the page
    again). A block left by an exception sends none of its messages.
    """
    with app.producer_or_acquire() as producer:
        try:
            with producer.batch():
                yield lambda message: _send(message, producer)
        except BatchPublishError as exc:
            # redis-py quotes the failed command, with the message in it: only Redis's own reason is reported.
            reason = str(exc.__cause__ or exc).rpartition("caused error: ")[2]
            raise RetryableError(f"Redis did not take a batch of messages: {reason}", system="redis") from None


def _send(message: ChangeMessage, producer: Any) -> None:
    app.send_task(
        keys.SYNC_TASK[message.entity],
        args=[message.to_json()],
        queue=message.entity,
        producer=producer,
        argsrepr=task_repr(message),
        kwargsrepr="{}",
    )


def task_repr(message: ChangeMessage) -> str:
    """What Flower and Celery's logs show for a sync task, sent or retried: the record's key, not the snapshot
    (personal data, and Celery's own repr of it was a sixth of an enqueue's CPU)."""
    return f"({message.key()} @ {message.version or 'unversioned'})"
