"""Queries on the link, watermark and dead-letter tables, kept small so the flows read like prose."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from shared.store import link_state
from shared.store.link_state import LinkState
from shared.store.models import PURGED, DeadLetter, Link, Watermark, table_of
from shared.versions import utcnow

# The statements a sync runs for every record are built once (building one cost more than running it on SQLite), and
# a link is written with Core statements rather than the ORM's unit of work, which was ~1 ms of worker CPU per record.
_LINKS = table_of(Link)
_FIND_LINK = {
    system: select(Link).where(Link.entity == bindparam("entity"), column == bindparam("record_id"))
    for system, column in (("customerp", Link.customerp_id), ("wave", Link.wave_id))
}
_INSERT_LINK = insert(_LINKS)
# The one column whose mapped attribute has another name: `Link.state` is the typed view of it.
_ATTRIBUTE = {"state": "state_document"}
_SAVED = ("customerp_id", "wave_id", "state", "customerp_version", "wave_version", "synced_at")
_UPDATE_LINK = (
    update(_LINKS)
    .where(_LINKS.c.id == bindparam("b_id"), _LINKS.c.row_version == bindparam("b_row_version"))
    .values(
        {name: bindparam(f"b_{name}", type_=_LINKS.c[name].type) for name in _SAVED}
        | {"row_version": _LINKS.c.row_version + 1}
    )
)


def find_link(session: Session, entity: str, system: str, record_id: str) -> Link | None:
    return session.scalars(_FIND_LINK[system], {"entity": entity, "record_id": record_id}).one_or_none()


def links_by_ids(session: Session, entity: str, system: str, record_ids: Iterable[str]) -> dict[str, Link]:
    """The links of many records of one system at once (one query per poll page)."""
    ids = list(record_ids)
    if not ids:
        return {}
    column = Link.customerp_id if system == "customerp" else Link.wave_id
    rows = session.scalars(select(Link).where(Link.entity == entity, column.in_(ids))).all()
    return {row.own_id(system): row for row in rows}


def partner_ids(session: Session, system: str, wanted: Mapping[str, Iterable[str]]) -> dict[tuple[str, str], str]:
    """{(entity, id): partner id} of the linked records among `wanted` ({entity: ids of `system`}), in one query
    that reads two columns: an order's references are translated on every sync, and need nothing else of a link."""
    asked = {entity: list(ids) for entity, ids in wanted.items() if ids}
    if not asked:
        return {}
    statement = _partner_ids_statement(system, tuple(asked))
    rows = session.connection().execute(statement, {f"b_ids_{i}": ids for i, ids in enumerate(asked.values())})
    return {(entity, record_id): partner_id for entity, record_id, partner_id in rows}


@cache
def _partner_ids_statement(system: str, entities: tuple[str, ...]) -> Select[str, str, str]:
    own, partner = (_LINKS.c.customerp_id, _LINKS.c.wave_id)
    if system == "wave":
        own, partner = partner, own
    either = [
        and_(_LINKS.c.entity == entity, own.in_(bindparam(f"b_ids_{i}", expanding=True)))
        for i, entity in enumerate(entities)
    ]
    return select(_LINKS.c.entity, own, partner).where(or_(*either))


def all_links(session: Session, entity: str) -> Sequence[Link]:
    return session.scalars(select(Link).where(Link.entity == entity).order_by(Link.id)).all()


def count_links(session: Session) -> dict[str, int]:
    rows = session.execute(select(Link.entity, func.count()).group_by(Link.entity)).all()
    return dict(rows)


def save_link(
    session: Session,
    link: Link | None,
    *,
    entity: str,
    customerp_id: str,
    wave_id: str,
    state: LinkState,
    customerp_version: str,
    wave_version: str,
) -> Link:
    """Insert a link, or update `link` as loaded (not attached to `session`): the unique constraints raise
    IntegrityError on a race, and an update whose row version moved since `link` was loaded raises StaleDataError,
    as the ORM's version counter would. Returns the link as stored, detached."""
    values = {
        "customerp_id": customerp_id,
        "wave_id": wave_id,
        "state": link_state.dump(state),
        "customerp_version": customerp_version,
        "wave_version": wave_version,
        "synced_at": utcnow(),
    }
    connection = session.connection()
    if link is None:
        created = {"entity": entity, "created_at": values["synced_at"], "row_version": 1, **values}
        (key,) = connection.execute(_INSERT_LINK, created).inserted_primary_key or (None,)
        saved = Link(id=key, **{_ATTRIBUTE.get(k, k): v for k, v in created.items()})
        make_transient_to_detached(saved)  # as if loaded: a later update of it is fenced by its row version
        return saved
    params = {f"b_{name}": value for name, value in values.items()}
    result = connection.execute(_UPDATE_LINK, {"b_id": link.id, "b_row_version": link.row_version, **params})
    if result.rowcount != 1:
        raise StaleDataError(f"link {link.id} was updated or deleted since it was loaded")
    for name, value in values.items():
        set_committed_value(link, _ATTRIBUTE.get(name, name), value)
    set_committed_value(link, "row_version", link.row_version + 1)
    return link


