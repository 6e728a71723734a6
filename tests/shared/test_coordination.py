"""Creation intents and write holds: the Redis records that keep an interrupted sync from duplicating a record or
overwriting a newer value."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis

from shared import keys
from shared.coordination import Coordinator, CreateIntent
from shared.errors import MustWaitError
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


def test_a_poll_page_marks_each_record_pending_once_and_remembers_the_newest_version(coordinator: Coordinator) -> None:
    assert coordinator.mark_pending("customers", "customerp", {"c1": "0001", "c2": "0001"}) == ["c1", "c2"]
    # Already queued: not sent again, but the queued message learns that a newer version was seen.
    assert coordinator.mark_pending("customers", "customerp", {"c1": "0003", "c2": "0001", "c3": "0001"}) == ["c3"]
    with coordinator.record_lock("customers", "customerp", "c1", wait=0, pending_of=("customerp", "c1")) as lock:
        assert lock.newest_seen == "0003"
    # Taken with the lock: the record's next change is sent anew.
    assert coordinator.mark_pending("customers", "customerp", {"c1": "0004"}) == ["c1"]


def test_a_lock_held_elsewhere_leaves_the_pending_marker_to_the_sync_that_gets_it(coordinator: Coordinator) -> None:
    coordinator.mark_pending("orders", "wave", {"w1": "2026-01-01T00:00:01.000Z"})
    # A Wave invoice's message locks its pair (by the Customerp order's id) and takes its own marker.
    with coordinator.record_lock("orders", "customerp", "o1", wait=0):  # another worker syncs the pair
        attempt = coordinator.record_lock("orders", "customerp", "o1", wait=0, pending_of=("wave", "w1"))
        with pytest.raises(MustWaitError), attempt:
            pass
    with coordinator.record_lock("orders", "customerp", "o1", wait=0, pending_of=("wave", "w1")) as lock:
        assert lock.newest_seen == "2026-01-01T00:00:01.000Z"  # left in place by the attempt that did not get the lock


def test_the_creations_a_sync_linked_end_with_its_lock_s_release_even_a_lapsed_one(coordinator: Coordinator) -> None:
    coordinator.begin_create("customers", "wave", "c1", NOW.isoformat(), {"name": "A"})
    coordinator.begin_create("customers", "customerp", "w9", NOW.isoformat(), {"name": "B"})

    def intents() -> list[str | None]:
        found = [
            coordinator.create_intent("customers", "wave", "c1"),
            coordinator.create_intent("customers", "customerp", "w9"),
        ]
        return [intent and intent.source_id for intent in found]

    with coordinator.record_lock("customers", "customerp", "c1", wait=0) as lock:
        lock.end_creates_at_release("customers", {"wave": "c1", "customerp": "w1"})  # w1: no intent, nothing to end
        assert intents() == ["c1", "w9"]  # until the release
    assert intents() == [None, "w9"]
    assert not coordinator.redis.exists(keys.record_lock_key("customers", "customerp", "c1"))

    # A lock that lapsed in a stall and went to another sync: the link is recorded, so the intent ends all the same,
    # and the other sync keeps its lock.
    with coordinator.record_lock("customers", "customerp", "c2", wait=0) as lock:
        lock.end_creates_at_release("customers", {"customerp": "w9"})
        coordinator.redis.set(keys.record_lock_key("customers", "customerp", "c2"), "another-sync")
    assert intents() == [None, None]
    assert coordinator.redis.get(keys.record_lock_key("customers", "customerp", "c2")) == b"another-sync"
