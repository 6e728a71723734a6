"""Redis-backed coordination between pollers and workers: pending markers, record locks, creation intents.

Correctness never rests on these alone: the link table's unique constraints and row version, Customerp's
If-Match and idempotency keys are the fences. These make the common case cheap (no duplicate queue traffic,
no two workers writing one record at once).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis

from shared import keys, leases
from shared.errors import MustWaitError
from shared.settings import Entity
from shared.versions import parse_timestamp

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


# KEYS[1] the intents of one entity into one system, ARGV record id, intent, TTL (s). Records the intent unless one is
# there already, and returns that one (nil: recorded). One script: this runs before every create.
_BEGIN_CREATE = """
local previous = redis.call('HGET', KEYS[1], ARGV[1])
if not previous then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
return previous
"""

# KEYS[1] a record lock, KEYS[2] (optional) a record's pending marker; ARGV token, lease (ms). Takes the lock as
# redis-py's Lock does (SET NX PX) and, only when it got it, the marker, in one round trip: a sync starts with both.
# Returns false when the lock is held, otherwise {1, the marker's version or false}.
_TAKE_LOCK = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
if KEYS[2] then
  return {1, redis.call('GETDEL', KEYS[2])}
end
return {1, false}
"""


# KEYS[1] a record lock, KEYS[2..] intents hashes (`creating_key`); ARGV[1] the lock's token, ARGV[2..] the record id
# to end in each hash. Ends the creations the sync linked, then releases the lock if this holder still has it (as
# redis-py's release does): a sync's last two Redis commands in one round trip. Returns 1 when it released the lock.
_RELEASE_LOCK = """
for i = 2, #KEYS do
  redis.call('HDEL', KEYS[i], ARGV[i])
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class RecordLock(redis.lock.Lock):
    """A record's lock as a sync holds it: redis-py's Lock (released, extended and renewed as usual) whose taking
    also takes the record's pending marker (`newest_seen`), and whose release also ends the creations the sync linked
    (`end_creates_at_release`)."""

    def __init__(
        self,
        client: redis.Redis,
        name: str,
        pending: str | None,
        scripts: tuple[redis.commands.core.Script, redis.commands.core.Script],
        wait: float,
    ) -> None:
        super().__init__(client, name, timeout=leases.LOCK_LEASE_S, blocking_timeout=wait, thread_local=False)
        self.pending = pending
        self._take, self._release = scripts
        self.newest_seen: str | None = None
        self._ended: dict[str, str] = {}  # intents hash -> record id

    def end_creates_at_release(self, entity: Entity, source_ids: Mapping[str, str]) -> None:
        """End the creations of these records' partners (into each target given) when the lock is released.

        Safe to put off until then: while this sync holds the pair's lock no other sync acts on the pair, and a pair
        whose link is recorded is never created again, so an intent left by a sync killed before its release only
        has other records that share the created record's keys wait (up to `CREATE_IN_FLIGHT_S`), as one left between
        the link's commit and its ending always could."""
        for target, source_id in source_ids.items():
            if source_id:
                self._ended[keys.creating_key(entity, target)] = source_id

    def do_acquire(self, token: str | bytes) -> bool:
        script_keys = [self.name] if self.pending is None else [self.name, self.pending]
        taken = self._take(keys=script_keys, args=[token, int(leases.LOCK_LEASE_S * 1000)])
        if not taken:
            return False
        seen = taken[1]
        self.newest_seen = seen.decode() if isinstance(seen, bytes) else None
        return True

    def do_release(self, expected_token: str | bytes) -> None:
        ended, self._ended = self._ended, {}
        released = self._release(keys=[self.name, *ended], args=[expected_token, *ended.values()])
        if not released:
            raise redis.exceptions.LockNotOwnedError("the record lock lapsed before its release", lock_name=self.name)


