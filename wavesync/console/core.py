"""What every console page shares: the services it reads (link store, Redis, both systems), rendering, and the
guards (logged in, may act, CSRF) that every handler passes before it does anything."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
import redis
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from shared import logs
from shared.settings import Settings
from shared.store.db import Database
from shared.versions import parse_timestamp
from wavesync.console.auth import Sessions, User, csrf_ok, csrf_token, current_user

if TYPE_CHECKING:
    from shared.context import Context

log = logging.getLogger(__name__)

Send = Callable[[str, dict[str, Any], str], None]


def _send_task(task_name: str, message: dict[str, Any], queue: str) -> None:
    from workers.deadletters import send_sync

    send_sync(task_name, message, queue)


def when(value: Any) -> str:
    """A timestamp as an operator reads it: UTC, to the second."""
    if value in (None, ""):
        return "–"
    if isinstance(value, str | datetime):
        try:
            return parse_timestamp(value).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            return str(value)
    return str(value)


def ago(seconds: Any) -> str:
    if seconds is None:
        return "–"
    value = float(seconds)
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


class Typed(str):
    """Text the requester sent (a search, a filter, an id in the path), echoed as sent and never redacted: redacting
    it would answer "is this a secret?" for whoever typed it (unauthenticated on the login page)."""


MAX_ROW_ID = 2**63 - 1  # the largest id either database stores; a bigger one would overflow the driver


def row_id(text: object) -> int | None:
    """A row id from a query or form value: digits within the databases' integer range, else None."""
    if not isinstance(text, str | int) or not str(text).isdigit():
        return None
    value = int(text)
    return value if value <= MAX_ROW_ID else None


def path_part(value: Any) -> str:
    """A value as one URL path segment (or query value): `/`, `?`, `#`, spaces and the rest percent-encoded."""
    quoted = quote(str(value), safe="")
    return Typed(quoted) if isinstance(value, Typed) else quoted


def shown(value: Any) -> str:
    """A record value in a table cell: text as it is, anything else as compact JSON."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)


class Console:
    """The console's services, built once per process. Live reads of both systems go through the same rate-limited
    clients as the workers (the console's reads count against each system's fleet-wide limits)."""

    def __init__(self, settings: Settings, *, live_reads: bool = True, send: Send | None = None) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.live_reads = live_reads
        self.send: Send = send or _send_task
        self._redis: redis.Redis | None = None
        self._ctx: Context | None = None
        self._lock = threading.Lock()
        self.reconcile_running: str | None = None  # "check" or "repair" while a background run is on
        self.reconcile_error: str | None = None
        self.replay_progress: tuple[int, int] | None = None  # (sent, confirmed) while a "replay all matching" runs
        self.replay_error: str | None = None
        self.sessions = Sessions(lambda: self.redis)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("wavesync.console", "templates"),
            autoescape=True,  # every value is escaped: record data is whatever people typed into two systems
            trim_blocks=True,
            lstrip_blocks=True,
            # Redaction runs on each value before it is escaped (so a secret with & or " is caught too) and skips
            # what the requester sent: the page never differs by whether their input happens to be a secret.
            finalize=self._finalize,
        )
        # `redacted` is for a value cut (truncate, a slice) or encoded (a URL) before it is shown: finalize would see
        # only a piece of a secret, or its encoded form, and miss it. Redact first, then cut or encode.
        self.env.filters.update(
            when=when,
            ago=ago,
            shown=shown,
            redacted=self._finalize,
            path_part=lambda value: path_part(self._finalize(value)),
        )

    @property
    def redis(self) -> redis.Redis | None:
        if self.settings.redis_url is None:
            return None
        with self._lock:
            if self._redis is None:
                self._redis = redis.Redis.from_url(
                    str(self.settings.redis_url), socket_connect_timeout=3, socket_timeout=5
                )
            return self._redis

    def context(self) -> Context:
        """Clients of both systems (for live reads), made on first use."""
        from shared.context import Context

        with self._lock:
            if self._ctx is None:
                self._ctx = Context.from_settings(self.settings)
            return self._ctx

    def close(self) -> None:
        if self._ctx is not None:
            self._ctx.close()
        if self._redis is not None:
            self._redis.close()

    def redact(self, text: str) -> str:
        return logs.redact(text, self.settings.secrets())

    def redact_json(self, value: Any) -> str:
        """A JSON value as indented text with every string (key or value) redacted before it is serialised: once
        serialised, a secret with `"`, `\\` or non-ASCII in it is no longer the text redaction looks for."""

        def clean(item: Any) -> Any:
            if isinstance(item, str):
                return self.redact(item)
            if isinstance(item, dict):
                return {clean(str(k)): clean(v) for k, v in item.items()}
            if isinstance(item, list | tuple):
                return [clean(v) for v in item]
            return item

        return json.dumps(clean(value), indent=2, ensure_ascii=False, default=str)

    def _finalize(self, value: Any) -> Any:
        if value is None or isinstance(value, Typed | bool | int | float):
            return value
        if isinstance(value, Markup):  # already escaped (join, replace, a captured block): match escaped secrets
            text = str(value)
            for secret in self.settings.secrets():
                if secret:
                    text = text.replace(str(escape(secret)), "***")
            return Markup(text)  # noqa: S704 - was Markup, only secrets replaced by ***
        return self.redact(str(value))

    # --- rendering ------------------------------------------------------------------------------------------

    def render(self, request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        user = current_user(request)
        # Flashes are our own words plus the ids and counts of the action the requester just took.
        flashes = [{**f, "text": Typed(f["text"])} for f in request.session.pop("flash", [])] if user else []
        html = self.env.get_template(template).render(
            request=request,
            user=user,
            csrf=csrf_token(request),
            flashes=flashes,
            page=values.pop("page", ""),
            **values,
        )
        return HTMLResponse(html, status_code=status_code)


def flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session.setdefault("flash", [])
    request.session["flash"] = [*request.session["flash"], {"text": text, "kind": kind}]


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def login_redirect(request: Request) -> RedirectResponse:
    # Where to go after logging in stays in the session: the login page never echoes it.
    request.session["next"] = request.url.path
    return RedirectResponse("/login", status_code=303)


async def action_form(request: Request) -> tuple[User, FormData] | Response:
    """The guards of every action: a logged-in operator, and the session's CSRF token in the form."""
    user = current_user(request)
    if user is None:
        return Response("log in first", status_code=401)
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return Response("missing or wrong CSRF token: reload the page and try again", status_code=403)
    if not user.can_act:
        return Response("this account can look but not act", status_code=403)
    return user, form


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await run_in_threadpool(fn, *args, **kwargs)
