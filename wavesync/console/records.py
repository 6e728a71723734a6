"""The Record pages: search by any id, email, customer/order/invoice number or name; one record with both systems'
current values and the last synced snapshot side by side (differences marked), its history stream, and the actions
"sync now" and "reconcile this record" (re-reads through the normal queues)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shared import history, keys
from shared.messages import SYSTEMS, ChangeMessage
from shared.settings import ENTITIES
from shared.store import link_state
from shared.store import links as store
from shared.store.models import DeadLetter, Link
from wavesync.console.auth import current_user
from wavesync.console.core import (
    Console,
    Typed,
    action_form,
    console_of,
    flash,
    in_thread,
    login_redirect,
    path_part,
    row_id,
)

HISTORY_PAGE = 50
# Longer searches are refused: no id, email or name is this long, and SQLite refuses LIKE patterns of ~50,000.
MAX_QUERY = 200


def live_records(console: Console, entity: str, customerp_id: str | None, wave_id: str | None) -> dict[str, Any]:
    """Each system's current record in canonical form, or why it could not be read."""
    out: dict[str, Any] = {}
    ids = {"customerp": customerp_id, "wave": wave_id}
    for system in SYSTEMS:
        record_id = ids[system]
        if not record_id:
            out[system] = {"id": None, "fields": None, "error": "no record on this side (not linked)"}
            continue
        if not console.live_reads:
            out[system] = {"id": record_id, "fields": None, "error": "live reads are switched off"}
            continue
        try:
            from producers.reconcile import canonical, read
            from shared.entities import DEFINITIONS
            from shared.errors import NotFoundError
            from shared.refs import LinkLookup

            definition = DEFINITIONS[entity]  # type: ignore[index]
            ctx = console.context()
            try:
                raw = read(ctx, definition.name, system, record_id)
            except NotFoundError:
                out[system] = {"id": record_id, "fields": None, "error": "not found: deleted in this system?"}
                continue
            try:
                # Its references only looked up, never synced: reading a page changes nothing.
                fields = canonical(ctx, LinkLookup(ctx.db), definition, system, raw)
                out[system] = {"id": record_id, "fields": fields, "error": None}
            except Exception as exc:  # noqa: BLE001 - unmappable data is often why it is here: show it as stored
                stored = {k: v for k, v in raw.items() if not isinstance(v, dict | list)}
                reason = console.redact(f"shown as stored in {system}: it does not map ({exc})")
                out[system] = {"id": record_id, "fields": stored, "error": reason}
        except Exception as exc:  # noqa: BLE001 - one side down must not take the page down
            out[system] = {"id": record_id, "fields": None, "error": console.redact(f"{type(exc).__name__}: {exc}")}
    return out


def _field_order(entity: str) -> list[str]:
    from shared.mapping import customers, orders, products

    tables = {"customers": customers.FIELDS, "products": products.FIELDS, "orders": orders.FIELDS}
    return [f.name for f in tables[entity]]


