"""The history (audit trail): one row per sync decision about a record, its retention, and how a record is found.

Decisions are written in the transaction that stores what they decided (the link save, the dead letter), as one
INSERT with a compact field diff: only the fields that moved, long values shortened. Values are the records' own
data; a secret never appears (reasons pass through the same redaction as logs). The console and
`wavesync history` read it newest first with keyset pagination, so no page counts a million rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import current_task
from sqlalchemy import String, cast, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from shared import keys
from shared.messages import ChangeMessage
from shared.settings import ENTITIES, Settings
from shared.store import link_state
from shared.store.db import Database
from shared.store.models import DeadLetter, HistoryEntry, Link, table_of
from shared.versions import utcnow

# What a row says happened. "merged" carries the direction of each field; a conflict names its policy.
KINDS = (
    "created",  # a partner was created on `direction`'s target from the listed values
    "linked",  # matched an existing record by natural key; nothing to write
    "merged",  # fields written to one side or both
    "unchanged",  # a re-read (replay, reconcile, "sync now") found both sides agreeing
    "echo",  # the sync's own write came back from a poll: skipped
    "stale",  # an older message than what was synced: skipped
    "skipped",  # not created by policy (creation switched off, an archived product)
    "gone",  # the record was deleted before it could sync
    "deleted",  # a deletion propagated to the partner
    "dead-lettered",
    "replayed",
    "purged",
    "repair",  # reconcile enqueued a repair
    "paused",  # the connection it needs waits for re-authorization (`wavesync connect wave`): the message waits
)
# A value longer than this (as JSON) is replaced by a short description: a diff stays a few hundred bytes.
MAX_VALUE_CHARS = 240


@dataclass(frozen=True)
class Decision:
    kind: str
    entity: str
    customerp_id: str | None = None
    wave_id: str | None = None
    link_id: int | None = None
    task_id: str | None = None
    at: datetime = field(default_factory=utcnow)
    direction: str | None = None  # "customerp->wave", "wave->customerp" or "both"
    diff: dict[str, dict[str, Any]] | None = None  # {field: {"from": .., "to": .., "side": written system}}
    reason: str | None = None


def _task_id() -> str | None:
    task = current_task
    request = getattr(task, "request", None) if task else None
    value = getattr(request, "id", None)
    return str(value) if value else None


def compact(value: Any) -> Any:
    """A value as the diff keeps it: itself, or a description when it is long (order lines, long notes)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else f"{value[: MAX_VALUE_CHARS - 40]}… ({len(value)} chars)"
    text = json.dumps(value, default=str, sort_keys=True)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    size = f"{len(value)} items" if isinstance(value, list | dict) else f"{len(text)} chars"
    return f"{text[: MAX_VALUE_CHARS - 40]}… ({size})"


def _ids(source: str, source_id: str, link: Link | None = None) -> dict[str, str | None]:
    if link is not None:
        return {"customerp_id": link.customerp_id or None, "wave_id": link.wave_id or None}
    return {
        "customerp_id": source_id if source == "customerp" else None,
        "wave_id": source_id if source == "wave" else None,
    }


def decision(
    settings: Settings,
    kind: str,
    entity: str,
    source: str,
    source_id: str,
    *,
    link: Link | None = None,
    reason: str | None = None,
    direction: str | None = None,
    diff: dict[str, dict[str, Any]] | None = None,
    known: Mapping[Any, str | None] | None = None,
) -> Decision | None:
    """A decision about the record `source:source_id` (both ids from its link when it has one, or from `known`:
    {system: id}); None when the history is switched off."""
    if not settings.history_enabled:
        return None
    ids = _ids(source, source_id, link)
    for system, record_id in (known or {}).items():
        ids[f"{system}_id"] = record_id or ids[f"{system}_id"]
    return Decision(
        kind=kind,
        entity=entity,
        customerp_id=ids["customerp_id"],
        wave_id=ids["wave_id"],
        link_id=link.id if link is not None else None,
        task_id=_task_id(),
        direction=direction,
        diff=diff,
        reason=reason,
    )


