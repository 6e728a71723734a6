"""`wavesync connect wave`: authorize wavesync at Wave (OAuth2), store the tokens encrypted, resume a paused sync.

The authorize URL carries the scopes, a random `state` and a PKCE S256 challenge. Wave's own OAuth guide lists no
PKCE parameters and one third-party pack says S256 is supported (reference notes §1); RFC 6749 §3.1 has servers
ignore parameters they do not know, so sending it costs nothing where it is unsupported and protects the code where
it is. The redirect comes back to a loopback server (`http://127.0.0.1:<port>/callback`), or a person pastes the code
and state from it (`--code … --state …`; the pending authorization is kept in the data directory in between).
Nothing printed here contains a token or the client secret.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

from shared.errors import SyncError
from shared.settings import Settings
from shared.store import credentials
from shared.store.credentials import Cipher, CredentialKeyError
from shared.store.db import Database
from shared.wave.auth import GrantRefusedError, TokenAnswer, token_endpoint
from shared.wave.client import WaveClient

DEFAULT_PORT = 8765
PENDING_FILE = "connect-wave.json"
WHO_AM_I = """
query WhoAmI {
  user { id defaultEmail firstName lastName }
  businesses(page: 1, pageSize: 50) { edges { node { id name isArchived } } }
}
"""

Echo = Callable[[str], None]


class ConnectError(Exception):
    """One line for the operator; the command exits 1."""


@dataclass(frozen=True)
class Pending:
    """An authorization in progress: what the redirect must match and what the code exchange needs."""

    state: str
    verifier: str
    redirect_uri: str
    created_at: str

    @classmethod
    def new(cls, redirect_uri: str) -> Pending:
        return cls(
            state=secrets.token_urlsafe(24),
            verifier=secrets.token_urlsafe(48),
            redirect_uri=redirect_uri,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    @property
    def challenge(self) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(self.verifier.encode()).digest()).rstrip(b"=").decode()

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the verifier is for this user only
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self.__dict__, out)

    @classmethod
    def load(cls, path: Path) -> Pending:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{k: str(data[k]) for k in ("state", "verifier", "redirect_uri", "created_at")})
        except FileNotFoundError:
            raise ConnectError(
                "no authorization in progress: run `wavesync connect wave` first, then paste the code it led to"
            ) from None
        except (ValueError, KeyError, TypeError):
            raise ConnectError(f"{path} is damaged: run `wavesync connect wave` again") from None


def authorize_url(settings: Settings, pending: Pending) -> str:
    query = {
        "client_id": settings.wave_client_id,
        "response_type": "code",
        "scope": settings.wave_scopes,
        "redirect_uri": pending.redirect_uri,
        "state": pending.state,
        "code_challenge": pending.challenge,
        "code_challenge_method": "S256",
    }
    return str(settings.wave_oauth_url).rstrip("/") + "/authorize/?" + urlencode(query)


# A connection that sends nothing (a port scanner, a half-open socket) must not stall the one-at-a-time server.
HANDLER_TIMEOUT_S = 10.0


def state_matches(params: dict[str, str], pending: Pending) -> bool:
    """Whether a redirect carries this authorization's state (constant-time; a missing state never matches)."""
    given = params.get("state")
    return given is not None and secrets.compare_digest(given.encode(), pending.state.encode())


def wait_for_redirect(
    port: int,
    timeout: float,
    ready: threading.Event | None = None,
    *,
    pending: Pending | None = None,
    echo: Echo | None = None,
) -> dict[str, str]:
    """Serve `http://127.0.0.1:<port>/callback` until a redirect arrives; its query parameters. With `pending`, a
    redirect whose state does not match is answered, reported and ignored (anything on this machine can open that
    address) and the wait goes on until the deadline."""
    received: dict[str, str] = {}

    class Callback(BaseHTTPRequestHandler):
        timeout = HANDLER_TIMEOUT_S

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path != "/callback":
                self.send_error(404)
                return
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            if pending is not None and not state_matches(params, pending):
                if echo is not None:
                    echo("ignored a redirect whose state does not match this authorization (stale or forged)")
                self.send_error(400, "state does not match this authorization")
                return
            received.update(params)
            body = b"wavesync received the authorization; you can close this tab and return to the terminal.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # the query holds the code: never log it
            return

    try:
        server = HTTPServer(("127.0.0.1", port), Callback)
    except OSError as exc:
        raise ConnectError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another --port") from None
    server.timeout = 0.5
    deadline = datetime.now(UTC).timestamp() + timeout
    if ready is not None:
        ready.set()
    try:
        while not received and datetime.now(UTC).timestamp() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    if not received:
        raise ConnectError(
            f"no redirect arrived within {timeout:.0f}s: run again, or paste the code with --code and --state"
        )
    return received


def _check_redirect(params: dict[str, str], pending: Pending) -> str:
    if not state_matches(params, pending):
        raise ConnectError(
            "the redirect's state does not match this authorization (a stale or forged redirect): nothing was "
            "stored; run `wavesync connect wave` again"
        )
    if params.get("error"):
        raise ConnectError(f"Wave refused the authorization: {params['error'][:60]}")
    code = params.get("code")
    if not code:
        raise ConnectError("the redirect carries no code: run `wavesync connect wave` again")
    return code


