"""The fleet rate limit on a real Redis: a shared token bucket, a shared 429 cooldown, in-flight leases; Retry-After;
and the retry backoff maths."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from pydantic import ValidationError

from shared import keys
from shared.context import Context
from shared.errors import SyncError
from shared.ratelimit import (
    FleetRateLimiter,
    RateLimitedTransport,
    parse_retry_after,
    retry_after_seconds,
)
from shared.settings import Settings
from wavesync.embedded import EmbeddedRedis
from workers.base import auth_backoff_seconds, backoff_seconds, throttle_backoff_seconds


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    yield connection
    connection.close()


@pytest.fixture
def system() -> str:
    """A system name of its own, so each test has a fresh bucket and cooldown."""
    return f"test-{uuid.uuid4().hex[:8]}"


def timed(limiter: FleetRateLimiter, calls: int) -> float:
    started = time.monotonic()
    for _ in range(calls):
        limiter.acquire()
    return time.monotonic() - started


# --- token bucket ------------------------------------------------------------------------------------------


def test_a_full_bucket_grants_its_burst_at_once_then_paces_at_the_rate(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, rate_per_second=20, burst=5)
    assert timed(limiter, 5) < 0.2
    # Ten more at 20/s take about half a second.
    assert 0.4 <= timed(limiter, 10) < 1.5


def test_two_processes_share_one_bucket(redis_server: EmbeddedRedis, system: str) -> None:
    """Two limiters on two connections stand for two workers on two hosts: together they keep the rate."""
    clients = [redis.Redis.from_url(redis_server.url) for _ in range(2)]
    limiters = [FleetRateLimiter(c, system, rate_per_second=20, burst=2) for c in clients]
    started = time.monotonic()
    threads = [threading.Thread(target=timed, args=(limiter, 11)) for limiter in limiters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for connection in clients:
        connection.close()
    # 22 calls, 2 of them from the burst: 20 at 20/s need about a second, whoever makes them.
    assert elapsed >= 0.9
    assert sum(limiter.waited_s for limiter in limiters) > 0


def test_each_system_has_its_own_bucket(client: redis.Redis, system: str) -> None:
    slow = FleetRateLimiter(client, system, rate_per_second=1, burst=1)
    fast = FleetRateLimiter(client, system + "-other", rate_per_second=1000, burst=50)
    slow.acquire()
    assert timed(fast, 20) < 0.3


def test_the_bucket_is_forgotten_after_a_long_idle_time(client: redis.Redis, system: str) -> None:
    FleetRateLimiter(client, system, rate_per_second=10, burst=10, memory_s=2).acquire()
    assert 0 < int(client.pttl(keys.rate_bucket_key(system))) <= 2000


# --- 429 cooldown ------------------------------------------------------------------------------------------


def test_a_cooldown_set_by_one_worker_pauses_another(redis_server: EmbeddedRedis, system: str) -> None:
    first, second = (redis.Redis.from_url(redis_server.url) for _ in range(2))
    try:
        FleetRateLimiter(first, system, 1000, 100).cool_down(0.6)
        other = FleetRateLimiter(second, system, 1000, 100)
        assert 0.5 <= timed(other, 1) < 1.2
        assert other.waited_s > 0.4
    finally:
        first.close()
        second.close()


def test_a_short_cooldown_never_shortens_a_longer_one(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, 1000, 100)
    limiter.cool_down(5)
    limiter.cool_down(0.5)
    assert int(client.pttl(keys.cooldown_key(system))) > 4000
    limiter.cool_down(8)
    assert int(client.pttl(keys.cooldown_key(system))) > 7000


def test_cooldowns_are_clamped_between_half_a_second_and_the_maximum(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, 1000, 100, max_cooldown_s=3)
    limiter.cool_down(0)
    assert 0 < int(client.pttl(keys.cooldown_key(system))) <= 500
    limiter.cool_down(3600)
    assert 2000 < int(client.pttl(keys.cooldown_key(system))) <= 3000


def test_a_429_through_the_transport_starts_the_fleet_cooldown(client: redis.Redis, system: str) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0.7"}), httpx.Response(200, json={})])
    transport = RateLimitedTransport(
        httpx.MockTransport(lambda _request: next(answers)), FleetRateLimiter(client, system, 1000, 100)
    )
    with httpx.Client(transport=transport) as http:
        assert http.get("http://api.test/").status_code == 429
        assert 500 < int(client.pttl(keys.cooldown_key(system))) <= 700
        started = time.monotonic()
        assert http.get("http://api.test/").status_code == 200
        assert time.monotonic() - started >= 0.5


def test_a_429_without_retry_after_cools_down_for_a_second(client: redis.Redis, system: str) -> None:
    transport = RateLimitedTransport(
        httpx.MockTransport(lambda _request: httpx.Response(429)), FleetRateLimiter(client, system, 1000, 100)
    )
    with httpx.Client(transport=transport) as http:
        http.get("http://api.test/")
    assert 800 < int(client.pttl(keys.cooldown_key(system))) <= 1000


def test_a_429_halves_the_fleet_rate_and_empties_the_bucket(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, rate_per_second=40, burst=10)
    limiter.acquire()
    assert limiter.cool_down(0.5) is True
    assert limiter.state()["current_per_s"] == 20
    # 429s of calls that were already in flight belong to the same wave: no second halving.
    assert limiter.cool_down(0.5) is False
    assert limiter.state()["current_per_s"] == 20
    # After the pause the fleet resumes at the new rate from an empty bucket, not with a burst:
    # five calls at 20/s take about a quarter of a second on top of the half-second cooldown.
    elapsed = timed(limiter, 5)
    assert 0.65 <= elapsed < 1.5


def test_the_fleet_rate_recovers_gradually_after_429s(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, rate_per_second=100, burst=5, recovery=1.0)
    for _ in range(3):
        limiter.cool_down(0.5)
        client.delete(keys.cooldown_key(system))  # end each pause at once: three separate waves of 429s
    assert limiter.state()["current_per_s"] == 12.5
    # The bucket resumes where the last pause would have ended (0.5 s); half a second later, at 100% a second:
    time.sleep(1.0)
    limiter.acquire()
    assert 15 < limiter.state()["current_per_s"] < 40  # growing back, far from the configured 100


def test_the_fleet_rate_never_falls_below_its_floor(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, rate_per_second=4, burst=1, min_rate_per_second=1)
    for _ in range(6):
        limiter.cool_down(0.5)
        client.delete(keys.cooldown_key(system))
    assert limiter.state()["current_per_s"] == 1


def test_state_reports_the_configured_rate_before_any_call(client: redis.Redis, system: str) -> None:
    assert FleetRateLimiter(client, system, 7, 3).state() == {
        "configured_per_s": 7,
        "current_per_s": 7,
        "cooldown_s": 0,
    }


# --- in-flight cap ------------------------------------------------------------------------------------------


class ConcurrencyProbe:
    """An HTTP handler that counts the calls inside it at once; the peak is what the API would have seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.calls = 0

    def __call__(self, _request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.current += 1
            self.calls += 1
            self.peak = max(self.peak, self.current)
        time.sleep(0.005)  # stay inside long enough for the others to pile up (what is asserted is a count)
        with self.lock:
            self.current -= 1
        return httpx.Response(200, json={})


def hammer(limiters: list[FleetRateLimiter], threads_per_limiter: int, calls_each: int) -> ConcurrencyProbe:
    """`threads_per_limiter` threads on each limiter (one limiter = one worker process), each making calls."""
    probe = ConcurrencyProbe()
    errors: list[BaseException] = []

    def work(limiter: FleetRateLimiter) -> None:
        try:
            with httpx.Client(transport=RateLimitedTransport(httpx.MockTransport(probe), limiter)) as http:
                for _ in range(calls_each):
                    http.get("http://api.test/")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(lim,)) for lim in limiters for _ in range(threads_per_limiter)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a caller never got a slot"
    assert errors == []
    assert probe.calls == len(threads) * calls_each
    return probe