def get_watermark(session: Session, system: str, entity: str) -> Watermark:
    """The poller's watermark row, created on first use (a concurrent first use is not an error)."""
    mark = session.get(Watermark, (system, entity))
    if mark is None:
        try:
            with session.begin_nested():
                mark = Watermark(system=system, entity=entity, position="")
                session.add(mark)
        except IntegrityError:
            mark = session.get(Watermark, (system, entity), populate_existing=True)
            assert mark is not None
    return mark


def all_watermarks(session: Session) -> Sequence[Watermark]:
    return session.scalars(select(Watermark).order_by(Watermark.system, Watermark.entity)).all()


def record_dead_letter(
    session: Session,
    *,
    entity: str,
    source: str,
    source_id: str,
    customerp_id: str | None,
    wave_id: str | None,
    message: dict[str, Any],
    version: str,
    error_class: str,
    reason: str,
    field_paths: list[str],
    now: datetime | None = None,
) -> DeadLetter:
    """Add a dead letter, or count one more failure on the record's existing entry."""
    now = now or utcnow()
    entry = session.scalars(
        select(DeadLetter).where(
            DeadLetter.entity == entity, DeadLetter.source == source, DeadLetter.source_id == source_id
        )
    ).one_or_none()
    if entry is None:
        entry = DeadLetter(entity=entity, source=source, source_id=source_id, attempts=0, first_failed_at=now)
        session.add(entry)
    elif entry.resolved_at is not None:
        # Resolved before, failing anew: the entry reopens as a new failure.
        entry.resolved_at, entry.resolution, entry.replayed_at = None, None, None
        entry.attempts, entry.first_failed_at = 0, now
    entry.customerp_id = customerp_id or entry.customerp_id
    entry.wave_id = wave_id or entry.wave_id
    entry.message = message
    entry.version = version or entry.version  # a replay (no version) keeps the failed version known
    entry.error_class = error_class
    entry.reason = reason
    entry.field_paths = field_paths
    entry.attempts = (entry.attempts or 0) + 1
    entry.last_failed_at = now
    session.flush()
    return entry


def dead_letter_versions(session: Session, entity: str, system: str, record_ids: Iterable[str]) -> dict[str, str]:
    """The failed version of each dead-lettered record among `record_ids` (one query per poll page): open entries
    and those an operator purged (gave up on at that version)."""
    ids = list(record_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(DeadLetter.source_id, DeadLetter.version).where(
            DeadLetter.entity == entity,
            DeadLetter.source == system,
            DeadLetter.source_id.in_(ids),
            or_(DeadLetter.resolved_at.is_(None), DeadLetter.resolution == PURGED),
        )
    ).all()
    return dict(rows)


# Built once, on the table rather than the mapped class: this runs on every sync that records a pair, and building the
# statement, or the ORM's bulk-update machinery around it, cost more than running it.
_DEAD = table_of(DeadLetter).c
_RESOLVE = (
    update(table_of(DeadLetter))
    .where(
        _DEAD.entity == bindparam("b_entity"),
        # A purged entry too: the record synced after all (after an edit), so nothing is given up on any more.
        or_(_DEAD.resolved_at.is_(None), _DEAD.resolution == PURGED),
        or_(
            and_(_DEAD.source == "customerp", _DEAD.source_id == bindparam("b_customerp_id")),
            and_(_DEAD.source == "wave", _DEAD.source_id == bindparam("b_wave_id")),
        ),
    )
    .values(
        resolved_at=bindparam("b_now", type_=_DEAD.resolved_at.type),
        resolution=case((_DEAD.replayed_at.is_not(None), bindparam("b_replayed_how")), else_=bindparam("b_how")),
    )
)


def resolve_dead_letters(
    session: Session, entity: str, system_ids: Mapping[str, str | None], *, how: str = "synced"
) -> int:
    """A record synced (or its pair was deleted: `how`): its open dead letters (from either side) leave the queue
    and stay visible as resolved. One statement for both sides."""
    if not any(system_ids.values()):
        return 0
    result = session.connection().execute(
        _RESOLVE,
        {
            "b_entity": entity,
            # An absent side matches no row: dead letters always name the record they are about.
            "b_customerp_id": system_ids.get("customerp") or "",
            "b_wave_id": system_ids.get("wave") or "",
            "b_now": utcnow(),
            "b_how": how,
            "b_replayed_how": f"replayed and {how}",
        },
    )
    return int(getattr(result, "rowcount", 0) or 0)