def _exchange(settings: Settings, code: str, pending: Pending) -> TokenAnswer:
    endpoint = token_endpoint(settings)
    try:
        return endpoint.exchange_code(code, pending.redirect_uri, pending.verifier)
    except GrantRefusedError as exc:
        raise ConnectError(
            f"Wave refused the code ({exc.code}): codes are single-use and expire within minutes; "
            "run `wavesync connect wave` again"
        ) from None
    except SyncError as exc:
        raise ConnectError(f"the code exchange failed: {exc.message}; run `wavesync connect wave` again") from None
    finally:
        endpoint.close()


def who_am_i(settings: Settings, access_token: str) -> tuple[str, list[dict[str, Any]]]:
    """Who the token belongs to and the businesses it reaches (Query.user, Query.businesses)."""
    url, business = str(settings.wave_url), settings.wave_business_id
    with WaveClient(url, access_token, business, timeout=settings.http_timeout) as client:
        data = client.execute("whoAmI", WHO_AM_I, {})
    user = data.get("user") or {}
    name = " ".join(str(user.get(k) or "") for k in ("firstName", "lastName")).strip() or "(no name)"
    email = user.get("defaultEmail") or "(no email)"
    edges = (data.get("businesses") or {}).get("edges") or []
    return f"{name} <{email}>", [e["node"] for e in edges if isinstance(e, dict) and e.get("node")]


def connect_wave(
    settings: Settings,
    *,
    code: str | None = None,
    state: str | None = None,
    open_browser: bool = False,
    listen: bool = True,
    port: int = DEFAULT_PORT,
    timeout: float = 300.0,
    echo: Echo = print,
    ready: threading.Event | None = None,
) -> None:
    """The whole command; raises ConnectError with one line for the operator."""
    if settings.wave_auth != "oauth":
        raise ConnectError("WAVESYNC_WAVE_AUTH is `token`: set it to `oauth` (see docs/connecting.md)")
    pending_path = settings.data_dir / PENDING_FILE
    if code is not None or state is not None:
        if not code or not state:
            raise ConnectError("--code and --state go together (both are in the redirect's address)")
        pending = Pending.load(pending_path)
        authorization_code = _check_redirect({"code": code, "state": state}, pending)
    else:
        pending = Pending.new(f"http://127.0.0.1:{port}/callback")
        pending.save(pending_path)
        url = authorize_url(settings, pending)
        echo("Open this address, sign in to Wave and allow access:")
        echo(url)
        if open_browser:
            webbrowser.open(url)
        if not listen:
            echo("Then run: wavesync connect wave --code CODE --state STATE (both from the address Wave sends you to)")
            return
        echo(f"Waiting for Wave's redirect on {pending.redirect_uri} …")
        params = wait_for_redirect(port, timeout, ready, pending=pending, echo=echo)
        authorization_code = _check_redirect(params, pending)
    answer = _exchange(settings, authorization_code, pending)
    pending_path.unlink(missing_ok=True)
    try:
        cipher = Cipher(settings.secret_keys())
    except ValueError as exc:
        raise ConnectError(str(exc)) from None
    db = Database(settings.database_url)
    previous = credentials.state(db, "wave")
    credentials.connect(
        db,
        cipher,
        "wave",
        access_token=answer.access_token,
        refresh_token=answer.refresh_token or "",
        expires_at=answer.expires_at(datetime.now(UTC)),
        scopes=answer.scope or settings.wave_scopes,
    )
    if not answer.refresh_token:
        echo("warning: Wave issued no refresh token; the sync will need `connect wave` again when the token expires")
    try:
        who, businesses = who_am_i(settings, answer.access_token)
    except SyncError as exc:
        echo(f"connected, but could not ask Wave who this is: {exc.message}")
        who, businesses = "(unknown)", []
    echo(f"Connected to Wave as {who}.")
    for business in businesses:
        mark = "  <- WAVESYNC_WAVE_BUSINESS_ID" if business.get("id") == settings.wave_business_id else ""
        echo(f"  business: {business.get('name')} ({business.get('id')}){mark}")
    if businesses and not any(b.get("id") == settings.wave_business_id for b in businesses):
        echo("warning: WAVESYNC_WAVE_BUSINESS_ID is not among the businesses this authorization reaches")
    if previous is not None and previous["state"] != credentials.CONNECTED:
        echo(f"The paused sync resumes (it waited since {previous['since'].isoformat(timespec='seconds')}).")


def rekey(settings: Settings, echo: Echo = print) -> None:
    """Re-encrypt the stored tokens with the first WAVESYNC_SECRET_KEY key (after adding a new key in front)."""
    try:
        done = credentials.reencrypt(Database(settings.database_url), Cipher(settings.secret_keys()), "wave")
    except (CredentialKeyError, ValueError) as exc:
        raise ConnectError(str(exc)) from None
    echo("stored Wave tokens re-encrypted with the first key" if done else "no Wave tokens stored yet")
