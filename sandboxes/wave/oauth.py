"""The Wave sandbox's OAuth2 server (`/oauth2/authorize/`, `/oauth2/token/`, /_admin/oauth) and `Query.user/businesses`.

Modelled on what is known of Wave (reference notes §1, §15): authorization-code grant with `client_id`/`client_secret`
in the form body; refresh tokens rotate on every refresh (configurable) and a spent one is answered `invalid_grant`;
a revoked grant refuses its access tokens (answered as the sandbox's `auth_failure_status` says: 401, or 200 with
`UNAUTHENTICATED`) and its refresh tokens (`invalid_grant`). PKCE S256 is honoured when the authorize request carries
a `code_challenge` (Wave's own guide does not list it; one third-party pack says S256 is supported), or required.
The authorize endpoint approves at once (there is no person to click "Allow" in a test); `/_admin/oauth/code` hands
out a code without the redirect, as a person pasting it would have it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from sandboxes.wave.app import WaveSandbox

DEFAULT_CLIENT_ID = "sandbox-oauth-client"
DEFAULT_CLIENT_SECRET = "sandbox-oauth-client-secret"  # noqa: S105 - the well-known secret of a local fake
# Wave's documented scopes (notes §1; `estimate:*` from the webhook guide): anything else is `invalid_scope`.
KNOWN_SCOPES = frozenset(
    f"{resource}:{operation}"
    for resource, operations in {
        "account": ("read", "write", "*"),
        "business": ("read", "write", "*"),
        "customer": ("read", "write", "*"),
        "estimate": ("read", "write", "send", "*"),
        "invoice": ("read", "write", "send", "*"),
        "product": ("read", "write", "*"),
        "sales_tax": ("read", "write", "*"),
        "transaction": ("write", "*"),
        "user": ("read", "*"),
        "vendor": ("read", "write", "*"),
    }.items()
    for operation in operations
)
EndpointFault = Literal["none", "error_500", "malformed", "html", "hang"]
ADMIN_SETTINGS = frozenset(
    {"access_token_lifetime_s", "rotate_refresh_tokens", "pkce", "endpoint_fault", "endpoint_fault_count", "hang_s"}
)


@dataclass(frozen=True)
class OAuthUser:
    uuid: str = "6f1c2d4e-0b7a-4e0e-9a51-3c1d2e3f4a5b"
    email: str = "owner@sandbox.example"
    first_name: str = "Sandy"
    last_name: str = "Owner"


@dataclass(frozen=True)
class OAuthSandboxConfig:
    """The OAuth server's knobs; every one is also settable through `PATCH /_admin/oauth`."""

    clients: tuple[tuple[str, str], ...] = ((DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET),)
    access_token_lifetime_s: float = 3600.0
    code_lifetime_s: float = 600.0
    rotate_refresh_tokens: bool = True
    pkce: Literal["optional", "required"] = "optional"
    # What the next `endpoint_fault_count` calls of the token endpoint get instead of an answer (bad-input tests).
    endpoint_fault: EndpointFault = "none"
    endpoint_fault_count: int = 0
    hang_s: float = 30.0
    user: OAuthUser = field(default_factory=OAuthUser)