def merged(
    settings: Settings,
    message: ChangeMessage,
    before: Mapping[Any, Mapping[str, Any]],
    result: Mapping[str, Any],
    conflicts: Sequence[str],
    *,
    linked: bool,
) -> Decision | None:
    """The decision of a merge: which fields moved to which side (from what each side held before the writes),
    and how each conflict was resolved. A merge that wrote nothing is "linked" (a new pair found by natural key),
    "unchanged" after an explicit re-read, and not recorded otherwise."""
    if not settings.history_enabled:
        return None
    entity, source, source_id = message.entity, message.source, message.source_id
    diff: dict[str, dict[str, Any]] = {}
    sides: set[str] = set()
    policy = settings.conflict_policy(entity).value
    for name in sorted(result):
        written = [s for s in ("customerp", "wave") if name in before.get(s, {}) and before[s][name] != result[name]]
        written += [s for s in ("customerp", "wave") if name not in before.get(s, {}) and result[name] is not None]
        if not written:
            continue
        sides.update(written)
        side = written[0] if len(written) == 1 else "both"
        entry: dict[str, Any] = {
            "from": compact(before.get(written[0], {}).get(name)),
            "to": compact(result[name]),
            "side": side,
        }
        if name in conflicts:
            entry["conflict"] = {
                "customerp": compact(before.get("customerp", {}).get(name)),
                "wave": compact(before.get("wave", {}).get(name)),
                "policy": policy,
            }
        diff[name] = entry
    if not diff:
        kind = "linked" if not linked else "unchanged" if message.reread else ""
        if not kind:
            return None
        return decision(settings, kind, entity, source, source_id)
    direction = "both" if len(sides) > 1 else f"{'wave' if 'customerp' in sides else 'customerp'}->{sides.pop()}"
    reason = f"conflict on {', '.join(c for c in conflicts if c in diff)} resolved by {policy}" if conflicts else None
    return Decision(
        kind="merged",
        entity=entity,
        customerp_id=source_id if source == "customerp" else None,
        wave_id=source_id if source == "wave" else None,
        task_id=_task_id(),
        direction=direction,
        diff=diff,
        reason=reason,
    )


def about(
    settings: Settings, kind: str, message: ChangeMessage, *, link: Link | None = None, reason: str | None = None
) -> Decision | None:
    """A decision about the record a change message names."""
    return decision(settings, kind, message.entity, message.source, message.source_id, link=link, reason=reason)


def created(settings: Settings, message: ChangeMessage, target: str, values: Mapping[str, Any]) -> Decision | None:
    """A partner was created on `target` from `values` (the canonical record sent)."""
    diff = {
        name: {"from": None, "to": compact(value), "side": target}
        for name, value in sorted(values.items())
        if value not in (None, "", [], {})  # an empty field of a new record says nothing
    }
    source = message.source
    return decision(
        settings,
        "created",
        message.entity,
        source,
        message.source_id,
        direction=f"{source}->{target}",
        diff=diff or None,
    )


def deleted(settings: Settings, message: ChangeMessage, link: Link, *, partner_existed: bool) -> Decision | None:
    source = message.source
    target = "wave" if source == "customerp" else "customerp"
    reason = f"deleted in {source}; {'deleted' if partner_existed else 'already gone'} in {target}"
    return decision(
        settings,
        "deleted",
        message.entity,
        source,
        message.source_id,
        link=link,
        reason=reason,
        direction=f"{source}->{target}",
    )


# Outcomes the engine returns without storing anything: the base task records them in a transaction of their own.
UNSTORED_OUTCOMES = {
    "stale": "an older version than the one already synced",
    "skipped": "not created by policy (creation switched off for this entity and side, or an archived product)",
    "gone": "the record was deleted before it could sync",
}


def record_outcome(db: Any, settings: Settings, message: ChangeMessage, outcome: str) -> None:
    """Record a skip (see UNSTORED_OUTCOMES); other outcomes were recorded with what they stored."""
    if outcome not in UNSTORED_OUTCOMES or not settings.history_enabled:
        return
    with db.session() as session:
        record(session, about(settings, outcome, message, reason=UNSTORED_OUTCOMES[outcome]))


def record_paused(db: Any, settings: Settings, message: ChangeMessage, reason: str) -> None:
    """The message waits for a connection that needs re-authorization (recorded once per message, on its first
    pause). The reason names the connection's state, never a credential."""
    if not settings.history_enabled:
        return
    with db.session() as session:
        record(session, about(settings, "paused", message, reason=reason[:1000]))


def dead_lettered(
    settings: Settings, message: ChangeMessage, ids: Mapping[Any, str | None], error_class: str, reason: str
) -> Decision | None:
    return decision(
        settings,
        "dead-lettered",
        message.entity,
        message.source,
        message.source_id,
        known=ids,
        reason=f"{error_class}: {reason}"[:1000],
    )


