"""Redis-backed coordination between pollers and workers: pending markers, record locks, creation intents.

Correctness never rests on these alone: the link table's unique constraints and row version, Customerp's
If-Match and idempotency keys are the fences. These make the common case cheap (no duplicate queue traffic,
no two workers writing one record at once).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis

from shared import keys
from shared.errors import RetryableError
from shared.settings import Entity

PENDING_TTL_S = 900
CREATE_INTENT_TTL_S = 7 * 24 * 3600
DONE_TTL_S = 3600

# KEYS[1] pending key, ARGV[1] version. Set when absent (return 1: enqueue); otherwise remember the newer
# version so the queued message re-reads the record (return 0: coalesced).
_MARK_PENDING = """
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 1
end
if ARGV[1] > current then
  redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
end
return 0
"""


class Coordinator:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._mark_pending = client.register_script(_MARK_PENDING)

    def mark_pending(self, entity: Entity, system: str, record_id: str, version: str) -> bool:
        """True when the caller should enqueue; False when a queued message already covers the record.

        Versions are compared as strings: callers pass zero-padded integers or fixed-format timestamps.
        """
        key = keys.pending_key(entity, system, record_id)
        return bool(self._mark_pending(keys=[key], args=[version, PENDING_TTL_S]))

    def take_pending(self, entity: Entity, system: str, record_id: str) -> str | None:
        """Called when a worker starts a record: later changes will enqueue anew. Returns the newest version
        seen while the message waited, if any."""
        value = self.redis.getdel(keys.pending_key(entity, system, record_id))
        return value.decode() if isinstance(value, bytes) else None

    def mark_done(self, entity: Entity, system: str, record_id: str, version: str) -> None:
        """Remember the newest version a worker finished, so an overlapping poll does not enqueue it again
        (linked records have their link for that; this covers records that stayed unlinked, e.g. skipped)."""
        if version:
            self.redis.set(f"{keys.PREFIX}:done:{entity}:{system}:{record_id}", version, ex=DONE_TTL_S)

    def done_versions(self, entity: Entity, system: str, record_ids: list[str]) -> dict[str, str]:
        if not record_ids:
            return {}
        values = self.redis.mget([f"{keys.PREFIX}:done:{entity}:{system}:{i}" for i in record_ids])
        return {i: v.decode() for i, v in zip(record_ids, values, strict=True) if isinstance(v, bytes)}

    @contextmanager
    def record_lock(self, entity: Entity, system: str, record_id: str, *, ttl: float, wait: float) -> Iterator[None]:
        lock = self.redis.lock(keys.record_lock_key(entity, system, record_id), timeout=ttl, blocking_timeout=wait)
        if not lock.acquire():
            raise RetryableError(f"{entity} {system}:{record_id} is being synced by another worker", retry_after=1)
        try:
            yield
        finally:
            # It may have expired while we worked; the link's row version still guards the write.
            with suppress(redis.exceptions.LockError):
                lock.release()

    @contextmanager
    def try_lock(self, key: str, *, ttl: float) -> Iterator[bool]:
        """A non-blocking lock: yields False when someone else holds it (e.g. an overlapping poll)."""
        lock = self.redis.lock(key, timeout=ttl, blocking=False)
        acquired = lock.acquire()
        try:
            yield acquired
        finally:
            if acquired:
                with suppress(redis.exceptions.LockError):
                    lock.release()

    def begin_create(self, entity: Entity, target: str, source_id: str, started_at: str) -> str | None:
        """Record that we are about to create `source_id`'s partner in `target`. Returns the start time of an
        earlier attempt that never finished (a crash between the remote create and the link), if any."""
        key = f"{keys.PREFIX}:creating:{entity}:{target}:{source_id}"
        previous = self.redis.get(key)
        if previous is None:
            self.redis.set(key, started_at, ex=CREATE_INTENT_TTL_S)
            return None
        return previous.decode() if isinstance(previous, bytes) else str(previous)

    def end_create(self, entity: Entity, target: str, source_id: str) -> None:
        self.redis.delete(f"{keys.PREFIX}:creating:{entity}:{target}:{source_id}")
