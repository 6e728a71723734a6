"""An index of Wave records by the natural keys the workers match on: customers' email and displayId, product names,
invoice numbers.

Wave can filter on few of these, and a search per record would double a backfill's Wave calls. The Wave pollers
see every Wave record and keep this index current for free; a worker puts what it changes and forgets what it
deletes (a record it creates is linked at once: no match could take it, and the next poll indexes it). The index
is only complete up to the last poll, so before a worker concludes "no Wave record has this key, create one" it
calls `ensure_fresh`: if the index is not complete as of `match_freshness` seconds ago, one process lists what
changed in Wave since it was (shared by every worker waiting on the same entity), and a create late in that window
lists ahead of time so that creates which keep coming never wait for one. A record a person creates in Wave can
therefore go unseen only within that window, not a whole poll interval.

Keys are compared case-insensitively and without surrounding or repeated spaces (`normalise_key`). Several Wave
records may share a key (two customers with one email): the index keeps them all.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from pydantic.alias_generators import to_snake

from shared import keys
from shared.settings import Entity, Settings
from shared.versions import normalise_timestamp
from shared.wave.client import Listed, WaveClient
from shared.wave.models import Page, WaveCustomer, WaveInvoice, WaveProduct, WaveRecordKeys

Indexed = WaveCustomer | WaveProduct | WaveInvoice | WaveRecordKeys

# The Wave fields (as the API names them) each entity is matched on.
KEY_FIELDS: dict[Entity, tuple[str, ...]] = {
    "customers": ("email", "displayId"),
    "products": ("name",),
    "orders": ("invoiceNumber",),
}
# Each of those fields with its attribute on the clients' models (which alias snake_case attributes to camelCase).
_ATTRIBUTES = {entity: [(name, to_snake(name)) for name in fields] for entity, fields in KEY_FIELDS.items()}
# A forgotten (deleted) record's version: sorts after every timestamp, so no earlier read can bring it back.
_TOMBSTONE = "~"
# Sorted set: entity -> epoch seconds as of which its index holds every Wave record (ZADD GT: it only moves on).
_COMPLETE_KEY = keys.wave_index_complete_key()
# Sorted set: entity -> the newest modifiedAt (Wave's clock, epoch seconds) on the first page the last listing read.
_LISTED_KEY = keys.wave_index_listed_key()
# How long after Wave stamps a write it may still be invisible to a listing (a transaction still committing); a
# listing starts this long before what the last one read (`_listing_start`).
LATE_WRITE_S = 1.0
# How long a process waits for another's listing before it lists itself (see `ensure_fresh`).
LISTING_WAIT_S = 3.0
# A create that finds the index older than this share of `match_freshness` (but still fresh enough) lists Wave ahead
# of time, unless another process is listing already. While creates keep coming the index then never goes stale,
# and no create waits for a listing: at 250 ms a call, every thread of a worker waiting on one listing left one of
# Wave's two slots idle for a quarter second in every two (7 % of the API's capacity in a backfill).
REFRESH_AHEAD = 0.75
_WAIT_STEP_S = 0.05

# KEYS[1] key -> JSON list of ids, KEYS[2] id -> {"m": modifiedAt, "k": [keys]}; ARGV: (id, modifiedAt, JSON keys)*.
# A record's old keys are replaced by its new ones unless what is stored was read later (an older read arriving
# late: a poll page read before a worker's update, or before its delete).
_PUT = """
local function drop(field, id)
  local raw = redis.call('HGET', KEYS[1], field)
  if not raw then return end
  local kept = {}
  for _, v in ipairs(cjson.decode(raw)) do if v ~= id then table.insert(kept, v) end end
  if #kept == 0 then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, cjson.encode(kept)) end
end
local function add(field, id)
  local raw = redis.call('HGET', KEYS[1], field)
  local ids = {}
  if raw then ids = cjson.decode(raw) end
  for _, v in ipairs(ids) do if v == id then return end end
  table.insert(ids, id)
  redis.call('HSET', KEYS[1], field, cjson.encode(ids))
end
for i = 1, #ARGV, 3 do
  local id, modified, fields = ARGV[i], ARGV[i + 1], cjson.decode(ARGV[i + 2])
  local raw = redis.call('HGET', KEYS[2], id)
  local stale = false
  if raw then
    local old = cjson.decode(raw)
    if old.m > modified then stale = true else for _, f in ipairs(old.k) do drop(f, id) end end
  end
  if not stale then
    for _, f in ipairs(fields) do add(f, id) end
    redis.call('HSET', KEYS[2], id, cjson.encode({m = modified, k = fields}))
  end
