"""Prometheus metrics of pollers and workers, served on WAVESYNC_METRICS_PORT when it is set."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECORDS = Counter("wavesync_records_total", "Records processed by the sync workers", ["entity", "direction", "result"])
RETRIES = Counter("wavesync_retries_total", "Task retries by entity and error class", ["entity", "error"])
DEAD_LETTERS = Counter("wavesync_dead_letters_total", "Records sent to a dead-letter queue", ["entity", "error"])
ENQUEUED = Counter("wavesync_enqueued_total", "Change messages enqueued by the pollers", ["system", "entity"])
COALESCED = Counter("wavesync_coalesced_total", "Changes folded into a message already queued", ["system", "entity"])
ECHOES = Counter("wavesync_echoes_skipped_total", "Changes recognised as the engine's own writes", ["system", "entity"])
POLL_LAG = Gauge("wavesync_poll_lag_seconds", "Age of the newest change a poller has enqueued", ["system", "entity"])
QUEUE_DEPTH = Gauge("wavesync_queue_depth", "Messages waiting in a queue", ["queue"])
API_CALLS = Counter("wavesync_api_calls_total", "HTTP calls to an external system", ["system", "status"])
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


def serve(port: int, host: str) -> None:
    if port:
        start_http_server(port, addr=host)