@pytest.mark.parametrize("cap", [1, 2, 3])
def test_threads_of_several_workers_never_exceed_the_fleet_cap(
    redis_server: EmbeddedRedis, system: str, cap: int
) -> None:
    connections = [redis.Redis.from_url(redis_server.url) for _ in range(3)]
    try:
        limiters = [FleetRateLimiter(c, system, 100_000, 1000, max_in_flight=cap) for c in connections]
        probe = hammer(limiters, threads_per_limiter=4, calls_each=8)
        assert probe.peak == cap  # never more, and 12 eager threads do fill every slot
        assert limiters[0].in_flight() == 0  # every lease was given back
    finally:
        for connection in connections:
            connection.close()


def test_zero_means_no_cap(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, 100_000, 1000, max_in_flight=0)
    assert limiter.acquire() is None
    probe = hammer([limiter], threads_per_limiter=8, calls_each=5)
    assert probe.peak > 2  # the same load that a cap holds down runs freely
    assert client.exists(keys.in_flight_key(system), keys.in_flight_wakeup_key(system)) == 0


class CountingRedis(redis.Redis):
    """A real client that counts the commands it sends."""

    commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("cap", "round_trips"), [(0, 1), (2, 2)])
def test_a_cap_costs_one_more_round_trip_per_call_and_no_cap_none(
    redis_server: EmbeddedRedis, system: str, cap: int, round_trips: int
) -> None:
    counting = CountingRedis(connection_pool=redis.ConnectionPool.from_url(redis_server.url))
    try:
        transport = RateLimitedTransport(
            httpx.MockTransport(lambda _request: httpx.Response(200)),
            FleetRateLimiter(counting, system, 100_000, 1000, max_in_flight=cap),
        )
        with httpx.Client(transport=transport) as http:
            http.get("http://api.test/")  # loads the scripts
            counting.commands = 0
            for _ in range(5):
                http.get("http://api.test/")
        assert counting.commands == 5 * round_trips  # the slot is taken by the bucket's own script
    finally:
        counting.close()


