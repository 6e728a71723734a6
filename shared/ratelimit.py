"""A fleet-wide limit per external system, in Redis: a token bucket, a shared 429 cooldown and in-flight leases.

Celery's own `rate_limit` is per worker; this one is shared by every worker on every host. It sits in the
HTTP transport, so every call of a client is counted, and a 429 seen by one worker pauses them all and slows
the whole fleet down (it then speeds up again gradually). Rate and burst are settings per system
(WAVESYNC_WAVE_RATE_PER_SECOND, WAVESYNC_WAVE_BURST, WAVESYNC_CUSTOMERP_...). An API that caps concurrent
requests instead (Wave answers 429 beyond about two in flight) gets a fleet-wide semaphore of leases
(WAVESYNC_WAVE_MAX_IN_FLIGHT): a call holds a lease from the moment it is sent until its answer is read.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx
import redis

from shared import keys, metrics
from shared.settings import Settings

# The bucket is a hash {tokens, ts, rate}: `rate` is the fleet's current rate, which a 429 halves and which
# grows back by `recovery` (a fraction per second) up to the configured rate; the burst shrinks with it. Time is
# the Redis server's, so hosts with skewed clocks still share one bucket fairly.
#
# In-flight leases are a sorted set {lease id: expiry in server milliseconds}. Expired leases are dropped before
# counting, so a process killed while holding one (SIGKILL, OOM, a lost host) gives its slot back after the lease
# time instead of never. The slot and the token are taken together, all or nothing: a call never holds a slot
# while it sleeps for a token (that would idle the slot), nor spends a token while it waits for a slot.
#
# KEYS[1] bucket, KEYS[2] cooldown, KEYS[3] leases; ARGV configured rate/s, burst, recovery, bucket TTL (ms),
# max in flight (0 = no cap), lease id, lease time (ms). Returns 0 when a token (and a lease) is granted; > 0:
# milliseconds to sleep, the rest of a 429 cooldown or until the bucket holds a token; < 0: every slot is taken,
# minus the milliseconds until the oldest lease expires.
_ACQUIRE_SCRIPT = """
local cooldown = redis.call('PTTL', KEYS[2])
if cooldown > 0 then
  return cooldown
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local now_ms = math.floor(now * 1000)
local cap = tonumber(ARGV[5])
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now_ms)
  if redis.call('ZCARD', KEYS[3]) >= cap then
    local oldest = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
    return -math.max(1, tonumber(oldest[2]) - now_ms)
  end
end
local configured = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts', 'rate')
local elapsed = math.max(0, now - (tonumber(state[2]) or now))
local rate = math.min(configured, (tonumber(state[3]) or configured) * (1 + tonumber(ARGV[3]) * elapsed))
local burst = math.max(1, tonumber(ARGV[2]) * rate / configured)
local tokens = math.min(burst, (tonumber(state[1]) or burst) + elapsed * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now), 'rate', tostring(rate))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if wait == 0 and cap > 0 then
  local lease_ms = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[3], now_ms + lease_ms, ARGV[6])
  if redis.call('PTTL', KEYS[3]) < lease_ms then
    redis.call('PEXPIRE', KEYS[3], lease_ms)
  end
end
return wait
"""

# KEYS[1] leases, KEYS[2] wake-up list; ARGV lease id, max in flight, lease time (ms). Gives the slot back and
# wakes one waiting caller. A wake-up pushed while nobody waits stays in the list, so a caller that found the set
# full just before this release does not miss it; the list never holds more than `max in flight` of them.
_RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 0
"""

