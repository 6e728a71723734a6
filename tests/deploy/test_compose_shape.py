"""docker-compose.yml, proven without Docker: its shape, and its services syncing and surviving crashes.

The stack test runs every wavesync service of the file (with the `sandbox` profile) from the file itself, see
tests/deploy/compose.py for what stands in for Docker; it keeps no copy of a command or a variable.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy

from sandboxes.postgres import postgres_cluster
from shared import keys
from shared.wave.client import WaveClient
from tests.deploy import compose
from wavesync.embedded import EmbeddedRedis

README = compose.REPO / "README.md"
# The operator's shell the file is interpolated from: empty, i.e. every `${VAR:-default}` at its default. A variable
# the file requires (`${VAR:?...}`, e.g. a secret a service must be given) gets a test value here.
OPERATOR_SHELL: dict[str, str] = {"WAVESYNC_CONSOLE_PASSWORD": "compose-test-console-password"}


def queues_of(service: compose.Service) -> set[str]:
    command = service.command
    if "worker" not in command:
        return set()
    for index, arg in enumerate(command):
        if arg in ("-Q", "--queues") and index + 1 < len(command):
            return set(command[index + 1].split(","))
        if arg.startswith("--queues="):
            return set(arg.split("=", 1)[1].split(","))
    return set(keys.QUEUES)  # `wavesync worker` without -Q consumes every queue


def readme_services() -> set[str]:
    """The first column of README's table whose header starts `| service |`."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^\|\s*service\s*\|", line, re.IGNORECASE):
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append(row.split("|")[1])
            return {name for cell in rows for name in re.findall(r"`([^`]+)`", cell)}
    raise AssertionError("README has no table of the compose services (a table whose header starts `| service |`)")


# --- the file's shape ------------------------------------------------------------------------------------------


def test_every_wavesync_service_runs_as_non_root_with_a_writable_data_volume() -> None:
    document = compose.load(variables=OPERATOR_SHELL)
    services = compose.services(document)
    ours = [s for s in services.values() if s.builds_project]
    assert ours, "no service builds the project's image"
    declared_volumes = set(document.get("volumes") or {})
    for service in ours:
        user = (service.user or "root").split(":")[0]
        assert user not in ("", "0", "root"), f"{service.name} runs as root: give the image a USER or it a `user:`"
        data_dir = service.environment.get("WAVESYNC_DATA_DIR", "")
        assert data_dir.startswith("/"), f"{service.name}: no absolute WAVESYNC_DATA_DIR"
        mounts = [m for m in service.mounts if m.target.rstrip("/") == data_dir.rstrip("/")]
        assert mounts, f"{service.name}: nothing is mounted at its WAVESYNC_DATA_DIR {data_dir}"
        assert not mounts[0].read_only, f"{service.name}: its data volume is read-only"
        assert mounts[0].source in declared_volumes, f"{service.name}: {mounts[0].source} is not a named volume"


def test_every_queue_has_a_worker_service_and_exactly_one_service_runs_beat() -> None:
    services = compose.services(compose.load(variables=OPERATOR_SHELL)).values()
    consumed = set().union(*(queues_of(s) for s in services))
    assert set(keys.QUEUES) <= consumed, f"no worker service consumes {sorted(set(keys.QUEUES) - consumed)}"
    beats = [s.name for s in services if s.command[:2] == ["wavesync", "beat"]]
    assert len(beats) == 1, f"beat must run exactly once per deployment, services running it: {beats}"


def test_every_long_running_service_comes_back_after_a_crash_or_a_reboot() -> None:
    # The broker and the link store too: workers that come back to a Redis that stayed down only loop on retries.
    services = compose.services(compose.load(variables=OPERATOR_SHELL)).values()
    one_shot = {s.name for s in services if s.command[:3] == ["wavesync", "db", "upgrade"]}
    assert one_shot == {"migrate"}
    for service in services:
        expected = "no" if service.name in one_shot else "unless-stopped"
        assert service.restart == expected, f"{service.name}: restart is {service.restart!r}, not {expected!r}"


def test_the_compose_file_needs_no_variable_to_be_read() -> None:
    # Compose interpolates the whole file before it starts anything: one `${VAR:?}` would stop even
    # `docker compose up redis`. A service that needs a secret refuses to start on its own instead.
    text = (compose.REPO / "docker-compose.yml").read_text(encoding="utf-8")
    assert not re.findall(r"\$\{[A-Z_]+:?\?", text)
    assert compose.load(variables={})["services"]