class Coordinator:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._mark_pending = client.register_script(_MARK_PENDING)
        self._take_lock = client.register_script(_TAKE_LOCK)
        self._release_lock = client.register_script(_RELEASE_LOCK)
        self._begin_create = client.register_script(_BEGIN_CREATE)

    def mark_pending(self, entity: Entity, system: str, versions: Mapping[str, str]) -> list[str]:
        """The ids among `versions` ({record id: version}, a poll page's changes) that the caller should enqueue; a
        record already covered by a queued message is not among them (it re-reads the newer version). One round trip.

        Versions are compared as strings: callers pass zero-padded integers or fixed-format timestamps.
        """
        pipe = self.redis.pipeline(transaction=False)
        for record_id, version in versions.items():
            key = keys.pending_key(entity, system, record_id)
            self._mark_pending(keys=[key], args=[version, PENDING_TTL_S], client=pipe)
        return [record_id for record_id, fresh in zip(versions, pipe.execute(), strict=True) if fresh]

    def pending_older_than(self, entity: Entity, system: str, seconds: float) -> dict[str, str]:
        """{record id: version} of the records marked pending at least `seconds` ago."""
        found: dict[str, str] = {}
        prefix = keys.pending_key(entity, system, "")
        names = list(self.redis.scan_iter(match=f"{prefix}*", count=500))
        if not names:
            return found
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.ttl(name)
        answers = pipe.execute()
        for name, version, ttl in zip(names, answers[::2], answers[1::2], strict=True):
            age = PENDING_TTL_S - int(ttl)
            if isinstance(version, bytes) and ttl > 0 and age >= seconds:
                found[name.decode().removeprefix(prefix)] = version.decode()
        return found

    def unmark_pending(self, entity: Entity, system: str, record_ids: list[str]) -> None:
        """Forget the pending markers of records whose messages may not have been sent: the next poll that reads
        them marks and sends them again (a second message for a record is harmless, a marker without one is not)."""
        if record_ids:
            self.redis.delete(*(keys.pending_key(entity, system, i) for i in record_ids))

    def restart_pending(self, entity: Entity, system: str, record_id: str, version: str) -> None:
        """Mark the record pending anew (its message was just sent again)."""
        self.redis.set(keys.pending_key(entity, system, record_id), version, ex=PENDING_TTL_S)

    def mark_done(self, entity: Entity, system: str, record_id: str, version: str) -> None:
        """Remember the newest version a worker finished, so an overlapping poll does not enqueue it again
        (linked records have their link for that; this covers records that stayed unlinked, e.g. skipped)."""
        if version:
            self.redis.set(keys.done_key(entity, system, record_id), version, ex=DONE_TTL_S)

    def done_versions(self, entity: Entity, system: str, record_ids: list[str]) -> dict[str, str]:
        if not record_ids:
            return {}
        values = self.redis.mget([keys.done_key(entity, system, i) for i in record_ids])
        return {i: v.decode() for i, v in zip(record_ids, values, strict=True) if isinstance(v, bytes)}

    @contextmanager
    def record_lock(
        self, entity: Entity, system: str, record_id: str, *, wait: float, pending_of: tuple[str, str] | None = None
    ) -> Iterator[RecordLock]:
        """Hold the record's lock as a lease: this process renews it while it works (shared/leases.py), so a long
        sync keeps it, and a worker killed mid-sync frees it within `LOCK_LEASE_S`.

        `pending_of` (a message's record: system, id): taking the lock also takes that record's pending marker, in
        the same round trip, so later changes enqueue anew; the lock's `newest_seen` is the newest version a poll saw
        while the message waited, if any."""
        key = keys.record_lock_key(entity, system, record_id)
        pending = keys.pending_key(entity, *pending_of) if pending_of else None
        # Not thread-local: the process's lease thread renews it with the token this thread took it with.
        lock = RecordLock(self.redis, key, pending, (self._take_lock, self._release_lock), wait)
        if not lock.acquire():
            # Its holder renews it while it works; a dead holder's lapses when its lease runs out: look again then.
            lapses_in = max(0, int(self.redis.pttl(key))) / 1000
            raise MustWaitError(
                f"{entity} {system}:{record_id} is being synced by another worker",
                retry_after=1,
                wait_at_most=max(1.0, lapses_in + 0.5),
            )
        leases.KEEPER.hold(lock)
        try:
            yield lock
        finally:
            leases.KEEPER.release(lock)
            # It may have lapsed in a long stall; the link's row version still guards the write.
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

    def begin_create(
        self, entity: Entity, target: str, source_id: str, started_at: str, sent: dict[str, Any]
    ) -> CreateIntent | None:
        """Record that we are about to create `source_id`'s partner in `target` from the canonical record `sent`.

        Returns the intent of an earlier attempt that never finished (a crash, a lost answer), if any: the caller
        must look for what that attempt may have created, and resend exactly what it sent.
        """
        key = keys.creating_key(entity, target)
        value = json.dumps({"started_at": started_at, "sent": sent, "owner": leases.process_id()}, sort_keys=True)
        previous = self._begin_create(keys=[key], args=[source_id, value, CREATE_INTENT_TTL_S])
        return None if previous is None else CreateIntent.parse(source_id, previous)

    def create_intent(self, entity: Entity, target: str, source_id: str) -> CreateIntent | None:
        """The unfinished creation of `source_id`'s partner in `target`, if one was begun."""
        raw = self.redis.hget(keys.creating_key(entity, target), source_id)
        return CreateIntent.parse(source_id, raw) if raw is not None else None

    def touch_create(self, entity: Entity, target: str, source_id: str, attempted_at: str) -> None:
        """Note that the create is being sent again now: a late answer to this attempt is what to wait for."""
        key = keys.creating_key(entity, target)
        raw = self.redis.hget(key, source_id)
        if raw is None:
            return
        intent = CreateIntent.parse(source_id, raw)
        value = {
            "started_at": intent.started_at,
            "attempted_at": attempted_at,
            "sent": intent.sent,
            "owner": leases.process_id(),
        }
        self.redis.hset(key, source_id, json.dumps(value, sort_keys=True))

    def owner_alive(self, intent: CreateIntent) -> bool:
        """Whether the process that last sent this create is alive (an intent of an older version: assume so)."""
        return intent.owner is None or leases.is_alive(self.redis, intent.owner)

    def end_create(self, entity: Entity, target: str, source_id: str) -> None:
        """End the creation of `source_id`'s partner in `target` now (a sync that links the pair ends it with its
        lock's release instead: `RecordLock.end_creates_at_release`)."""
        self.redis.hdel(keys.creating_key(entity, target), source_id)

    def creations_around(
        self, entity: Entity, source: str, source_id: str, *, max_age_s: float, now: datetime
    ) -> tuple[list[CreateIntent], CreateIntent | None]:
        """In one round trip: the unfinished creations into `source` (younger than `max_age_s`), and the unfinished
        creation of `source_id`'s own partner in the other system, if one was begun."""
        target = "wave" if source == "customerp" else "customerp"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(keys.creating_key(entity, source))
        pipe.hget(keys.creating_key(entity, target), source_id)
        into_source, own = pipe.execute()
        young = _younger_than(into_source, max_age_s, now)
        return young, CreateIntent.parse(source_id, own) if own is not None else None

    def creations_in_flight(
        self, entity: Entity, target: str, *, max_age_s: float, now: datetime
    ) -> list[CreateIntent]:
        """Unfinished creations into `target` that started less than `max_age_s` ago."""
        return _younger_than(self.redis.hgetall(keys.creating_key(entity, target)), max_age_s, now)


