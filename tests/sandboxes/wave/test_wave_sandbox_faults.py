"""Every fault mode of the Wave sandbox, seen through the real WaveClient, and exact call counts."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from shared.errors import RateLimitedError, RetryableError, SyncError
from shared.wave.client import WaveClient
from tests.sandboxes.wave.conftest import Sandbox


def test_latency_delays_every_call(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.faults(latency_ms=150)
    started = time.monotonic()
    wave_client.get_business()
    assert time.monotonic() - started >= 0.15


def test_server_error_is_retryable(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.faults(error_rate=1.0)
    with pytest.raises(RetryableError) as caught:
        wave_client.list_customers_page(1)
    assert type(caught.value) is RetryableError
    assert "503" in str(caught.value)


def test_throttling_is_rate_limited_with_retry_after(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.faults(rate_limit_rate=1.0, retry_after_s=7)
    with pytest.raises(RateLimitedError) as caught:
        wave_client.create_customer({"name": "Never"})
    assert caught.value.retry_after == 7
    assert wave.snapshot()["customers"] == []


def test_calls_over_the_in_flight_cap_are_throttled(wave: Sandbox) -> None:
    wave.faults(max_in_flight=1, latency_ms=400)
    outcomes: list[str] = []

    def call() -> None:
        with wave.client() as client:
            try:
                client.get_business()
                outcomes.append("ok")
            except RateLimitedError:
                outcomes.append("throttled")

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok", "throttled"]


def test_hang_past_the_client_timeout_is_retryable(wave: Sandbox) -> None:
    wave.faults(hang_rate=1.0, hang_s=0.6)
    with wave.client(timeout=0.2) as client, pytest.raises(RetryableError) as caught:
        client.get_business()
    assert "Timeout" in str(caught.value)
    wave.faults(hang_rate=0.0)
    time.sleep(0.5)  # let the hanging request finish before the next test resets the sandbox


def test_dropped_connection_is_retryable(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.faults(drop_rate=1.0)
    with pytest.raises(RetryableError):
        wave_client.get_customer("QQ==")


def test_a_connection_dropped_on_purpose_logs_no_traceback(wave: Sandbox, wave_client: WaveClient) -> None:
    # A soak cuts hundreds of connections; each used to print uvicorn's "Exception in ASGI application".
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        wave.faults(drop_rate=1.0)
        with pytest.raises(RetryableError):
            wave_client.get_customer("QQ==")
        time.sleep(0.2)  # the server logs after the client has seen the cut
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in seen if r.exc_info] == []


def test_lost_response_applies_the_write_but_reports_retryable(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.faults(lost_response_rate=1.0)
    with pytest.raises(RetryableError):
        wave_client.create_customer({"name": "Applied anyway", "email": "ghost@example.com"})
    assert [c["name"] for c in wave.snapshot()["customers"]] == ["Applied anyway"]
    # The recovery a caller must make: look the record up before creating it again.
    wave.faults(lost_response_rate=0.0)
    assert [c.name for c in wave_client.find_customers(email="ghost@example.com")] == ["Applied anyway"]


def test_iterating_250_customers_by_100_takes_exactly_3_calls(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.seed(customers=250)
    wave.reset_counters()
    assert len(list(wave_client.iter_customers())) == 250
    assert wave.calls() == {"business.customers": 3}


def test_exact_page_multiple_stops_on_total_pages(wave: Sandbox) -> None:
    wave.seed(customers=200)
    wave.reset_counters()
    with wave.client(page_size=100) as client:
        assert len(list(client.iter_customers())) == 200
    assert wave.calls() == {"business.customers": 2}


def test_on_call_hook_sees_operation_duration_and_status(wave: Sandbox) -> None:
    seen: list[tuple[str, float, int]] = []
    wave.faults(error_rate=1.0)
    with wave.client(on_call=lambda op, seconds, status: seen.append((op, seconds, status))) as client:
        with pytest.raises(SyncError):
            client.get_invoice("QQ==")
        wave.faults(error_rate=0.0, drop_rate=1.0)
        with pytest.raises(SyncError):
            client.get_invoice("QQ==")
    assert [(op, status) for op, _s, status in seen] == [
        ("business.invoice", 503),
        ("business.invoice", 0),
    ]  # 0: no response
    assert all(seconds >= 0 for _op, seconds, _st in seen)