def test_the_compose_services_are_the_ones_the_readme_documents() -> None:
    in_file = set(compose.load(variables=OPERATOR_SHELL)["services"])
    documented = readme_services()
    assert in_file == documented, (
        f"in docker-compose.yml only: {sorted(in_file - documented)}; in README only: {sorted(documented - in_file)}"
    )


def test_compose_interpolation_reads_the_shell_like_compose() -> None:
    shell = {"SET": "x", "EMPTY": ""}
    cases = {
        "${SET:-d}": "x",
        "${UNSET:-d}": "d",
        "${EMPTY:-d}": "d",
        "${EMPTY-d}": "",
        "$SET/${SET}": "x/x",
        "$$SET": "$SET",
        "${UNSET}": "",
    }
    assert {text: compose.interpolate(text, shell) for text in cases} == cases
    with pytest.raises(ValueError, match="MISSING"):
        compose.interpolate("${MISSING:?set it}", shell)


# --- the stack, run from the file ------------------------------------------------------------------------------


@pytest.fixture
def stand_in_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """In place of the `redis` service: a Valkey with the same persistence and eviction policy."""
    server = EmbeddedRedis(tmp_path / "redis", persistent=True).start()
    yield server
    server.stop()


@pytest.fixture
def stand_in_postgres() -> Iterator[int]:
    """In place of the `postgres` service: a throwaway cluster with the user and database the file asks for.
    Yields its port."""
    postgres = compose.services(compose.load(variables=OPERATOR_SHELL))["postgres"].environment
    user, password = postgres.get("POSTGRES_USER", "postgres"), postgres.get("POSTGRES_PASSWORD", "")
    database = postgres.get("POSTGRES_DB", user)
    with ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_cluster())
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL could not be started under CI: {exc}")
            pytest.skip(f"PostgreSQL not available: {exc}")
        admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(sqlalchemy.text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": user}).first()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sqlalchemy.text(f"{verb} ROLE \"{user}\" LOGIN PASSWORD '{password}'"))
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{database}" OWNER "{user}"'))
        admin.dispose()
        port = sqlalchemy.make_url(url).port
        assert port is not None
        yield port


class Boxes:
    """The sandboxes as the people using each system see them: the ERP's screens (/_admin) and Wave's API."""

    def __init__(self, env: dict[str, str]) -> None:
        self.customerp = env["WAVESYNC_CUSTOMERP_URL"].rstrip("/")
        self.wave_url = env["WAVESYNC_WAVE_URL"]
        self.wave = self.wave_url.split("/graphql", 1)[0]
        self.http = httpx.Client(timeout=30)
        self.wave_user = WaveClient(self.wave_url, env["WAVESYNC_WAVE_TOKEN"], env["WAVESYNC_WAVE_BUSINESS_ID"])

    def close(self) -> None:
        self.http.close()
        self.wave_user.close()

    def cp(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.customerp}/_admin/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def cp_snapshot(self) -> dict[str, Any]:
        snapshot: dict[str, Any] = self.cp("GET", "snapshot")
        return snapshot

    def wave_snapshot(self) -> dict[str, Any]:
        business: dict[str, Any] = self.http.get(f"{self.wave}/_admin/snapshot").json()["businesses"][0]
        return business

    def up(self) -> bool:
        try:
            return all(self.http.get(f"{b}/_admin/snapshot").status_code == 200 for b in (self.customerp, self.wave))
        except httpx.TransportError:
            return False


def in_sync(boxes: Boxes, broker: redis.Redis) -> tuple[bool, str]:
    """Both systems hold the same customers, products (names, prices) and orders/invoices, once each, and the
    queues are empty. Returns (converged, what differs)."""
    cp, wave = boxes.cp_snapshot(), boxes.wave_snapshot()
    pairs = {
        "customers": (sorted(c["company_name"] for c in cp["customers"]), sorted(c["name"] for c in wave["customers"])),
        "products": (
            sorted((p["name"], float(p["unit_price"])) for p in cp["products"]),
            sorted((p["name"], float(p["unitPrice"])) for p in wave["products"]),
        ),
        "orders": (len(cp["orders"]), len(wave["invoices"])),
    }
    waiting = sum(int(broker.llen(q)) for q in keys.QUEUES) + len(in_progress(broker))
    differs = [f"{e}: Customerp {a} / Wave {b}" for e, (a, b) in pairs.items() if a != b]
    if waiting:
        differs.append(f"{waiting} messages queued or in progress")
    return not differs, "; ".join(differs)


