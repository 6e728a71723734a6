"""One poller per (system, entity) pair, run by beat: read what changed since the watermark, enqueue, advance.

- Customerp: the change feed (`updated_since` + cursor, ordered by (updated_at, id), tombstones included).
- Wave: `modifiedAtAfter` with `sort: [MODIFIED_AT_ASC]`, read keyset-style (always page 1 after the newest
  timestamp seen) so records edited during the run cannot shift an unread record out of view.
Each run starts an overlap window before the watermark (clock skew, equal timestamps); the watermark moves
only after a page's messages are in Redis; two runs of one poller never overlap (a Redis lock). A record
whose version equals the version the engine last wrote or read is an echo and costs no queue traffic.
A page refused for a transient reason (429, 5xx, timeout) is asked for again a few times within the run:
during a backfill under a rate limit, giving up the run would cost a whole poll interval per 429.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import redis

from shared import keys, message_leases, metrics
from shared.celery_app import app
from shared.context import Context, get_context
from shared.enqueue import batched, enqueue
from shared.errors import RetryableError
from shared.messages import ChangeMessage, System
from shared.settings import Entity, load_settings
from shared.store import links as store
from shared.versions import customerp_version, normalise_timestamp, parse_timestamp, record_version, utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")
# Tries per page before the run stops (its watermark stays after the last complete page; the next run resumes).
PAGE_ATTEMPTS = 4
# The longest wait between tries of one page; a longer Retry-After ends the run instead of holding the lock.
PAGE_RETRY_MAX_WAIT_S = 10.0


@dataclass
class PollStats:
    seen: int = 0
    enqueued: int = 0
    echoes: int = 0
    coalesced: int = 0
    pages: int = 0
    page_retries: int = 0
    newest: str = ""
    skipped: str = ""
    resent: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class Poller:
    def __init__(self, ctx: Context, system: System, entity: Entity) -> None:
        self.ctx = ctx
        self.system = system
        self.entity = entity
        self.stats = PollStats()

    def run(self) -> PollStats:
        ctx = self.ctx
        ttl = max(60.0, ctx.settings.task_time_limit)
        with ctx.coordinator.try_lock(keys.poller_lock_key(self.system, self.entity), ttl=ttl) as acquired:
            if not acquired:
                self.stats.skipped = "another run of this poller is in progress"
                return self.stats
            if self.system == "wave" and (paused := ctx.wave.auth.paused()):
                self.stats.skipped = paused  # nothing can be read until a person reconnects
                return self.stats
            if self.system == "customerp" and not self._wave_indexed():
                # Onboarding: match Customerp records against every pre-existing Wave record, never duplicate.
                self.stats.skipped = "waiting for the first Wave poll of this entity"
                return self.stats
            started = time.time()
            if self.system == "customerp":
                self._poll_customerp()
            else:
                for archived in (False, True) if self.entity == "products" else (None,):
                    self._poll_wave(archived)
                # Every record modified before this run began is indexed: a create can skip its own listing.
                ctx.wave_keys.mark_complete(self.entity, started)
            self._record_run(started)
            self._resend_lost()
        return self.stats

    def _resend_lost(self) -> None:
        """Send again the records whose message the broker lost.

        kombu's Redis transport pops a message (BRPOP) before it records it as unacknowledged, so a worker killed
        between the two loses that message; the record's pending marker then keeps every later poll from sending it
        again (and the watermark has passed it). A marker older than the message lease, while its entity's queue is
        empty and no worker holds a message for the record, is such a loss: send a message that re-reads the record
        (should the original turn up after all, the second run of it is a no-op)."""
        ctx = self.ctx
        if int(ctx.redis.llen(self.entity)) > 0:
            return  # a backlog: the marker's message may still be waiting in it
        suspects = ctx.coordinator.pending_older_than(self.entity, self.system, ctx.settings.message_lease)
        if not suspects:
            return
        held = message_leases.records_in_flight(ctx.redis)
        for record_id, version in suspects.items():
            if (self.entity, self.system, record_id) in held:
                continue
            log.warning(
                "%s %s:%s: its message was lost (a worker killed as it took it); sending it again",
                self.entity,
                self.system,
                record_id,
            )
            ctx.coordinator.restart_pending(self.entity, self.system, record_id, version)
            enqueue(
                ChangeMessage(entity=self.entity, source=self.system, source_id=record_id, version=version, reread=True)
            )
            self.stats.resent += 1

    # --- Customerp --------------------------------------------------------------------------------------------

    def _poll_customerp(self) -> None:
        ctx = self.ctx
        with ctx.db.session() as session:
            position = store.get_watermark(session, "customerp", self.entity).position
        since = self._overlap(position)
        cursor: str | None = None
        seen_cursors: set[str] = set()
        while True:
            page = self._fetch(
                partial(
                    ctx.customerp.changes,
                    self.entity,
                    updated_since=since,
                    cursor=cursor,
                    limit=ctx.settings.poll_page_size,
                )
            )
            records = [item.model_dump(mode="json") for item in page.items]
            self._handle_page(records, watermark_key="customerp")
            if not page.has_more or not page.next_cursor or page.next_cursor in seen_cursors:
                break
            seen_cursors.add(page.next_cursor)
            cursor = page.next_cursor

    # --- Wave -------------------------------------------------------------------------------------------------

    def _poll_wave(self, archived: bool | None) -> None:
        ctx = self.ctx
        mark = "wave" if not archived else "wave-archived"
        with ctx.db.session() as session:
            position = store.get_watermark(session, mark, self.entity).position
        after = self._overlap(position)
        seen: set[tuple[str, str]] = set()
        page_number = 1
        while True:
            page = self._fetch(partial(self._wave_page, page_number, after, archived))
            records = [item.model_dump(mode="json", by_alias=True) for item in page.items]
            fresh = [r for r in records if (r["id"], r["modifiedAt"]) not in seen]
            seen.update((r["id"], r["modifiedAt"]) for r in records)
            self._handle_page(fresh, watermark_key=mark)
            if len(records) < ctx.settings.poll_page_size or page.page >= (page.total_pages or 1):
                break
            if fresh:
                # Keyset step: restart at page 1 just before the newest timestamp read (equal stamps re-read).
                after = parse_timestamp(records[-1]["modifiedAt"]) - timedelta(milliseconds=1)
                page_number = 1
            else:
                page_number += 1  # a full page of one timestamp: fall back to offsets to get past it

    def _wave_page(self, page: int, after: datetime | None, archived: bool | None) -> Any:
        wave = self.ctx.wave
        if self.entity == "customers":
            return wave.list_customers_page(page, modified_after=after)
        if self.entity == "products":
            return wave.list_products_page(page, modified_after=after, archived=archived)
        return wave.list_invoices_page(page, modified_after=after)

    # --- shared ----------------------------------------------------------------------------------------------

    def _fetch(self, read: Callable[[], T]) -> T:
        """One page, asked for again after a transient refusal. The fleet's rate limiter has already taken a 429
        into account (every call waits out its cooldown), so the wait here only spaces out 5xx and timeouts."""
        settings = self.ctx.settings
        for attempt in range(1, PAGE_ATTEMPTS + 1):
            try:
                return read()
            except RetryableError as exc:
                wait = exc.retry_after if exc.retry_after is not None else settings.retry_backoff_base * 2**attempt
                if attempt == PAGE_ATTEMPTS or wait > PAGE_RETRY_MAX_WAIT_S:
                    raise
                self.stats.page_retries += 1
                log.info("poll %s %s: page refused (%s), again in %.1fs", self.system, self.entity, exc, wait)
                time.sleep(min(wait, settings.retry_backoff_max))
        raise AssertionError("unreachable")

    def _overlap(self, position: str) -> datetime | None:
        if not position:
            return None
        return parse_timestamp(position) - timedelta(seconds=self.ctx.settings.poll_overlap)

    def _handle_page(self, records: list[dict[str, Any]], *, watermark_key: str) -> None:
        ctx = self.ctx
        self.stats.pages += 1
        if not records:
            return
        self.stats.seen += len(records)
        ids = [str(r["id"]) for r in records]
        with ctx.db.session() as session:
            linked = store.links_by_ids(session, self.entity, self.system, ids)
            dead = store.dead_letter_versions(session, self.entity, self.system, ids)
        done = ctx.coordinator.done_versions(self.entity, self.system, [i for i in ids if i not in linked])
        if self.system == "wave":
            # Wave's natural keys (emails, displayIds, names, invoice numbers): the workers match on them for free.
            ctx.wave_keys.put_records(self.entity, records)
        changed: dict[str, ChangeMessage] = {}
        for record in records:
            message = self._message(record, linked.get(str(record["id"])))
            if message is None:
                continue
            if dead.get(message.source_id) == message.version:
                continue  # already failed at this version: it waits in the dead-letter queue for a fix or replay
            if done.get(message.source_id, "") >= message.version:
                continue  # already handled without a link (e.g. creation switched off)
            changed[message.source_id] = message
        # Marked pending for the whole page at once, then sent in one batch.
        fresh = ctx.coordinator.mark_pending(self.entity, self.system, {i: m.version for i, m in changed.items()})
        if fresh:
            try:
                with batched() as send:
                    for record_id in fresh:
                        send(changed[record_id])
            except RetryableError:
                # Some or none of the page's messages reached Redis. The watermark stays, and without their markers
                # the next run sends them all again; left marked, it would take them for queued and move past them.
                # Should Redis refuse this too, `_resend_lost` sends them once their markers are old.
                with suppress(redis.exceptions.RedisError):
                    ctx.coordinator.unmark_pending(self.entity, self.system, fresh)
                raise
        coalesced = len(changed) - len(fresh)
        self.stats.enqueued += len(fresh)
        self.stats.coalesced += coalesced
        if coalesced:
            metrics.COALESCED.labels(self.system, self.entity).inc(coalesced)
        if fresh:
            metrics.ENQUEUED.labels(self.system, self.entity).inc(len(fresh))
        # The page's messages are in Redis: only now may the watermark pass them.
        newest = max(self._timestamp(r) for r in records)
        with ctx.db.session() as session:
            mark = store.get_watermark(session, watermark_key, self.entity)
            if newest > mark.position:
                mark.position = newest
        self.stats.newest = max(self.stats.newest, newest)

    def _message(self, record: dict[str, Any], link: Any) -> ChangeMessage | None:
        record_id = str(record["id"])
        if record.get("deleted"):
            if link is None:
                return None  # never synced: nothing to delete on the other side
            version = customerp_version(record["version"])
            return ChangeMessage(
                entity=self.entity, source=self.system, source_id=record_id, version=version, deleted=True
            )
        version = record_version(self.system, record)
        if link is not None and link.version_of(self.system) >= version:
            # The engine wrote (or already synced) this version: an echo, or an overlap re-read.
            self.stats.echoes += 1
            metrics.ECHOES.labels(self.system, self.entity).inc()
            return None
        return ChangeMessage(
            entity=self.entity, source=self.system, source_id=record_id, version=version, snapshot=record
        )

    def _timestamp(self, record: dict[str, Any]) -> str:
        value = record["updated_at"] if self.system == "customerp" else record["modifiedAt"]
        return normalise_timestamp(value)

    def _wave_indexed(self) -> bool:
        with self.ctx.db.session() as session:
            return store.get_watermark(session, "wave", self.entity).last_success_at is not None

    def _record_run(self, started: float) -> None:
        ctx = self.ctx
        now = utcnow()
        with ctx.db.session() as session:
            marks = ["customerp"] if self.system == "customerp" else ["wave", "wave-archived"]
            for name in marks:
                store.get_watermark(session, name, self.entity).last_success_at = now
        if self.stats.newest:
            lag = (now - parse_timestamp(self.stats.newest)).total_seconds()
            metrics.POLL_LAG.labels(self.system, self.entity).set(max(0.0, lag))
        ctx.redis.hset(
            keys.poll_stats_key(self.system, self.entity),
            mapping={
                "last_success_at": now.isoformat(),
                "duration_s": f"{time.time() - started:.3f}",
                "seen": self.stats.seen,
                "enqueued": self.stats.enqueued,
                "echoes": self.stats.echoes,
                "coalesced": self.stats.coalesced,
            },
        )


def iter_pollers() -> Iterator[tuple[System, Entity]]:
    for system in ("wave", "customerp"):
        for entity in ("customers", "products", "orders"):
            yield system, entity


@app.task(name=keys.POLL_TASK, ignore_result=True)
def poll(system: System, entity: Entity) -> dict[str, Any]:
    try:
        stats = Poller(get_context(load_settings), system, entity).run()
    except RetryableError as exc:
        # The watermark stayed where the last complete page left it: the next scheduled run carries on from there.
        log.warning("poll %s %s stopped early, the next run resumes: %s", system, entity, exc)
        return {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
    if stats.skipped:
        log.info("poll %s %s skipped: %s", system, entity, stats.skipped)
    return {
        "seen": stats.seen,
        "enqueued": stats.enqueued,
        "echoes": stats.echoes,
        "coalesced": stats.coalesced,
        "page_retries": stats.page_retries,
        "resent": stats.resent,
        "skipped": stats.skipped,
    }