@dataclass
class _Grant:
    id: int
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class _Code:
    grant: _Grant
    redirect_uri: str
    challenge: str | None
    expires_at: datetime
    used: bool = False


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _oauth_error(code: str, description: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


class OAuthServer:
    """Codes, grants and tokens in memory, guarded by one lock (the sandbox serves requests on threads)."""

    def __init__(self, config: OAuthSandboxConfig, clock: Callable[[], datetime]) -> None:
        self.initial = config
        self.config = config
        self.clock = clock
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.config = self.initial
            self._grants: dict[int, _Grant] = {}
            self._codes: dict[str, _Code] = {}
            self._access: dict[str, tuple[_Grant, datetime]] = {}
            self._refresh: dict[str, tuple[_Grant, bool]] = {}  # token -> (grant, spent)
            self.calls: Counter[str] = Counter()

    def configure(self, **changes: Any) -> OAuthSandboxConfig:
        with self._lock:
            self.config = replace(self.config, **changes)
            return self.config

    # ----- issuing -------------------------------------------------------------------------------------------

    def _client_ok(self, client_id: str, secret: str | None) -> bool:
        return any(cid == client_id and (secret is None or sec == secret) for cid, sec in self.config.clients)

    def issue_code(self, client_id: str, redirect_uri: str, scope: str, challenge: str | None) -> str:
        with self._lock:
            grant = _Grant(len(self._grants) + 1, client_id, scope)
            self._grants[grant.id] = grant
            code = secrets.token_urlsafe(24)
            expires = self.clock() + timedelta(seconds=self.config.code_lifetime_s)
            self._codes[code] = _Code(grant, redirect_uri, challenge, expires)
            return code

    def _pair(self, grant: _Grant, refresh: str | None = None) -> dict[str, Any]:
        access = "wsat_" + secrets.token_urlsafe(24)
        lifetime = self.config.access_token_lifetime_s
        self._access[access] = (grant, self.clock() + timedelta(seconds=lifetime))
        if refresh is None:
            refresh = "wsrt_" + secrets.token_urlsafe(24)
            self._refresh[refresh] = (grant, False)
        return {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": max(1, round(lifetime)),
            "refresh_token": refresh,
            "scope": grant.scope,
        }

    def accepts(self, token: str) -> bool:
        """Whether the GraphQL endpoint takes `token` as an OAuth access token now."""
        with self._lock:
            found = self._access.get(token)
            return found is not None and not found[0].revoked and found[1] > self.clock()

    def revoke(self) -> int:
        with self._lock:
            live = [g for g in self._grants.values() if not g.revoked]
            for grant in live:
                grant.revoked = True
            return len(live)

    def expire_access_tokens(self) -> int:
        with self._lock:
            now = self.clock()
            for token, (grant, _expires) in list(self._access.items()):
                self._access[token] = (grant, now)
            return len(self._access)

    # ----- the token endpoint --------------------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> JSONResponse:
        grant_type = form.get("grant_type", "")
        with self._lock:
            self.calls[grant_type or "missing"] += 1
            self.calls["total"] += 1
            if not self._client_ok(form.get("client_id", ""), form.get("client_secret", "")):
                return _oauth_error("invalid_client", "Client authentication failed.", 401)
            if grant_type == "authorization_code":
                return self._code_grant(form)
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
            return _oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported.")

    def _code_grant(self, form: dict[str, str]) -> JSONResponse:
        code = self._codes.get(form.get("code", ""))
        if code is None or code.used or code.expires_at <= self.clock() or code.grant.revoked:
            return _oauth_error("invalid_grant", "The authorization code is invalid, expired or used.")
        if code.grant.client_id != form.get("client_id") or code.redirect_uri != form.get("redirect_uri", ""):
            return _oauth_error("invalid_grant", "redirect_uri or client_id does not match the authorization.")
        verifier = form.get("code_verifier")
        if code.challenge is not None and (not verifier or s256(verifier) != code.challenge):
            return _oauth_error("invalid_grant", "PKCE verification failed.")
        code.used = True
        return JSONResponse(self._pair(code.grant))

    def _refresh_grant(self, form: dict[str, str]) -> JSONResponse:
        token = form.get("refresh_token", "")
        found = self._refresh.get(token)
        if found is None or found[1] or found[0].revoked:
            return _oauth_error("invalid_grant", "The refresh token is invalid, revoked or already used.")
        grant = found[0]
        if grant.client_id != form.get("client_id"):
            return _oauth_error("invalid_grant", "The refresh token was issued to another client.")
        if self.config.rotate_refresh_tokens:
            self._refresh[token] = (grant, True)
            return JSONResponse(self._pair(grant))
        return JSONResponse(self._pair(grant, refresh=token))

    def take_fault(self) -> EndpointFault:
        with self._lock:
            if self.config.endpoint_fault == "none" or self.config.endpoint_fault_count <= 0:
                return "none"
            self.config = replace(self.config, endpoint_fault_count=self.config.endpoint_fault_count - 1)
            self.calls["faulted"] += 1
            return self.config.endpoint_fault

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {
                "token_calls": dict(self.calls),
                "grants": len(self._grants),
                "revoked_grants": sum(g.revoked for g in self._grants.values()),
                "access_tokens_live": sum(
                    1 for g, exp in self._access.values() if not g.revoked and exp > self.clock()
                ),
                "config": {
                    "access_token_lifetime_s": self.config.access_token_lifetime_s,
                    "rotate_refresh_tokens": self.config.rotate_refresh_tokens,
                    "pkce": self.config.pkce,
                    "endpoint_fault": self.config.endpoint_fault,
                    "endpoint_fault_count": self.config.endpoint_fault_count,
                },
            }


def _authorize_error(redirect_uri: str, state: str | None, error: str) -> Response:
    query = {"error": error, **({"state": state} if state is not None else {})}
    return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}", 302)