end
return 0
"""
# KEYS[1] a lock, ARGV[1] its holder's token: only the holder releases it (it may have expired and passed on).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _put_keys(entity: Entity) -> list[str]:
    """The two hashes `_PUT` keeps in step: natural key -> ids, and id -> its keys."""
    return [keys.wave_index_key(entity, "keys"), keys.wave_index_key(entity, "records")]


def normalise_key(value: str) -> str:
    return " ".join(value.split()).casefold()


class WaveKeys:
    """The index of every entity, on one Redis. Cheap to build: make one wherever it is needed."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.settings = settings
        self._put = client.register_script(_PUT)
        self._release = client.register_script(_RELEASE)

    # --- reading ----------------------------------------------------------------------------------------------

    def candidates(self, entity: Entity, values: Mapping[str, str | None]) -> list[str]:
        """Ids of the Wave records having any of `values` ({Wave field: value}, e.g. {"email": …, "displayId": …}),
        those matching more of them first, then in the order of `values`. Hints, not proof: a person may have
        deleted one in Wave since (read it; on NotFoundError `forget_record` it and look again)."""
        return self._candidates_and_completeness(entity, values)[0]

    def lookup(self, entity: Entity, values: Mapping[str, str | None], wave: WaveClient) -> list[str]:
        """`candidates` for a record about to be created in Wave: when the index knows none, it is first brought
        up to date within `match_freshness` seconds, so that "none" means none (but for that window)."""
        found, as_of = self._candidates_and_completeness(entity, values)
        if found:
            return found
        freshness = self.settings.match_freshness
        age = math.inf if as_of is None else time.time() - as_of
        if age > freshness:
            self.ensure_fresh(entity, wave)
            return self.candidates(entity, values)
        ahead = freshness * REFRESH_AHEAD
        if age > ahead and self._list_unless_listing(entity, wave, stale_before=time.time() - ahead):
            return self.candidates(entity, values)
        return found

    def _candidates_and_completeness(
        self, entity: Entity, values: Mapping[str, str | None]
    ) -> tuple[list[str], float | None]:
        """`candidates`, and `complete_as_of`, in one round trip (every create looks up both)."""
        fields = [_field(entity, name, value) for name, value in values.items() if value and value.strip()]
        pipe = self.redis.pipeline(transaction=False)
        pipe.zscore(_COMPLETE_KEY, entity)
        if fields:
            pipe.hmget(keys.wave_index_key(entity, "keys"), fields)
        answers = pipe.execute()
        as_of = None if answers[0] is None else float(answers[0])
        hits: dict[str, int] = {}
        for raw in answers[1] if fields else ():
            for wave_id in json.loads(raw) if raw else ():
                hits[wave_id] = hits.get(wave_id, 0) + 1
        return sorted(hits, key=lambda wave_id: -hits[wave_id]), as_of  # stable: ties keep the order of `values`

    def complete_as_of(self, entity: Entity) -> float | None:
        """Epoch seconds as of which the index holds every Wave record of `entity` (None: never complete)."""
        score = self.redis.zscore(_COMPLETE_KEY, entity)
        return None if score is None else float(score)

    # --- keeping it current -----------------------------------------------------------------------------------

    def put_records(self, entity: Entity, records: Iterable[Mapping[str, Any] | Indexed]) -> None:
        """Index Wave records as read or written (a client's models, or API field names as the pollers read them;
        products archived or not). One round trip for any number of records."""
        args: list[str] = []
        for item in records:
            if isinstance(item, Mapping):
                wave_id, modified = item["id"], item["modifiedAt"]
                values = {name: item.get(name) for name in KEY_FIELDS[entity]}
            else:
                # Read off the model: dumping every field of a listing's records to pick three cost most of its CPU.
                wave_id, modified = item.id, item.modified_at
                values = {name: getattr(item, attribute) for name, attribute in _ATTRIBUTES[entity]}
            fields = [_field(entity, name, value) for name, value in values.items() if _has(value)]
            args += [str(wave_id), normalise_timestamp(modified), json.dumps(fields)]
        if args:
            self._put(keys=_put_keys(entity), args=args)

    def put_record(self, entity: Entity, record: Mapping[str, Any] | Indexed) -> None:
        self.put_records(entity, [record])

    def forget_record(self, entity: Entity, wave_id: str) -> None:
        """The record is gone from Wave (deleted by a worker, or found missing): it no longer matches anything."""
        self._put(keys=_put_keys(entity), args=[wave_id, _TOMBSTONE, "[]"])

    def mark_complete(self, entity: Entity, as_of: float) -> None:
        """Every Wave record modified before `as_of` (epoch seconds, this host's clock) has been put: called by a
        Wave poll that read every page, with its start time."""
        self.redis.zadd(_COMPLETE_KEY, {entity: as_of}, gt=True)

    def ensure_fresh(self, entity: Entity, wave: WaveClient, *, max_age: float | None = None) -> bool:
        """Make the index complete as of at most `max_age` seconds ago (default `match_freshness`); True when this
        call listed Wave. One process lists (a Redis lock), the others wait for its result: a backfill costs one
        listing per `max_age` seconds, not one per record. A listing normally takes a fraction of a second: one that
        has not ended after `LISTING_WAIT_S` (a slow Wave, or a lister killed mid-listing) is not waited for any
        longer; this process lists too, as a duplicate listing only repeats idempotent puts."""
        needed = time.time() - (self.settings.match_freshness if max_age is None else max_age)
        deadline = time.monotonic() + LISTING_WAIT_S
        while True:
            as_of = self.complete_as_of(entity)
            if as_of is not None and as_of >= needed:
                return False
            token = self._take_listing(entity)
            if token is not None or time.monotonic() > deadline:
                return self._list_if_stale(entity, wave, token, stale_before=needed)
            time.sleep(_WAIT_STEP_S)

    def _list_unless_listing(self, entity: Entity, wave: WaveClient, *, stale_before: float) -> bool:
        """List what changed unless another process is listing; True when this one listed. A listing that fails
        fails the create like any other Wave call of its sync (and is retried with it): during an outage a second
        call right after the first failed would only add to Wave's load."""
        token = self._take_listing(entity)
        if token is None:
            return False
        return self._list_if_stale(entity, wave, token, stale_before=stale_before)

    def _list_if_stale(self, entity: Entity, wave: WaveClient, token: str | None, *, stale_before: float) -> bool:
        """Under the listing lock (`token`; None: waited too long for another's), list unless the index has been
        complete as of `stale_before` (epoch seconds) since the caller looked; then let the lock go."""
        try:
            as_of = self.complete_as_of(entity)  # a listing may have ended since the caller's look
            if as_of is not None and as_of >= stale_before:
                return False
            self._refresh(entity, wave, as_of)
            return True
        finally:
            self._end_listing(entity, token)

    def _take_listing(self, entity: Entity) -> str | None:
        """The lock that makes one process list at a time: its token, or None when another holds it."""
        token = uuid.uuid4().hex
        taken = self.redis.set(
            keys.wave_index_lock_key(entity), token, nx=True, px=int(2 * self.settings.http_timeout * 1000)
        )
        return token if taken else None

    def _end_listing(self, entity: Entity, token: str | None) -> None:
        if token is not None:
            self._release(keys=[keys.wave_index_lock_key(entity)], args=[token])

    def _refresh(self, entity: Entity, wave: WaveClient, as_of: float | None) -> None:
        started = time.time()
        first_page_newest: datetime | None = None
        for page in _changed_pages(entity, wave, self._listing_start(entity, as_of)):
            self.put_records(entity, page.items)
            if first_page_newest is None and page.items:
                first_page_newest = page.items[-1].modified_at  # a page holds the oldest changes first
        # `mark_complete`, and where the next listing starts, in one round trip. The start is set, not raised: a
        # later listing whose first page ends earlier must be read again from there (see `_listing_start`).
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(_COMPLETE_KEY, {entity: started}, gt=True)
        if first_page_newest is not None:
            pipe.zadd(_LISTED_KEY, {entity: first_page_newest.timestamp()})
        pipe.execute()

    def _listing_start(self, entity: Entity, as_of: float | None) -> datetime | None:
        """What a listing reads after.

        Wave stamps a write before it becomes visible. A write stamped before the newest record of a page a listing
        read, but not visible yet when that page was read, is missed by that listing; it is newer than that page's
        newest record less the time a write takes to become visible (`LATE_WRITE_S`), and the first page's newest
        record is the oldest of those. So the next listing starts `LATE_WRITE_S` before the newest record of the last
        listing's first page, on Wave's own clock, or `poll_overlap` before the index was complete as of, on this
        host's clock (the overlap covers the skew and late writes, as the pollers' does), whichever is later: each
        alone misses nothing. The second is all there is before the first listing (the pollers made the index
        complete). During a backfill a listing then rereads about a second of creates instead of five and more."""
        if as_of is None:
            return None  # never complete: read everything
        start = as_of - self.settings.poll_overlap
        listed = self.redis.zscore(_LISTED_KEY, entity)
        if listed is not None:
            start = max(start, float(listed) - LATE_WRITE_S)
        return datetime.fromtimestamp(start, UTC)


def _has(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _field(entity: Entity, name: str, value: Any) -> str:
    if name not in KEY_FIELDS[entity]:
        raise ValueError(f"Wave {entity} are not indexed by {name!r} (only {', '.join(KEY_FIELDS[entity])})")
    return f"{name}:{normalise_key(str(value))}"


def _changed_pages(entity: Entity, wave: WaveClient, after: datetime | None) -> Iterator[Page[WaveRecordKeys]]:
    """Every Wave record of `entity` modified after `after`, oldest change first (products archived or not), as its
    id, modifiedAt and keys; read keyset-style like the pollers: a record edited mid-listing moves to the end, and
    offset pages would then skip the one it shifted onto an already-read page."""
    number = 1
    kind: Listed = "invoices" if entity == "orders" else entity
    while True:
        page = wave.list_keys_page(kind, number, modified_after=after)
        yield page
        if len(page.items) < wave.page_size or page.page >= (page.total_pages or 1):
            return
        newest = page.items[-1].modified_at - timedelta(milliseconds=1)  # equal timestamps are read again
        if after is None or newest > after:
            after, number = newest, 1
        else:
            number += 1  # a full page of one timestamp: offsets get past it
