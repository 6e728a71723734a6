"""The fleet rate limit on a real Redis: a shared token bucket, a shared 429 cooldown; and the retry backoff maths."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import redis

from shared import keys
from shared.ratelimit import FleetRateLimiter, RateLimitedTransport, parse_retry_after
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


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("", None), (None, None), ("soon", None)],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(30)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now.timestamp()) == 0


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


@pytest.mark.parametrize(("backoff_max", "time_limit"), [(300, 300), (60, 30), (1700, 10), (5000, 900)])
def test_the_longest_countdown_stays_well_under_the_visibility_timeout(backoff_max: float, time_limit: float) -> None:
    """A countdown longer than the visibility timeout would let Redis hand the waiting retry to a second worker."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", retry_backoff_max=backoff_max, task_time_limit=time_limit)
    rng = random.Random(11)
    longest = max(
        max(backoff_seconds(n, 1, backoff_max, 10 * backoff_max, rng) for n in range(40)),
        max(auth_backoff_seconds(backoff_max, rng) for _ in range(40)),
        max(throttle_backoff_seconds(n, 1, backoff_max, 10 * backoff_max, rng) for n in range(40)),
    )
    assert longest + settings.task_time_limit <= settings.visibility_timeout / 2
