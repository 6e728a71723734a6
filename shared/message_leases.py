"""The broker messages a worker holds, kept as leases it renews, so a killed worker's messages come back in seconds.

kombu's Redis transport emulates acks: a delivered message stays in the `unacked` hash, indexed in the `unacked`
sorted set by its delivery time, until it is acked; `QoS.restore_visible` (run by every consuming worker every
`unacked_restore_interval` seconds) puts back on its queue every message whose score is older than the
`visibility_timeout` (kombu/transport/redis.py, `QoS.append` and `QoS.restore_visible`; Celery's docs, "Using Redis:
Visibility timeout"). Celery's own advice is a timeout longer than the longest task and ETA countdown, because a
live worker's message that outlives it is delivered a second time; then a SIGKILLed worker's messages wait that
long too (an hour by default here, before).

Here a worker instead re-stamps the score of every message it still holds (`QoS._delivered`: executing, prefetched
and ETA-waiting alike) every few seconds. A live worker's messages are therefore never older than a few seconds, so
they are never restored however long a task or countdown takes; a dead worker's stop being re-stamped and kombu
restores them `visibility_timeout` later. `ZADD XX` only touches messages still in the index: one acked or restored
meanwhile is not brought back.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import redis
from celery import bootsteps

from shared import leases

# A worker stopping the world for longer than this many renewals loses its messages to other workers (which then
# run them again: every task is idempotent); a dead worker's come back after the lease plus one restore interval.
RESTORE_INTERVAL_S = 5


def held_delivery_tags(qos: Any) -> list[str]:
    """The delivery tags the channel still holds unacked. The consumer thread mutates the dict while we read it."""
    for _ in range(5):
        try:
            return [str(tag) for tag in list(qos._delivered)]
        except RuntimeError:  # changed size during iteration: read again
            continue
    return []


def records_in_flight(client: redis.Redis, unacked_key: str = "unacked") -> set[tuple[str, str, str]]:
    """(entity, source, source id) of every sync message some worker holds unacknowledged (kombu keeps each as
    `[raw message, exchange, routing key]` in the `unacked` hash; the task's first argument is our message)."""
    held: set[tuple[str, str, str]] = set()
    for value in client.hvals(unacked_key):
        try:
            raw = json.loads(value)[0]
            body = raw["body"]
            if raw.get("properties", {}).get("body_encoding") == "base64":
                body = base64.b64decode(body)
            message = json.loads(body)[0][0]
            held.add((str(message["entity"]), str(message["source"]), str(message["source_id"])))
        except (ValueError, LookupError, TypeError):
            continue  # not one of our sync messages (a poll, a replay)
    return held


def renew(client: redis.Redis, index_key: str, tags: list[str], now: float) -> None:
    """Re-stamp the held messages as delivered `now`."""
    if tags:
        client.zadd(index_key, dict.fromkeys(tags, now), xx=True, ch=True)


class MessageLeases(bootsteps.StartStopStep):
    """Consumer bootstep: once the task consumer exists, renew its channel's unacked messages with the process's
    other leases (shared/leases.py)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        channel = parent.task_consumer.channel
        qos = getattr(channel, "qos", None)
        index_key = getattr(channel, "unacked_index_key", None)
        if qos is None or index_key is None:  # not the Redis transport: nothing to renew
            return
        client = redis.Redis.from_url(parent.app.conf.broker_url, health_check_interval=25)
        leases.KEEPER.set_renewal("messages", lambda: renew(client, index_key, held_delivery_tags(qos), time.time()))

    def stop(self, parent: Any) -> None:
        leases.KEEPER.set_renewal("messages", None)

    shutdown = stop
