"""Helpers for the failure and dead-letter tests: systems with their own settings, worker logs, waiting."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from producers.pollers import Poller
from tests.harness import Sandboxes, System
from tests.workers.conftest import clean_redis


class TunedSystem(System):
    """A System whose worker gets extra environment (JSON logs, a wrong credential, a metrics port)."""

    def __init__(self, *args: Any, worker_env: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker_env = dict(worker_env or {})

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.worker_env}

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def json_log(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines


@contextmanager
def running(
    boxes: Sandboxes, redis_url: str, workdir: Path, *, worker_env: dict[str, str] | None = None, **overrides: Any
) -> Iterator[TunedSystem]:
    boxes.reset()
    clean_redis(redis_url)
    system = TunedSystem(boxes, redis_url, workdir, worker_env=worker_env, **overrides)
    system.start_worker()
    try:
        yield system
    finally:
        system.close()


def wait_for(what: str, condition: Callable[[], bool], timeout: float = 30, system: System | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if system is not None and system.worker is not None and system.worker.poll() is not None:
            raise AssertionError(f"the worker died while waiting for {what}: see {system.log}")
        time.sleep(0.05)
    raise AssertionError(f"not seen within {timeout}s: {what}")


def ready(system: System) -> None:
    """A first poll of Wave's (empty) customers: the Customerp customers poller only starts once Wave has been
    indexed. Then the sandboxes' call counters restart, so a test counts only the calls it caused."""
    Poller(system.ctx, "wave", "customers").run()
    for server in (system.boxes.customerp, system.boxes.wave):
        system.boxes.http.delete(f"{server.url}/_admin/counters").raise_for_status()


def drain(system: System, timeout: float = 60) -> None:
    """Enqueue what changed in Customerp and wait until the worker is idle (no Wave calls from the test)."""
    system.poll(("customerp",))
    system.wait_idle(timeout)


def new_customer(system: System, name: str, **fields: Any) -> dict[str, Any]:
    slug = name.lower().replace(" ", "-")
    body = {"company_name": name, "email": f"{slug}@example.com", **fields}
    created: dict[str, Any] = system.boxes.cp("POST", "customers", body)
    return created


def wave_customers(system: System, name: str | None = None) -> list[dict[str, Any]]:
    customers = list(system.boxes.snapshot("wave")["customers"])
    return [c for c in customers if name is None or c["name"] == name]


def cp_customers(system: System, name: str | None = None) -> list[dict[str, Any]]:
    customers = list(system.boxes.snapshot("customerp")["customers"])
    return [c for c in customers if name is None or c["company_name"] == name]


def wave_calls(system: System, contains: str = "") -> int:
    return sum(n for op, n in system.boxes.counters("wave").items() if contains in op)


def faults_injected(system: System, side: str) -> dict[str, int]:
    server = system.boxes.customerp if side == "customerp" else system.boxes.wave
    faults: dict[str, int] = system.boxes.http.get(f"{server.url}/_admin/counters").json()["faults"]
    return faults
