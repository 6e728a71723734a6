"""Console login, roles and CSRF: who may look (viewer) and who may act (operator), and proof that an action came
from the console's own form.

Passwords come from settings and are compared in constant time; the session is Starlette's signed cookie (HttpOnly,
SameSite=Strict, Secure when served over TLS or asked to) holding only the user, the role, the CSRF token, a proof of
the account as configured (so changing a password or a role ends the sessions made with the old one) and a session id
that counts only while the server keeps it (in Redis: logging out ends a copied cookie too).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis
from starlette.requests import Request

from shared import keys
from shared.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["operator", "viewer"]
SESSION_MAX_AGE = 12 * 3600  # seconds a session lasts unused: the cookie's max age and the session id's expiry


class Sessions:
    """The live session ids. A signed cookie alone would stay good for its whole max age after logging out; its id
    must also be here, where logout deletes it. Kept in Redis (every console process sees the same sessions), in
    this process when no Redis is configured. Ids are stored hashed: a Redis reader learns no cookie's id."""

    def __init__(self, redis_of: Callable[[], redis.Redis | None], max_age: int = SESSION_MAX_AGE) -> None:
        self._redis_of = redis_of
        self.max_age = max_age
        self._local: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(sid: str) -> str:
        return f"{keys.PREFIX}:console:session:{hashlib.sha256(sid.encode()).hexdigest()}"

    def add(self, sid: str) -> None:
        client = self._redis_of()
        if client is not None:
            client.set(self.key(sid), "1", ex=self.max_age)
            return
        with self._lock:
            self._local[sid] = time.monotonic() + self.max_age

    def touch(self, sid: str) -> bool:
        """Whether the session is live; a live one's expiry moves on (it lasts `max_age` after its last use, as the
        cookie does). While Redis does not answer, a signed session stands: a Redis outage is exactly when the
        operator needs the console, and only a logout made during it is late to take effect."""
        client = self._redis_of()
        if client is not None:
            try:
                return bool(client.expire(self.key(sid), self.max_age))
            except redis.RedisError as exc:
                log.warning("console: cannot check the session in Redis (%s): the signed session stands", exc)
                return True
        with self._lock:
            now = time.monotonic()
            if self._local.get(sid, 0) <= now:
                self._local.pop(sid, None)
                return False
            self._local[sid] = now + self.max_age
            return True

    def drop(self, sid: str) -> None:
        client = self._redis_of()
        if client is not None:
            client.delete(self.key(sid))
            return
        with self._lock:
            self._local.pop(sid, None)


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _accounts(settings: Settings) -> list[tuple[str, str, Role]]:
    accounts: list[tuple[str, str, Role]] = []
    if settings.console_password is not None:
        accounts.append((settings.console_user, settings.console_password.get_secret_value(), "operator"))
    if settings.console_readonly_password is not None:
        accounts.append(
            (settings.console_readonly_user, settings.console_readonly_password.get_secret_value(), "viewer")
        )
    return accounts


def authenticate(settings: Settings, name: str, password: str) -> User | None:
    """The user these credentials name, if any. Every configured account is compared (constant time each), so
    the answer's timing tells neither which user exists nor how much of a password was right."""
    found: User | None = None
    for user, secret, role in _accounts(settings):
        if _same(name, user) & _same(password, secret) and secret and found is None:
            found = User(user, role)
    return found


def account_proof(settings: Settings, user: User, key: str) -> str | None:
    """An HMAC (under the session key, so the readable cookie gives no offline test of the password) of the
    account as configured now; None when no such account is configured any more."""
    for name, secret, role in _accounts(settings):
        if name == user.name and role == user.role and secret:
            message = "\0".join(("console-account", name, role, secret)).encode()
            return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()
    return None


def current_user(request: Request) -> User | None:
    name, role, proof, sid = (request.session.get(k) for k in ("user", "role", "account", "sid"))
    if not isinstance(name, str) or role not in ("operator", "viewer") or not isinstance(proof, str):
        return None
    if not isinstance(sid, str):
        return None
    user = User(name, role)
    expected = account_proof(request.app.state.console.settings, user, request.app.state.session_key)
    if expected is None or not _same(proof, expected):
        return None
    # Asked several times a request (the handler, the page): Redis once.
    live = getattr(request.state, "session_live", None)
    if live is None:
        live = request.app.state.console.sessions.touch(sid)
        request.state.session_live = live
    return user if live else None


def log_in(request: Request, user: User) -> None:
    """Start a session for this user (raises redis.RedisError when Redis cannot record it)."""
    sid = secrets.token_urlsafe(32)
    request.app.state.console.sessions.add(sid)
    # A new session on login: a token planted before it (session fixation) is worth nothing after.
    request.session.clear()
    request.session.update(
        {
            "user": user.name,
            "role": user.role,
            "account": account_proof(request.app.state.console.settings, user, request.app.state.session_key),
            "csrf": secrets.token_urlsafe(32),
            "sid": sid,
        }
    )


def log_out(request: Request) -> None:
    sid = request.session.get("sid")
    request.session.clear()
    if isinstance(sid, str):
        try:
            request.app.state.console.sessions.drop(sid)
        except redis.RedisError as exc:
            log.warning("console logout: cannot delete the session in Redis (%s): it lasts until it expires", exc)


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use: the login form needs one before anyone is logged in)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_ok(request: Request, submitted: object) -> bool:
    expected = request.session.get("csrf")
    return isinstance(expected, str) and isinstance(submitted, str) and bool(submitted) and _same(submitted, expected)
