"""Dead letters through a real worker: replay after a fix, replay of a still-broken record, the replay task, a
replayed deletion, and dead letters that outlive a Redis crash and a killed worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shared import keys
from shared.celery_app import app
from shared.deadletters import DeadLetters, Filter
from shared.store import links as store
from tests.harness import REPO, Sandboxes, System
from tests.workers.support import (
    drain,
    new_customer,
    ready,
    running,
    wait_for,
    wave_calls,
    wave_customers,
)
from wavesync.embedded import EmbeddedRedis
from workers.deadletters import send_sync

pytestmark = pytest.mark.integration

TOO_LONG = "n" * 4500  # Wave keeps at most 4000 characters of internal notes; Customerp allows 10000


@pytest.fixture
def env(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> tuple[Sandboxes, str, Path]:
    return boxes, redis_server.url, tmp_path


def replay(system: System, **where: Any) -> int:
    """What `wavesync dlq replay` does, in-process (the command itself is tested in tests/wavesync)."""
    return DeadLetters(system.ctx.db).replay(Filter(**where), send_sync)


def wavesync(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=system.env(),
        cwd=REPO,
    )


def broken_customer(system: System, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Customerp customer Wave refuses, and its dead letter."""
    created = new_customer(system, name, notes=TOO_LONG)
    drain(system)
    [entry] = system.dead_letters()
    assert entry["error_class"] == "InvalidDataError"
    return created, entry


def test_replay_after_the_data_is_fixed_syncs_the_record_and_removes_the_entry(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env) as system:
        ready(system)
        created, entry = broken_customer(system, "Fixable Ltd")
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": "short now"})
        # No poll: only the replay brings the record back. Replaying twice is harmless.
        assert replay(system, ids=(entry["id"],)) == 1
        assert replay(system, ids=(entry["id"],)) == 1
        system.wait_idle()
        assert system.dead_letters() == []
        [partner] = wave_customers(system, "Fixable Ltd")
        assert partner["internalNotes"] == "short now"
        assert wave_calls(system, "customerCreate") == 2  # the refused one, and the one after the fix
        with system.ctx.db.session() as session:
            link = store.find_link(session, "customers", "customerp", str(created["id"]))
            assert link is not None
            assert link.wave_id == partner["id"]
        # The entry is gone: a third replay finds nothing to do.
        assert replay(system, ids=(entry["id"],)) == 0


def test_replay_of_a_still_broken_record_keeps_the_entry_and_counts_the_attempt(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env) as system:
        ready(system)
        _created, entry = broken_customer(system, "Still Broken Ltd")
        assert replay(system, entity="customers") == 1
        system.wait_idle()
        [after] = system.dead_letters()
        assert after["id"] == entry["id"]
        assert after["attempts"] == 2
        assert after["replayed_at"] is not None
        assert after["first_failed_at"] == entry["first_failed_at"]
        assert after["last_failed_at"] > entry["last_failed_at"]
        assert after["field_paths"] == ["internalNotes"]
        # Polls still know the failed version: the record is not enqueued again until someone edits it.
        system.settle()
        assert system.dead_letters()[0]["attempts"] == 2


def test_replay_during_an_outage_keeps_the_entry_and_after_it_clears_the_entry(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env, max_retries=1) as system:
        ready(system)
        system.boxes.faults("wave", error_rate=1.0)
        new_customer(system, "Outage Co")
        drain(system)
        [entry] = system.dead_letters()
        assert entry["error_class"] == "RetryableError"
        # Wave is still down: the replayed record runs out of retries again and its entry stays.
        replay(system, ids=(entry["id"],))
        system.wait_idle()
        [after] = system.dead_letters()
        assert (after["id"], after["attempts"], after["error_class"]) == (entry["id"], 2, "RetryableError")
        system.boxes.faults("wave", error_rate=0.0)
        replay(system, ids=(entry["id"],))
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system, "Outage Co")) == 1


