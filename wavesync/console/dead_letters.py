"""The Dead letters pages: a filtered, paginated list (open, resolved or both), one entry in full with both
systems' current records side by side, and the actions: replay one or the selected, and (each after a confirmation
page naming how many) replay everything a filter matches, in the background, and purge.

A confirmation names the entries that matched when it was shown: it carries the highest id among them, and the
action touches only matching entries up to that id, never ones that arrived while the operator read the page."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import redis
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shared import keys
from shared.deadletters import DeadLetters, Filter
from shared.settings import ENTITIES
from shared.store.models import DeadLetter
from wavesync.console.auth import current_user
from wavesync.console.core import Console, Typed, action_form, console_of, flash, in_thread, login_redirect, row_id
from wavesync.console.records import comparison, live_records

log = logging.getLogger(__name__)

PAGE = 50
COUNT_CAP = 10_000  # the list's match count stops here ("10,000+"); a confirmation page counts exactly
MAX_REASON = 200  # a longer "reason contains" is refused: SQLite refuses LIKE patterns of ~50,000 characters
BATCH = 500  # entries per transaction of a background replay (progress and the lock's renewal go with it)
# Held while a "replay all matching" runs (in any console process sharing the Redis): a second one, a double click
# or another operator, is refused instead of re-queueing everything again. Renewed after each batch.
REPLAY_LOCK = f"{keys.PREFIX}:lock:console:replay-all"
REPLAY_LOCK_TTL = 300  # seconds; outlives a batch by far, and frees the lock of a console that died mid-run
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


def _extent(console: Console, where: Filter) -> tuple[int, int | None]:
    """How many entries match now, exactly, and the highest id among them: what a confirmation page names."""
    with console.db.session() as session:
        count, highest = session.execute(where.apply(select(func.count(DeadLetter.id), func.max(DeadLetter.id)))).one()
        return int(count or 0), (int(highest) if highest is not None else None)


def replay_running(console: Console) -> bool:
    if console.replay_progress is not None:
        return True
    try:
        return console.redis is not None and bool(console.redis.exists(REPLAY_LOCK))
    except redis.RedisError:
        return False


def start_replay(console: Console, where: Filter, count: int) -> bool:
    """Replay the `count` entries `where` names in a background thread unless a replay of all matching runs already
    (here, or in any console on the same Redis); False when one does."""
    lock = None
    if console.redis is not None:
        lock = console.redis.lock(REPLAY_LOCK, timeout=REPLAY_LOCK_TTL, blocking=False, thread_local=False)
    with console._lock:
        if console.replay_progress is not None or (lock is not None and not lock.acquire()):
            return False
        console.replay_progress = (0, count)
        console.replay_error = None

    def batch_done(sent: int, total: int) -> None:
        console.replay_progress = (sent, total)
        if lock is not None:
            lock.reacquire()

    def run() -> None:
        try:
            sent = DeadLetters(console.db, console.settings).replay(where, console.send, batch_done, batch=BATCH)
            log.info("console: replayed %d dead letter(s) of %d confirmed", sent, count)
        except Exception as exc:  # noqa: BLE001 - a failed run is reported on the page
            done = (console.replay_progress or (0, count))[0]
            console.replay_error = console.redact(f"the last replay stopped after {done} of {count}: {exc}")
            log.warning("console replay failed: %s", console.replay_error)
        finally:
            console.replay_progress = None
            if lock is not None:
                with contextlib.suppress(redis.RedisError):  # expired, or Redis gone: nothing left to release
                    lock.release()

    threading.Thread(target=run, name="console-replay", daemon=True).start()
    return True


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
    too_long = len(where.reason or "") > MAX_REASON
    entries = [] if too_long else DeadLetters(console.db).page(where, before_id=before_id, limit=PAGE)
    return console.render(
        request,
        "dead_letters.html",
        page="dead-letters",
        entries=entries,
        where=query,
        filter_query=Typed(urlencode(query)),
        back=Typed(back),
        matching=0 if too_long else _count(console, where),
        count_cap=COUNT_CAP,
        too_long=too_long,
        max_reason=MAX_REASON,
        replay_progress=console.replay_progress,
        replay_elsewhere=replay_running(console) and console.replay_progress is None,
        replay_error=console.replay_error,
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
    return console.render(
        request,
        "dead_letter.html",
        page="dead-letters",
        entry=entry,
        message=console.redact_json(entry["message"]),
        live=live,
        rows=rows,
    )


def _describe(where: Filter) -> str:
    """The filter in words, for the confirmation and the flash: the operator sees what "all matching" means."""
    parts = [f"{where.status} entries" if where.status != "all" else "entries of any status"]
    if where.entity:
        parts.append(f"of {where.entity}")
    if where.error_class:
        parts.append(f"failing with {where.error_class}")
    if where.reason:
        parts.append(f"whose reason contains “{where.reason}”")
    if where.since is not None:
        parts.append(f"that failed since {where.since:%Y-%m-%d %H:%M} UTC")
    return "every one of the " + " ".join(parts) if len(parts) > 1 else f"every one of the {parts[0]} (no filter)"


def _selection(form: Any) -> tuple[Filter, str] | None:
    scope = form.get("scope") or "selected"
    if scope == "matching":
        where = parse_filter(form)
        return (where, _describe(where)) if len(where.reason or "") <= MAX_REASON else None
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
        too_long = form.get("scope") == "matching"
        flash(request, f"the reason filter is over {MAX_REASON} characters" if too_long else "nothing selected", "warn")
        return RedirectResponse(_back(form), status_code=303)
    return console_of(request), form, *selection


async def _confirmed(
    request: Request, console: Console, form: Any, where: Filter, described: str, verb: str, nothing: str
) -> Response | Filter:
    """Before an action on everything a filter matches: the confirmation page (or, with nothing to act on, back to
    the list); once confirmed, the filter bounded to what that page counted."""
    up_to = row_id(form.get("up_to"))
    if form.get("confirm") == "yes" and up_to is not None:
        return dataclasses.replace(where, up_to=up_to)
    count, highest = await in_thread(_extent, console, where)
    if highest is None:
        flash(request, nothing, "warn")
        return RedirectResponse(_back(form), status_code=303)
    # The form as it came (the filter or the ids), plus the highest id this page names.
    fields = [(k, Typed(str(v))) for k, v in form.multi_items() if k not in ("csrf", "confirm", "up_to")]
    return console.render(
        request,
        "confirm_dead_letters.html",
        page="dead-letters",
        verb=verb,
        count=f"{count:,}",
        described=described,
        fields=[*fields, ("up_to", highest)],
    )


async def replay(request: Request) -> Response:
    selected = await _selected_action(request)
    if isinstance(selected, Response):
        return selected
    console, form, where, described = selected
    if form.get("scope") != "matching":  # the entries on the page that were ticked: at once
        count = await in_thread(DeadLetters(console.db, console.settings).replay, where, console.send)
        flash(request, f"replayed {count} dead letter(s) ({described}): each is re-read and synced; see its status")
        return RedirectResponse(_back(form), status_code=303)
    nothing = "no dead letter matches the filter: nothing to replay"
    confirmed = await _confirmed(request, console, form, where, described, "Replay", nothing)
    if isinstance(confirmed, Response):
        return confirmed
    count, _highest = await in_thread(_extent, console, confirmed)
    try:
        started = count > 0 and start_replay(console, confirmed, count)
    except redis.RedisError as exc:
        flash(request, console.redact(f"cannot start the replay: Redis answered {exc}"), "error")
        return RedirectResponse(_back(form), status_code=303)
    if not count:
        flash(request, "no dead letter matches the filter any more: nothing to replay", "warn")
    elif started:
        flash(
            request,
            f"replaying {count:,} dead letter(s) ({described}) in the background: each is re-read and synced; "
            "reload to follow",
        )
    else:
        flash(request, "a replay of all matching entries is already running: wait for it to finish", "warn")
    return RedirectResponse(_back(form), status_code=303)


async def purge(request: Request) -> Response:
    selected = await _selected_action(request)
    if isinstance(selected, Response):
        return selected
    console, form, where, described = selected
    nothing = "no dead letter matches: nothing to purge"
    confirmed = await _confirmed(request, console, form, where, described, "Purge", nothing)
    if isinstance(confirmed, Response):
        return confirmed
    count = await in_thread(DeadLetters(console.db, console.settings).purge, confirmed)
    flash(request, f"purged {count} dead letter(s) ({described}); the records stay as they are in both systems")
    back = _back(form)
    return RedirectResponse("/dead-letters" if back.startswith("/dead-letters/") else back, status_code=303)
