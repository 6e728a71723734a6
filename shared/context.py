"""What a poller or worker process needs to talk to the world, built once per process from `Settings`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

import httpx
import redis

from shared import leases, metrics
from shared.coordination import Coordinator
from shared.customerp.client import CustomerpClient
from shared.natural_keys import WaveKeys
from shared.ratelimit import FleetRateLimiter, RateLimitedTransport
from shared.settings import Settings, SettingsError
from shared.store.db import Database
from shared.versions import utcnow
from shared.wave.auth import token_source
from shared.wave.client import WaveClient


@dataclass
class Context:
    settings: Settings
    customerp: CustomerpClient
    wave: WaveClient
    db: Database
    redis: redis.Redis
    coordinator: Coordinator
    clock: Callable[[], datetime] = field(default=utcnow)

    @classmethod
    def from_settings(cls, settings: Settings) -> Context:
        if settings.redis_url is None:
            raise SettingsError(
                [
                    "WAVESYNC_REDIS_URL is not set: set it to your Redis, or to the address a running `wavesync up` "
                    "printed (`embedded Valkey on redis://...`)"
                ]
            )
        # A socket timeout, so a Redis that freezes (rather than closes) fails calls instead of hanging them, and with
        # them a token refresh holding its lock or a worker's warm shutdown. Blocking commands here wait at most 1 s.
        client = redis.Redis.from_url(
            str(settings.redis_url), health_check_interval=25, socket_timeout=15, socket_connect_timeout=5
        )
        # Whoever may create records announces it is alive: a create it began is then waited for, not taken over.
        leases.KEEPER.heartbeat_on(client)
        limits = max(64, 4 * 16)
        cp_transport = RateLimitedTransport(
            httpx.HTTPTransport(verify=settings.verify_tls, limits=httpx.Limits(max_connections=limits)),
            FleetRateLimiter.from_settings(client, settings, "customerp"),
        )
        wave_transport = RateLimitedTransport(
            httpx.HTTPTransport(verify=settings.verify_tls, limits=httpx.Limits(max_connections=limits)),
            FleetRateLimiter.from_settings(client, settings, "wave"),
        )
        db = Database(settings.database_url)
        return cls(
            settings=settings,
            customerp=CustomerpClient(
                str(settings.customerp_url).rstrip("/"),
                settings.customerp_api_key.get_secret_value(),
                timeout=settings.http_timeout,
                transport=cp_transport,
                on_call=metrics.api_call_observer("customerp"),
            ),
            wave=WaveClient(
                str(settings.wave_url),
                token_source(settings, db, client),
                settings.wave_business_id,
                timeout=settings.http_timeout,
                transport=wave_transport,
                page_size=settings.poll_page_size,
                on_call=metrics.api_call_observer("wave"),
                on_throttled=wave_transport.limiter.cool_down,
            ),
            db=db,
            redis=client,
            coordinator=Coordinator(client),
        )

    @cached_property
    def wave_keys(self) -> WaveKeys:
        """The index of Wave's natural keys (one per process: it registers its scripts once)."""
        return WaveKeys(self.redis, self.settings)

    def close(self) -> None:
        leases.KEEPER.heartbeat_off(self.redis)
        self.customerp.close()
        self.wave.close()
        self.redis.close()


_lock = threading.Lock()
_context: Context | None = None


def get_context(settings_factory: Callable[[], Settings]) -> Context:
    """The process's context, created on first use (after a prefork child starts, never before)."""
    global _context
    with _lock:
        if _context is None:
            _context = Context.from_settings(settings_factory())
        return _context


def reset_context() -> None:
    global _context
    with _lock:
        if _context is not None:
            _context.close()
        _context = None
