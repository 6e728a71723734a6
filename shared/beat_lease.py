"""Beat's fleet-wide lease: one beat schedules, any other stands by until the lease lapses or is given back.

Two beats on one Redis (`docker compose --scale beat=2`, two `wavesync up` on a shared WAVESYNC_REDIS_URL, a beat
restarted while its predecessor still stops) would send every poll, reconcile and prune twice. So beat runs
`LeasedScheduler`: before it sends anything it must hold `keys.beat_lease_key()` (`SET NX` with a TTL, value its
process id). The holder renews the lease from its scheduling loop, so the lease lives exactly as long as the loop
that sends; a beat that stops cleanly gives it back at once, one killed lets it lapse within `LEASE_TTL_S`. A beat
without the lease stands by, trying again every `STANDBY_POLL_S`, and opens its schedule file only once it holds the
lease (compose's beats share the data volume, and the file is a dbm that two writers would corrupt).

A beat restarted after a SIGKILL need not wait out its dead predecessor's TTL when it can prove the holder dead: the
lease names the holder's kernel and pid namespace (`scope()`), and in the same scope a pid that does not exist is a
process that has exited. A holder in another scope (another host, another container) is only ever waited out.
"""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import redis
from celery.beat import PersistentScheduler
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from shared import keys
from shared.leases import HEARTBEAT_TTL_S, RENEW_EVERY_S, process_id
from shared.settings import load_settings

log = logging.getLogger(__name__)

# As short as a worker's heartbeat: a beat killed with SIGKILL (or restarted by compose) is replaced within it.
LEASE_TTL_S = HEARTBEAT_TTL_S
STANDBY_POLL_S = 2.0


# Replace the lease only if it still names the holder proven dead (another standby may have taken it meanwhile).
_TAKE_FROM_DEAD = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3])
    return 1
end
return 0
"""


def scope() -> str:
    """Where a pid means one process: this boot of this kernel, and this pid namespace (a container has its own)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as boot:
            return f"{boot.read().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return "unknown"


def beat_owner() -> str:
    """This beat's name in the lease: its process id (shared/leases.py), then its scope."""
    return f"{process_id()} {scope()}"


def _dead_here(holder: str) -> bool:
    """Whether `holder` (a `beat_owner()`) is a process in our scope that no longer exists."""
    name, _, where = holder.partition(" ")
    if where != scope() or where == "unknown":
        return False
    try:
        pid = int(name.rsplit(":", 2)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return name != process_id()  # our own pid under another name: a predecessor (a container's pid 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists (another user's): alive as far as we can tell
        return False
    return False


class BeatLease:
    """The lease in Redis. `hold()` takes or renews it; `release()` gives it back if still ours."""

    def __init__(self, client: redis.Redis, owner: str, ttl: float = LEASE_TTL_S) -> None:
        self.client = client
        self.owner = owner
        self.held = False
        self._ttl_ms = int(ttl * 1000)
        self._lock = client.lock(keys.beat_lease_key(), timeout=ttl, thread_local=False)
        self._take_from_dead = client.register_script(_TAKE_FROM_DEAD)

    def hold(self) -> bool:
        """True while this beat holds the lease (renewed for another TTL); False while another does."""
        if self.held:
            try:
                self._lock.reacquire()
                return True
            except LockNotOwnedError:  # it lapsed (a stall longer than the TTL) and maybe another beat has it now
                self.held = False
        self.held = self._lock.acquire(blocking=False, token=self.owner)
        if not self.held:
            holder = self.holder()
            if (
                holder is not None
                and _dead_here(holder)
                and self._take_from_dead(keys=[keys.beat_lease_key()], args=[holder, self.owner, self._ttl_ms])
            ):
                log.info("beat: took the beat lease from %s, which has exited", holder)
                self._lock.local.token = self.owner.encode()  # as `acquire` would have set it
                self.held = True
        return self.held

    def holder(self) -> str | None:
        value = self.client.get(keys.beat_lease_key())
        return value.decode() if isinstance(value, bytes) else None

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self._lock.release()
        except (LockError, RedisError) as exc:  # lapsed already, or Redis is gone: it lapses on its own
            log.info("beat lease not given back (%s): it lapses within %s s", exc, LEASE_TTL_S)


class LeasedScheduler(PersistentScheduler):
    """Celery's persistent scheduler, scheduling only while this beat holds the fleet's beat lease."""

    _store: Any = None  # Celery's open shelf of the schedule file (celery.beat is untyped)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lease: BeatLease | None = None
        self._schedule_open = False
        self._renewed_at = -math.inf
        self._state = "starting"
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        """Deferred to the first tick with the lease (see the module's docstring)."""

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self._leading():
            self._stand_down()
            return STANDBY_POLL_S
        if not self._schedule_open:
            super().setup_schedule()
            self._schedule_open = True
        interval: float = super().tick(*args, **kwargs)
        # Never sleep past the next renewal: the loop that sends is the one that renews.
        return min(interval, max(0.0, self._renewed_at + RENEW_EVERY_S - time.monotonic()))

    def sync(self) -> None:
        # Celery's service loop syncs after every sleep, leading or not: only the holder may write the shared file.
        if self._schedule_open and self._lease is not None and self._lease.held:
            super().sync()

    def _stand_down(self) -> None:
        """Not leading (any more): close the schedule file unsynced. Whoever leads now writes it, and this beat
        reads it afresh if it takes over again, instead of scheduling from (and writing back) its stale copy."""
        if not self._schedule_open:
            return
        self._schedule_open = False
        store, self._store = self._store, None
        self._heap = None
        if store is not None:
            try:
                # Celery opens the shelf with writeback: closing it would write the cached (stale) entries back.
                store.writeback = False
                store.cache = {}
                store.close()
            except Exception as exc:  # noqa: BLE001 - a file we stop using: nothing to recover
                log.warning("beat: could not close the schedule file on standing down: %s", exc)

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._lease is not None:
                self._lease.release()

    def _leading(self) -> bool:
        now = time.monotonic()
        lease = self._lease
        if lease is not None and lease.held and now - self._renewed_at < RENEW_EVERY_S:
            return True
        try:
            if lease is None:
                settings = load_settings()
                client = redis.Redis.from_url(
                    str(settings.redis_url), socket_timeout=5, socket_connect_timeout=5, health_check_interval=25
                )
                lease = self._lease = BeatLease(client, beat_owner())
            held = lease.hold()
        except RedisError as exc:
            self._say("unreachable", "beat: cannot reach Redis for the beat lease (%s); not scheduling", exc)
            return False
        if held:
            self._renewed_at = now
            self._say("leading", "beat: holding the beat lease (%s); scheduling", lease.owner)
        elif self._state == "leading":
            self._say("standby", "beat: lost the beat lease to %s; standing by", lease.holder())
        else:
            self._say("standby", "beat: another beat (%s) holds the beat lease; standing by", lease.holder())
        return held

    def _say(self, state: str, message: str, *args: Any) -> None:
        """Log a change of state once, not on every tick."""
        if state != self._state:
            self._state = state
            (log.warning if state == "unreachable" else log.info)(message, *args)