# KEYS[1] cooldown, KEYS[2] bucket; ARGV cooldown (ms), configured rate/s, minimum rate/s, bucket TTL (ms).
# The first 429 of a wave starts the cooldown, halves the fleet's rate and empties the bucket, so the fleet
# resumes slowly instead of in a burst. 429s of calls already in flight only lengthen the cooldown: one wave of
# 429s halves the rate once. Returns 1 when this call started a cooldown.
_COOL_DOWN_SCRIPT = """
local current = redis.call('PTTL', KEYS[1])
if current > 0 then
  if current < tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
  end
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate = tonumber(redis.call('HGET', KEYS[2], 'rate')) or tonumber(ARGV[2])
rate = math.max(tonumber(ARGV[3]), rate / 2)
local resume = now + tonumber(ARGV[1]) / 1000
redis.call('HSET', KEYS[2], 'rate', tostring(rate), 'tokens', '0', 'ts', tostring(resume))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""

# Longest single BLPOP while every slot is taken. A release always pushes a wake-up, so this bound only matters
# when a woken caller died before taking the slot it was woken for; it also keeps each blocking call well under
# any socket timeout a deployer may put in WAVESYNC_REDIS_URL.
_MAX_BLOCK_S = 1.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    when = _http_date(text)
    if when is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """A response's Retry-After in seconds. An HTTP-date is read against the server's own `Date` header when it
    sent one, so the skew of our clock does not count."""
    value = headers.get("retry-after")
    if value is None:
        return None  # most answers: no need to parse their Date
    return parse_retry_after(value, _http_date(headers.get("date") or ""))


def _http_date(text: str) -> datetime | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class FleetRateLimiter:
    """One external system's share of the fleet: `acquire()` before each call and `release()` its lease after it,
    `cool_down()` after a 429.

    The configured rate is a ceiling. A 429 means the real limit is lower (another client shares the quota, the
    provider changed plans): the whole fleet then halves its rate and climbs back by `recovery` per second.
    `max_in_flight` (0 = no cap) bounds the calls in flight across the fleet; a lease lasts at most `lease_s`,
    which must outlast the longest call (the HTTP timeout): a call still running when its lease expires lets one
    more call in than the cap.
    """

    def __init__(
        self,
        client: redis.Redis,
        system: str,
        rate_per_second: float,
        burst: int,
        *,
        max_in_flight: int = 0,
        lease_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        max_cooldown_s: float = 120.0,
        min_rate_per_second: float = 1.0,
        recovery: float = 0.1,
        memory_s: float = 300.0,
    ) -> None:
        if max_in_flight < 0:
            raise ValueError("max_in_flight must be 0 (no cap) or more")
        self.redis = client
        self.system = system
        self.rate = rate_per_second
        self.burst = burst
        self.max_in_flight = max_in_flight
        self.lease_ms = max(1, int(lease_s * 1000))
        self.sleep = sleep
        self.max_cooldown_s = max_cooldown_s
        self.min_rate = min(min_rate_per_second, rate_per_second)
        self.recovery = recovery
        self.memory_ms = int(memory_s * 1000)  # how long an idle fleet remembers a lowered rate
        self._acquire = client.register_script(_ACQUIRE_SCRIPT)
        self._release = client.register_script(_RELEASE_SCRIPT)
        self._cool_down = client.register_script(_COOL_DOWN_SCRIPT)
        self.waited_s = 0.0

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings, system: str) -> FleetRateLimiter:
        """The fleet's limiter for `system` ("customerp" or "wave") as WAVESYNC_<SYSTEM>_* configure it."""
        return cls(
            client,
            system,
            getattr(settings, f"{system}_rate_per_second"),
            getattr(settings, f"{system}_burst"),
            max_in_flight=getattr(settings, f"{system}_max_in_flight"),
            # A lease outlasts the longest call: a call is over when its timeout fires, plus a margin for the answer.
            lease_s=settings.http_timeout + 5.0,
        )

    def acquire(self) -> str | None:
        """Block until this process may send one request to the system. Returns the call's lease, to hand to
        `release()` once the answer is read (None when there is no in-flight cap: nothing to release)."""
        lease = uuid.uuid4().hex if self.max_in_flight else None
        script_keys = [
            keys.rate_bucket_key(self.system),
            keys.cooldown_key(self.system),
            keys.in_flight_key(self.system),
        ]
        args: list[str | float] = [
            self.rate,
            self.burst,
            self.recovery,
            self.memory_ms,
            self.max_in_flight,
            lease or "",
            self.lease_ms,
        ]
        while True:
            wait_ms = int(self._acquire(keys=script_keys, args=args))
            if wait_ms == 0:
                return lease
            if wait_ms > 0:
                self._wait(wait_ms / 1000)
            else:
                self._wait_for_slot(min(-wait_ms / 1000, _MAX_BLOCK_S))

    def release(self, lease: str | None) -> None:
        """Give a lease back (no-op for None). Releasing a lease that already expired is harmless."""
        if lease is None:
            return
        self._release(
            keys=[keys.in_flight_key(self.system), keys.in_flight_wakeup_key(self.system)],
            args=[lease, self.max_in_flight, self.lease_ms],
        )

    def in_flight(self) -> int:
        """Leases held now across the fleet, expired ones not counted."""
        now_s, now_us = self.redis.time()
        return int(self.redis.zcount(keys.in_flight_key(self.system), f"({now_s * 1000 + now_us // 1000}", "+inf"))

    def cool_down(self, seconds: float) -> bool:
        """Every worker waits `seconds` (at least 0.5, at most `max_cooldown_s`) before its next call, then goes
        on at half the rate. Returns True when this call started the cooldown (False: one was running)."""
        ms = int(min(max(seconds, 0.5), self.max_cooldown_s) * 1000)
        started = self._cool_down(
            keys=[keys.cooldown_key(self.system), keys.rate_bucket_key(self.system)],
            args=[ms, self.rate, self.min_rate, self.memory_ms],
        )
        if started:
            metrics.COOLDOWNS.labels(self.system).inc()
        return bool(started)

    def state(self) -> dict[str, float]:
        """The fleet's current rate (requests/s), the rest of any cooldown (s) and, under an in-flight cap, the
        calls in flight now and the cap, for `status` and tests."""
        rate = self.redis.hget(keys.rate_bucket_key(self.system), "rate")
        cooldown_ms = int(self.redis.pttl(keys.cooldown_key(self.system)))
        state = {
            "configured_per_s": self.rate,
            "current_per_s": round(min(self.rate, float(rate)) if rate is not None else self.rate, 3),
            "cooldown_s": max(0, cooldown_ms) / 1000,
        }
        if self.max_in_flight:
            state |= {"in_flight": float(self.in_flight()), "max_in_flight": float(self.max_in_flight)}
        return state

    def _wait(self, seconds: float) -> None:
        self.waited_s += seconds
        metrics.RATE_LIMIT_WAIT.labels(self.system).inc(seconds)
        self.sleep(seconds)

    def _wait_for_slot(self, seconds: float) -> None:
        # Blocking on the wake-up list rather than polling: a released slot wakes exactly one waiter (the one that
        # has waited longest) within a round trip, and waiting callers cost no Redis commands and no CPU. Polling
        # would have to choose between slow hand-overs (a slot idle until the next poll: at 50 ms per call, a
        # 10 ms poll already loses up to a fifth) and a storm of scripts from every waiting thread of the fleet.
        # The block ends anyway when the oldest lease would expire, so a leaked lease is reclaimed on time.
        started = time.monotonic()
        self.redis.blpop([keys.in_flight_wakeup_key(self.system)], timeout=max(0.01, seconds))
        waited = time.monotonic() - started
        self.waited_s += waited
        metrics.RATE_LIMIT_WAIT.labels(self.system).inc(waited)


class RateLimitedTransport(httpx.BaseTransport):
    """Wraps a transport: takes a fleet token (and, under an in-flight cap, a lease) before each request, and
    spreads a 429 to the whole fleet."""

    def __init__(self, inner: httpx.BaseTransport, limiter: FleetRateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        lease = self.limiter.acquire()
        try:
            response = self.inner.handle_request(request)
            if lease is not None:
                # The server counts a call in flight until it has sent the whole answer: read it under the lease.
                _read_or_close(response)
        finally:
            self.limiter.release(lease)
        if response.status_code == 429:
            self.limiter.cool_down(retry_after_seconds(response.headers) or 1.0)
        return response

    def close(self) -> None:
        self.inner.close()


def _read_or_close(response: httpx.Response) -> None:
    try:
        response.read()
    except BaseException:
        response.close()
        raise
