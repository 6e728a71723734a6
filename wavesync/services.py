"""Starting and stopping the moving parts: embedded Redis, sandboxes, worker and beat processes."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx
from sqlalchemy import inspect

from sandboxes.customerp.app import CustomerpSandboxConfig
from sandboxes.customerp.app import create_app as create_customerp_app
from sandboxes.serve import ServerThread, serve_forever
from sandboxes.wave.app import create_app as create_wave_app
from sandboxes.wave.config import WaveSandboxConfig
from sandboxes.wave.oauth import OAuthSandboxConfig
from shared import keys
from shared.settings import Settings, SettingsError
from shared.store.db import make_engine, upgrade
from wavesync.embedded import EmbeddedRedis
from wavesync.processes import LockBusy, die_with_parent, lock_exclusively

ALL_QUEUES = ",".join(keys.QUEUES)
# Sync work waits on HTTP, not the CPU: threads give concurrency without a process per slot (see README).
DEFAULT_POOL = ("--pool", "threads", "--concurrency", "8")


def worker_argv(args: Sequence[str]) -> list[str]:
    argv = ["worker", *args]
    if not any(a in ("-Q", "--queues") or a.startswith("--queues=") for a in args):
        argv += ["-Q", ALL_QUEUES]
    if not any(a in ("-P", "--pool") or a.startswith("--pool=") for a in args):
        argv += list(DEFAULT_POOL)
    if not any(a in ("-l", "--loglevel") or a.startswith("--loglevel=") for a in args):
        argv += ["--loglevel", "INFO"]
    return argv


def sandbox_configs(settings: Settings) -> tuple[CustomerpSandboxConfig, WaveSandboxConfig]:
    oauth = OAuthSandboxConfig()
    if settings.wave_auth == "oauth":  # the sandbox knows the configured OAuth client, so `connect wave` works
        oauth = OAuthSandboxConfig(clients=((settings.wave_client_id, settings.wave_client_secret.get_secret_value()),))
    return (
        CustomerpSandboxConfig(api_keys=(settings.customerp_api_key.get_secret_value(),)),
        WaveSandboxConfig(tokens=frozenset({settings.wave_token.get_secret_value()}), oauth=oauth),
    )


@dataclass
class Sandboxes:
    customerp: ServerThread
    wave: ServerThread

    @property
    def customerp_url(self) -> str:
        return self.customerp.url

    @property
    def wave_url(self) -> str:
        return f"{self.wave.url}/graphql/public"

    def seed(self, customerp: dict[str, int], wave: dict[str, int]) -> None:
        with httpx.Client(timeout=60) as client:
            if customerp:
                client.post(f"{self.customerp.url}/_admin/seed", json=customerp).raise_for_status()
            if wave:
                client.post(f"{self.wave.url}/_admin/seed", json=wave).raise_for_status()


@contextmanager
def running_sandboxes(settings: Settings, *, customerp_port: int = 0, wave_port: int = 0) -> Iterator[Sandboxes]:
    cp_config, wave_config = sandbox_configs(settings)
    with (
        ServerThread(create_customerp_app(cp_config), settings.sandbox_host, customerp_port) as cp,
        ServerThread(create_wave_app(wave_config), settings.sandbox_host, wave_port) as wave,
    ):
        yield Sandboxes(cp, wave)


def run_sandboxes(settings: Settings, customers: int, products: int, orders: int) -> None:
    cp_config, wave_config = sandbox_configs(settings)
    cp_app, wave_app = create_customerp_app(cp_config), create_wave_app(wave_config)
    host = settings.sandbox_host
    print(f"Customerp sandbox: http://{host}:{settings.sandbox_customerp_port}/api/v1 (X-API-Key)")
    print(f"Wave sandbox:      http://{host}:{settings.sandbox_wave_port}/graphql/public (Bearer token)")
    print("Admin endpoints under /_admin on both; Ctrl-C stops.")
    seed = {"customers": customers, "products": products, "orders": orders}

    def seed_when_up() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.post(f"http://{host}:{settings.sandbox_customerp_port}/_admin/seed", json=seed, timeout=30)
                return
            except httpx.TransportError:
                time.sleep(0.2)

    import threading

    threading.Thread(target=seed_when_up, daemon=True).start()
    serve_forever([(cp_app, host, settings.sandbox_customerp_port), (wave_app, host, settings.sandbox_wave_port)])


class Fleet:
    """Worker and beat as child processes of `wavesync up` / the demo; stopped with a warm shutdown.

    The children get SIGTERM (the same warm shutdown) when the process that started them dies, even by SIGKILL, and
    inherit the descriptors in `hold` (the data directory's lock), so whatever those lock stays locked until the last
    child has exited."""

    def __init__(self, env: dict[str, str], log: Path | None = None, *, hold: Sequence[int] = ()) -> None:
        self.env = env
        self.log = log
        self.hold = tuple(hold)
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *roles: list[str]) -> None:
        for role in roles:
            output = self.log.open("ab") if self.log else None
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "wavesync", *role],
                    env=self.env,
                    stdout=output,
                    stderr=subprocess.STDOUT if output else None,
                    pass_fds=self.hold,
                    preexec_fn=die_with_parent(),
                )
            )
            if output:
                output.close()

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def stop(self, timeout: float = 30.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


# How long a new `up` waits for the children of a killed one to finish their warm shutdown (a worker ends its
# task, or stops it after worker_soft_shutdown_timeout) before it gives up.
LEFTOVERS_WAIT_S = 30.0


def _busy(exc: LockBusy, what: str) -> SettingsError:
    if exc.owner_alive:
        return SettingsError(
            [
                f"another `wavesync up` (pid {exc.owner}) is running on {what}: stop it first, or give this one its "
                "own WAVESYNC_DATA_DIR"
            ]
        )
    pids = ", ".join(str(pid) for pid in exc.holders) or "unknown"
    return SettingsError([f"processes of an earlier `wavesync up` (pids {pids}) still run on {what}: stop them first"])


def hold_data_dir(settings: Settings) -> int:
    """Lock WAVESYNC_DATA_DIR for this `up` (one line, exit status 2, if another has it); the descriptor to pass on."""
    path = settings.data_dir / "wavesync.lock"
    what = f"WAVESYNC_DATA_DIR={settings.data_dir}"
    try:
        return lock_exclusively(path)
    except LockBusy as exc:
        if exc.owner_alive:
            raise _busy(exc, what) from None
    except OSError as exc:  # e.g. a lock file another user made
        raise SettingsError([f"cannot lock {path}: {exc.strerror or type(exc).__name__}; check {what}"]) from None
    print(f"waiting up to {LEFTOVERS_WAIT_S:.0f} s for the processes of an earlier `wavesync up` to stop")
    try:
        return lock_exclusively(path, wait_for_leftovers=LEFTOVERS_WAIT_S)
    except LockBusy as exc:
        raise _busy(exc, what) from None


def sandboxes_embedded(settings: Settings) -> bool:
    """Whether `up` serves the sandboxes itself (neither system's URL is configured)."""
    return not ({"customerp_url", "wave_url"} & settings.model_fields_set)


def start_sandbox_state_afresh(settings: Settings) -> list[str]:
    """With embedded sandboxes, clear what an earlier run left in WAVESYNC_DATA_DIR; returns what it cleared.

    The sandboxes keep their records in memory and are seeded anew on every start, so the links, watermarks and dead
    letters of an earlier run would name records that no longer exist (reconcile then finds dozens of "deleted" and
    the workers dead-letter "no longer exists"). Only what lives in the data directory goes: the SQLite link store's
    tables (dropped, not the file unlinked: a process that has it open, a console say, would go on reading the
    deleted file) and the embedded Valkey's files. Against real systems (either URL set) nothing is touched."""
    if not sandboxes_embedded(settings):
        return []
    data = settings.data_dir.resolve()
    cleared: list[str] = []
    if settings.database_url.startswith("sqlite:"):
        store = Path(settings.database_url.split("///", 1)[-1]).resolve()
        if store.parent == data and store.is_file() and _drop_tables(settings.database_url):
            cleared.append("the link store")
    if settings.redis_url is None and (data / "redis").is_dir():
        shutil.rmtree(data / "redis")  # before the embedded Valkey starts: nothing has it open
        cleared.append("the embedded Valkey's data")
    return cleared


def _drop_tables(url: str) -> bool:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            tables = inspect(connection).get_table_names()
            for table in tables:
                connection.exec_driver_sql(f'DROP TABLE "{table}"')
        return bool(tables)
    finally:
        engine.dispose()


def embedded_environment(settings: Settings, stack: ExitStack, *, seed: bool) -> dict[str, str]:
    """Start what is not configured (Redis, sandboxes) and return the environment for the children."""
    env = dict(os.environ)
    if settings.redis_url is None:
        try:
            redis = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis", settings.embedded_redis_port))
        except LockBusy as exc:
            raise _busy(exc, f"the embedded Valkey's directory {settings.data_dir / 'redis'}") from None
        env["WAVESYNC_REDIS_URL"] = redis.url
        print(f"embedded Valkey on {redis.url}")
    if sandboxes_embedded(settings):
        try:
            boxes = stack.enter_context(
                running_sandboxes(
                    settings, customerp_port=settings.sandbox_customerp_port, wave_port=settings.sandbox_wave_port
                )
            )
        except RuntimeError as exc:  # a port in use: another `up`, or `wavesync sandbox`, on this host
            raise SettingsError(
                [
                    f"{exc} (its port is probably in use: another `wavesync up` or `wavesync sandbox`?); set "
                    "WAVESYNC_SANDBOX_CUSTOMERP_PORT and WAVESYNC_SANDBOX_WAVE_PORT to free ports"
                ]
            ) from None
        env["WAVESYNC_CUSTOMERP_URL"] = boxes.customerp_url
        env["WAVESYNC_WAVE_URL"] = boxes.wave_url
        env["WAVESYNC_WAVE_OAUTH_URL"] = f"{boxes.wave.url}/oauth2/"
        env["WAVESYNC_CUSTOMERP_API_KEY"] = settings.customerp_api_key.get_secret_value()
        env["WAVESYNC_WAVE_TOKEN"] = settings.wave_token.get_secret_value()
        print(f"sandboxes: Customerp {boxes.customerp_url}, Wave {boxes.wave_url}")
        if seed:
            boxes.seed({"customers": 20, "products": 10, "orders": 15}, {"customers": 5, "products": 3})
    return env


def console_environment(settings: Settings, env: dict[str, str]) -> bool:
    """Ready `env` for the console child; say where it is. Without a configured operator password one is made for
    this run and printed once (it is nowhere else: not in logs, not on disk)."""
    if settings.console_port == 0:
        return False
    user = settings.console_user
    if settings.console_password is None:
        password = secrets.token_urlsafe(12)
        env["WAVESYNC_CONSOLE_PASSWORD"] = password
        login = f"user {user}, password {password} (made for this run: set WAVESYNC_CONSOLE_PASSWORD to choose one)"
    else:
        login = f"user {user} and WAVESYNC_CONSOLE_PASSWORD"
    print(f"console: http://{settings.console_host}:{settings.console_port}/ ({login})")
    return True


def preflight(env: dict[str, str]) -> bool:
    """`wavesync doctor` against what `up` is about to run (its children's environment: embedded Redis, sandboxes),
    so a first run shows at once what is wrong. Advice, not a gate: the service runs either way. True when every
    check passed."""
    try:
        result = subprocess.run(
            [sys.executable, "-m", "wavesync", "doctor", "--preflight"],  # beat is starting with it: not checked
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=die_with_parent(),
        )
    except subprocess.TimeoutExpired:
        print("preflight: `wavesync doctor` did not finish within 120 s; run it yourself")
        return False
    print("preflight (`wavesync doctor`):")
    print(result.stdout.rstrip())
    return result.returncode == 0


def run_up(settings: Settings, *, seed: bool) -> int:
    stopping = False

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with ExitStack() as stack:
        lock = hold_data_dir(settings)
        stack.callback(os.close, lock)
        cleared = start_sandbox_state_afresh(settings)
        if cleared:
            print(
                "embedded sandboxes start with new records every run: so does the sync state (cleared "
                f"{' and '.join(cleared)} of the earlier run in WAVESYNC_DATA_DIR)"
            )
        env = embedded_environment(settings, stack, seed=seed)
        upgrade(settings.database_url)
        fleet = Fleet(env, hold=(lock,))
        stack.callback(fleet.stop)
        fleet.start(["worker"], ["beat"])
        if console_environment(settings, env):
            fleet.start(["console"])
        if preflight(env):
            print("wavesync is running; Ctrl-C stops it")
        else:
            print(
                "wavesync is running, but the preflight found problems (above): it may not sync until they are fixed; "
                "Ctrl-C stops it"
            )
        while not stopping and fleet.alive():
            time.sleep(0.5)
        failed = not stopping
    print("wavesync stopped")
    return 1 if failed else 0
