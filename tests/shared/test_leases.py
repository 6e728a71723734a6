"""Leases a live process renews: record locks, heartbeats and the broker messages a worker holds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared import keys, leases
from shared.coordination import Coordinator, CreateIntent
from shared.message_leases import held_delivery_tags, renew
from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes"]


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    clean_redis(redis_server.url)
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


def test_a_held_record_lock_is_renewed_and_a_released_one_is_not(client: redis.Redis) -> None:
    coordinator = Coordinator(client)
    key = keys.record_lock_key("customers", "customerp", "c1")
    with coordinator.record_lock("customers", "customerp", "c1", wait=0):
        client.pexpire(key, 500)  # as if the lease had nearly run out
        leases.KEEPER.renew_now()
        assert int(client.pttl(key)) > (leases.LOCK_LEASE_S - 2) * 1000
    assert not client.exists(key)
    leases.KEEPER.renew_now()
    assert not client.exists(key)


def test_a_record_lock_of_a_process_that_died_lapses_within_its_lease(client: redis.Redis) -> None:
    # Taken and never renewed nor released: what a SIGKILLed worker leaves behind.
    client.lock(keys.record_lock_key("orders", "customerp", "o1"), timeout=leases.LOCK_LEASE_S).acquire()
    ttl = int(client.pttl(keys.record_lock_key("orders", "customerp", "o1")))
    assert 0 < ttl <= leases.LOCK_LEASE_S * 1000


def test_a_create_intent_names_its_owner_and_others_can_tell_whether_it_lives(client: redis.Redis) -> None:
    coordinator = Coordinator(client)
    leases.KEEPER.heartbeat_on(client)
    leases.KEEPER.renew_now()
    assert coordinator.begin_create("customers", "wave", "c1", "2026-11-29T10:00:00+00:00", {"name": "A"}) is None
    intent = coordinator.create_intent("customers", "wave", "c1")
    assert intent is not None
    assert intent.owner == leases.process_id()
    assert coordinator.owner_alive(intent)
    dead = CreateIntent("c2", "2026-11-29T10:00:00+00:00", {"name": "B"}, owner="gone-host:1:abcd")
    assert not coordinator.owner_alive(dead)
    older_version = CreateIntent("c3", "2026-11-29T10:00:00+00:00", {"name": "C"})
    assert coordinator.owner_alive(older_version), "an intent without an owner is waited for as if its owner lived"


class _QoS:
    def __init__(self, tags: list[str]) -> None:
        self._delivered = dict.fromkeys(tags)


def test_renewing_restamps_the_messages_still_unacked_and_brings_none_back(client: redis.Redis) -> None:
    client.zadd("unacked_index", {"held": 1000.0, "other-workers": 1000.0})
    renew(client, "unacked_index", held_delivery_tags(_QoS(["held", "acked-meanwhile"])), 5000.0)
    assert client.zscore("unacked_index", "held") == 5000.0
    assert client.zscore("unacked_index", "other-workers") == 1000.0
    assert client.zscore("unacked_index", "acked-meanwhile") is None, "an acked message must not come back"


def test_a_live_worker_keeps_the_messages_it_holds_fresh(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A retry waiting out its countdown is held unacked by the worker: its lease is renewed while it waits, so the
    broker never hands it to a second worker however long the countdown (the reason for an hour's timeout before)."""
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path)
    try:
        system.start_worker()
        deadline = time.monotonic() + 60  # a worker starting on a busy machine
        while "ready." not in (system.log.read_text() if system.log.exists() else ""):
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        from shared.celery_app import app

        app.send_task(keys.NOOP_TASK, args=[None], queue="control", countdown=14)
        while not system.redis.zcard("unacked_index"):
            assert time.monotonic() < deadline, "the worker did not take the message"
            time.sleep(0.1)
        delivered = time.time()
        time.sleep(2 * leases.RENEW_EVERY_S + 1)
        [(_tag, stamped)] = system.redis.zrange("unacked_index", 0, -1, withscores=True)
        assert stamped > delivered + leases.RENEW_EVERY_S, "the held message was not renewed"
        system.wait_idle(timeout=30)
    finally:
        system.close()


def test_the_broker_restores_a_dead_workers_messages_one_lease_after_its_last_renewal() -> None:
    """kombu scans for messages older than the visibility timeout every restore interval: the lease is that timeout,
    and the scan runs every few seconds instead of kombu's default 10 × 10 s."""
    from shared.celery_app import celery_config
    from shared.message_leases import RESTORE_INTERVAL_S
    from shared.settings import Settings

    settings = Settings(redis_url="redis://127.0.0.1:1/0")
    transport = celery_config(settings)["broker_transport_options"]
    assert transport["visibility_timeout"] == settings.message_lease == 30
    assert transport["unacked_restore_interval"] * transport["unacked_restore_throttle"] == RESTORE_INTERVAL_S
    assert transport["unacked_mutex_expire"] <= settings.message_lease
    # Three renewals may be missed before a live worker's message is handed out again.
    assert settings.message_lease >= 3 * leases.RENEW_EVERY_S + RESTORE_INTERVAL_S


def test_a_closed_context_stops_announcing_its_process(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A process announces itself alive through its context's Redis client until the context closes; renewing
    through the closed client afterwards would only fail (and warn that Redis is unreachable) for ever."""
    clean_redis(redis_server.url)
    checker = redis.Redis.from_url(redis_server.url)
    heartbeat = keys.worker_key(leases.process_id())
    system = System(boxes, redis_server.url, tmp_path)
    leases.KEEPER.renew_now()
    assert checker.exists(heartbeat)
    system.close()
    checker.delete(heartbeat)
    leases.KEEPER.renew_now()
    assert not checker.exists(heartbeat)
    assert "could not renew" not in caplog.text
    checker.close()