def _younger_than(raw: Mapping[bytes | str, bytes | str], max_age_s: float, now: datetime) -> list[CreateIntent]:
    """The intents of a `creating_key` hash that started less than `max_age_s` before `now`."""
    intents = [CreateIntent.parse(k, v) for k, v in raw.items()]
    return [i for i in intents if (now - i.started).total_seconds() < max_age_s]


@dataclass(frozen=True)
class CreateIntent:
    """An attempt to create a record's partner: when it started and the canonical record it sends."""

    source_id: str
    started_at: str
    sent: dict[str, Any] | None
    attempted_at: str | None = None  # the latest attempt to send the create, when it was sent again
    owner: str | None = None  # the process that sent it last (shared/leases.py), None from older versions

    @property
    def started(self) -> datetime:
        return parse_timestamp(self.started_at)

    @property
    def attempted(self) -> datetime:
        return parse_timestamp(self.attempted_at or self.started_at)

    @classmethod
    def parse(cls, source_id: str | bytes, raw: str | bytes) -> CreateIntent:
        sid = source_id.decode() if isinstance(source_id, bytes) else source_id
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            value = json.loads(text)
        except ValueError:
            value = {"started_at": text}  # written by an older version: a bare timestamp
        if not isinstance(value, dict):
            value = {"started_at": str(value)}
        sent = value.get("sent")
        attempted = value.get("attempted_at")
        owner = value.get("owner")
        return cls(
            sid,
            str(value.get("started_at")),
            sent if isinstance(sent, dict) else None,
            str(attempted) if attempted else None,
            str(owner) if owner else None,
        )
