"""Sending change messages on the real broker: one at a time, and a poll page's in one batch."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
import redis

from shared.enqueue import batched, enqueue
from shared.errors import RetryableError
from shared.messages import ChangeMessage
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    clean_redis(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    yield client
    clean_redis(redis_server.url)
    client.close()


def change(record_id: str) -> ChangeMessage:
    return ChangeMessage(entity="customers", source="customerp", source_id=record_id, version="1")


def queued_ids(client: redis.Redis) -> list[str]:
    """The source ids of the customers queue's messages, oldest first (kombu pushes left, pops right)."""
    ids = []
    for raw in reversed(client.lrange("customers", 0, -1)):  # type: ignore[union-attr]
        envelope = json.loads(raw)
        body = json.loads(base64.b64decode(envelope["body"]))
        ids.append(ChangeMessage.model_validate(body[0][0]).source_id)
    return ids


def test_one_message_is_in_its_queue_when_enqueue_returns(broker: redis.Redis) -> None:
    enqueue(change("c-1"))
    assert queued_ids(broker) == ["c-1"]


def test_a_batch_sends_its_messages_together_when_it_ends(broker: redis.Redis) -> None:
    with batched() as send:
        for n in range(3):
            send(change(f"c-{n}"))
        assert broker.llen("customers") == 0  # buffered: one pipeline when the block ends
    assert queued_ids(broker) == ["c-0", "c-1", "c-2"]


def test_a_batch_left_by_an_exception_sends_none_of_its_messages(broker: redis.Redis) -> None:
    def page_fails() -> None:
        with batched() as send:
            send(change("c-1"))
            raise KeyError("the page could not be handled")

    with pytest.raises(KeyError):
        page_fails()
    assert broker.llen("customers") == 0


def test_a_batch_redis_refuses_is_a_retryable_error(broker: redis.Redis) -> None:
    enqueue(change("c-0"))  # kombu declares the queue once (LLEN would fail first below)
    broker.delete("customers")
    broker.set("customers", "not a list")  # LPUSH onto it fails: WRONGTYPE
    with pytest.raises(RetryableError) as refused, batched() as send:
        send(change("c-1"))
    assert str(refused.value).startswith("redis: Redis did not take a batch of messages: WRONGTYPE")
    assert "c-1" not in str(refused.value)  # the message (a record's snapshot) is not quoted
