"""Every fault mode of the shared injector, seen through the real Customerp client, plus exact call counters."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from sandboxes.serve import ServerThread
from shared.customerp.client import CustomerpClient
from shared.errors import RateLimitedError, RetryableError, SyncError
from tests.sandboxes.customerp.conftest import API_KEY, CUSTOMER, PRODUCT, counters, set_faults


def test_latency_is_added_and_reported_to_on_call(sandbox: ServerThread, admin: httpx.Client) -> None:
    set_faults(admin, latency_ms=150)
    calls: list[tuple[str, float, int]] = []
    with CustomerpClient(sandbox.url, API_KEY, on_call=lambda *call: calls.append(call)) as customerp:
        customerp.changes("customers")

    assert len(calls) == 1
    operation, seconds, status = calls[0]
    assert (operation, status) == ("customers.changes", 200)
    assert seconds >= 0.15


def test_time_admitted_calls_hold_the_api_is_counted(client: CustomerpClient, admin: httpx.Client) -> None:
    # The benchmark divides this by (cap x run time) to tell idle slots under a concurrency cap from slow calls.
    set_faults(admin, latency_ms=100)
    client.changes("customers")
    client.changes("orders")
    set_faults(admin, latency_ms=0, rate_limit_rate=1.0)
    with pytest.raises(RateLimitedError):
        client.changes("products")  # refused before admission: holds no slot

    busy = counters(admin)["busy_seconds"]
    assert 0.2 <= busy < 1.0


def test_injected_5xx_is_retryable(client: CustomerpClient, admin: httpx.Client) -> None:
    set_faults(admin, error_rate=1.0)

    with pytest.raises(RetryableError, match="HTTP 503") as caught:
        client.get("customers", "cus_00000001")

    assert not isinstance(caught.value, RateLimitedError)
    assert counters(admin)["faults"] == {"5xx": 1}


def test_injected_429_carries_retry_after(client: CustomerpClient, admin: httpx.Client) -> None:
    set_faults(admin, rate_limit_rate=1.0, retry_after_s=7)

    with pytest.raises(RateLimitedError) as caught:
        client.find("products", sku="x")

    assert caught.value.retry_after == 7


def test_calls_over_max_in_flight_are_rate_limited(sandbox: ServerThread, admin: httpx.Client) -> None:
    set_faults(admin, max_in_flight=1, latency_ms=300)

    def call(_: int) -> str:
        with CustomerpClient(sandbox.url, API_KEY) as customerp:
            try:
                customerp.changes("orders")
            except SyncError as exc:
                return type(exc).__name__
            return "ok"

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = sorted(pool.map(call, range(3)))

    assert outcomes == ["RateLimitedError", "RateLimitedError", "ok"]


def test_a_hang_past_the_client_timeout_is_retryable(sandbox: ServerThread, admin: httpx.Client) -> None:
    set_faults(admin, hang_rate=1.0, hang_s=1.0)
    statuses: list[int] = []
    started = time.monotonic()
    with (
        CustomerpClient(sandbox.url, API_KEY, timeout=0.2, on_call=lambda _o, _s, status: statuses.append(status)) as c,
        pytest.raises(RetryableError, match="ReadTimeout"),
    ):
        c.get("products", "prd_00000001")

    assert time.monotonic() - started < 1.0
    assert statuses == [0]


def test_a_dropped_connection_is_retryable(client: CustomerpClient, admin: httpx.Client) -> None:
    set_faults(admin, drop_rate=1.0)

    with pytest.raises(RetryableError, match="RemoteProtocolError"):
        client.changes("products")


def test_lost_response_then_retry_with_the_same_key_returns_the_same_record(
    client: CustomerpClient, admin: httpx.Client
) -> None:
    set_faults(admin, lost_response_rate=1.0)
    with pytest.raises(RetryableError):
        client.create("customers", CUSTOMER, idempotency_key="wave:customer:42")
    created = admin.get("/_admin/snapshot").json()["customers"]
    assert len(created) == 1  # the write happened although the client saw a failure

    set_faults(admin, lost_response_rate=0.0)
    retried = client.create("customers", CUSTOMER, idempotency_key="wave:customer:42")

    assert retried.id == created[0]["id"]
    assert len(admin.get("/_admin/snapshot").json()["customers"]) == 1


def test_lost_response_leaves_reads_alone(client: CustomerpClient, admin: httpx.Client) -> None:
    set_faults(admin, lost_response_rate=1.0)

    assert client.changes("customers").items == []


def test_counters_count_every_api_call_by_operation_and_nothing_else(
    client: CustomerpClient, admin: httpx.Client
) -> None:
    product = client.create("products", PRODUCT, idempotency_key="p")
    client.create("products", PRODUCT, idempotency_key="p")  # replay still counts as a call
    client.get("products", product.id)
    client.update("products", product.id, {"name": "New"}, version=1)
    client.find("products", sku="HW-1")
    list(client.iter_changes("products"))
    client.delete("products", product.id)
    with pytest.raises(SyncError):
        client.get("products", product.id)
    admin.post("/_admin/customers", json=CUSTOMER)  # user edits are not API calls
    admin.get("/_admin/snapshot")

    assert {k: v for k, v in counters(admin).items() if k != "busy_seconds"} == {
        "calls": {
            "products.create": 2,
            "products.get": 2,
            "products.update": 1,
            "products.list": 1,
            "products.changes": 1,
            "products.delete": 1,
        },
        "faults": {},
    }


def test_reset_clears_counters_and_faults(client: CustomerpClient, admin: httpx.Client) -> None:
    set_faults(admin, error_rate=1.0)
    with pytest.raises(RetryableError):
        client.changes("customers")

    admin.post("/_admin/reset").raise_for_status()

    assert admin.get("/_admin/faults").json()["error_rate"] == 0
    assert counters(admin) == {"calls": {}, "faults": {}, "busy_seconds": 0.0}
