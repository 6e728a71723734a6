"""How the sync records a pair: its link row, what the pair remembers, each side's version and the history row, in one
transaction after the remote writes. The link's unique constraints and row version turn a race into a ConflictError.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from shared import history
from shared.context import Context
from shared.coordination import RecordLock
from shared.errors import ConflictError
from shared.messages import ChangeMessage, System
from shared.settings import Entity
from shared.store import links as store
from shared.store.link_state import LinkState, Settled, Unsettled
from shared.store.models import Link
from workers import plan as core

log = logging.getLogger(__name__)


def load(ctx: Context, entity: Entity, system: System, record_id: str) -> Link | None:
    with ctx.db.session() as session:
        return store.find_link(session, entity, system, record_id)


def pair_of(link: Link | None) -> core.Pair | None:
    """The link as `plan` sees it."""
    if link is None:
        return None
    return core.Pair(
        link.state,
        {"customerp": link.customerp_version, "wave": link.wave_version},
        {"customerp": link.customerp_id, "wave": link.wave_id},
    )


def save(
    ctx: Context,
    entity: Entity,
    link: Link | None,
    sides: dict[System, core.Side],
    state: LinkState,
    lock: RecordLock,
    *,
    resolve: bool = True,
    decision: history.Decision | None = None,
) -> Link:
    """Record the pair (a new one when `link` is None) as `sides` hold it now, under the pair's `lock`; `resolve`: its
    dead letters are settled too (a pair just made but not merged yet leaves them for the save that settles it)."""
    try:
        with ctx.db.session() as session:
            ids = {s: sides[s].id if s in sides else (link.own_id(s) if link else "") for s in ("customerp", "wave")}
            versions = {
                s: sides[s].version if s in sides else (link.version_of(s) if link else "")
                for s in ("customerp", "wave")
            }
            saved = store.save_link(
                session,
                link,
                entity=entity,
                customerp_id=ids["customerp"],
                wave_id=ids["wave"],
                state=state,
                customerp_version=versions["customerp"],
                wave_version=versions["wave"],
            )
            history.record(session, decision, saved)
            if resolve:
                store.resolve_dead_letters(session, entity, ids)
    except (IntegrityError, StaleDataError) as exc:
        # Another worker linked or updated this pair meanwhile: start again from the new state.
        raise ConflictError(f"link of {entity} changed concurrently ({type(exc).__name__})", retry_after=0.5) from None
    if link is None:
        # Linked: neither record is an unfinished creation any more (whoever created it). Ended with the lock's
        # release, in its round trip.
        lock.end_creates_at_release(entity, {"wave": ids["customerp"], "customerp": ids["wave"]})
    return saved


def remember(ctx: Context, link: Link, merge: core.Merge, held_until: datetime | None) -> None:
    """Best effort, after a write failed: the pair is unsettled on what was being written (it may have landed), and
    Wave writes wait until `held_until` (a Wave write whose answer never came may land until then).

    Another sync may have recorded the pair since this one loaded it (the lock of a Wave record not yet linked is
    not its pair's lock): what it recorded is newer and stands; only the hold is added to it."""
    try:
        with ctx.db.session() as session:
            current = session.get(Link, link.id)
            if current is None:
                return
            state = current.state
            if isinstance(state, Unsettled) and state.wave_writes_held_until is not None:
                held_until = max(held_until or state.wave_writes_held_until, state.wave_writes_held_until)
            if current.row_version == link.row_version:
                current.state = merge.unsettled(wave_writes_held_until=held_until)
            elif held_until is not None and isinstance(state, Unsettled):
                current.state = Unsettled(state.bases, state.pending, held_until)
            elif held_until is not None and isinstance(state, Settled):
                # Judged against the agreed record on both sides, as a settled pair is, until the hold ends.
                current.state = Unsettled({"customerp": state.agreed, "wave": state.agreed}, None, held_until)
    except Exception as failure:  # noqa: BLE001 - the caller's error is the one to report
        log.warning("could not record the pending write of link %s: %s", link.id, failure)


def forget(ctx: Context, link: Link, message: ChangeMessage, *, partner_existed: bool) -> None:
    """The pair was deleted: its link goes, and so do the reasons either record could not sync."""
    with ctx.db.session() as session:
        fresh = store.find_link(session, link.entity, message.source, message.source_id)
        if fresh is not None:
            session.delete(fresh)
        ids = {"customerp": link.customerp_id, "wave": link.wave_id}
        store.resolve_dead_letters(session, link.entity, ids, how="deleted")
        history.record(session, history.deleted(ctx.settings, message, link, partner_existed=partner_existed))
