"""The pollers on a real Redis against the sandboxes, with no worker: what lands in the queues, and when the
watermark moves. (The workers' side of echoes and settling is in tests/workers/.)"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producers.pollers import Poller
from shared import keys
from shared.coordination import PENDING_TTL_S
from shared.enqueue import enqueue
from shared.errors import RetryableError
from shared.messages import ChangeMessage
from shared.settings import Entity
from shared.store import links as store
from shared.versions import normalise_timestamp
from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes"]

pytestmark = pytest.mark.integration


@pytest.fixture
def idle(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    """A system whose messages stay queued: nobody consumes them."""
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, poll_page_size=5)
    yield system
    system.close()


def queued(system: System, entity: Entity) -> list[dict[str, Any]]:
    """The change messages waiting in an entity's queue: kombu's envelope around Celery's [args, kwargs, embed]."""
    messages = []
    for item in system.redis.lrange(entity, 0, -1):  # type: ignore[union-attr]
        envelope = json.loads(item)
        body = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, _kwargs, _embed = json.loads(body)
        messages.append(args[0])
    return messages


def seed_customers(system: System, count: int) -> None:
    system.boxes.cp("POST", "seed", {"customers": count, "products": 0, "orders": 0, "seed": 61})
    # Customerp waits for Wave's first poll of an entity (onboarding matches against every Wave record).
    Poller(system.ctx, "wave", "customers").run()


def watermark(system: System) -> str:
    with system.ctx.db.session() as session:
        return store.get_watermark(session, "customerp", "customers").position


def test_each_changed_record_is_queued_once_and_a_burst_of_edits_coalesces(idle: System) -> None:
    seed_customers(idle, 12)
    first = Poller(idle.ctx, "customerp", "customers").run()
    assert (first.seen, first.enqueued, first.pages) == (12, 12, 3)
    one = idle.boxes.snapshot("customerp")["customers"][0]
    for phone in ("1", "2", "3"):
        idle.boxes.cp("PATCH", f"customers/{one['id']}", {"phone": phone})
    again = Poller(idle.ctx, "customerp", "customers").run()
    # The overlap window re-reads records already queued, and the edited one is queued already: nothing new.
    assert again.enqueued == 0
    assert again.coalesced >= 1
    messages = queued(idle, "customers")
    assert len(messages) == 12
    assert len({m["source_id"] for m in messages}) == 12


def test_two_runs_of_one_poller_never_overlap(idle: System) -> None:
    seed_customers(idle, 3)
    with idle.ctx.coordinator.try_lock(keys.poller_lock_key("customerp", "customers"), ttl=30) as held:
        assert held
        stats = Poller(idle.ctx, "customerp", "customers").run()
    assert stats.skipped
    assert stats.enqueued == 0
    assert queued(idle, "customers") == []
    assert Poller(idle.ctx, "customerp", "customers").run().enqueued == 3


def test_refused_pages_are_asked_again_within_the_run(idle: System) -> None:
    seed_customers(idle, 20)
    # A seeded fault sequence: half the calls get 429 (or 503), every page still arrives in this one run.
    idle.boxes.faults("customerp", rate_limit_rate=0.3, error_rate=0.2, retry_after_s=0.05, seed=5)
    stats = Poller(idle.ctx, "customerp", "customers").run()
    idle.boxes.clear_faults("customerp")
    assert stats.page_retries >= 1
    assert (stats.seen, stats.enqueued) == (20, 20)
    assert sum(idle.boxes.faults_injected("customerp").values()) == stats.page_retries


