"""Prometheus metrics of pollers and workers, served on WAVESYNC_METRICS_PORT when it is set.

Counters and histograms are updated where things happen. Queue depths and dead-letter counts are state, not
events: they are read from Redis and the database when Prometheus scrapes (every process reports the same
fleet-wide value, so aggregate them with `max`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError

from shared import keys
from shared.deadletters import DeadLetters
from shared.store.credentials import STATES, Cipher, CredentialKeyError, all_states, read
from shared.store.db import Database

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

RECORDS = Counter(
    "wavesync_records_total",
    "Records processed by the sync workers, by outcome (created, updated, unchanged, dead-lettered, ...)",
    ["entity", "direction", "result"],
)
RETRIES = Counter("wavesync_retries_total", "Task retries by entity and error class", ["entity", "error"])
DEAD_LETTERS = Counter("wavesync_dead_letters_total", "Records sent to a dead-letter queue", ["entity", "error"])
ENQUEUED = Counter("wavesync_enqueued_total", "Change messages enqueued by the pollers", ["system", "entity"])
COALESCED = Counter("wavesync_coalesced_total", "Changes folded into a message already queued", ["system", "entity"])
ECHOES = Counter("wavesync_echoes_skipped_total", "Changes recognised as the engine's own writes", ["system", "entity"])
POLL_LAG = Gauge("wavesync_poll_lag_seconds", "Age of the newest change a poller has enqueued", ["system", "entity"])
API_CALLS = Counter("wavesync_api_calls_total", "HTTP calls to an external system", ["system", "status"])
RATE_LIMIT_WAIT = Counter(
    "wavesync_rate_limit_wait_seconds_total",
    "Seconds callers waited for the fleet rate limit or a 429 cooldown",
    ["system"],
)
COOLDOWNS = Counter(
    "wavesync_rate_limit_cooldowns_total", "Fleet-wide pauses started by a 429 (each halves the rate)", ["system"]
)
API_LATENCY = Histogram(
    "wavesync_api_latency_seconds",
    "Latency of calls to an external system",
    ["system"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def api_call_observer(system: str) -> Callable[[str, float, int], None]:
    """The clients' `on_call` hook: count calls and 429s, time them."""

    def observe(_operation: str, seconds: float, status: int) -> None:
        API_CALLS.labels(system, str(status)).inc()
        API_LATENCY.labels(system).observe(seconds)

    return observe


# Kombu keeps a priority queue as several lists: the bare name (priority 0) and these suffixes.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_depths(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Waiting messages per queue (all priority sub-lists) and unacknowledged ones (delivered, not done)."""
    out = {q: {"waiting": 0, "unacked": 0} for q in keys.QUEUES}
    for queue in keys.QUEUES:
        for suffix in _PRIORITY_SUFFIXES:
            out[queue]["waiting"] += int(client.llen(queue + suffix))
    unacked: Tally[str] = Tally()
    for _tag, raw in client.hscan_iter("unacked"):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        unacked[routing_key] += 1
    for queue, count in unacked.items():
        out.setdefault(queue, {"waiting": 0, "unacked": 0})["unacked"] = count
    return out


# Every value of wavesync_connection_state's `state` label: the stored states and the two `status` derives.
CONNECTION_STATES = (*STATES, "key_mismatch", "not_connected")


class StateCollector(Collector):
    """Reads queue depths (Redis) and dead-letter counts (database) at scrape time."""

    def __init__(self, redis_url: str | None, database_url: str, *, oauth_keys: list[str] | None = None) -> None:
        self.redis_url = redis_url
        self.db = Database(database_url)
        self._redis: redis.Redis | None = None
        # WAVESYNC_WAVE_AUTH=oauth: Wave must be connected, and its stored tokens readable with these keys.
        self._cipher = Cipher(oauth_keys) if oauth_keys else None

    def collect(self) -> Iterable[Metric]:
        yield from self._queues()
        yield from self._dead_letters()
        yield from self._connections()

    def _queues(self) -> Iterable[Metric]:
        if self.redis_url is None:
            return
        if self._redis is None:
            self._redis = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            depths = queue_depths(self._redis)
        except redis.RedisError as exc:
            log.warning("metrics: cannot read queue depths: %s", exc)
            return
        waiting = GaugeMetricFamily("wavesync_queue_depth", "Messages waiting in a queue", labels=["queue"])
        unacked = GaugeMetricFamily(
            "wavesync_queue_unacked", "Messages delivered to a worker and not yet acknowledged", labels=["queue"]
        )
        for queue, depth in sorted(depths.items()):
            waiting.add_metric([queue], depth["waiting"])
            unacked.add_metric([queue], depth["unacked"])
        yield waiting
        yield unacked

    def _dead_letters(self) -> Iterable[Metric]:
        try:
            with self.db.session() as session:
                counts = DeadLetters(self.db).counts(session)
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot count dead letters: %s", exc)
            return
        gauge = GaugeMetricFamily(
            "wavesync_dead_letter_queue_size", "Dead letters waiting for a person", labels=["entity", "error"]
        )
        for entity, by_error in sorted(counts.items()):
            for error_class, count in sorted(by_error.items()):
                gauge.add_metric([entity, error_class], count)
        yield gauge

    def _connections(self) -> Iterable[Metric]:
        try:
            with self.db.session() as session:
                found = all_states(session)
            if self._cipher is not None:
                # The states `wavesync status` shows beyond the stored one: both pause the work that needs Wave.
                if not any(c["system"] == "wave" for c in found):
                    found.append({"system": "wave", "state": "not_connected", "since": None})
                for connection in found:
                    if connection["since"] is not None:
                        try:
                            read(self.db, self._cipher, connection["system"])
                        except CredentialKeyError:
                            connection["state"] = "key_mismatch"
        except SQLAlchemyError as exc:
            log.warning("metrics: cannot read connection states: %s", exc)
            return
        state = GaugeMetricFamily(
            "wavesync_connection_state",
            "1 for the state an OAuth connection is in (needs_reauthorization, key_mismatch, not_connected: work "
            "that needs it is paused)",
            labels=["system", "state"],
        )
        since = GaugeMetricFamily(
            "wavesync_connection_state_since_timestamp_seconds",
            "When the connection entered its current state (Unix time)",
            labels=["system"],
        )
        for connection in found:
            for name in CONNECTION_STATES:
                state.add_metric([connection["system"], name], 1.0 if connection["state"] == name else 0.0)
            if connection["since"] is not None:
                since.add_metric([connection["system"]], datetime.fromisoformat(connection["since"]).timestamp())
        yield state
        yield since


def serve(port: int, host: str, settings: Settings | None = None) -> None:
    """Start the /metrics endpoint (no-op when `port` is 0); with `settings`, also report queues and DLQs."""
    if not port:
        return
    if settings is not None:
        REGISTRY.register(
            StateCollector(
                str(settings.redis_url) if settings.redis_url else None,
                settings.database_url,
                oauth_keys=settings.secret_keys() if settings.wave_auth == "oauth" else None,
            )
        )
    start_http_server(port, addr=host)
