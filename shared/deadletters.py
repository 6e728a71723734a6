"""The dead-letter queues, one per entity, kept in the database (durable across Redis restarts and crashes).

Replay re-enqueues a fresh "re-read this record" message through the normal queue; the entry stays open until
the record syncs (the worker then marks it resolved: it stays visible, with when and how), and a replay that fails
again bumps its attempt count. Replaying twice is harmless: the second message finds the record in sync. Listing,
counting and replay see open entries unless asked otherwise. Purge gives up on open entries: they are resolved as
"purged" and keep the failed version, so pollers and reconcile leave that version alone (only an edit brings the
record back); purging entries already resolved deletes them.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared import history, keys
from shared.messages import ChangeMessage
from shared.settings import Settings
from shared.store.db import Database
from shared.store.models import PURGED, DeadLetter
from shared.versions import utcnow

Send = Callable[[str, dict[str, Any], str], None]


@dataclass(frozen=True)
class Filter:
    entity: str | None = None
    reason: str | None = None  # case-insensitive substring of the reason or error class
    ids: tuple[int, ...] = ()
    status: Literal["open", "resolved", "all"] = "open"
    error_class: str | None = None  # exact
    since: datetime | None = None  # last failure at or after
    up_to: int | None = None  # ids at most this: what a confirmation page counted, not what arrived after it

    def apply(self, query: Any) -> Any:
        if self.status == "open":
            query = query.where(DeadLetter.resolved_at.is_(None))
        elif self.status == "resolved":
            query = query.where(DeadLetter.resolved_at.is_not(None))
        if self.error_class:
            query = query.where(DeadLetter.error_class == self.error_class)
        if self.since is not None:
            query = query.where(DeadLetter.last_failed_at >= self.since)
        if self.entity:
            query = query.where(DeadLetter.entity == self.entity)
        if self.reason:
            like = f"%{self.reason.lower()}%"
            query = query.where(
                func.lower(DeadLetter.reason).like(like) | func.lower(DeadLetter.error_class).like(like)
            )
        if self.ids:
            query = query.where(DeadLetter.id.in_(self.ids))
        if self.up_to is not None:
            query = query.where(DeadLetter.id <= self.up_to)
        return query


def entry_json(entry: DeadLetter) -> dict[str, Any]:
    return {
        "id": entry.id,
        "entity": entry.entity,
        "source": entry.source,
        "source_id": entry.source_id,
        "customerp_id": entry.customerp_id,
        "wave_id": entry.wave_id,
        "error_class": entry.error_class,
        "reason": entry.reason,
        "field_paths": list(entry.field_paths or []),
        "attempts": entry.attempts,
        "first_failed_at": _iso(entry.first_failed_at),
        "last_failed_at": _iso(entry.last_failed_at),
        "replayed_at": _iso(entry.replayed_at),
        "resolved_at": _iso(entry.resolved_at),
        "resolution": entry.resolution,
        "message": entry.message,
    }


def replay_message(entry: DeadLetter) -> ChangeMessage:
    """What a replay sends: "re-read this record now". A failed deletion is replayed as the deletion it was
    (re-reading a deleted record would find nothing and drop the deletion)."""
    original = entry.message or {}
    fields: dict[str, Any] = {
        "entity": entry.entity,
        "source": entry.source,
        "source_id": entry.source_id,
        "reread": True,
    }
    if original.get("deleted"):
        fields |= {"deleted": True, "version": str(original.get("version") or "")}
    return ChangeMessage.model_validate(fields)


def _iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with its offset (SQLite hands back naive datetimes; they were written in UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC).isoformat()


class DeadLetters:
    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        # Replay and purge are recorded in the history when settings are given (the console, the CLI, the task).
        self.settings = settings

    def list(self, where: Filter) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.scalars(where.apply(select(DeadLetter)).order_by(DeadLetter.id)).all()
            return [entry_json(r) for r in rows]

    def page(self, where: Filter, *, before_id: int | None = None, limit: int = 50) -> builtins.list[dict[str, Any]]:
        """Newest first, `limit` at a time (keyset: pass the smallest id of the previous page)."""
        with self.db.session() as session:
            query = where.apply(select(DeadLetter))
            if before_id is not None:
                query = query.where(DeadLetter.id < before_id)
            rows = session.scalars(query.order_by(DeadLetter.id.desc()).limit(limit)).all()
            return [entry_json(r) for r in rows]

    def get(self, entry_id: int) -> dict[str, Any] | None:
        with self.db.session() as session:
            entry = session.get(DeadLetter, entry_id)
            return entry_json(entry) if entry else None

    def counts(self, session: Session) -> dict[str, dict[str, int]]:
        """Open dead letters per entity and error class (for `status`)."""
        rows = session.execute(
            select(DeadLetter.entity, DeadLetter.error_class, func.count())
            .where(DeadLetter.resolved_at.is_(None))
            .group_by(DeadLetter.entity, DeadLetter.error_class)
        ).all()
        out: dict[str, dict[str, int]] = {}
        for entity, error_class, count in rows:
            out.setdefault(entity, {})[error_class] = count
        return out

    def replay(
        self, where: Filter, send: Send, progress: Callable[[int, int], None] | None = None, *, batch: int = 100
    ) -> int:
        """Re-enqueue every matching entry as a re-read of its source record. Returns how many were sent.

        Entries stay: the worker resolves one when its record syncs, or counts one more attempt when it fails
        again. Each batch is marked replayed, then its messages go out, then it commits: a fast worker's resolve
        waits for this transaction's row writes, and a broker that refuses the messages rolls the marks back, so an
        entry never says "replayed" for a message that was not sent (one sent twice is harmless). The filter is
        applied again per batch: an entry that stopped matching meanwhile (resolved, say) is left alone.
        """
        with self.db.session() as session:
            ids = list(session.scalars(where.apply(select(DeadLetter.id)).order_by(DeadLetter.id)).all())
        sent = 0
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            with self.db.session() as session:
                rows = session.scalars(where.apply(select(DeadLetter)).where(DeadLetter.id.in_(chunk)))
                entries = sorted(rows, key=lambda row: row.id)
                session.execute(
                    update(DeadLetter).where(DeadLetter.id.in_([e.id for e in entries])).values(replayed_at=utcnow())
                )
                self._record(session, "replayed", entries)
                for message in (replay_message(row) for row in entries):
                    send(keys.SYNC_TASK[message.entity], message.to_json(), message.entity)
            sent += len(entries)
            if progress:
                progress(sent, len(ids))
        return sent

    def purge(self, where: Filter) -> int:
        """Give up on the matching open entries and delete the matching resolved ones; returns how many.

        A purged entry is resolved as "purged" rather than deleted: it keeps the version that failed, which pollers
        (`dead_letter_versions`) and reconcile then leave alone. Deleting it would let the next poll that still sees
        the record (its overlap window, a quiet system's last page) or the next reconcile repair send it again, and
        it would be back in the queue within seconds. An edit is a new version: it syncs, or fails anew."""
        with self.db.session() as session:
            ids = session.scalars(where.apply(select(DeadLetter.id))).all()
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                entries = list(session.scalars(select(DeadLetter).where(DeadLetter.id.in_(chunk))))
                # Split before either statement: the UPDATE also sets `resolved_at` on these objects.
                open_entries = [e for e in entries if e.resolved_at is None]
                resolved = [e.id for e in entries if e.resolved_at is not None]
                self._record(session, "purged", open_entries)
                session.execute(
                    update(DeadLetter)
                    .where(DeadLetter.id.in_([e.id for e in open_entries]))
                    .values(resolved_at=utcnow(), resolution=PURGED)
                )
                session.execute(delete(DeadLetter).where(DeadLetter.id.in_(resolved)))
            return len(ids)

    def _record(self, session: Session, kind: str, entries: Any) -> None:
        if self.settings is None:
            return
        settings = self.settings
        history.record_many(
            session,
            (
                history.decision(
                    settings,
                    kind,
                    entry.entity,
                    entry.source,
                    entry.source_id,
                    reason=f"{entry.error_class}: {entry.reason}"[:500],
                    known={"customerp": entry.customerp_id, "wave": entry.wave_id},
                )
                for entry in entries
            ),
        )
