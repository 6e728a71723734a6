"""One beat per fleet: the beat lease on a real Redis, and two real beat processes competing for it."""

from __future__ import annotations

import math
import os
import re
import shelve
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from shared import keys
from shared.beat_lease import LEASE_TTL_S, STANDBY_POLL_S, BeatLease, beat_owner, scope
from shared.store.db import upgrade
from wavesync.embedded import EmbeddedRedis

SENT = re.compile(r"Sending due task poll-")


@pytest.fixture
def valkey(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    # Its own server: the beats below fill its control queue with polls nobody consumes.
    with EmbeddedRedis(tmp_path / "redis", persistent=False) as server:
        yield server


@pytest.fixture
def client(valkey: EmbeddedRedis) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(valkey.url)
    yield connection
    connection.close()


def test_one_beat_holds_the_lease_another_waits_and_takes_it_once_it_lapses_or_is_given_back(
    client: redis.Redis,
) -> None:
    first, second = BeatLease(client, "host:1:aaaa"), BeatLease(client, "host:2:bbbb")
    assert first.hold()
    assert not second.hold()
    assert second.holder() == "host:1:aaaa"
    assert 0 < client.ttl(keys.beat_lease_key()) <= LEASE_TTL_S
    client.pexpire(keys.beat_lease_key(), 100)  # nearly lapsed: the holder's renewal gives it a full TTL again
    assert first.hold()
    assert client.ttl(keys.beat_lease_key()) > LEASE_TTL_S - 2

    client.pexpire(keys.beat_lease_key(), 1)  # the holder stalled past the TTL
    time.sleep(0.05)
    assert second.hold()
    assert not first.hold()  # it lost the lease and knows it
    first.release()  # giving back what it no longer holds leaves the new holder's lease alone
    assert second.holder() == "host:2:bbbb"

    second.release()
    assert second.holder() is None
    assert first.hold()


def test_a_holder_proven_dead_on_this_kernel_is_replaced_at_once_one_elsewhere_is_waited_out(
    client: redis.Redis,
) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead_here = f"{socket.gethostname()}:{finished.pid}:0123abcd {scope()}"
    BeatLease(client, dead_here).hold()
    restarted = BeatLease(client, beat_owner())
    assert restarted.hold()  # no need to wait out the TTL of a process that has exited
    assert restarted.holder() == beat_owner()
    assert restarted.hold()  # and it renews what it took
    restarted.release()
    assert restarted.holder() is None

    with subprocess.Popen(["sleep", "30"]) as running:
        try:
            alive_here = f"{socket.gethostname()}:{running.pid}:0123abcd {scope()}"
            assert BeatLease(client, alive_here).hold()
            assert not BeatLease(client, beat_owner()).hold()
        finally:
            running.kill()
    client.delete(keys.beat_lease_key())

    # Another host's or container's pid means nothing here: its lease is waited out even if no such pid runs here.
    elsewhere = f"other-host:{finished.pid}:0123abcd 00000000-boot/pid:[4026531836]"
    assert BeatLease(client, elsewhere).hold()
    standby = BeatLease(client, beat_owner())
    assert not standby.hold()
    client.pexpire(keys.beat_lease_key(), 1)
    time.sleep(0.05)
    assert standby.hold()


def start_beat(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "wavesync", "beat", "--loglevel", "INFO"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


def sends(log: Path) -> int:
    return len(SENT.findall(log.read_text()))


def wait_until(condition: str, check: object, timeout: float, *logs: Path) -> float:
    """Seconds until `check()` held; fails with the beats' logs after `timeout`."""
    assert callable(check)
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{condition} not within {timeout} s:\n" + "\n".join(log.read_text()[-2000:] for log in logs))
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.integration
def test_of_two_beats_only_the_lease_holder_sends_and_the_other_takes_over_when_it_is_killed_or_stopped(
    valkey: EmbeddedRedis, client: redis.Redis, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'wavesync.db'}"
    upgrade(database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")} | {
        "WAVESYNC_REDIS_URL": valkey.url,
        "WAVESYNC_DATABASE_URL": database_url,
        "WAVESYNC_DATA_DIR": str(tmp_path),  # one data directory for both, as compose's beats share one volume
        "WAVESYNC_POLL_INTERVAL": "1",
        "WAVESYNC_LOG_FORMAT": "text",
    }
    logs = [tmp_path / "beat-a.log", tmp_path / "beat-b.log", tmp_path / "beat-c.log"]
    beats: list[subprocess.Popen[bytes]] = []
    try:
        beats.append(start_beat(env, logs[0]))
        wait_until("the first beat sends polls", lambda: sends(logs[0]) > 0, 60, *logs)
        beats.append(start_beat(env, logs[1]))
        wait_until("the second beat stands by", lambda: "standing by" in logs[1].read_text(), 60, *logs)
        before = sends(logs[0])
        time.sleep(4)  # four poll intervals
        assert sends(logs[0]) > before  # the holder goes on polling…
        assert sends(logs[1]) == 0  # …and the standby sends nothing
        assert str(beats[0].pid) in (client.get(keys.beat_lease_key()) or b"").decode()

        # Killed, the holder cannot give the lease back; the standby, on the same host, sees that its pid is gone and
        # takes over without waiting out the TTL (from another host it would wait the TTL: the test above).
        beats[0].kill()
        beats[0].wait()
        took = wait_until("the standby takes over", lambda: sends(logs[1]) > 0, LEASE_TTL_S + 15, *logs)
        assert took <= STANDBY_POLL_S + 3
        assert str(beats[1].pid) in (client.get(keys.beat_lease_key()) or b"").decode()

        # Stopped (compose's SIGTERM), the holder gives the lease back and a new standby takes it at once.
        beats.append(start_beat(env, logs[2]))
        wait_until("the third beat stands by", lambda: "standing by" in logs[2].read_text(), 60, *logs)
        beats[1].send_signal(signal.SIGTERM)
        assert beats[1].wait(30) == 0
        took = wait_until("the standby takes over", lambda: sends(logs[2]) > 0, LEASE_TTL_S, *logs)
        assert took <= STANDBY_POLL_S + 3
    finally:
        for beat in beats:
            if beat.poll() is None:
                beat.kill()
                beat.wait()


def test_a_beat_that_lost_the_lease_never_writes_the_shared_schedule_file(
    tmp_path: Path, client: redis.Redis, redis_server: EmbeddedRedis
) -> None:
    """Compose's beats share one schedule file. A beat whose lease lapsed (a stall, a Redis blip) while another took
    over used to keep its file open and write its stale copy back at every sync, over the new holder's."""
    from shared.beat_lease import LeasedScheduler
    from shared.celery_app import app

    schedule = str(tmp_path / "celerybeat-schedule")
    first = LeasedScheduler(app=app, schedule_filename=schedule, lazy=True)
    first._lease = BeatLease(client, "host-a:101:aaaa0001 elsewhere")
    first.tick()
    assert first._schedule_open  # leading: its file is open

    client.delete(keys.beat_lease_key())  # its lease lapsed; another beat takes over
    second = LeasedScheduler(app=app, schedule_filename=schedule, lazy=True)
    second._lease = BeatLease(client, "host-b:202:bbbb0002 elsewhere")
    second.tick()
    assert second._schedule_open

    first._renewed_at = -math.inf  # its next tick asks Redis again and finds the lease taken
    assert first.tick() == STANDBY_POLL_S
    assert first._store is None

    [name, *_] = sorted(second.schedule)
    newer = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    second.schedule[name].last_run_at = newer
    second._do_sync()
    first._do_sync()  # Celery's loop syncs after every sleep, leading or not
    first.close()
    second.close()
    with shelve.open(schedule, "r") as stored:  # noqa: S301 - the file this test made
        assert stored["entries"][name].last_run_at == newer