def test_a_lease_left_by_a_killed_process_expires(redis_server: EmbeddedRedis, system: str, tmp_path: Path) -> None:
    """A process SIGKILLed while holding a slot cannot hold it longer than its lease, even while others come and go."""
    script = tmp_path / "die_holding_a_lease.py"
    script.write_text(
        "import os, signal, sys\n"
        "import redis\n"
        "from shared.ratelimit import FleetRateLimiter\n"
        "limiter = FleetRateLimiter(redis.Redis.from_url(sys.argv[1]), sys.argv[2], 1000, 100, max_in_flight=2,"
        " lease_s=1.0)\n"
        "assert limiter.acquire() is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    died = subprocess.run(
        [sys.executable, str(script), redis_server.url, system], cwd=Path(__file__).parents[2], check=False
    )
    assert died.returncode == -9
    survivor = FleetRateLimiter(redis.Redis.from_url(redis_server.url), system, 1000, 100, max_in_flight=2)
    first = survivor.acquire()  # the other slot; its 60 s lease keeps the set itself alive
    got: list[str | None] = []
    waiter = threading.Thread(target=lambda: got.append(survivor.acquire()))
    waiter.start()
    waiter.join(timeout=30)
    assert not waiter.is_alive(), "the dead process's lease never expired"
    assert len(got) == 1
    assert got[0] is not None
    assert survivor.waited_s > 0  # it did wait: the dead lease counted until it expired
    assert survivor.in_flight() == 2  # the survivor's own two leases, not the dead one as well
    for lease in (first, got[0]):
        survivor.release(lease)
    survivor.redis.close()


def test_a_caller_waits_while_the_cap_is_full_and_gets_the_released_slot(client: redis.Redis, system: str) -> None:
    holder = FleetRateLimiter(client, system, 1000, 100, max_in_flight=1)
    waiter = FleetRateLimiter(client, system, 1000, 100, max_in_flight=1)
    lease = holder.acquire()
    got: list[str | None] = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire()))
    thread.start()
    thread.join(timeout=0.3)
    assert thread.is_alive()
    assert got == []
    holder.release(lease)
    thread.join(timeout=30)
    assert len(got) == 1
    assert got[0] is not None
    assert waiter.waited_s > 0
    waiter.release(got[0])
    assert holder.in_flight() == 0