def row(decision: Decision, link: Link | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "at": decision.at,
        "kind": decision.kind,
        "entity": decision.entity,
        "customerp_id": decision.customerp_id,
        "wave_id": decision.wave_id,
        "link_id": decision.link_id,
        "task_id": decision.task_id,
        "direction": decision.direction,
        "reason": decision.reason,
        "diff": decision.diff,
    }
    if link is not None:
        values |= {"link_id": link.id, "customerp_id": link.customerp_id or None, "wave_id": link.wave_id or None}
    return values


# One Core INSERT, compiled once: the ORM's insert().values() path rebuilds and re-inspects the statement per call,
# which was half the history's CPU per synced record (the bench's history scenario).
_INSERT = insert(table_of(HistoryEntry))


def record(session: Session, decision: Decision | None, link: Link | None = None) -> None:
    """Write one decision in the caller's transaction (nothing when the history is off). `link`, when given, is
    the pair the decision ended with: its ids complete the row (a create learns its partner's id only here)."""
    if decision is not None:
        session.connection().execute(_INSERT, row(decision, link))


def record_many(session: Session, decisions: Iterable[Decision | None]) -> int:
    rows = [row(d) for d in decisions if d is not None]
    if rows:
        session.connection().execute(_INSERT, rows)
    return len(rows)


def replace_link(decision: Decision, link: Link) -> Decision:
    return replace(decision, link_id=link.id, customerp_id=link.customerp_id, wave_id=link.wave_id)


# --- reading ----------------------------------------------------------------------------------------------------


def entry_json(entry: HistoryEntry) -> dict[str, Any]:
    at = entry.at if entry.at.tzinfo else entry.at.replace(tzinfo=UTC)
    return {
        "id": entry.id,
        "at": at.astimezone(UTC).isoformat(),
        "kind": entry.kind,
        "entity": entry.entity,
        "customerp_id": entry.customerp_id,
        "wave_id": entry.wave_id,
        "link_id": entry.link_id,
        "task_id": entry.task_id,
        "direction": entry.direction,
        "reason": entry.reason,
        "diff": entry.diff or {},
    }


def for_record(
    session: Session,
    entity: str,
    customerp_id: str | None,
    wave_id: str | None,
    *,
    before_id: int | None = None,
    limit: int = 50,
) -> list[HistoryEntry]:
    """A record's stream, newest first: rows naming either of its ids (a row from before it was linked names only
    one). Keyset pagination: pass the smallest id of the previous page as `before_id`."""
    matches = []
    if customerp_id:
        matches.append(HistoryEntry.customerp_id == customerp_id)
    if wave_id:
        matches.append(HistoryEntry.wave_id == wave_id)
    if not matches:
        return []
    rows: dict[int, HistoryEntry] = {}
    # One indexed range scan per id (an OR of two columns would scan the table on some planners).
    for match in matches:
        query = select(HistoryEntry).where(HistoryEntry.entity == entity, match)
        if before_id is not None:
            query = query.where(HistoryEntry.id < before_id)
        for entry in session.scalars(query.order_by(HistoryEntry.id.desc()).limit(limit)):
            rows[entry.id] = entry
    return [rows[i] for i in sorted(rows, reverse=True)[:limit]]


def recent(
    session: Session, *, before_id: int | None = None, limit: int = 50, kind: str | None = None
) -> list[HistoryEntry]:
    query = select(HistoryEntry)
    if kind:
        query = query.where(HistoryEntry.kind == kind)
    if before_id is not None:
        query = query.where(HistoryEntry.id < before_id)
    return list(session.scalars(query.order_by(HistoryEntry.id.desc()).limit(limit)))


@dataclass(frozen=True)
class Found:
    """A record found by a search: its entity, both ids where known, and its link when it has one."""

    entity: str
    customerp_id: str | None
    wave_id: str | None
    link: Link | None
    label: str


def _label(link: Link) -> str:
    snapshot = link_state.reference(link.state)
    parts = [str(snapshot[k]) for k in ("name", "number", "email") if snapshot.get(k)]
    return " · ".join(parts) or f"{link.customerp_id} ⇄ {link.wave_id}"


