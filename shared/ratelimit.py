"""A fleet-wide rate limit per external system: a token bucket in Redis plus a shared 429 cooldown.

Celery's own `rate_limit` is per worker; this one is shared by every worker on every host. It sits in the
HTTP transport, so every call of a client is counted, and a 429 seen by one worker pauses them all and slows
the whole fleet down (it then speeds up again gradually). Rate and burst are settings per system
(WAVESYNC_WAVE_RATE_PER_SECOND, WAVESYNC_WAVE_BURST, WAVESYNC_CUSTOMERP_...).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
import redis

from shared import keys, metrics

# The bucket is a hash {tokens, ts, rate}: `rate` is the fleet's current rate, which a 429 halves and which
# grows back by `recovery` (a fraction per second) up to the configured rate; the burst shrinks with it. Time is
# the Redis server's, so hosts with skewed clocks still share one bucket fairly.
#
# KEYS[1] bucket, KEYS[2] cooldown; ARGV configured rate/s, burst, recovery, bucket TTL (ms). Returns 0 when a
# token is granted, else milliseconds to wait: the rest of a 429 cooldown, or until the bucket holds a token.
_ACQUIRE_SCRIPT = """
local cooldown = redis.call('PTTL', KEYS[2])
if cooldown > 0 then
  return cooldown
end
local configured = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
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
return wait
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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


class FleetRateLimiter:
    """One external system's share of the fleet: `acquire()` before each call, `cool_down()` after a 429.

    The configured rate is a ceiling. A 429 means the real limit is lower (another client shares the quota, the
    provider changed plans): the whole fleet then halves its rate and climbs back by `recovery` per second.
    """

    def __init__(
        self,
        client: redis.Redis,
        system: str,
        rate_per_second: float,
        burst: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_cooldown_s: float = 120.0,
        min_rate_per_second: float = 1.0,
        recovery: float = 0.1,
        memory_s: float = 300.0,
    ) -> None:
        self.redis = client
        self.system = system
        self.rate = rate_per_second
        self.burst = burst
        self.sleep = sleep
        self.max_cooldown_s = max_cooldown_s
        self.min_rate = min(min_rate_per_second, rate_per_second)
        self.recovery = recovery
        self.memory_ms = int(memory_s * 1000)  # how long an idle fleet remembers a lowered rate
        self._acquire = client.register_script(_ACQUIRE_SCRIPT)
        self._cool_down = client.register_script(_COOL_DOWN_SCRIPT)
        self.waited_s = 0.0

    def acquire(self) -> None:
        """Block until this process may send one request to the system."""
        bucket, cooldown = keys.rate_bucket_key(self.system), keys.cooldown_key(self.system)
        while True:
            wait_ms = int(
                self._acquire(keys=[bucket, cooldown], args=[self.rate, self.burst, self.recovery, self.memory_ms])
            )
            if wait_ms <= 0:
                return
            self._wait(wait_ms / 1000)

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
        """The fleet's current rate (requests/s) and the rest of any cooldown (s), for `status` and tests."""
        rate = self.redis.hget(keys.rate_bucket_key(self.system), "rate")
        cooldown_ms = int(self.redis.pttl(keys.cooldown_key(self.system)))
        return {
            "configured_per_s": self.rate,
            "current_per_s": round(min(self.rate, float(rate)) if rate is not None else self.rate, 3),
            "cooldown_s": max(0, cooldown_ms) / 1000,
        }

    def _wait(self, seconds: float) -> None:
        self.waited_s += seconds
        metrics.RATE_LIMIT_WAIT.labels(self.system).inc(seconds)
        self.sleep(seconds)


class RateLimitedTransport(httpx.BaseTransport):
    """Wraps a transport: takes a fleet token before each request and spreads a 429 to the whole fleet."""

    def __init__(self, inner: httpx.BaseTransport, limiter: FleetRateLimiter) -> None:
        self.inner = inner
        self.limiter = limiter

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.limiter.acquire()
        response = self.inner.handle_request(request)
        if response.status_code == 429:
            self.limiter.cool_down(parse_retry_after(response.headers.get("Retry-After")) or 1.0)
        return response

    def close(self) -> None:
        self.inner.close()