def test_the_replay_task_replays_on_a_worker(env: tuple[Sandboxes, str, Path]) -> None:
    with running(*env) as system:
        ready(system)
        created, _entry = broken_customer(system, "Remote Fix Ltd")
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": None})
        # As from another host or a beat schedule: only the task name and filters travel.
        app.send_task(keys.REPLAY_TASK, kwargs={"entity": "customers", "reason": "internalNotes"})
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system, "Remote Fix Ltd")) == 1
        assert "replayed 1/1 dead letters" in system.log_text()


def test_a_purged_record_stays_as_it_is_through_polls_and_reconcile_until_it_is_edited(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env) as system:
        ready(system)
        created, entry = broken_customer(system, "Given Up Ltd")
        assert DeadLetters(system.ctx.db, system.ctx.settings).purge(Filter(ids=(entry["id"],))) == 1
        # The record is still in the polls' overlap window and still missing in Wave: neither sends it again.
        system.settle()
        [customers, *_] = system.repair()
        system.wait_idle()
        assert customers.repaired == 0
        assert system.dead_letters() == []
        assert wave_calls(system, "customerCreate") == 1
        [purged] = DeadLetters(system.ctx.db).list(Filter(status="resolved"))
        assert (purged["id"], purged["resolution"]) == (entry["id"], "purged")
        # An edit is a new version: it syncs, or (as here, still too long) fails anew and reopens the entry.
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": "m" * 4600})
        system.settle()
        [again] = system.dead_letters()
        assert (again["id"], again["attempts"]) == (entry["id"], 1)
        assert wave_calls(system, "customerCreate") == 2


def test_a_failed_deletion_is_replayed_as_a_deletion(env: tuple[Sandboxes, str, Path]) -> None:
    with running(*env, max_retries=1) as system:
        ready(system)
        created = new_customer(system, "Closing Down Ltd")
        drain(system)
        assert len(wave_customers(system, "Closing Down Ltd")) == 1
        system.boxes.faults("wave", error_rate=1.0)
        system.boxes.cp("DELETE", f"customers/{created['id']}")
        drain(system)
        [entry] = system.dead_letters()
        assert entry["message"]["deleted"] is True
        assert entry["wave_id"] == wave_customers(system, "Closing Down Ltd")[0]["id"]
        system.boxes.faults("wave", error_rate=0.0)
        # Re-reading the deleted Customerp record would find nothing; the replay must carry the deletion.
        replay(system, ids=(entry["id"],))
        system.wait_idle()
        assert wave_customers(system, "Closing Down Ltd") == []
        assert system.dead_letters() == []
        with system.ctx.db.session() as session:
            assert store.find_link(session, "customers", "customerp", str(created["id"])) is None


def test_dead_letters_outlive_a_redis_crash_and_a_killed_worker(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with running(boxes, redis_server.url, tmp_path) as system:
        ready(system)
        created, entry = broken_customer(system, "Durable Ltd")
        system.stop_worker(signal.SIGKILL)
        redis_server.kill()
        try:
            # The store of record is the database: the queue is readable while Redis is down.
            listed = wavesync(system, "dlq", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            assert [e["id"] for e in json.loads(listed.stdout)] == [entry["id"]]
        finally:
            redis_server.start()
        system.start_worker()
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": "fits"})
        assert replay(system, ids=(entry["id"],)) == 1
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system, "Durable Ltd")) == 1


def test_a_running_worker_reconnects_after_a_redis_restart_and_replays(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with running(boxes, redis_server.url, tmp_path) as system:
        ready(system)
        created, entry = broken_customer(system, "Reconnect Ltd")
        redis_server.kill()
        redis_server.start()
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": "fits"})
        wait_for(
            "the worker to reconnect",
            lambda: system.log_text().count("Connected to redis://") >= 2,
            timeout=60,
            system=system,
        )
        replay(system, ids=(entry["id"],))
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system, "Reconnect Ltd")) == 1
