"""The dead-letter queues, one per entity, kept in the database (durable across Redis restarts and crashes).

Replay re-enqueues a fresh "re-read this record" message through the normal queue; the entry stays until the
record syncs (the worker deletes it then), and a replay that fails again bumps its attempt count. Replaying
twice is harmless: the second message finds the record in sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from shared import keys
from shared.messages import ChangeMessage
from shared.store.db import Database
from shared.store.models import DeadLetter, utcnow

Send = Callable[[str, dict[str, Any], str], None]


@dataclass(frozen=True)
class Filter:
    entity: str | None = None
    reason: str | None = None  # case-insensitive substring of the reason or error class
    ids: tuple[int, ...] = ()

    def apply(self, query: Any) -> Any:
        if self.entity:
            query = query.where(DeadLetter.entity == self.entity)
        if self.reason:
            like = f"%{self.reason.lower()}%"
            query = query.where(
                func.lower(DeadLetter.reason).like(like) | func.lower(DeadLetter.error_class).like(like)
            )
        if self.ids:
            query = query.where(DeadLetter.id.in_(self.ids))
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
    def __init__(self, db: Database) -> None:
        self.db = db

    def list(self, where: Filter) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.scalars(where.apply(select(DeadLetter)).order_by(DeadLetter.id)).all()
            return [entry_json(r) for r in rows]

    def get(self, entry_id: int) -> dict[str, Any] | None:
        with self.db.session() as session:
            entry = session.get(DeadLetter, entry_id)
            return entry_json(entry) if entry else None

    def counts(self, session: Session) -> dict[str, dict[str, int]]:
        """Dead letters per entity and error class (for `status`)."""
        rows = session.execute(
            select(DeadLetter.entity, DeadLetter.error_class, func.count()).group_by(
                DeadLetter.entity, DeadLetter.error_class
            )
        ).all()
        out: dict[str, dict[str, int]] = {}
        for entity, error_class, count in rows:
            out.setdefault(entity, {})[error_class] = count
        return out

    def replay(
        self, where: Filter, send: Send, progress: Callable[[int, int], None] | None = None, *, batch: int = 100
    ) -> int:
        """Re-enqueue every matching entry as a re-read of its source record. Returns how many were sent.

        Entries stay: the worker removes one when its record syncs, or counts one more attempt when it fails
        again. Each batch is marked replayed and committed before its messages go out, so a fast worker never
        races this transaction for the row it is about to delete.
        """
        with self.db.session() as session:
            ids = list(session.scalars(where.apply(select(DeadLetter.id)).order_by(DeadLetter.id)).all())
        sent = 0
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            with self.db.session() as session:
                rows = session.scalars(select(DeadLetter).where(DeadLetter.id.in_(chunk)).order_by(DeadLetter.id))
                messages = [replay_message(row) for row in rows]
                session.execute(update(DeadLetter).where(DeadLetter.id.in_(chunk)).values(replayed_at=utcnow()))
            for message in messages:
                send(keys.SYNC_TASK[message.entity], message.to_json(), message.entity)
            sent += len(messages)
            if progress:
                progress(sent, len(ids))
        return sent

    def purge(self, where: Filter) -> int:
        with self.db.session() as session:
            ids = session.scalars(where.apply(select(DeadLetter.id))).all()
            if ids:
                session.execute(delete(DeadLetter).where(DeadLetter.id.in_(ids)))
            return len(ids)