def test_releases_nobody_waits_for_leave_at_most_cap_wakeups(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, 1000, 100, max_in_flight=2, lease_s=5)
    for _ in range(6):
        limiter.release(limiter.acquire())
    assert client.llen(keys.in_flight_wakeup_key(system)) == 2
    assert 0 < int(client.pttl(keys.in_flight_wakeup_key(system))) <= 5000
    limiter.release("a-lease-that-expired-long-ago")  # harmless
    assert limiter.in_flight() == 0


def test_a_lease_is_held_until_the_answer_is_read(client: redis.Redis, system: str) -> None:
    limiter = FleetRateLimiter(client, system, 1000, 100, max_in_flight=2)
    seen_while_reading: list[int] = []

    class Body(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            seen_while_reading.append(limiter.in_flight())
            yield b"{}"

    transport = RateLimitedTransport(httpx.MockTransport(lambda _r: httpx.Response(200, stream=Body())), limiter)
    with httpx.Client(transport=transport) as http:
        assert http.get("http://api.test/").content == b"{}"
    assert seen_while_reading == [1]
    assert limiter.in_flight() == 0


def test_a_failed_call_gives_its_lease_back(client: redis.Redis, system: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    limiter = FleetRateLimiter(client, system, 1000, 100, max_in_flight=1)
    with httpx.Client(transport=RateLimitedTransport(httpx.MockTransport(refuse), limiter)) as http:
        for _ in range(3):  # with the lease kept, the second call would wait for a minute
            with pytest.raises(httpx.ConnectError):
                http.get("http://api.test/")
    assert limiter.in_flight() == 0


def test_a_429_under_a_cap_still_cools_the_fleet_down(client: redis.Redis, system: str) -> None:
    transport = RateLimitedTransport(
        httpx.MockTransport(lambda _request: httpx.Response(429, headers={"Retry-After": "3"})),
        FleetRateLimiter(client, system, 1000, 100, max_in_flight=2),
    )
    with httpx.Client(transport=transport) as http:
        http.get("http://api.test/")
    assert 2000 < int(client.pttl(keys.cooldown_key(system))) <= 3000


def test_a_negative_cap_is_refused(client: redis.Redis, system: str) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        FleetRateLimiter(client, system, 1000, 100, max_in_flight=-1)


# --- settings -----------------------------------------------------------------------------------------------


def test_in_flight_caps_default_to_wave_2_and_customerp_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WAVESYNC_WAVE_MAX_IN_FLIGHT", raising=False)
    monkeypatch.delenv("WAVESYNC_CUSTOMERP_MAX_IN_FLIGHT", raising=False)
    settings = Settings(_env_file=None)
    assert (settings.wave_max_in_flight, settings.customerp_max_in_flight) == (2, 0)


def test_in_flight_caps_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAVESYNC_WAVE_MAX_IN_FLIGHT", "0")
    monkeypatch.setenv("WAVESYNC_CUSTOMERP_MAX_IN_FLIGHT", "6")
    settings = Settings(_env_file=None)
    assert (settings.wave_max_in_flight, settings.customerp_max_in_flight) == (0, 6)


@pytest.mark.parametrize("value", ["-1", "two"])
def test_a_bad_in_flight_cap_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("WAVESYNC_WAVE_MAX_IN_FLIGHT", value)
    with pytest.raises(ValidationError, match="wave_max_in_flight"):
        Settings(_env_file=None)


def test_the_context_gives_each_client_its_systems_cap(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """Only a capped system's calls take leases: a released lease leaves a wake-up behind, an uncapped call none."""
    settings = Settings(
        redis_url=redis_server.url,
        database_url=f"sqlite:///{tmp_path / 'links.db'}",
        customerp_url="http://127.0.0.1:1",
        customerp_api_key="key",
        wave_url="http://127.0.0.1:1/graphql/public",
        wave_token="token",
        wave_max_in_flight=3,
        customerp_max_in_flight=0,
        http_timeout=2,
    )
    ctx = Context.from_settings(settings)
    try:
        ctx.redis.delete(*(keys.in_flight_wakeup_key(s) for s in ("wave", "customerp")))
        for call in (lambda: ctx.customerp.get("customers", "c1"), lambda: ctx.wave.get_customer("w1")):
            with pytest.raises(SyncError):  # nothing listens on port 1
                call()
        assert ctx.redis.exists(keys.in_flight_wakeup_key("wave")) == 1
        assert ctx.redis.exists(keys.in_flight_wakeup_key("customerp")) == 0
    finally:
        ctx.close()


# --- Retry-After (one parser for both clients and the limiter) ----------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0.5", 0.5),
        (" 7 ", 7.0),
        ("-2", 0.0),
        ("", None),
        ("  ", None),
        (None, None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(30)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:30", now) == 30  # no zone: GMT


def test_an_http_date_retry_after_is_read_against_the_servers_date() -> None:
    """Our clock may be off; the server's Date header and its Retry-After come from the same clock."""
    server_now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    headers = httpx.Headers(
        {
            "Retry-After": format_datetime(server_now + timedelta(seconds=90), usegmt=True),
            "Date": format_datetime(server_now, usegmt=True),
        }
    )
    assert retry_after_seconds(headers) == 90
    assert retry_after_seconds(httpx.Headers({"Retry-After": "4"})) == 4
    assert retry_after_seconds(httpx.Headers({"Retry-After": "12", "Date": "garbage"})) == 12
    assert retry_after_seconds(httpx.Headers()) is None


# --- retry backoff ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("failures", range(8))
def test_backoff_is_full_jitter_under_an_exponential_ceiling(failures: int) -> None:
    rng = random.Random(failures)
    ceiling = min(30.0, 0.5 * 2**failures)
    delays = [backoff_seconds(failures, 0.5, 30.0, None, rng) for _ in range(300)]
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range, not around the ceiling.
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9


def test_backoff_is_reproducible_with_a_seed() -> None:
    first = [backoff_seconds(n, 1, 300, None, random.Random(42)) for n in range(6)]
    again = [backoff_seconds(n, 1, 300, None, random.Random(42)) for n in range(6)]
    assert first == again


def test_backoff_never_retries_before_retry_after() -> None:
    rng = random.Random(7)
    assert all(backoff_seconds(0, 1, 300, 12.5, rng) >= 12.5 for _ in range(100))


def test_backoff_caps_a_huge_retry_after_at_the_maximum() -> None:
    assert backoff_seconds(3, 1, 300, 86_400, random.Random(1)) == 300


def test_backoff_never_exceeds_the_maximum_however_many_failures() -> None:
    rng = random.Random(3)
    assert max(backoff_seconds(60, 1, 300, None, rng) for _ in range(200)) <= 300


def test_a_429_retry_waits_retry_after_plus_a_widening_jitter() -> None:
    rng = random.Random(9)
    first = [throttle_backoff_seconds(0, 0.5, 60, 2.0, rng) for _ in range(200)]
    later = [throttle_backoff_seconds(5, 0.5, 60, 2.0, rng) for _ in range(200)]
    assert all(2.0 <= d <= 2.5 for d in first)
    assert all(2.0 <= d <= 18.0 for d in later)
    assert max(later) > 10  # retries of a long 429 storm spread out instead of returning together
    assert throttle_backoff_seconds(0, 0.5, 60, None, rng) >= 1.0  # no Retry-After: at least a second
    assert throttle_backoff_seconds(9, 0.5, 3, 600, rng) == 3  # never beyond the cap


def test_auth_errors_wait_between_half_the_maximum_and_the_maximum() -> None:
    rng = random.Random(5)
    delays = [auth_backoff_seconds(300, rng) for _ in range(200)]
    assert all(150 <= d <= 300 for d in delays)
