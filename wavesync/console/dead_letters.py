"""The Dead letters pages: a filtered, paginated list (open, resolved or both), one entry in full with both
systems' current records side by side, and the actions: replay one, the selected or everything a filter matches,
and purge (after a confirmation page)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shared.deadletters import DeadLetters, Filter
from shared.settings import ENTITIES
from shared.store.models import DeadLetter
from wavesync.console.auth import current_user
from wavesync.console.core import Console, Typed, action_form, console_of, flash, in_thread, login_redirect, row_id
from wavesync.console.records import comparison, live_records

PAGE = 50
COUNT_CAP = 10_000  # a match count stops here: the page says "10,000+" rather than count a huge table
FILTER_FIELDS = ("entity", "status", "error_class", "reason", "since")


def parse_filter(values: Any, ids: tuple[int, ...] = ()) -> Filter:
    entity = values.get("entity") or None
    status = values.get("status") or "open"
    since_text = (values.get("since") or "").strip()
    since = None
    if since_text:
        try:
            parsed = datetime.fromisoformat(since_text)
            since = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            since = None
    return Filter(
        entity=entity if entity in ENTITIES else None,
        reason=(values.get("reason") or "").strip() or None,
        ids=ids,
        status="resolved" if status == "resolved" else "all" if status == "all" else "open",
        error_class=values.get("error_class") or None,
        since=since,
    )


def _filter_query(where: Filter) -> dict[str, str]:
    out = {
        "entity": where.entity or "",
        "status": where.status,
        "error_class": where.error_class or "",
        "reason": where.reason or "",
        "since": where.since.strftime("%Y-%m-%dT%H:%M") if where.since else "",
    }
    return {k: Typed(v) for k, v in out.items()}  # the requester's own filter, echoed as sent


def _count(console: Console, where: Filter) -> int:
    with console.db.session() as session:
        capped = where.apply(select(DeadLetter.id)).limit(COUNT_CAP + 1).subquery()
        return int(session.scalar(select(func.count()).select_from(capped)) or 0)


def _error_classes(console: Console) -> list[str]:
    with console.db.session() as session:
        return sorted(session.scalars(select(DeadLetter.error_class).distinct()).all())


def dead_letters(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    where = parse_filter(request.query_params)
    before_id = row_id(request.query_params.get("before"))
    query = _filter_query(where)
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    entries = DeadLetters(console.db).page(where, before_id=before_id, limit=PAGE)
    return console.render(
        request,
        "dead_letters.html",
        page="dead-letters",
        entries=entries,
        where=query,
        filter_query=Typed(urlencode(query)),
        back=Typed(back),
        matching=_count(console, where),
        count_cap=COUNT_CAP,
        error_classes=_error_classes(console),
        entities=ENTITIES,
        next_before=entries[-1]["id"] if len(entries) == PAGE else None,
        first_page=before_id is None,
    )


def dead_letter(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    entry_id = row_id(request.path_params["entry_id"])
    entry = DeadLetters(console.db).get(entry_id) if entry_id is not None else None
    if entry is None:
        return console.render(request, "not_found.html", status_code=404, what="such dead letter")
    live = live_records(console, entry["entity"], entry["customerp_id"], entry["wave_id"])
    rows = comparison(entry["entity"], live, None)
    return console.render(request, "dead_letter.html", page="dead-letters", entry=entry, live=live, rows=rows)


def _selection(form: Any) -> tuple[Filter, str] | None:
    scope = form.get("scope") or "selected"
    if scope == "matching":
        return parse_filter(form), "every entry matching the filter"
    ids = tuple(i for v in form.getlist("ids") if (i := row_id(v)) is not None)
    if not ids:
        return None
    # Selected entries are named by id whatever their status: a resolved one may be replayed on purpose.
    return Filter(ids=ids, status="all"), f"{len(ids)} selected entr{'y' if len(ids) == 1 else 'ies'}"


def _back(form: Any) -> str:
    target = str(form.get("back") or "/dead-letters")
    return target if target.startswith("/") and not target.startswith("//") else "/dead-letters"


async def _selected_action(request: Request) -> Response | tuple[Console, Any, Filter, str]:
    """The checks every dead-letter action starts with (session, CSRF, role; something selected), or the answer
    that ends it."""
    checked = await action_form(request)
    if isinstance(checked, Response):
        return checked
    _user, form = checked
    selection = _selection(form)
    if selection is None:
        flash(request, "nothing selected", "warn")
        return RedirectResponse(_back(form), status_code=303)
    return console_of(request), form, *selection


async def replay(request: Request) -> Response:
    selected = await _selected_action(request)
    if isinstance(selected, Response):
        return selected
    console, form, where, described = selected
    count = await in_thread(DeadLetters(console.db, console.settings).replay, where, console.send)
    flash(request, f"replayed {count} dead letter(s) ({described}): each is re-read and synced; see its status")
    return RedirectResponse(_back(form), status_code=303)


async def purge(request: Request) -> Response:
    selected = await _selected_action(request)
    if isinstance(selected, Response):
        return selected
    console, form, where, described = selected
    if form.get("confirm") != "yes":
        count = await in_thread(_count, console, where)
        fields = [(k, Typed(str(v))) for k, v in form.multi_items() if k not in ("csrf", "confirm")]
        return console.render(
            request, "confirm_purge.html", page="dead-letters", count=count, described=described, fields=fields
        )
    count = await in_thread(DeadLetters(console.db, console.settings).purge, where)
    flash(request, f"purged {count} dead letter(s) ({described}); the records stay as they are in both systems")
    back = _back(form)
    return RedirectResponse("/dead-letters" if back.startswith("/dead-letters/") else back, status_code=303)