def test_the_watermark_passes_only_pages_whose_messages_are_queued(
    idle: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_customers(idle, 12)
    read = idle.ctx.customerp.changes
    calls = {"n": 0}

    def second_page_fails(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise RetryableError("customerp unavailable", system="customerp", retry_after=0.01)
        return read(*args, **kwargs)

    monkeypatch.setattr(idle.ctx.customerp, "changes", second_page_fails)
    with pytest.raises(RetryableError):
        Poller(idle.ctx, "customerp", "customers").run()
    feed = sorted(idle.boxes.snapshot("customerp")["customers"], key=lambda c: (c["updated_at"], c["id"]))
    assert len(queued(idle, "customers")) == 5
    assert watermark(idle) == normalise_timestamp(feed[4]["updated_at"])
    monkeypatch.undo()
    resumed = Poller(idle.ctx, "customerp", "customers").run()
    assert resumed.enqueued == 7
    assert len({m["source_id"] for m in queued(idle, "customers")}) == 12


def test_a_page_whose_messages_redis_refused_is_sent_whole_by_the_next_run(idle: System) -> None:
    """A page's messages go in one batch after its records are marked pending. When Redis refuses the batch, the
    markers go too: left behind, the next run would take the records for queued and move its watermark past them."""
    seed_customers(idle, 3)
    enqueue(ChangeMessage(entity="customers", source="customerp", source_id="declared", version="1"))
    idle.redis.delete("customers")  # kombu has declared the queue on this connection; it checks nothing more
    idle.redis.set("customers", "not a list")  # so the batch's LPUSH fails: WRONGTYPE
    with pytest.raises(RetryableError, match="Redis did not take a batch"):
        Poller(idle.ctx, "customerp", "customers").run()
    assert watermark(idle) == ""
    idle.redis.delete("customers")
    again = Poller(idle.ctx, "customerp", "customers").run()
    assert (again.enqueued, again.coalesced) == (3, 0)
    assert len(queued(idle, "customers")) == 3


def age_pending(system: System, entity: Entity, seconds: float) -> None:
    """Make every pending marker of `entity` look `seconds` old (their TTL counts down from PENDING_TTL_S)."""
    for name in system.redis.scan_iter(match=keys.pending_key(entity, "customerp", "*")):
        system.redis.expire(name, int(PENDING_TTL_S - seconds))


def test_a_message_lost_by_a_killed_worker_is_sent_again_once_its_marker_is_old(idle: System) -> None:
    """kombu pops a message before it records it as unacknowledged: a worker killed in between loses it, and the
    record's pending marker would keep every later poll from sending it again."""
    seed_customers(idle, 3)
    assert Poller(idle.ctx, "customerp", "customers").run().enqueued == 3
    lost = queued(idle, "customers")[-1]["source_id"]
    idle.redis.rpop("customers")  # BRPOP pops from the right: the next message a worker would have taken
    assert lost not in {m["source_id"] for m in queued(idle, "customers")}

    # While the queue still holds messages, a marker may belong to one of them: nothing is sent again.
    age_pending(idle, "customers", idle.settings.message_lease + 1)
    assert Poller(idle.ctx, "customerp", "customers").run().resent == 0

    # A worker took and finished the others; a young marker is left alone, an old one with no message is a loss.
    for message in queued(idle, "customers"):
        taken = ("customerp", message["source_id"])
        with idle.ctx.coordinator.record_lock("customers", *taken, wait=0, pending_of=taken) as lock:
            assert lock.newest_seen == message["version"]
        idle.ctx.coordinator.mark_done("customers", "customerp", message["source_id"], message["version"])
    idle.redis.delete("customers")
    age_pending(idle, "customers", idle.settings.message_lease - 5)
    assert Poller(idle.ctx, "customerp", "customers").run().resent == 0
    age_pending(idle, "customers", idle.settings.message_lease + 1)
    assert Poller(idle.ctx, "customerp", "customers").run().resent == 1
    [again] = queued(idle, "customers")
    assert again["source_id"] == lost
    assert again["reread"] is True
    # Sent again, its marker is young again: the next poll does not send it a third time.
    assert Poller(idle.ctx, "customerp", "customers").run().resent == 0


def test_a_record_a_worker_still_holds_is_not_sent_again(idle: System) -> None:
    seed_customers(idle, 1)
    assert Poller(idle.ctx, "customerp", "customers").run().enqueued == 1
    # As kombu keeps a delivered message until it is acknowledged: [raw message, exchange, routing key].
    raw = idle.redis.rpop("customers")
    assert isinstance(raw, bytes)
    idle.redis.hset("unacked", "tag-1", json.dumps([json.loads(raw), "", "customers"]))
    age_pending(idle, "customers", idle.settings.message_lease + 1)
    assert Poller(idle.ctx, "customerp", "customers").run().resent == 0
