"""One Customerp sandbox server per test session, reset before each test; a controllable clock; clients."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from sandboxes.customerp import CustomerpSandboxConfig, create_app
from sandboxes.serve import ServerThread
from shared.customerp.client import CustomerpClient

API_KEY = "test-key"
READ_ONLY_KEY = "read-only-key"


class Clock:
    """Real time by default; `freeze()` pins it, `advance()` moves a frozen clock forward."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def __call__(self) -> datetime:
        return self.frozen or datetime.now(UTC)

    def freeze(self, at: datetime | None = None) -> datetime:
        self.frozen = at or datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
        return self.frozen

    def advance(self, **delta: float) -> datetime:
        assert self.frozen is not None
        self.frozen += timedelta(**delta)
        return self.frozen


_CLOCK = Clock()


@pytest.fixture(scope="session")
def sandbox() -> Iterator[ServerThread]:
    config = CustomerpSandboxConfig(api_keys=(API_KEY,), read_only_api_keys=(READ_ONLY_KEY,), clock=_CLOCK)
    with ServerThread(create_app(config)) as server:
        yield server


@pytest.fixture
def clock(sandbox: ServerThread) -> Iterator[Clock]:
    yield _CLOCK
    _CLOCK.frozen = None


@pytest.fixture(scope="session")
def _admin_http(sandbox: ServerThread) -> Iterator[httpx.Client]:
    # Shared across tests: building an httpx client (its TLS context) costs more than most tests here.
    with httpx.Client(base_url=sandbox.url, headers={"X-API-Key": API_KEY}, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def _client(sandbox: ServerThread) -> Iterator[CustomerpClient]:
    with CustomerpClient(sandbox.url, API_KEY, timeout=5) as customerp:
        yield customerp


@pytest.fixture
def admin(_admin_http: httpx.Client) -> httpx.Client:
    """Plain HTTP against the sandbox root, with the API key set; the sandbox is reset first."""
    _admin_http.post("/_admin/reset").raise_for_status()
    return _admin_http


@pytest.fixture
def client(_client: CustomerpClient, admin: httpx.Client) -> CustomerpClient:
    return _client


def counters(admin: httpx.Client) -> dict[str, Any]:
    result: dict[str, Any] = admin.get("/_admin/counters").json()
    return result


def set_faults(admin: httpx.Client, **faults: Any) -> None:
    admin.patch("/_admin/faults", json=faults).raise_for_status()


CUSTOMER: dict[str, Any] = {
    "company_name": "Northwind Trading AS",
    "contact_first_name": "Ingrid",
    "contact_last_name": "Hansen",
    "email": "ingrid@northwind.example",
    "billing_address": {"line1": "Storgata 1", "city": "Oslo", "country_code": "NO", "subdivision_code": "NO-03"},
    "currency": "NOK",
}
PRODUCT: dict[str, Any] = {"sku": "HW-1", "name": "Steel bracket", "unit_price": "12.50", "currency": "USD"}
