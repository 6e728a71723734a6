"""A worker started with WAVESYNC_METRICS_PORT serves Prometheus metrics about what it did and what waits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sandboxes.serve import free_port
from shared import keys
from shared.celery_app import app
from tests.harness import Sandboxes
from tests.workers.support import new_customer, ready, running, wait_for
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_a_worker_exposes_sync_api_queue_and_dead_letter_metrics(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    port = free_port()
    with running(boxes, redis_server.url, tmp_path, metrics_port=port) as system:
        ready(system)
        wait_for("the metrics endpoint", lambda: _answers(port), system=system)
        # Seeded so that exactly the first Wave call is answered 429.
        system.boxes.faults("wave", rate_limit_rate=0.2, retry_after_s=0.1, seed=1063)
        new_customer(system, "Counted Ltd")
        new_customer(system, "Refused Ltd", notes="n" * 4500)
        # The poll runs on the worker's control queue, as beat would schedule it.
        app.send_task(keys.POLL_TASK, args=("customerp", "customers"))
        system.wait_idle()
        samples = scrape(port)

    created = value(
        samples, "wavesync_records_total", entity="customers", direction="customerp->wave", result="created"
    )
    assert created == 1
    refused = value(
        samples, "wavesync_records_total", entity="customers", direction="customerp->wave", result="dead-lettered"
    )
    assert refused == 1
    assert value(samples, "wavesync_dead_letters_total", entity="customers", error="InvalidDataError") == 1
    assert (value(samples, "wavesync_retries_total", entity="customers", error="RateLimitedError") or 0) >= 1
    assert (value(samples, "wavesync_api_calls_total", system="wave", status="429") or 0) >= 1
    assert (value(samples, "wavesync_api_calls_total", system="wave", status="200") or 0) >= 2
    assert (value(samples, "wavesync_api_calls_total", system="customerp", status="200") or 0) >= 1
    assert (value(samples, "wavesync_api_latency_seconds_count", system="wave") or 0) >= 3
    assert (value(samples, "wavesync_rate_limit_cooldowns_total", system="wave") or 0) >= 1
    assert value(samples, "wavesync_enqueued_total", system="customerp", entity="customers") == 2
    lag = value(samples, "wavesync_poll_lag_seconds", system="customerp", entity="customers")
    assert lag is not None
    assert 0 <= lag < 60
    # State read at scrape time: every queue, and the dead letters waiting now.
    for queue in keys.QUEUES:
        assert value(samples, "wavesync_queue_depth", queue=queue) == 0
        assert value(samples, "wavesync_queue_unacked", queue=queue) == 0
    assert value(samples, "wavesync_dead_letter_queue_size", entity="customers", error="InvalidDataError") == 1


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
