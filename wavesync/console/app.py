"""The console's ASGI app: routes, login and logout, the session and security headers, and `serve` for the CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.settings import Settings
from wavesync.console import dead_letters, overview, reconcile, records
from wavesync.console.auth import SESSION_MAX_AGE, authenticate, csrf_ok, current_user, log_in, log_out
from wavesync.console.core import Console, console_of

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
# No inline script or style and nothing from elsewhere: a value that slipped past escaping could not run.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'"
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"same-origin"),
                ]
                if not scope["path"].startswith("/static/"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


FAILED_LOGIN_DELAY = 0.5  # seconds; attempts take turns and a failure holds the turn: at most ~2 guesses a second


def _local(target: object) -> str:
    return target if isinstance(target, str) and target.startswith("/") and not target.startswith("//") else "/"


def login_page(request: Request) -> Response:
    if current_user(request) is not None:
        return RedirectResponse(_local(request.session.pop("next", None)), status_code=303)
    return console_of(request).render(request, "login.html", error=None)


async def login(request: Request) -> Response:
    console = console_of(request)
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return console.render(request, "login.html", status_code=403, error="The form expired: try again.")
    name = str(form.get("username") or "")
    # Every attempt takes its turn under one lock per app, and a failure sleeps while it holds it: guesses sent in
    # parallel are checked one after another, at most one per FAILED_LOGIN_DELAY, and a right guess among them is
    # answered only in its turn (checking before the lock would let it return at once while the wrong ones wait).
    # The comparison itself is constant-time.
    async with request.app.state.login_lock:
        user = authenticate(console.settings, name, str(form.get("password") or ""))
        if user is None:
            host = request.client.host if request.client else "?"
            log.warning("console login failed for %r from %s", name[:80], host)
            await asyncio.sleep(FAILED_LOGIN_DELAY)
    if user is None:
        return console.render(request, "login.html", status_code=401, error="Wrong user or password.")
    target = _local(request.session.get("next"))
    try:
        log_in(request, user)
    except redis.RedisError as exc:
        log.warning("console login of %s: Redis cannot record the session: %s", user.name, exc)
        error = "Redis does not answer, so no session can be recorded: try again when it is back."
        return console.render(request, "login.html", status_code=503, error=error)
    log.info("console login: %s (%s)", user.name, user.role)
    return RedirectResponse(target, status_code=303)


async def logout(request: Request) -> Response:
    form = await request.form()
    if csrf_ok(request, form.get("csrf")):
        log_out(request)
    return RedirectResponse("/login", status_code=303)


def tls_configured(settings: Settings) -> bool:
    return settings.console_tls_cert is not None and settings.console_tls_key is not None


def secure_cookie(settings: Settings) -> bool:
    """The cookie's Secure flag: as set (behind a TLS-terminating proxy the console sees plain HTTP, yet browsers
    speak HTTPS), else on exactly when the console serves TLS itself."""
    if settings.console_secure_cookie is not None:
        return settings.console_secure_cookie
    return tls_configured(settings)


def create_app(settings: Settings, *, live_reads: bool = True, console: Console | None = None) -> Starlette:
    console = console or Console(settings, live_reads=live_reads)
    key = settings.console_session_key.get_secret_value() if settings.console_session_key else secrets.token_urlsafe(32)
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", overview.overview, methods=["GET"]),
        Route("/dead-letters", dead_letters.dead_letters, methods=["GET"]),
        Route("/dead-letters/replay", dead_letters.replay, methods=["POST"]),
        Route("/dead-letters/purge", dead_letters.purge, methods=["POST"]),
        Route("/dead-letters/{entry_id:int}", dead_letters.dead_letter, methods=["GET"]),
        Route("/records", records.search, methods=["GET"]),
        Route("/records/{entity}/{system}/{record_id:path}/sync", records.sync_now, methods=["POST"]),
        Route("/records/{entity}/{system}/{record_id:path}/reconcile", records.reconcile_record, methods=["POST"]),
        Route("/records/{entity}/{system}/{record_id:path}", records.record, methods=["GET"]),
        Route("/reconcile", reconcile.reconcile_page, methods=["GET"]),
        Route("/reconcile/check", reconcile.check, methods=["POST"]),
        Route("/reconcile/repair", reconcile.repair, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=key,
            session_cookie="wavesync_console",
            max_age=SESSION_MAX_AGE,
            same_site="strict",
            https_only=secure_cookie(settings),
        ),
    ]

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        console.close()

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.console = console
    app.state.session_key = key
    app.state.login_lock = asyncio.Lock()
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(settings: Settings) -> str | None:
    """What to warn about where the console listens: anywhere but loopback without TLS."""
    if is_loopback(settings.console_host) or tls_configured(settings):
        return None
    return (
        f"the console listens on {settings.console_host} without TLS: passwords and session cookies cross the "
        "network in clear. Put it behind a TLS proxy or set WAVESYNC_CONSOLE_TLS_CERT and WAVESYNC_CONSOLE_TLS_KEY."
    )


def serve(settings: Settings) -> None:
    """Serve the console in the foreground until Ctrl-C or SIGTERM."""
    import uvicorn

    tls = tls_configured(settings)
    warning = bind_warning(settings)
    if warning:
        log.warning("%s", warning)
    if settings.console_session_key is None:
        log.info("WAVESYNC_CONSOLE_SESSION_KEY is not set: a random key signs sessions; they end when it restarts")
    scheme = "https" if tls else "http"
    log.info("console on %s://%s:%d", scheme, settings.console_host, settings.console_port)
    uvicorn.run(
        create_app(settings),
        host=settings.console_host,
        port=settings.console_port,
        log_level="warning",
        access_log=False,
        ssl_certfile=str(settings.console_tls_cert) if tls else None,
        ssl_keyfile=str(settings.console_tls_key) if tls else None,
        lifespan="on",
    )
