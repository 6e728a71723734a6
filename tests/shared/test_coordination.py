"""Creation intents and write holds: the Redis records that keep an interrupted sync from duplicating a record or
overwriting a newer value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from shared.coordination import Coordinator, CreateIntent
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def coordinator(redis_server: EmbeddedRedis) -> Iterator[Coordinator]:
    clean_redis(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    yield Coordinator(client)
    client.close()


def test_the_first_attempt_begins_a_creation_and_a_later_one_gets_its_intent_back(coordinator: Coordinator) -> None:
    assert coordinator.begin_create("customers", "wave", "c1", NOW.isoformat(), {"name": "A"}) is None
    later = NOW + timedelta(seconds=5)
    previous = coordinator.begin_create("customers", "wave", "c1", later.isoformat(), {"name": "B"})
    assert previous is not None
    assert (previous.started, previous.sent) == (NOW, {"name": "A"})  # what was sent first is what to resend


def test_a_new_attempt_moves_the_moment_to_wait_from(coordinator: Coordinator) -> None:
    coordinator.begin_create("products", "wave", "p1", NOW.isoformat(), {"name": "P"})
    coordinator.touch_create("products", "wave", "p1", (NOW + timedelta(seconds=30)).isoformat())
    intent = coordinator.create_intent("products", "wave", "p1")
    assert intent is not None
    assert intent.attempted == NOW + timedelta(seconds=30)
    assert intent.sent == {"name": "P"}


def test_unfinished_creations_into_a_system_are_listed_until_they_end_or_grow_old(coordinator: Coordinator) -> None:
    coordinator.begin_create("customers", "customerp", "w1", NOW.isoformat(), {"name": "A"})
    coordinator.begin_create("customers", "customerp", "w2", (NOW - timedelta(hours=1)).isoformat(), {"name": "B"})
    in_flight = coordinator.creations_in_flight("customers", "customerp", max_age_s=900, now=NOW)
    assert [i.source_id for i in in_flight] == ["w1"]
    coordinator.end_create("customers", "customerp", "w1")
    assert coordinator.creations_in_flight("customers", "customerp", max_age_s=900, now=NOW) == []


def test_an_intent_written_by_an_older_version_is_a_bare_timestamp() -> None:
    intent = CreateIntent.parse(b"c1", NOW.isoformat().encode())
    assert (intent.source_id, intent.started, intent.sent) == ("c1", NOW, None)
