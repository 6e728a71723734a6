"""One Wave sandbox server per test session, reset before each test; a hand-moved clock; raw and typed clients."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandboxes.serve import ServerThread
from sandboxes.wave import (
    DEFAULT_BUSINESS_ID,
    DEFAULT_TOKEN,
    GRAPHQL_PATH,
    ManualClock,
    WaveSandboxConfig,
    create_app,
)
from shared.wave.client import WaveClient

START = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
_CLOCK = ManualClock(START)


@dataclass
class Sandbox:
    """A running sandbox: its base URL, a raw admin/GraphQL httpx client and a clock."""

    url: str
    http: httpx.Client
    clock: ManualClock

    @property
    def graphql_url(self) -> str:
        return self.url + GRAPHQL_PATH

    def gql(
        self, query: str, variables: dict[str, Any] | None = None, token: str | None = DEFAULT_TOKEN
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.post(GRAPHQL_PATH, json={"query": query, "variables": variables or {}}, headers=headers)

    def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        response = self.gql(query, {"b": DEFAULT_BUSINESS_ID, **(variables or {})})
        body = response.json()
        assert response.status_code == 200, body
        assert "errors" not in body, body
        return body["data"]

    def client(self, **kwargs: Any) -> WaveClient:
        return WaveClient(self.graphql_url, DEFAULT_TOKEN, DEFAULT_BUSINESS_ID, **kwargs)

    def seed(self, **counts: int) -> dict[str, list[str]]:
        response = self.http.post("/_admin/seed", json=counts)
        response.raise_for_status()
        result: dict[str, list[str]] = response.json()
        return result

    def faults(self, **knobs: Any) -> None:
        self.http.patch("/_admin/faults", json=knobs).raise_for_status()

    def calls(self) -> dict[str, int]:
        result: dict[str, int] = self.http.get("/_admin/counters").json()["calls"]
        return result

    def reset_counters(self) -> None:
        self.http.delete("/_admin/counters").raise_for_status()

    def snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = self.http.get("/_admin/snapshot").json()["businesses"][0]
        return result


@pytest.fixture(scope="session")
def _wave_server() -> Iterator[ServerThread]:
    with ServerThread(create_app(WaveSandboxConfig(clock=_CLOCK))) as server:
        yield server


@pytest.fixture
def wave(_wave_server: ServerThread) -> Iterator[Sandbox]:
    """The shared sandbox, emptied, with counters and faults reset and the clock at START."""
    _CLOCK.set(START)
    with httpx.Client(base_url=_wave_server.url, timeout=10) as http:
        http.post("/_admin/reset").raise_for_status()
        yield Sandbox(_wave_server.url, http, _CLOCK)


@pytest.fixture
def wave_client(wave: Sandbox) -> Iterator[WaveClient]:
    with wave.client() as client:
        yield client


@pytest.fixture
def custom_wave() -> Iterator[Callable[..., Sandbox]]:
    """Start a sandbox with its own configuration: `custom_wave(auth_failure_status=401)`."""
    servers: list[ServerThread] = []
    clients: list[httpx.Client] = []

    def start(**config: Any) -> Sandbox:
        clock = ManualClock(START)
        server = ServerThread(create_app(WaveSandboxConfig(clock=clock, **config))).start()
        servers.append(server)
        http = httpx.Client(base_url=server.url, timeout=10)
        clients.append(http)
        return Sandbox(server.url, http, clock)

    yield start
    for http in clients:
        http.close()
    for server in servers:
        server.stop()


def decode_id(global_id: str) -> str:
    return base64.b64decode(global_id, validate=True).decode()
