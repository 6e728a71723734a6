"""Leases a live process renews: its heartbeat, its record locks, and (in a worker) the broker messages it holds.

A process killed with SIGKILL cannot clean up after itself. Whatever it held must therefore lapse on its own, soon,
while whatever a live process holds must never lapse however long its work takes. Both follow from one rule: a
process holds things on short leases and one daemon thread per process renews them every `RENEW_EVERY_S`:
- its heartbeat key (`keys.worker_key`), which others read to tell whether the owner of a create intent is alive;
- every record lock it holds (`Coordinator.record_lock`), so a dead worker's locks lapse in `LOCK_LEASE_S`;
- any other renewal registered with `set_renewal` (the worker's unacked broker messages, shared/message_leases.py).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

import redis

from shared import keys

log = logging.getLogger(__name__)

RENEW_EVERY_S = 5.0
# Three renewals may be missed (a Redis blip, a stalled process) before another worker may take over.
HEARTBEAT_TTL_S = 15
LOCK_LEASE_S = 20.0


def process_id() -> str:
    """This process's name in heartbeats and create intents: host, pid, and a nonce that differs after a restart."""
    return _IDENTITY.value()


class _Identity:
    def __init__(self) -> None:
        self._pid = -1
        self._value = ""

    def value(self) -> str:
        if self._pid != os.getpid():  # a forked child is another process with its own leases
            self._pid = os.getpid()
            self._value = f"{socket.gethostname()}:{self._pid}:{uuid.uuid4().hex[:8]}"
        return self._value


_IDENTITY = _Identity()


class LeaseKeeper:
    """The renewing thread of one process. Started on first use; a forked child starts its own."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[int, redis.lock.Lock] = {}
        self._renewals: dict[str, Callable[[], None]] = {}
        self._heartbeat: redis.Redis | None = None
        self._pid = -1
        self._wake = threading.Event()
        self._unreachable = False

    def hold(self, lock: redis.lock.Lock) -> None:
        with self._guard:
            self._locks[id(lock)] = lock
        self._ensure_running()

    def release(self, lock: redis.lock.Lock) -> None:
        with self._guard:
            self._locks.pop(id(lock), None)

    def set_renewal(self, name: str, renew: Callable[[], None] | None) -> None:
        """Renew something else too (None: stop). One per name: a restarted consumer replaces its old channel's."""
        with self._guard:
            if renew is None:
                self._renewals.pop(name, None)
            else:
                self._renewals[name] = renew
        self._ensure_running()

    def heartbeat_on(self, client: redis.Redis) -> None:
        """Announce this process as alive in `client`'s Redis from now on (workers do; CLI tools need not)."""
        self._heartbeat = client
        self._ensure_running()
        self._wake.set()

    def heartbeat_off(self, client: redis.Redis) -> None:
        """Stop announcing through `client` (its context is closing); renewals through another client go on."""
        with self._guard:
            if self._heartbeat is client:
                self._heartbeat = None
                self._unreachable = False

    def renew_now(self) -> None:
        """One round of renewals. Never raises: a failed renewal is retried in `RENEW_EVERY_S`, and a lease that
        lapses meanwhile only lets another worker redo idempotent work."""
        with self._guard:
            locks = list(self._locks.values())
            renewals = list(self._renewals.values())
        if self._heartbeat is not None:
            try:
                self._heartbeat.set(keys.worker_key(process_id()), "1", ex=HEARTBEAT_TTL_S)
            except (redis.exceptions.RedisError, OSError, ValueError) as exc:
                # Redis down, or its client closed under the thread (a context closed at shutdown raises OSError or
                # ValueError from the socket). Said once per outage: the worker's own connection errors say the rest.
                if not self._unreachable:
                    log.warning("could not renew this worker's leases (Redis unreachable): %s", exc)
                self._unreachable = True
            else:
                if self._unreachable:
                    log.info("renewing this worker's leases again")
                self._unreachable = False
        for lock in locks:
            try:
                lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                self.release(lock)  # it lapsed (a long stall): the link's row version still guards the write
            except Exception as exc:  # noqa: BLE001 - one failed renewal must not stop the thread renewing the rest
                log.warning("could not renew a record lock: %s", exc)
        for renew in renewals:
            try:
                renew()
            except Exception as exc:  # noqa: BLE001 - a renewal must never kill the thread that renews the rest
                log.warning("could not renew a lease: %s", exc)

    def _ensure_running(self) -> None:
        if self._pid == os.getpid():
            return
        with self._guard:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            threading.Thread(target=self._run, name="wavesync-leases", daemon=True).start()

    def _run(self) -> None:
        while True:
            self.renew_now()
            self._wake.wait(RENEW_EVERY_S)
            self._wake.clear()


KEEPER = LeaseKeeper()


def is_alive(client: redis.Redis, owner: str) -> bool:
    """Whether the process named `owner` renewed its heartbeat lately."""
    return bool(client.exists(keys.worker_key(owner)))
