"""A fleet-wide rate limit per external system: a token bucket in Redis plus a shared 429 cooldown.

Celery's own `rate_limit` is per worker; this one is shared by every worker on every host. It sits in the
HTTP transport, so every call of a client is counted, and a 429 seen by one worker pauses them all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import httpx
import redis

from shared import keys

# KEYS[1] bucket; ARGV rate/s, burst, now (s), requested. Returns 0 when granted, else seconds to wait (ms).
_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return wait
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
    def __init__(
        self,
        client: redis.Redis,
        system: str,
        rate_per_second: float,
        burst: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_cooldown_s: float = 120.0,
    ) -> None:
        self.redis = client
        self.system = system
        self.rate = rate_per_second
        self.burst = burst
        self.sleep = sleep
        self.max_cooldown_s = max_cooldown_s
        self._bucket = client.register_script(_BUCKET_SCRIPT)
        self.waited_s = 0.0

    def acquire(self) -> None:
        """Block until this process may send one request to the system."""
        while True:
            cooldown_ms = self.redis.pttl(keys.cooldown_key(self.system))
            if isinstance(cooldown_ms, int) and cooldown_ms > 0:
                self._wait(cooldown_ms / 1000)
                continue
            wait_ms = int(
                self._bucket(keys=[keys.rate_bucket_key(self.system)], args=[self.rate, self.burst, time.time()])
            )
            if wait_ms <= 0:
                return
            self._wait(wait_ms / 1000)

    def cool_down(self, seconds: float) -> None:
        """Every worker waits `seconds` before its next call to this system (a 429 was seen)."""
        ms = int(min(max(seconds, 0.5), self.max_cooldown_s) * 1000)
        key = keys.cooldown_key(self.system)
        current = self.redis.pttl(key)
        if not isinstance(current, int) or current < ms:
            self.redis.set(key, "1", px=ms)

    def _wait(self, seconds: float) -> None:
        self.waited_s += seconds
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