def comparison(entity: str, live: dict[str, Any], snapshot: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per field: both current values and the synced one, with which differ."""
    cp = live["customerp"]["fields"] or {}
    wave = live["wave"]["fields"] or {}
    snap = snapshot or {}
    names = _field_order(entity)
    names += sorted({*cp, *wave, *snap} - set(names))
    rows = []
    for name in names:
        if name not in cp and name not in wave and name not in snap:
            continue
        rows.append(
            {
                "field": name,
                "customerp": cp.get(name),
                "wave": wave.get(name),
                "snapshot": snap.get(name),
                "customerp_moved": bool(cp) and bool(snap) and cp.get(name) != snap.get(name),
                "wave_moved": bool(wave) and bool(snap) and wave.get(name) != snap.get(name),
                "differ": bool(cp) and bool(wave) and cp.get(name) != wave.get(name),
            }
        )
    return rows


def search(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    query = (request.query_params.get("q") or "").strip()
    entity = request.query_params.get("entity") or None
    entity = entity if entity in ENTITIES else None
    results: list[history.Found] = []
    too_long = len(query) > MAX_QUERY
    if query and not too_long:
        with console.db.session() as session:
            results = history.find(session, query, entity=entity)
        if len(results) == 1:
            return RedirectResponse(record_url(results[0]), status_code=303)
    return console.render(
        request,
        "records.html",
        page="records",
        query=Typed(query),
        entity=entity or "",
        entities=ENTITIES,
        results=[(r, record_url(r)) for r in results],
        too_long=too_long,
        max_query=MAX_QUERY,
        status_code=400 if too_long else 200,
    )


def record_url(found: history.Found) -> str:
    # Ids are whatever a system chose: `/`, `?`, `#` or a space in one must not open another record.
    if found.customerp_id:
        return f"/records/{path_part(found.entity)}/customerp/{path_part(found.customerp_id)}"
    return f"/records/{path_part(found.entity)}/wave/{path_part(found.wave_id)}"


def _target(request: Request) -> tuple[str, str, str] | None:
    entity, system, record_id = (request.path_params[k] for k in ("entity", "system", "record_id"))
    if entity not in ENTITIES or system not in SYSTEMS or not record_id:
        return None
    return entity, system, record_id


def record(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    target = _target(request)
    if target is None:
        return console.render(request, "not_found.html", status_code=404, what="that record")
    entity, system, record_id = target
    before_id = row_id(request.query_params.get("before"))
    with console.db.session() as session:
        link = store.find_link(session, entity, system, record_id)
        ids = {"customerp": None, "wave": None, system: record_id}
        if link is not None:
            ids = {"customerp": link.customerp_id, "wave": link.wave_id}
        ids[system] = Typed(record_id)  # as requested (the link was found by it)
        events = [
            history.entry_json(e)
            for e in history.for_record(
                session, entity, ids["customerp"], ids["wave"], before_id=before_id, limit=HISTORY_PAGE
            )
        ]
        letters = session.scalars(
            select(DeadLetter).where(
                DeadLetter.entity == entity,
                or_(*(DeadLetter.source_id == i for i in ids.values() if i)),
            )
        ).all()
        dead = [
            {"id": d.id, "reason": d.reason, "error_class": d.error_class, "resolved": d.resolution} for d in letters
        ]
        snapshot, unsettled = _snapshot(link)
        link_info = _link_info(link)
    live = live_records(console, entity, ids["customerp"], ids["wave"])
    return console.render(
        request,
        "record.html",
        page="records",
        entity=entity,
        system=system,
        record_id=Typed(record_id),
        here=Typed(f"/records/{entity}/{system}/{path_part(record_id)}"),
        ids=ids,
        link=link_info,
        live=live,
        rows=comparison(entity, live, snapshot),
        unsettled=unsettled,
        events=events,
        dead=dead,
        next_before=events[-1]["id"] if len(events) == HISTORY_PAGE else None,
        first_page=before_id is None,
    )


def _snapshot(link: Link | None) -> tuple[dict[str, Any] | None, bool]:
    if link is None:
        return None, False
    state = link.state
    # Not settled: the sync wrote (or found) values the two sides have not been seen to agree on yet.
    return dict(link_state.reference(state)), isinstance(state, link_state.Unsettled)


def _link_info(link: Link | None) -> dict[str, Any] | None:
    if link is None:
        return None
    return {
        "id": link.id,
        "created_at": link.created_at,
        "synced_at": link.synced_at,
        "customerp_version": link.customerp_version,
        "wave_version": link.wave_version,
    }


def _reread(console: Console, entity: str, system: str, record_id: str) -> None:
    message = ChangeMessage.model_validate({"entity": entity, "source": system, "source_id": record_id, "reread": True})
    console.send(keys.SYNC_TASK[message.entity], message.to_json(), message.entity)


async def sync_now(request: Request) -> Response:
    checked = await action_form(request)
    if isinstance(checked, Response):
        return checked
    console = console_of(request)
    target = _target(request)
    if target is None:
        return Response("no such record", status_code=404)
    await in_thread(_reread, console, *target)
    flash(request, f"{target[1]} {target[2]} is re-read and synced now; its result appears in the history below")
    return RedirectResponse(request.url.path.rsplit("/", 1)[0], status_code=303)


async def reconcile_record(request: Request) -> Response:
    """Both sides re-read: each is merged against the snapshot, so drift on either side is repaired, as a full
    reconcile would for this pair."""
    checked = await action_form(request)
    if isinstance(checked, Response):
        return checked
    console = console_of(request)
    target = _target(request)
    if target is None:
        return Response("no such record", status_code=404)
    entity, system, record_id = target

    def both() -> int:
        with console.db.session() as session:
            link = store.find_link(session, entity, system, record_id)
            ids = {"customerp": link.customerp_id, "wave": link.wave_id} if link else {system: record_id}
        for side, side_id in ids.items():
            _reread(console, entity, side, side_id)
        return len(ids)

    count = await in_thread(both)
    flash(request, f"reconciling this record: {count} side(s) re-read and merged; see the history below")
    return RedirectResponse(request.url.path.rsplit("/", 1)[0], status_code=303)