def _like_escaped(text: str) -> str:
    """`text` matched literally by LIKE ... ESCAPE '\\': its `%`, `_` and backslashes are not wildcards."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find(session: Session, query: str, *, entity: str | None = None, limit: int = 20) -> list[Found]:
    """Records matching `query`: an exact id of either system first (indexed), else a case-insensitive
    substring of a linked record's synced values (name, email, customer/order/invoice number), else a record
    known only from its dead letters or history (never linked)."""
    text = query.strip()
    if not text:
        return []
    found: dict[tuple[str, str | None, str | None], Found] = {}
    entities = [entity] if entity else list(ENTITIES)
    base = select(Link)
    if entity:
        base = base.where(Link.entity == entity)
    # One lookup per entity and column: each is a unique index's (entity, id), which an OR or a missing entity
    # would turn into a scan of every link.
    for each in entities:
        for column in (Link.customerp_id, Link.wave_id):
            for link in session.scalars(select(Link).where(Link.entity == each, column == text)):
                found[(link.entity, link.customerp_id, link.wave_id)] = Found(
                    link.entity, link.customerp_id, link.wave_id, link, _label(link)
                )
    if not found:
        # The snapshot is JSON text on SQLite and json on PostgreSQL: both compare as text, where "Müller" is stored
        # as `M\u00fcller` (and a quote as `\"`), so the query is looked for as typed and as JSON writes it.
        snapshot_text = func.lower(cast(Link.state_document, String))
        forms = {text.lower(), json.dumps(text.lower())[1:-1], json.dumps(text)[1:-1].lower()}
        matches = or_(*(snapshot_text.like(f"%{_like_escaped(form)}%", escape="\\") for form in sorted(forms)))
        for link in session.scalars(base.where(matches).order_by(Link.id.desc()).limit(limit)):
            found[(link.entity, link.customerp_id, link.wave_id)] = Found(
                link.entity, link.customerp_id, link.wave_id, link, _label(link)
            )
    if not found:
        letters = select(DeadLetter).where(
            DeadLetter.entity.in_(entities), DeadLetter.source.in_(("customerp", "wave")), DeadLetter.source_id == text
        )
        for entry in session.scalars(letters.limit(limit)):
            key = (entry.entity, entry.customerp_id, entry.wave_id)
            found[key] = Found(
                entry.entity, entry.customerp_id, entry.wave_id, None, f"{entry.source}:{entry.source_id}"
            )
    if not found:
        for each in entities:
            for history_column in (HistoryEntry.customerp_id, HistoryEntry.wave_id):
                rows = select(HistoryEntry.entity, HistoryEntry.customerp_id, HistoryEntry.wave_id).where(
                    HistoryEntry.entity == each, history_column == text
                )
                for row_entity, cp_id, wave_id in session.execute(rows.order_by(HistoryEntry.id.desc()).limit(1)):
                    found[(row_entity, cp_id, wave_id)] = Found(row_entity, cp_id, wave_id, None, text)
    return list(found.values())[:limit]


# --- retention --------------------------------------------------------------------------------------------------


PRUNE_CHUNK = 10_000  # rows per delete: each chunk commits, so a big prune never holds one huge transaction


def prune(
    db: Database, *, retention_days: float, max_rows: int, now: datetime | None = None, chunk: int = PRUNE_CHUNK
) -> int:
    """Delete rows older than `retention_days`, then the oldest beyond `max_rows`, `chunk` rows at a time with a
    commit after each. The row bound is found as the newest id past `max_rows` rows (ids have gaps, so
    `max(id) - max_rows` would keep fewer)."""
    now = now or utcnow()
    removed = 0
    bounds = []
    if retention_days > 0:
        bounds.append(HistoryEntry.at < now - timedelta(days=retention_days))
    if max_rows > 0:
        with db.session() as session:
            newest_first = select(HistoryEntry.id).order_by(HistoryEntry.id.desc())
            cutoff = session.scalar(newest_first.offset(max_rows).limit(1))
        if cutoff is not None:
            bounds.append(HistoryEntry.id <= cutoff)
    for bound in bounds:
        while True:
            ids = select(HistoryEntry.id).where(bound).order_by(HistoryEntry.id).limit(chunk).scalar_subquery()
            with db.session() as session:
                result = session.execute(delete(HistoryEntry).where(HistoryEntry.id.in_(ids)))
            count = int(getattr(result, "rowcount", 0) or 0)
            removed += count
            if count < chunk:
                break
    return removed


# --- the last reconcile report, kept for the console ----------------------------------------------------------


def save_reconcile_report(client: Any, reports: list[dict[str, Any]], *, repair: bool) -> None:
    """Keep the last reconcile's report (any run: the beat task, `wavesync reconcile`, the console's button)."""
    value = {"at": utcnow().isoformat(), "repair": repair, "entities": reports}
    client.set(keys.last_reconcile_key(), json.dumps(value, default=str))


def last_reconcile_report(client: Any) -> dict[str, Any] | None:
    raw = client.get(keys.last_reconcile_key())
    if not raw:
        return None
    value: dict[str, Any] = json.loads(raw)
    return value
