"""What a scenario runs on: embedded Valkey, both sandboxes in this process, worker and beat subprocesses.

The sandboxes run in the bench process (uvicorn threads) so the bench can read their stores directly, which
costs no API call and so never shows in the call counters; worker and beat are real `python -m wavesync`
processes configured only through `WAVESYNC_*` variables, exactly as in production.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery
from sqlalchemy import func, select

from bench import proc
from sandboxes.customerp.app import CustomerpSandboxConfig
from sandboxes.customerp.app import create_app as create_customerp_app
from sandboxes.faults import FaultInjector
from sandboxes.serve import ServerThread, free_port
from sandboxes.wave.app import WaveSandbox
from sandboxes.wave.config import WaveSandboxConfig
from shared import keys
from shared.celery_app import celery_config
from shared.context import Context
from shared.settings import Settings
from shared.store.db import upgrade
from shared.store.models import DeadLetter, Link
from wavesync.embedded import EmbeddedRedis
from wavesync.processes import die_with_parent

REPO = Path(__file__).resolve().parent.parent
CP_KEY = "bench-customerp-key"
WAVE_TOKEN = "bench-wave-token"  # noqa: S105 - a sandbox credential
WAVE_WRITES = ("Create", "Patch", "Delete", "Archive", "Approve", "MarkSent", "Send")
CP_WRITES = (".create", ".update", ".delete")


@dataclass(frozen=True)
class WorkerSpec:
    """How a worker is started: Celery pool and concurrency, plus any extra Celery options."""

    pool: str = "threads"
    concurrency: int = 8
    loglevel: str = "INFO"
    extra: tuple[str, ...] = ()
    # Python run in the worker process before `wavesync worker` starts: for profiling experiments only.
    preamble: str = ""
    # Worker processes on the same queues (a scaled-out fleet shares the leases and limits through Redis).
    processes: int = 1

    @property
    def label(self) -> str:
        fleet = f"{self.processes} × " if self.processes > 1 else ""
        return f"{fleet}{self.pool} -c {self.concurrency}"


# Settings every scenario shares. The fleet rate limits are lifted well above what the sandboxes can serve
# so that the zero-latency runs measure the engine, not the limiter; the latency scenario sets its own.
BASE_SETTINGS: dict[str, Any] = {
    "http_timeout": 30.0,
    "retry_backoff_base": 0.5,
    "retry_backoff_max": 10.0,
    "task_time_limit": 120.0,
    "wave_rate_per_second": 100_000.0,
    "wave_burst": 1000,
    "customerp_rate_per_second": 100_000.0,
    "customerp_burst": 1000,
    "log_format": "text",
    "log_level": "WARNING",
}


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a `python -m wavesync` child read exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, frozenset | set):
            value = "[" + ",".join(f'"{v}"' for v in sorted(value)) + "]"
        env[f"WAVESYNC_{name.upper()}"] = str(value.value if hasattr(value, "value") else value)
    env["WAVESYNC_CUSTOMERP_API_KEY"] = settings.customerp_api_key.get_secret_value()
    env["WAVESYNC_WAVE_TOKEN"] = settings.wave_token.get_secret_value()
    return env


@dataclass
class Child:
    """A worker or beat subprocess and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class Stack:
    """One isolated system: a fresh Valkey, fresh sandboxes, a fresh link store and its worker(s)."""

    def __init__(self, workdir: Path, *, database_url: str | None = None, **overrides: Any) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.redis_server = EmbeddedRedis(workdir / "redis", free_port(), persistent=True).start()
        self.cp_app = create_customerp_app(CustomerpSandboxConfig(api_keys=(CP_KEY,)))
        self.wave_sandbox = WaveSandbox(WaveSandboxConfig(tokens=frozenset({WAVE_TOKEN})))
        self.cp_server = ServerThread(self.cp_app).start()
        self.wave_server = ServerThread(self.wave_sandbox.app).start()
        values: dict[str, Any] = {
            **BASE_SETTINGS,
            "redis_url": self.redis_server.url,
            "database_url": database_url or f"sqlite:///{workdir / 'links.db'}",
            "data_dir": workdir,
            "customerp_url": self.cp_server.url,
            "customerp_api_key": CP_KEY,
            "wave_url": f"{self.wave_server.url}/graphql/public",
            "wave_token": WAVE_TOKEN,
            **overrides,
        }
        self.settings = Settings(**values)
        upgrade(self.settings.database_url)
        self.ctx = Context.from_settings(self.settings)
        self.redis = redis.Redis.from_url(self.redis_server.url)
        self.http = httpx.Client(timeout=120)
        # The bench's own producer on this stack's broker (the project app reads the process-wide settings once).
        self.app = Celery("wavesync-bench", set_as_current=False)
        self.app.conf.update(celery_config(self.settings))
        self.children: list[Child] = []

    # --- the parts -----------------------------------------------------------------------------------------

    @property
    def cp_store(self) -> Any:
        return self.cp_app.state.store

    @property
    def cp_injector(self) -> FaultInjector:
        injector: FaultInjector = self.cp_app.state.injector
        return injector

    @property
    def wave_store(self) -> Any:
        return self.wave_sandbox.store

    @property
    def wave_business(self) -> Any:
        return next(iter(self.wave_store.businesses.values()))

    def close(self) -> None:
        for child in self.children:
            child.stop()
        self.children.clear()
        self.app.close()
        self.http.close()
        self.ctx.close()
        self.ctx.db.engine.dispose()
        self.redis.close()
        self.cp_server.stop()
        self.wave_server.stop()
        self.redis_server.stop()

    # --- processes -----------------------------------------------------------------------------------------

    def start_worker(self, spec: WorkerSpec, *, queues: tuple[str, ...] = keys.QUEUES, wait: bool = True) -> Child:
        name = f"worker{len(self.children)}"
        log = self.workdir / f"{name}.log"
        argv = [
            "worker",
            "-Q",
            ",".join(queues),
            "--pool",
            spec.pool,
            "--concurrency",
            str(spec.concurrency),
            "--loglevel",
            spec.loglevel,
            "-n",
            f"{name}-{os.getpid()}@%h",
            *spec.extra,
        ]
        preamble = spec.preamble
        if spec.pool == "gevent":
            # `wavesync worker` goes through app.worker_main, which does not monkey-patch (celery's own
            # __main__ does): patch first, as `celery -P gevent` would.
            preamble = "from gevent import monkey; monkey.patch_all()\n" + preamble
        if preamble:
            code = preamble + "\nimport sys\nfrom wavesync.cli import main\nmain(sys.argv[1:])\n"
            command = [sys.executable, "-c", code, *argv]
        else:
            command = [sys.executable, "-m", "wavesync", *argv]
        with log.open("ab") as out:
            # Gone with the bench, however it ends (a smoke test's timeout kills only the bench process).
            process = subprocess.Popen(
                command,
                env=settings_env(self.settings),
                stdout=out,
                stderr=out,
                cwd=REPO,
                preexec_fn=die_with_parent(),
            )
        child = Child(name, process, log)
        self.children.append(child)
        if wait:
            self.wait_ready(child)
        return child

    def start_beat(self) -> Child:
        log = self.workdir / "beat.log"
        schedule = self.workdir / "celerybeat-schedule"
        argv = [sys.executable, "-m", "wavesync", "beat", "--loglevel", "WARNING", "-s", str(schedule)]
        with log.open("ab") as out:
            process = subprocess.Popen(
                argv, env=settings_env(self.settings), stdout=out, stderr=out, cwd=REPO, preexec_fn=die_with_parent()
            )
        child = Child("beat", process, log)
        self.children.append(child)
        return child

    def stop_child(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def wait_ready(self, child: Child, timeout: float = 60.0) -> None:
        """A worker is ready when it has consumed a no-op sent to each of its queues."""
        for queue in keys.QUEUES:
            self.app.send_task(keys.NOOP_TASK, args=[None], queue=queue)
        self.wait_idle(timeout, children=[child])

    # --- queues --------------------------------------------------------------------------------------------

    def busy(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for queue in keys.QUEUES:
            pipe.llen(queue)
        pipe.hlen("unacked")
        return sum(int(n) for n in pipe.execute())

    def wait_idle(
        self, timeout: float, *, children: list[Child] | None = None, quiet: float = 0.3, interval: float = 0.05
    ) -> float:
        """Wait until every queue is empty and nothing is unacked; returns the moment it first was."""
        deadline = time.monotonic() + timeout
        quiet_since: float | None = None
        watched = children if children is not None else self.children
        while time.monotonic() < deadline:
            for child in watched:
                if not child.alive():
                    raise RuntimeError(f"{child.name} died; its log ends:\n{child.tail()}")
            if self.busy() == 0:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= quiet:
                    return quiet_since
            else:
                quiet_since = None
            time.sleep(interval)
        raise TimeoutError(f"queues not idle after {timeout:.0f} s ({self.busy()} messages)")

    def flush_markers(self) -> None:
        """Forget pending/done markers between phases (queues and kombu bindings stay)."""
        doomed = list(self.redis.scan_iter(f"{keys.PREFIX}:*", count=1000))
        for start in range(0, len(doomed), 1000):
            self.redis.delete(*doomed[start : start + 1000])

    # --- counters and store facts ---------------------------------------------------------------------------

    def wave_busy_seconds(self) -> float:
        return self.wave_sandbox.injector.busy_seconds

    def counters(self) -> dict[str, dict[str, int]]:
        return {
            "customerp": dict(self.cp_injector.counters),
            "wave": dict(self.wave_sandbox.injector.counters),
            "customerp_faults": dict(self.cp_injector.faults_injected),
            "wave_faults": dict(self.wave_sandbox.injector.faults_injected),
        }

    def reset_counters(self) -> None:
        self.cp_injector.reset_counters()
        self.wave_sandbox.injector.reset_counters()

    def set_faults(self, system: str, **config: Any) -> None:
        injector = self.cp_injector if system == "customerp" else self.wave_sandbox.injector
        injector.update(**config)

    def record_counts(self) -> dict[str, dict[str, int]]:
        """Records each sandbox's store has ever held, tombstones included: the difference over a run is what it
        created, whichever way (API or admin route)."""
        wave: dict[str, int] = {"customers": 0, "products": 0, "orders": 0}
        for business in self.wave_store.businesses.values():
            wave["customers"] += len(business.customers)
            wave["products"] += len(business.products)
            wave["orders"] += len(business.invoices)
        customerp = {entity: len(self.cp_store.tables[entity]) for entity in ("customers", "products", "orders")}
        return {"wave": wave, "customerp": customerp}

    def link_counts(self) -> dict[str, int]:
        with self.ctx.db.session() as session:
            rows = session.execute(select(Link.entity, func.count()).group_by(Link.entity)).all()
        return {str(entity): int(count) for entity, count in rows}

    def dead_letter_counts(self) -> dict[str, int]:
        with self.ctx.db.session() as session:
            rows = session.execute(select(DeadLetter.entity, func.count()).group_by(DeadLetter.entity)).all()
        return {str(entity): int(count) for entity, count in rows}

    def dead_letter_reasons(self, limit: int = 5) -> list[str]:
        with self.ctx.db.session() as session:
            rows = session.execute(select(DeadLetter.entity, DeadLetter.reason).limit(limit)).all()
        return [f"{entity}: {reason[:200]}" for entity, reason in rows]

    def links(self, entity: str) -> list[tuple[str, str]]:
        with self.ctx.db.session() as session:
            rows = session.execute(select(Link.customerp_id, Link.wave_id).where(Link.entity == entity)).all()
        return [(str(c), str(w)) for c, w in rows]

    def cpu_meter(self) -> proc.CpuMeter:
        """CPU of the worker(s), this process (both sandboxes and the driver) and Valkey."""
        pids = {child.name: child.pid for child in self.children if child.alive()}
        pids["bench"] = os.getpid()
        valkey = getattr(self.redis_server, "_process", None)
        if valkey is not None:
            pids["valkey"] = valkey.pid
        return proc.CpuMeter(pids)

    def rss(self) -> dict[str, proc.Memory]:
        return {child.name: proc.tree_memory(child.pid) for child in self.children if child.alive()}


def split_counts(calls: dict[str, int], system: str) -> tuple[int, int]:
    """(writes, reads) among a sandbox's call counters."""
    if system == "customerp":
        writes = sum(n for op, n in calls.items() if op.endswith(CP_WRITES))
    else:
        writes = sum(n for op, n in calls.items() if any(w in op for w in WAVE_WRITES))
    return writes, sum(calls.values()) - writes


@contextmanager
def stack(
    base: Path | None, name: str, *, postgres: str | None = None, keep: bool = False, **kwargs: Any
) -> Iterator[Stack]:
    """A Stack in its own directory (under `base`, or a temporary one), removed afterwards.

    With `postgres` (a cluster URL) the link store is a fresh database on it instead of a SQLite file.
    """
    root = Path(tempfile.mkdtemp(prefix=f"wavesync-bench-{name}-", dir=base))
    running: Stack | None = None
    with ExitStack() as cleanup:
        if postgres:
            from sandboxes.postgres import fresh_database

            kwargs["database_url"] = cleanup.enter_context(fresh_database(postgres, f"bench_{root.name[-8:].lower()}"))
        try:
            running = Stack(root, **kwargs)
            yield running
        finally:
            if running is not None:
                running.close()
            if not keep:
                shutil.rmtree(root, ignore_errors=True)
