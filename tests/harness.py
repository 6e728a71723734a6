"""A whole running system for integration tests: both sandboxes, a real Celery worker process, the pollers.

Tests drive it like operators and users would: edit records through the sandboxes' admin endpoints ("as a
person in the ERP / in Wave"), run poll rounds, wait until the queues are idle, and inspect both sides.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from producers.pollers import Poller
from producers.reconcile import EntityReport, Reconciler
from sandboxes.customerp.app import CustomerpSandboxConfig
from sandboxes.customerp.app import create_app as create_customerp_app
from sandboxes.serve import ServerThread
from sandboxes.wave.app import create_app as create_wave_app
from sandboxes.wave.config import WaveSandboxConfig
from shared import keys
from shared.context import Context
from shared.errors import RetryableError
from shared.settings import ENTITIES, Settings
from shared.store.db import upgrade

REPO = Path(__file__).resolve().parent.parent
CP_KEY = "test-customerp-key"
WAVE_TOKEN = "test-wave-token"


class Sandboxes:
    def __init__(self) -> None:
        self.customerp = ServerThread(create_customerp_app(CustomerpSandboxConfig(api_keys=(CP_KEY,)))).start()
        self.wave = ServerThread(create_wave_app(WaveSandboxConfig(tokens=frozenset({WAVE_TOKEN})))).start()
        self.http = httpx.Client(timeout=30)

    def stop(self) -> None:
        self.http.close()
        self.customerp.stop()
        self.wave.stop()

    def reset(self) -> None:
        for server in (self.customerp, self.wave):
            self.http.post(f"{server.url}/_admin/reset").raise_for_status()
            self.http.put(f"{server.url}/_admin/faults", json={}).raise_for_status()
            self.http.delete(f"{server.url}/_admin/counters").raise_for_status()

    # --- acting as a person in either system ---

    def cp(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.customerp.url}/_admin/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def wave_admin(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.wave.url}/_admin/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def snapshot(self, system: str) -> dict[str, Any]:
        server = self.customerp if system == "customerp" else self.wave
        data: dict[str, Any] = self.http.get(f"{server.url}/_admin/snapshot").json()
        if system == "wave":
            business: dict[str, Any] = data["businesses"][0]
            return business
        return data

    def counters(self, system: str) -> dict[str, int]:
        server = self.customerp if system == "customerp" else self.wave
        calls: dict[str, int] = self.http.get(f"{server.url}/_admin/counters").json()["calls"]
        return calls

    def faults(self, system: str, **config: Any) -> None:
        server = self.customerp if system == "customerp" else self.wave
        self.http.patch(f"{server.url}/_admin/faults", json=config).raise_for_status()

    def clear_faults(self, system: str) -> None:
        server = self.customerp if system == "customerp" else self.wave
        self.http.put(f"{server.url}/_admin/faults", json={}).raise_for_status()

    def faults_injected(self, system: str) -> dict[str, int]:
        """Faults the sandbox injected since the last reset, by kind (429, 5xx, hang, drop, lost_response)."""
        server = self.customerp if system == "customerp" else self.wave
        faults: dict[str, int] = self.http.get(f"{server.url}/_admin/counters").json()["faults"]
        return faults


class System:
    """Sandboxes + a link store + a worker process + in-process pollers, on the session's Redis."""

    def __init__(self, boxes: Sandboxes, redis_url: str, workdir: Path, **overrides: Any) -> None:
        self.boxes = boxes
        self.workdir = workdir
        values: dict[str, Any] = {
            "redis_url": redis_url,
            "database_url": f"sqlite:///{workdir / 'links.db'}",
            "data_dir": workdir,
            "customerp_url": boxes.customerp.url,
            "customerp_api_key": CP_KEY,
            "wave_url": f"{boxes.wave.url}/graphql/public",
            "wave_token": WAVE_TOKEN,
            "poll_interval": 1.0,
            "poll_overlap": 2.0,
            "http_timeout": 5.0,
            "retry_backoff_base": 0.2,
            "retry_backoff_max": 2.0,
            "max_retries": 5,
            "task_time_limit": 60.0,
            "wave_rate_per_second": 500.0,
            "wave_burst": 100,
            "customerp_rate_per_second": 500.0,
            "customerp_burst": 100,
            **overrides,
        }
        self.settings = Settings(**values)
        upgrade(self.settings.database_url)
        self.ctx = Context.from_settings(self.settings)
        self.redis = redis.Redis.from_url(redis_url)
        self.worker: subprocess.Popen[bytes] | None = None
        self.beat: subprocess.Popen[bytes] | None = None
        self.log = workdir / "worker.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
        for name, value in self.settings.model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            if isinstance(value, frozenset | set):
                value = "[" + ",".join(f'"{v}"' for v in sorted(value)) + "]"
            env[f"WAVESYNC_{name.upper()}"] = str(value.value if hasattr(value, "value") else value)
        env["WAVESYNC_CUSTOMERP_API_KEY"] = self.settings.customerp_api_key.get_secret_value()
        env["WAVESYNC_WAVE_TOKEN"] = self.settings.wave_token.get_secret_value()
        env["WAVESYNC_LOG_FORMAT"] = "text"
        return env

    def start_worker(self, concurrency: int = 4, entry: tuple[str, ...] = ("-m", "wavesync", "worker")) -> None:
        """A worker process on every queue. `entry` may name another module that runs one (see tests/crashes)."""
        with self.log.open("ab") as log:  # the child holds its own copy of the descriptor
            self.worker = subprocess.Popen(
                [
                    sys.executable,
                    *entry,
                    "-Q",
                    ",".join(keys.QUEUES),
                    "--pool",
                    "threads",
                    "-c",
                    str(concurrency),
                    "--loglevel",
                    "INFO",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                    "-n",
                    f"test-{os.getpid()}@%h",
                ],
                env=self.env(),
                stdout=log,
                stderr=log,
                cwd=REPO,
            )

    def stop_worker(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.worker is None:
            return
        if self.worker.poll() is None:
            self.worker.send_signal(sig)
            try:
                self.worker.wait(timeout)
            except subprocess.TimeoutExpired:
                self.worker.kill()
                self.worker.wait()
        self.worker = None

    def start_beat(self) -> None:
        """Beat as a child process: it schedules the pollers every `poll_interval` onto the control queue."""
        with self.log.open("ab") as log:
            self.beat = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "wavesync",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "-s",
                    str(self.workdir / "celerybeat-schedule"),
                ],
                env=self.env(),
                stdout=log,
                stderr=log,
                cwd=REPO,
            )

    def wait_for_polls(self, timeout: float = 30) -> None:
        """Until beat's pollers have run once (each run leaves its stats in Redis)."""
        deadline = time.monotonic() + timeout
        while not self.redis.exists(keys.poll_stats_key("customerp", "orders")):
            if time.monotonic() > deadline:
                raise AssertionError(f"beat's pollers did not run within {timeout}s; log: {self.log}")
            time.sleep(0.1)

    def stop_beat(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.beat is None:
            return
        if self.beat.poll() is None:
            self.beat.send_signal(sig)
            try:
                self.beat.wait(timeout)
            except subprocess.TimeoutExpired:
                self.beat.kill()
                self.beat.wait()
        self.beat = None

    def close(self) -> None:
        # The test is over: kill rather than wait for a warm shutdown (about 1.5 s a process). The next test starts
        # from a clean Redis; tests of graceful shutdown stop their processes themselves.
        self.stop_beat(signal.SIGKILL)
        self.stop_worker(signal.SIGKILL)
        self.ctx.close()
        self.redis.close()

    # --- driving ---

    def poll(self, systems: tuple[str, ...] = ("wave", "customerp")) -> int:
        enqueued = 0
        for system in systems:
            for entity in ENTITIES:
                enqueued += Poller(self.ctx, system, entity).run().enqueued  # type: ignore[arg-type]
        return enqueued

    def busy(self) -> int:
        waiting = sum(int(self.redis.llen(q)) for q in keys.QUEUES)  # type: ignore[arg-type]
        return waiting + int(self.redis.hlen("unacked"))  # type: ignore[arg-type]

    def waiting_tasks(self) -> int:
        """Distinct tasks queued or held by the worker. A retry publishes its next message before it acks the
        current one, so `busy()` counts a retrying task twice for a moment; the retry keeps the task's id."""
        raw = [m for q in keys.QUEUES for m in self.redis.lrange(q, 0, -1)]  # type: ignore[union-attr]
        held = [json.loads(v)[0] for v in self.redis.hvals("unacked")]  # type: ignore[union-attr]
        return len({json.loads(m)["headers"]["id"] for m in raw} | {m["headers"]["id"] for m in held})

    def wait_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            if self.worker is not None and self.worker.poll() is not None:
                raise AssertionError(f"the worker died: see {self.log}\n{_why_it_died(self.log.read_text())}")
            if self.busy() == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 0.3:
                    return
            else:
                quiet_since = None
            time.sleep(0.05)
        raise AssertionError(f"queues not idle after {timeout}s ({self.busy()} messages); log: {self.log}")

    def settle(self, rounds: int = 8, timeout: float = 90) -> int:
        """Poll and wait until a poll round finds nothing new. Returns the rounds it took."""
        for round_number in range(1, rounds + 1):
            enqueued = self.poll()
            self.wait_idle(timeout)
            if enqueued == 0:
                return round_number
        raise AssertionError(f"still enqueuing after {rounds} poll rounds")

    def dead_letters(self) -> list[dict[str, Any]]:
        from shared.deadletters import DeadLetters, Filter

        return DeadLetters(self.ctx.db).list(Filter())

    def writes(self) -> dict[str, int]:
        """Calls that change data, per system, from the sandboxes' counters."""
        cp = {
            k: v for k, v in self.boxes.counters("customerp").items() if k.endswith((".create", ".update", ".delete"))
        }
        wave = {
            k: v
            for k, v in self.boxes.counters("wave").items()
            if any(w in k for w in ("Create", "Patch", "Delete", "Archive", "Approve", "MarkSent"))
        }
        return {"customerp": sum(cp.values()), "wave": sum(wave.values())}

    # --- convergence ---

    def check(self) -> list[EntityReport]:
        """The convergence checker (`wavesync reconcile --check`): reports only, never writes."""
        return self._reconcile(repair=False)

    def repair(self) -> list[EntityReport]:
        """`wavesync reconcile`: reports, and sends what drifted through the queues."""
        return self._reconcile(repair=True)

    def _reconcile(self, *, repair: bool, attempts: int = 5) -> list[EntityReport]:
        """One reconcile run; a transient failure (a slow sandbox on a busy machine) means a new run, as the
        scheduled reconcile task would make."""
        for attempt in range(attempts):
            try:
                return Reconciler(self.ctx, repair=repair).run()
            except RetryableError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1)
        raise AssertionError("unreachable")

    def converge(self, rounds: int = 6, timeout: float = 120) -> int:
        """After a history: poll until quiet, then reconcile-repair (Wave deletions are only seen that way) until
        a repair finds nothing to do. Returns how many repair messages were needed."""
        repaired = 0
        for _ in range(rounds):
            self.settle(timeout=timeout)
            sent = sum(r.repaired for r in self._reconcile(repair=True))
            self.wait_idle(timeout)
            if sent == 0:
                return repaired
            repaired += sent
        raise AssertionError(f"reconcile still repairing after {rounds} rounds")


def _why_it_died(log: str) -> str:
    """The worker log's first critical line (else its first error) and its end: a worker that stops on an error often
    fails again on the way out, and the log's tail then shows only the second failure (CI kept only the tail, once)."""
    lines = log.splitlines()
    marked = [n for level in (" CRITICAL ", " ERROR ") for n, line in enumerate(lines) if level in line]
    first = "\n".join(lines[marked[0] : marked[0] + 40]) if marked else "(no CRITICAL or ERROR line)"
    return f"first of the worst lines:\n{first}\n...\nend of the log:\n{log[-3000:]}"