def routes(sandbox: WaveSandbox, server: OAuthServer) -> list[Route]:
    """The OAuth endpoints and their /_admin routes, for the sandbox's route table."""

    async def authorize(request: Request) -> Response:
        q = request.query_params
        client_id, redirect_uri, state = q.get("client_id", ""), q.get("redirect_uri", ""), q.get("state")
        if not server._client_ok(client_id, None):
            return _oauth_error("invalid_client", "Unknown client_id.")
        if not redirect_uri.startswith(("http://", "https://")):
            return _oauth_error("invalid_request", "redirect_uri is required by the sandbox.")
        if q.get("response_type") != "code":
            return _authorize_error(redirect_uri, state, "unsupported_response_type")
        scopes = q.get("scope", "").split()
        if not scopes or any(s not in KNOWN_SCOPES for s in scopes):
            return _authorize_error(redirect_uri, state, "invalid_scope")
        challenge = q.get("code_challenge")
        if challenge is not None and q.get("code_challenge_method", "plain") != "S256":
            return _authorize_error(redirect_uri, state, "invalid_request")
        if challenge is None and server.config.pkce == "required":
            return _authorize_error(redirect_uri, state, "invalid_request")
        code = server.issue_code(client_id, redirect_uri, " ".join(scopes), challenge)
        query = {"code": code, **({"state": state} if state is not None else {})}
        return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(query)}", 302)

    async def token(request: Request) -> Response:
        fault = server.take_fault()
        if fault == "error_500":
            return JSONResponse({"error": "server_error"}, status_code=500)
        if fault == "html":
            return Response("<html><body>Bad gateway</body></html>", 502, media_type="text/html")
        if fault == "hang":
            await asyncio.sleep(server.config.hang_s)
            return JSONResponse({"error": "temporarily_unavailable"}, status_code=504)
        if fault == "malformed":
            # Answered before the grant is used: the client must keep its refresh token, which still works.
            return JSONResponse({"token_type": "Bearer", "expires_in": "soon"})
        form = {k: str(v) for k, v in (await request.form()).items()}
        return server.token(form)

    async def admin_code(request: Request) -> Response:
        body = await sandbox._json(request)
        client_id = str(body.get("client_id") or server.config.clients[0][0])
        code = server.issue_code(
            client_id,
            str(body.get("redirect_uri") or ""),
            str(body.get("scope") or "business:read"),
            str(body["code_challenge"]) if body.get("code_challenge") else None,
        )
        return JSONResponse({"code": code})

    async def admin_revoke(_request: Request) -> Response:
        return JSONResponse({"revoked": server.revoke()})

    async def admin_expire(_request: Request) -> Response:
        return JSONResponse({"expired": server.expire_access_tokens()})

    async def admin_state(request: Request) -> Response:
        if request.method == "PATCH":
            body = await sandbox._json(request)
            unknown = set(body) - ADMIN_SETTINGS
            if unknown:
                return JSONResponse({"error": f"unknown settings: {sorted(unknown)}"}, status_code=422)
            server.configure(**body)
        return JSONResponse(server.counters())

    return [
        Route("/oauth2/authorize/", authorize, methods=["GET"]),
        Route("/oauth2/token/", token, methods=["POST"]),
        Route("/_admin/oauth", admin_state, methods=["GET", "PATCH"]),
        Route("/_admin/oauth/code", admin_code, methods=["POST"]),
        Route("/_admin/oauth/revoke", admin_revoke, methods=["POST"]),
        Route("/_admin/oauth/expire", admin_expire, methods=["POST"]),
    ]


def attach_root_queries(sandbox: WaveSandbox, user: OAuthUser) -> None:
    """Resolvers of `Query.user` and `Query.businesses`: where a client finds out who and where it is."""
    # Imported here: sandboxes/wave/config.py imports this module, and the store imports the config.
    from sandboxes.wave.store import paginate
    from sandboxes.wave.values import format_datetime

    schema, render, store = sandbox.schema, sandbox.render, sandbox.store
    assert schema.query_type is not None
    created = format_datetime(min((b.created_at for b in store.businesses.values()), default=sandbox.config.clock()))
    user_id = base64.b64encode(f"User:{user.uuid}".encode()).decode()

    def resolve_user(_root: Any, _info: Any) -> dict[str, Any]:
        return {
            "id": user_id,
            "defaultEmail": user.email,
            "firstName": user.first_name,
            "lastName": user.last_name,
            "createdAt": created,
            "modifiedAt": created,
        }

    def resolve_businesses(_root: Any, _info: Any, page: int = 1, pageSize: int = 10) -> dict[str, Any]:
        rows, info = paginate(list(store.businesses.values()), max(page, 1), store.page_size(pageSize))
        return {"pageInfo": info, "edges": [{"node": render.business(b)} for b in rows]}

    schema.query_type.fields["user"].resolve = resolve_user
    schema.query_type.fields["businesses"].resolve = resolve_businesses
