"""The floor (issue 15): the least worker CPU a synced record can cost on this stack, and the engine's ratio to it.

The floor is a bare no-op task's worker CPU (the ceiling run) plus the CPU of the minimal I/O one create needs,
measured here in the bench process on the same stack: one record lock taken and given back in Redis, one link
read and one link written through SQLAlchemy, and three keep-alive HTTP calls (one Customerp read, two Wave
GraphQL queries). Nothing of the engine runs: no pydantic models, no merge, no history, no rate limiter, no lease
thread. The sandboxes run in this process too, so the I/O is timed on the calling thread's CPU clock
(`time.thread_time`): the sandboxes' share of each call runs on their own threads and is not counted, just as
it is not counted in the worker's CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import delete

from bench.stack import CP_KEY, WAVE_TOKEN, Stack
from shared import keys
from shared.leases import LOCK_LEASE_S
from shared.store.link_state import Settled
from shared.store.links import find_link, save_link
from shared.store.models import Link
from shared.wave import documents

# A link entity no flow uses, so the floor's rows never meet a real link; they are deleted afterwards.
SCRATCH_ENTITY = "bench-floor"
PARTS = ("lock", "link", "http")
# A customer's agreed record of the usual size, so the link's JSON state costs what a real link's does.
SNAPSHOT: dict[str, Any] = {
    "name": "Floor Test Ltd",
    "email": "floor@example.com",
    "number": "C-0000001",
    "phone": "+1 555 0100",
    "currency": "USD",
    "notes": "Net 30",
    "address": {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345", "country": "US"},
}


class Floor:
    """One create's minimal I/O against `running`, repeatable: each call of `part` does one part once."""

    def __init__(self, running: Stack) -> None:
        self.running = running
        self.http = httpx.Client(timeout=30)
        cp_id, wave_id = running.links("customers")[0]
        self.cp_url = f"{running.cp_server.url}/api/v1/customers/{cp_id}"
        self.email = str(running.cp_store.tables["customers"][cp_id].data.get("email") or "")
        self.wave_url = f"{running.wave_server.url}/graphql/public"
        self.business = running.wave_business.global_id
        self.wave_id = wave_id
        self.n = 0

    def close(self) -> None:
        self.http.close()
        with self.running.ctx.db.session() as session:
            session.execute(delete(Link).where(Link.entity == SCRATCH_ENTITY))

    def lock(self) -> None:
        """Coordinator.record_lock's Redis work, without the lease thread."""
        key = keys.record_lock_key("customers", "customerp", f"floor-{self.n}")
        lock = self.running.ctx.redis.lock(key, timeout=LOCK_LEASE_S, blocking_timeout=5, thread_local=False)
        if not lock.acquire():
            raise RuntimeError(f"the floor's scratch lock {key} is held")
        lock.release()

    def link(self) -> None:
        """A create reads the link before writing the partner and saves it after: two transactions."""
        record_id = f"floor-{self.n}"
        with self.running.ctx.db.session() as session:
            found = find_link(session, SCRATCH_ENTITY, "customerp", record_id)
        with self.running.ctx.db.session() as session:
            save_link(
                session,
                found,
                entity=SCRATCH_ENTITY,
                customerp_id=record_id,
                wave_id=f"wave-{record_id}",
                state=Settled(SNAPSHOT),
                customerp_version="000000000001",
                wave_version="2026-11-29T00:00:00.000Z",
            )

    def calls(self) -> None:
        """One Customerp read and two Wave queries (a read by id, a natural-key search), on one keep-alive client."""
        self.http.get(self.cp_url, headers={"X-API-Key": CP_KEY}).raise_for_status()
        auth = {"Authorization": f"Bearer {WAVE_TOKEN}"}
        get = {"query": documents.CUSTOMER_GET, "variables": {"businessId": self.business, "id": self.wave_id}}
        self.http.post(self.wave_url, json=get, headers=auth).raise_for_status()
        search = {
            "query": documents.CUSTOMERS_PAGE,
            "variables": {
                "businessId": self.business,
                "page": 1,
                "pageSize": 20,
                "sort": ["CREATED_AT_ASC"],
                "email": self.email,
            },
        }
        self.http.post(self.wave_url, json=search, headers=auth).raise_for_status()

    def once(self) -> dict[str, tuple[float, float]]:
        """All three parts once; (thread CPU s, wall s) of each."""
        timed: dict[str, tuple[float, float]] = {}
        steps: tuple[tuple[str, Callable[[], None]], ...] = (
            ("lock", self.lock),
            ("link", self.link),
            ("http", self.calls),
        )
        for name, step in steps:
            cpu, wall = time.thread_time(), time.perf_counter()
            step()
            timed[name] = (time.thread_time() - cpu, time.perf_counter() - wall)
        self.n += 1
        return timed


def measure_minimal_io(running: Stack, repetitions: int, warmup: int) -> dict[str, Any]:
    """Thread CPU (and wall time) of one create's minimal I/O, averaged over `repetitions` after `warmup`."""
    floor = Floor(running)
    try:
        for _ in range(warmup):
            floor.once()
        totals = {name: [0.0, 0.0] for name in PARTS}
        for _ in range(repetitions):
            for name, (cpu, wall) in floor.once().items():
                totals[name][0] += cpu
                totals[name][1] += wall
    finally:
        floor.close()
    left = running.link_counts().get(SCRATCH_ENTITY, 0)
    per = {name: (1000 * cpu / repetitions, 1000 * wall / repetitions) for name, (cpu, wall) in totals.items()}
    return {
        "repetitions": repetitions,
        "warmup": warmup,
        "lock_ms": round(per["lock"][0], 3),
        "link_ms": round(per["link"][0], 3),
        "http_ms": round(per["http"][0], 3),
        "io_ms": round(sum(cpu for cpu, _wall in per.values()), 3),
        "wall_ms": {name: round(wall, 3) for name, (_cpu, wall) in per.items()},
        "scratch_links_left": left,
    }


def summarise(main: dict[str, Any]) -> dict[str, Any] | None:
    """Floor = no-op CPU per task + minimal I/O; the ratio is the backfill's worker CPU per record to it.

    None until the run has the floor's I/O; the no-op and backfill parts are filled in when the run has them."""
    io = main.get("floor_io")
    if not io:
        return None
    noop_ms = (main.get("ceiling") or {}).get("worker_cpu_ms_per_task")
    per_record = (main.get("backfill") or {}).get("worker_cpu_ms_per_record")
    floor_ms = round(noop_ms + io["io_ms"], 3) if noop_ms is not None else None
    ratio = round(per_record / floor_ms, 2) if floor_ms and per_record is not None else None
    return {
        "noop_ms": noop_ms,
        "io_ms": io["io_ms"],
        "floor_ms": floor_ms,
        "worker_cpu_ms_per_record": per_record,
        "ratio": ratio,
    }
