"""Console login, roles and CSRF: who may look (viewer) and who may act (operator), and proof that an action came
from the console's own form.

Passwords come from settings and are compared in constant time; the session is Starlette's signed cookie (HttpOnly,
SameSite=Strict, Secure when served over TLS) holding only the user, the role, the CSRF token and a proof of the
account as configured (so changing a password or a role ends the sessions made with the old one).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from shared.settings import Settings

Role = Literal["operator", "viewer"]


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
    name, role, proof = (request.session.get(k) for k in ("user", "role", "account"))
    if not isinstance(name, str) or role not in ("operator", "viewer") or not isinstance(proof, str):
        return None
    user = User(name, role)
    expected = account_proof(request.app.state.console.settings, user, request.app.state.session_key)
    return user if expected is not None and _same(proof, expected) else None


def log_in(request: Request, user: User) -> None:
    # A new session on login: a token planted before it (session fixation) is worth nothing after.
    request.session.clear()
    request.session.update(
        {
            "user": user.name,
            "role": user.role,
            "account": account_proof(request.app.state.console.settings, user, request.app.state.session_key),
            "csrf": secrets.token_urlsafe(32),
        }
    )


def log_out(request: Request) -> None:
    request.session.clear()


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