def in_progress(broker: redis.Redis, parked: bool = False) -> list[str]:
    """Unacknowledged messages a worker is running (or, with `parked`, retries waiting for their ETA): kombu keeps
    [message, exchange, routing key] per delivery."""
    now = datetime.now(UTC)
    found = []
    for raw in broker.hvals("unacked"):
        message, _exchange, routing_key = json.loads(raw)
        eta = message.get("headers", {}).get("eta")
        waiting = eta is not None and datetime.fromisoformat(eta).astimezone(UTC) > now
        if waiting == parked:
            found.append(routing_key)
    return found


def wait_in_sync(boxes: Boxes, broker: redis.Redis, stack: compose.Stack, timeout: float, what: str) -> float:
    last = ""

    def converged() -> bool:
        nonlocal last
        assert not stack.dead(), f"services exited: {stack.dead()}\n{stack.log_tail(stack.dead())}"
        ok, last = in_sync(boxes, broker)
        return ok

    try:
        return compose.wait_until(converged, timeout, what, interval=1.0)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {last}\n{stack.log_tail()}") from None


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


@pytest.mark.integration
@pytest.mark.postgres
def test_compose_stack_syncs_both_ways_and_recovers_when_beat_and_a_worker_are_killed(
    stand_in_redis: EmbeddedRedis,
    stand_in_postgres: int,
    tmp_path: Path,
    record_property: Any,
) -> None:
    if (compose.REPO / ".env").exists():
        pytest.skip("a .env in the project directory would configure the services; the image has none")
    started = time.monotonic()
    identity = compose.choose_identity()
    record_property("service_identity", identity.note or f"uid {identity.uid}")
    if identity.note:
        print(f"compose test: {identity.note}")
    document = compose.load(variables=OPERATOR_SHELL)
    every = compose.services(document)
    # The ports the redis and postgres images listen on.
    stand_ins = {("redis", 6379): stand_in_redis.port, ("postgres", 5432): stand_in_postgres}
    plan = compose.plan(document, identity, stand_ins, profiles=["sandbox"])
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = compose.Stack(plan, identity, logs)
    broker = redis.Redis.from_url(stand_in_redis.url)
    jobs = compose.one_shot_jobs(every) & set(plan.runnable)
    assert jobs, "no one-shot job (the migration) in the file"
    sandboxes = {n for n, s in plan.services.items() if "sandbox" in s.profiles}
    long_running = [n for n in plan.runnable if n not in jobs and n not in sandboxes]
    any_job = sorted(jobs)[0]
    boxes = Boxes(plan.runnable[any_job].env)
    marks: dict[str, float] = {}
    try:
        if identity.unprivileged:  # the premise: the service user cannot write the project directory
            probe = compose.REPO / ".compose-test-probe"
            code, _, _ = stack.run(any_job, ["python", "-c", f"open({str(probe)!r}, 'w')"])
            probe.unlink(missing_ok=True)
            assert code != 0, "the services' user can write the project directory: the test proves nothing"

        # The sandboxes stand for the two real systems: up first, and without their demo seed (it holds records
        # Wave refuses by design, which would end as dead letters). The migration runs while they start.
        for name in sandboxes:
            stack.start(name)
        for name in sorted(jobs):
            code, out, err = stack.run(name)
            assert code == 0, f"`{name}` exited {code}:\n{out}{err}"
        marks["migrated"] = time.monotonic() - started
        compose.wait_until(boxes.up, 60, "the sandboxes")
        with suppress(AssertionError):  # a file whose sandbox seeds nothing is fine too
            compose.wait_until(lambda: bool(boxes.cp_snapshot()["customers"]), 20, "the sandbox seed")
        boxes.cp("POST", "reset")
        marks["sandboxes up"] = time.monotonic() - started

        # 1. People create records on both sides while the deployment starts; they sync.
        customers = [boxes.cp("POST", "customers", {"company_name": f"Compose CP {n}"}) for n in range(3)]
        products = [
            boxes.cp("POST", "products", {"name": f"Compose product {n}", "unit_price": "10.50", "currency": "USD"})
            for n in range(2)
        ]
        for n in range(2):
            line = {"product_id": products[n]["id"], "quantity": "2", "unit_price": "10.50"}
            boxes.cp("POST", "orders", {"customer_id": customers[n]["id"], "order_date": "2026-11-01", "lines": [line]})
        wave_customers = [boxes.wave_user.create_customer({"name": f"Compose Wave {n}"}) for n in range(2)]
        for name in long_running:
            stack.start(name)
        wait_in_sync(boxes, broker, stack, 90, "the first records to sync both ways")
        marks["first sync"] = time.monotonic() - started

        # 2. Beat and the customers worker die (SIGKILL) while the worker is syncing a batch, and come back, as
        # `restart: unless-stopped` would bring them.
        worker = next(n for n in long_running if "customers" in queues_of(plan.services[n]))
        beat = next(n for n in long_running if plan.services[n].command[:2] == ["wavesync", "beat"])
        batch = [f"Compose batch {n}" for n in range(12)]
        for name in batch:
            boxes.cp("POST", "customers", {"company_name": name})

        def batch_started() -> bool:
            return any(c["name"] in batch for c in boxes.wave_snapshot()["customers"])

        compose.wait_until(batch_started, 60, "the batch to start syncing", interval=0.1)
        synced_at_kill = sum(c["name"] in batch for c in boxes.wave_snapshot()["customers"])
        held_at_kill = sum(q in queues_of(plan.services[worker]) for q in in_progress(broker))
        stack.kill(worker)
        stack.kill(beat)
        stack.start(beat)
        stack.start(worker)
        restarted = time.monotonic()

        # 3. More edits on both sides after the restart.
        boxes.cp("PATCH", f"customers/{customers[2]['id']}", {"company_name": "Compose CP renamed"})
        boxes.cp("PATCH", f"products/{products[0]['id']}", {"unit_price": "12.25"})
        boxes.wave_user.patch_customer(wave_customers[0].id, {"name": "Compose Wave renamed"})
        boxes.wave_user.create_customer({"name": "Compose Wave late"})
        wait_in_sync(boxes, broker, stack, 120, "the batch and the later edits after the restart")
        recovery = time.monotonic() - restarted
        record_property("recovery_seconds", round(recovery, 1))
        marks["in sync after the crash"] = time.monotonic() - started
        parked = len(in_progress(broker, parked=True))
        print(
            f"compose test: at the kill {synced_at_kill}/{len(batch)} synced and {held_at_kill} messages "
            f"in progress; in sync {recovery:.0f}s after the restart ({parked} retries still parked); "
            + ", ".join(f"{what} at {at:.0f}s" for what, at in marks.items())
        )
        # The crash must have hit work in progress, or it proves nothing about recovery.
        assert held_at_kill > 0, "the worker held nothing when it was killed: make the batch larger"

        # Flower serves its health check (it reads its port from the file's FLOWER_PORT).
        for name in long_running:
            flower_port = plan.runnable[name].listening.get("FLOWER_PORT")
            if flower_port:
                url = f"http://127.0.0.1:{flower_port}/healthcheck"
                compose.wait_until(lambda url=url: answers(url), 30, f"{name} to answer {url}")

        names = {c["name"] for c in boxes.wave_snapshot()["customers"]}
        assert {"Compose CP renamed", "Compose Wave renamed", "Compose Wave late", *batch} <= names
        assert {c["company_name"] for c in boxes.cp_snapshot()["customers"]} == names

        # 4. The operator's checks, run like `docker compose run --rm <job> ...` with the file's environment.
        code, out, err = stack.run(any_job, ["wavesync", "reconcile", "--check"])
        assert code == 0, f"reconcile --check exited {code}:\n{out}{err}"
        code, out, err = stack.run(any_job, ["wavesync", "dlq", "list", "--json"])
        assert code == 0, f"dlq list exited {code}:\n{out}{err}"
        assert json.loads(out) == [], f"dead letters:\n{out}"
        assert not stack.dead(), f"services exited: {stack.dead()}\n{stack.log_tail(stack.dead())}"
        record_property("run_seconds", round(time.monotonic() - started, 1))
    finally:
        stack.stop()
        boxes.close()
        broker.close()
