"""Crashes: a worker SIGKILLed mid-write, Redis restarted, beat restarted, the database gone for a while.

After each, the system converges with nothing lost and nothing duplicated: every record has exactly one partner
(the link table and the record counts on both sides agree) and the convergence checker finds no problem.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import redis
import sqlalchemy

from sandboxes.serve import free_port
from shared import keys
from shared.leases import LOCK_LEASE_S
from shared.message_leases import records_in_flight
from shared.store import links as store
from tests.crashes.conftest import FAST_RETRIES
from tests.harness import Sandboxes, System
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def seed(system: System, customers: int = 24, products: int = 6, wave_customers: int = 4) -> None:
    """Records on both sides, and orders whose customer and products must be synced first."""
    system.boxes.cp("POST", "seed", {"customers": customers, "products": products, "orders": 0, "seed": 17})
    system.boxes.wave_admin("POST", "seed", {"customers": wave_customers, "products": 2, "seed": 3})
    cp = system.boxes.snapshot("customerp")
    for product in cp["products"]:  # the seed prices some in EUR: those wait in the dead-letter queue by design
        system.boxes.cp("PATCH", f"products/{product['id']}", {"currency": "USD"})
    for index in range(4):
        system.boxes.cp(
            "POST",
            "orders",
            {
                "customer_id": cp["customers"][index]["id"],
                "order_date": "2026-11-01",
                "lines": [{"product_id": cp["products"][index]["id"], "quantity": "2", "unit_price": "10"}],
            },
        )


def links(system: System) -> dict[str, int]:
    with system.ctx.db.session() as session:
        return {e: len(store.all_links(session, e)) for e in ("customers", "products", "orders")}


def writes(system: System) -> int:
    counts = system.writes()
    return counts["customerp"] + counts["wave"]


def assert_converged(system: System) -> None:
    """Exactly one partner each: as many records on both sides as links, and nothing for the checker."""
    cp, wave = system.boxes.snapshot("customerp"), system.boxes.snapshot("wave")
    counts = {
        "customers": (len(cp["customers"]), len(wave["customers"])),
        "products": (len(cp["products"]), len(wave["products"])),
        "orders": (len(cp["orders"]), len(wave["invoices"])),
    }
    linked = links(system)
    for entity, (in_cp, in_wave) in counts.items():
        assert in_cp == in_wave == linked[entity], f"{entity}: {in_cp} in Customerp, {in_wave} in Wave, {linked}"
    problems = [(r.entity, r.as_dict()) for r in system.check() if r.problems]
    assert problems == []
    assert system.dead_letters() == []


def expected_links(system: System) -> dict[str, int]:
    cp, wave = system.boxes.snapshot("customerp"), system.boxes.snapshot("wave")
    return {
        "customers": len(cp["customers"]) + len(wave["customers"]),
        "products": len(cp["products"]) + len(wave["products"]),
        "orders": len(cp["orders"]),
    }


# After a SIGKILL the dead worker's messages come back one message lease after its last renewal (plus kombu's
# restore interval), its record locks lapse within their lease, and a create it left at the server is waited for
# one HTTP timeout: all well inside the bound the README promises.
RECOVERY_BOUND_S = 60.0


def kill_mid_write(system: System, worker: subprocess.Popen[bytes], writes_first: int) -> set[tuple[str, str, str]]:
    """SIGKILL `worker` once `writes_first` more writes landed; returns the records whose messages were held
    unacknowledged at that moment (the dead worker's, and any a live worker held: a superset)."""
    target = writes(system) + writes_first
    wait_until(lambda: writes(system) >= target, 60, "writes before the kill")
    held = records_in_flight(system.redis)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    return held


def wait_synced(system: System, held: set[tuple[str, str, str]], since: float) -> float:
    """Seconds from `since` until every record in `held` has its partner (what the 60 s bound is about)."""

    def synced() -> bool:
        with system.ctx.db.session() as session:
            return all(store.find_link(session, e, s, i) is not None for e, s, i in held)  # type: ignore[arg-type]

    wait_until(synced, 2 * RECOVERY_BOUND_S, f"the records held at the kill: {sorted(held)}")
    return time.monotonic() - since


def wait_converged(system: System, expected: dict[str, int]) -> None:
    """Every record has its partner and the queues are idle (the rest of the backlog, too)."""
    wait_until(lambda: links(system) == expected, 3 * RECOVERY_BOUND_S, f"all links {expected}")
    system.wait_idle(timeout=3 * RECOVERY_BOUND_S)


def test_the_only_worker_killed_mid_backfill_is_replaced_and_every_record_syncs_within_60s(
    crashable: System,
) -> None:
    system = crashable
    seed(system)
    expected = expected_links(system)
    for side in ("customerp", "wave"):
        system.boxes.faults(side, latency_ms=60, jitter_ms=40)  # slow calls: the kill lands inside tasks
    system.start_worker()
    # One poll round enqueues everything. No poll runs afterwards: a message the crash lost could not be found
    # again by a later poll, so every record must be synced by the messages that were in Redis at the kill.
    system.poll()
    assert system.worker is not None
    held = kill_mid_write(system, system.worker, writes_first=8)
    replaced_at = time.monotonic()
    system.start_worker()
    recovery = wait_synced(system, held, replaced_at)
    wait_converged(system, expected)
    print(
        f"\nkilled the only worker holding {len(held)} records; "
        f"they synced {recovery:.1f}s after its replacement started"
    )
    assert held, "the kill landed while nothing was in flight"
    assert recovery <= RECOVERY_BOUND_S
    for side in ("customerp", "wave"):
        system.boxes.clear_faults(side)
    assert system.settle() <= 2  # nothing left for polls to find but echoes
    assert_converged(system)


def test_a_worker_killed_in_the_middle_of_creates_beside_a_live_one_is_taken_over_within_60s(
    crashable: System,
) -> None:
    system = crashable
    seed(system)
    expected = expected_links(system)
    # Wave calls slow enough that the kill lands while creates are at the server: their answers never come back,
    # and the live worker must find what they made rather than create twice.
    system.boxes.faults("wave", latency_ms=400, jitter_ms=100)
    system.start_worker(concurrency=4)
    doomed = system.worker
    assert doomed is not None
    system.start_worker(concurrency=2)
    try:
        system.poll()
        held = kill_mid_write(system, doomed, writes_first=4)
        killed_at = time.monotonic()
        recovery = wait_synced(system, held, killed_at)
        wait_converged(system, expected)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    print(f"\nkilled a worker mid-create; the {len(held)} records held then synced {recovery:.1f}s after the kill")
    assert held, "the kill landed while nothing was in flight"
    assert recovery <= RECOVERY_BOUND_S
    system.boxes.clear_faults("wave")
    assert system.settle() <= 2
    assert_converged(system)


def test_a_dead_workers_record_lock_lapses_and_reconcile_repairs_go_through(crashable: System) -> None:
    """The session-3 report: repairs kept retrying "is being synced by another worker" for minutes after a kill."""
    system = crashable
    system.boxes.cp("POST", "seed", {"customers": 3, "products": 0, "orders": 0, "seed": 5})
    system.start_worker()
    system.settle()
    customer = system.boxes.snapshot("customerp")["customers"][0]
    # A lock as a killed worker leaves it: taken by another process that then vanished without releasing it.
    lock = system.redis.lock(keys.record_lock_key("customers", "customerp", customer["id"]), timeout=LOCK_LEASE_S)
    assert lock.acquire(blocking=False)
    system.boxes.cp("PATCH", f"customers/{customer['id']}", {"phone": "+47 2222 2222"})
    started = time.monotonic()
    system.poll()
    system.wait_idle(timeout=RECOVERY_BOUND_S)
    took = time.monotonic() - started
    with system.ctx.db.session() as session:
        link = store.find_link(session, "customers", "customerp", customer["id"])
    assert link is not None
    wave = {c["id"]: c for c in system.boxes.snapshot("wave")["customers"]}
    assert wave[link.wave_id]["phone"] == "+47 2222 2222"
    # The lock lapses within its lease, and a busy record never backs off past a lease's end.
    assert took <= LOCK_LEASE_S + 10
    assert_converged(system)


def _reachable(client: redis.Redis) -> bool:
    with suppress(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return bool(client.ping())
    return False


def test_redis_restarted_mid_run_with_persistence_converges(outage_system: System, redis_server: EmbeddedRedis) -> None:
    system = outage_system
    seed(system)
    expected = expected_links(system)
    for side in ("customerp", "wave"):
        system.boxes.faults(side, latency_ms=40)
    system.start_worker()
    system.poll()
    wait_until(lambda: writes(system) >= 10, 60, "writes before the restart")
    queued = sum(int(system.redis.llen(q)) for q in ("customers", "products", "orders"))  # type: ignore[misc]
    redis_server.stop()  # SIGTERM: Valkey writes its append-only file and exits
    time.sleep(2)
    redis_server.start()
    wait_until(lambda: _reachable(system.redis), 20, "Redis back")
    for side in ("customerp", "wave"):
        system.boxes.clear_faults(side)
    system.wait_idle(timeout=120)
    print(f"\nrestarted Redis with {queued} messages queued; links {links(system)} of {expected}")
    system.converge()
    assert links(system) == expected
    assert_converged(system)


def test_beat_restarted_misses_no_change_made_while_it_was_down(crashable: System) -> None:
    system = crashable
    system.boxes.cp("POST", "seed", {"customers": 6, "products": 0, "orders": 0, "seed": 23})
    system.start_worker()
    system.start_beat()
    wait_until(lambda: links(system)["customers"] == 6, 60, "the first sync by beat's pollers")
    system.stop_beat(signal.SIGKILL)

    # While beat is down: new records and edits on both sides.
    system.boxes.cp("POST", "seed", {"customers": 3, "products": 0, "orders": 0, "seed": 29})
    for index in range(2):
        system.ctx.wave.create_customer({"name": f"Made while beat was down {index}", "email": f"down{index}@w.test"})
    cp_customer = system.boxes.snapshot("customerp")["customers"][0]
    system.boxes.cp("PATCH", f"customers/{cp_customer['id']}", {"phone": "+47 1111 1111"})
    wave_customer = system.boxes.snapshot("wave")["customers"][1]
    system.boxes.wave_admin("PATCH", f"customers/{wave_customer['id']}", {"website": "https://down.example"})
    time.sleep(2.5)
    assert links(system)["customers"] == 6, "something synced without beat"

    system.start_beat()
    wait_until(lambda: links(system)["customers"] == 11, 60, "beat's pollers to catch up from their watermarks")
    system.wait_idle(timeout=60)
    system.stop_beat()
    wave = {c["id"]: c for c in system.boxes.snapshot("wave")["customers"]}
    cp = {c["id"]: c for c in system.boxes.snapshot("customerp")["customers"]}
    with system.ctx.db.session() as session:
        partner_in_wave = store.find_link(session, "customers", "customerp", cp_customer["id"])
        partner_in_cp = store.find_link(session, "customers", "wave", wave_customer["id"])
    assert partner_in_wave is not None
    assert partner_in_cp is not None
    assert wave[partner_in_wave.wave_id]["phone"] == "+47 1111 1111"
    assert cp[partner_in_cp.customerp_id]["website"] == "https://down.example"
    assert_converged(system)


class TcpProxy:
    """A loopback TCP forwarder to cut a database off and bring it back, as a network or server outage would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut every open one."""
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        if server is not None:
            server.close()
        for sock in sockets:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def database_behind_proxy(postgres_url: str) -> Iterator[tuple[str, TcpProxy]]:
    name = f"crash_{os.getpid()}_{time.monotonic_ns()}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    upstream = sqlalchemy.engine.make_url(postgres_url)
    proxy = TcpProxy(int(upstream.port or 5432))
    proxy.start()
    url = upstream.set(port=proxy.port, database=name).render_as_string(hide_password=False)
    yield url, proxy
    proxy.stop()
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_the_database_gone_for_a_while_workers_retry_and_nothing_is_lost(
    boxes: Sandboxes,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    database_behind_proxy: tuple[str, TcpProxy],
) -> None:
    url, proxy = database_behind_proxy
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path, database_url=url, **FAST_RETRIES)
    try:
        seed(system)
        expected = expected_links(system)
        for side in ("customerp", "wave"):
            system.boxes.faults(side, latency_ms=40)
        system.start_worker()
        system.poll()
        wait_until(lambda: writes(system) >= 10, 60, "writes before the outage")
        before = links(system)
        proxy.stop()
        time.sleep(3)
        proxy.start()
        for side in ("customerp", "wave"):
            system.boxes.clear_faults(side)
        system.wait_idle(timeout=120)
        log = system.log.read_text()
        print(f"\ndatabase cut off for 3 s after {before}; links {links(system)} of {expected}")
        assert "OperationalError" in log, "the outage did not reach the workers"
        system.converge()
        assert links(system) == expected
        assert_converged(system)
    finally:
        system.close()
