"""Where the Wave client's Bearer token comes from: a static full-access token, or OAuth2 tokens refreshed fleet-wide.

OAuth2 (docs/connecting.md; reference notes §1, §15). Wave is reported to rotate the refresh token on every refresh,
so a refresh token can be used once: two processes refreshing with the same one would spend it twice and disconnect
the sync. Therefore:

* exactly one refresh at a time across the fleet: a Redis lock around "re-read the store; if another process
  already refreshed (the generation moved), use that; else call the token endpoint, store the new pair, use it".
  The threads of one process queue on a local mutex first, so a process asks Redis once, not once per thread.
  The holder renews the lock while it works (a slow token endpoint or a busy database must not let a second
  process in with the refresh token the first is spending), and the token call has an overall deadline shorter
  than the lock's lease, so a holder whose renewals fail still finishes its call before another may start;
* the new pair is stored (one conditional UPDATE, shared/store/credentials.py) before anything uses it; a write
  that fails after Wave rotated is retried a few times under the lock, because the answer cannot be asked for again;
* a refresh happens before expiry (from `expires_in`, with a margin) and once when Wave refuses the token (HTTP 401
  or a 200 carrying `UNAUTHENTICATED`, decided by the client);
* a refusal of the refresh token itself (`invalid_grant`, `access_denied`, or HTTP 403, which Wave reportedly
  answers when the Pro subscription lapsed) puts the connection in `needs_reauthorization`: every caller then gets
  PausedError until `wavesync connect wave`;
* a refusal of the client (`invalid_client`, `unauthorized_client`: a wrong client id or secret) is configuration:
  an AuthError that changes nothing stored, because the refresh token was not spent and a fixed secret resumes;
* transient trouble at the token endpoint (timeout, 5xx, 429, a malformed answer) raises TokenEndpointError (a
  MustWaitError: nothing was sent to Wave, so no write can be pending) and leaves the stored pair as it was.

A process killed after the token endpoint answered and before the new pair was stored leaves the old, now spent,
refresh token in the store: the next refresh is answered `invalid_grant` and the connection enters
`needs_reauthorization`. That is the documented recovery state; `wavesync connect wave` leaves it. No token ever
appears in a message, a log line or an exception raised here.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx
import redis
from sqlalchemy.exc import SQLAlchemyError

from shared import keys
from shared.errors import AuthError, MustWaitError, PausedError
from shared.ratelimit import retry_after_seconds
from shared.settings import Settings
from shared.store import credentials
from shared.store.credentials import Cipher, CredentialKeyError, StoredTokens
from shared.store.db import Database
from shared.versions import utcnow

log = logging.getLogger(__name__)

SYSTEM = "wave"
# Refresh this long before expiry, or a quarter of the token's lifetime when that is shorter (a 2 s test token).
REFRESH_MARGIN_S = 60.0
# `expires_in` is missing from some answers in the wild; third-party clients then assume an hour (notes §15).
DEFAULT_EXPIRES_IN_S = 3600
# OAuth error codes (RFC 6749 §5.2) that mean the grant itself is gone: only a person can get a new one.
GRANT_REFUSED = frozenset({"invalid_grant", "access_denied"})
# ... and those that refuse the client (its id or secret), not the grant: the refresh token was not spent.
CLIENT_REFUSED = frozenset({"invalid_client", "unauthorized_client"})
# The lock's lease beyond the token call's overall deadline: time to store the answer before the lease could lapse.
LOCK_MARGIN_S = 15.0
# Attempts at storing a pair Wave already issued (the old refresh token is spent: the answer is all there is).
STORE_ATTEMPTS = 4
STORE_RETRY_S = 1.0
_ERROR_CODE = re.compile(r"^[a-z_]{1,40}$")


class TokenSource(Protocol):
    """What the Wave client asks for its Authorization header."""

    def token(self) -> str:
        """The access token to send now (raises PausedError or RetryableError when there is none)."""
        ...

    def refresh(self, rejected: str) -> str | None:
        """Wave refused `rejected`: a token to try once more, or None when there is nothing to refresh."""
        ...

    def paused(self) -> str | None:
        """Why work that needs Wave must wait for a person now, or None."""
        ...


class StaticToken:
    """WAVESYNC_WAVE_AUTH=token: the configured full-access token, sent as it is."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticToken(***)"

    def token(self) -> str:
        return self._token

    def refresh(self, rejected: str) -> str | None:
        return None

    def paused(self) -> str | None:
        return None


class TokenEndpointError(MustWaitError):
    """The token endpoint could not give a token now (timeout, 5xx, 429, a malformed answer): the work waits and
    tries again. A MustWaitError because nothing was sent to Wave: no write of the record can still land."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, system=SYSTEM, retry_after=retry_after)


class GrantRefusedError(AuthError):
    """The token endpoint refused the grant for good (a spent or revoked refresh token, a used code)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, system=SYSTEM)
        self.code = code


@dataclass(frozen=True)
class TokenAnswer:
    """A successful token-endpoint answer; `refresh_token` is None when the server did not rotate it."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_in: int
    scope: str | None

    def expires_at(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.expires_in)


def _error_code(body: Any) -> str:
    code = body.get("error") if isinstance(body, dict) else None
    # Only a well-formed code goes into a message: the body itself may echo the client secret (notes §15).
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else ""


def parse_token_answer(status: int, headers: httpx.Headers, content: bytes, *, what: str) -> TokenAnswer:
    """A TokenAnswer, or the classified error: GrantRefusedError, TokenEndpointError (transient or malformed),
    AuthError."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        body = None
    code = _error_code(body)
    if 200 <= status < 300:
        access = body.get("access_token") if isinstance(body, dict) else None
        refresh = body.get("refresh_token") if isinstance(body, dict) else None
        expires = body.get("expires_in", DEFAULT_EXPIRES_IN_S) if isinstance(body, dict) else None
        scope = body.get("scope") if isinstance(body, dict) else None
        try:
            expires_in = int(expires) if expires is not None and not isinstance(expires, bool) else -1
        except (TypeError, ValueError):
            expires_in = -1
        if (
            not isinstance(access, str)
            or not access
            or (refresh is not None and (not isinstance(refresh, str) or not refresh))
            or expires_in <= 0
        ):
            raise TokenEndpointError(
                f"{what}: the token endpoint answered HTTP {status} without a usable access_token/expires_in "
                "(malformed answer); the stored refresh token is kept"
            )
        return TokenAnswer(access, refresh, expires_in, scope if isinstance(scope, str) else None)
    if code in GRANT_REFUSED or status == 403:
        hint = " (Wave answers 403 when the business's Pro/Advisor subscription lapsed)" if status == 403 else ""
        raise GrantRefusedError(f"{what}: refused with {code or f'HTTP {status}'}{hint}", code=code or str(status))
    if code in CLIENT_REFUSED:
        raise AuthError(
            f"{what}: the token endpoint refused the client with {code}: check WAVESYNC_WAVE_CLIENT_ID and "
            "WAVESYNC_WAVE_CLIENT_SECRET (the stored tokens are kept)",
            system=SYSTEM,
        )
    if status in (408, 425, 429) or status >= 500:
        raise TokenEndpointError(
            f"{what}: the token endpoint answered HTTP {status}; the stored refresh token is kept",
            retry_after=retry_after_seconds(headers),
        )
    if 300 <= status < 400:
        raise AuthError(f"{what}: the token endpoint redirected (check WAVESYNC_WAVE_OAUTH_URL)", system=SYSTEM)
    raise AuthError(f"{what}: the token endpoint answered HTTP {status} {code or '(no error code)'}", system=SYSTEM)


class TokenEndpoint:
    """Wave's `oauth2/token/` (form-encoded, client_id and client_secret in the body, no redirects followed).

    `timeout` bounds each network step (httpx's timeouts are per read) and also the whole call: a server trickling
    its answer byte by byte cannot hold a call (and the refresh lock) past it."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=False)

    def __repr__(self) -> str:
        return f"TokenEndpoint(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def refresh(self, refresh_token: str) -> TokenAnswer:
        return self._post("refresh", {"grant_type": "refresh_token", "refresh_token": refresh_token})

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None) -> TokenAnswer:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._post("code exchange", form)

    def _send(self, form: dict[str, str]) -> httpx.Response:
        """The POST, abandoned (a TimeoutException) when it is not done by the overall deadline."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["response"] = self._http.post(self.url, data=form, headers={"Accept": "application/json"})
            except Exception as exc:  # noqa: BLE001 - handed to the caller, which classifies it
                outcome["error"] = exc

        call = threading.Thread(target=run, name="wavesync-token-call", daemon=True)
        call.start()
        call.join(self.timeout)
        if call.is_alive():
            # Its own per-read timeouts end the abandoned call soon; whatever it gets is discarded.
            raise httpx.TimeoutException(f"no complete answer within {self.timeout:.1f}s")
        if "error" in outcome:
            raise outcome["error"]
        response: httpx.Response = outcome["response"]
        return response

    def _post(self, what: str, form: dict[str, str]) -> TokenAnswer:
        form = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
        try:
            response = self._send(form)
        except httpx.TimeoutException:
            raise TokenEndpointError(
                f"{what}: the token endpoint did not answer in time; the stored refresh token is kept"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise AuthError(f"{what}: WAVESYNC_WAVE_OAUTH_URL is not a usable URL", system=SYSTEM) from None
        except httpx.HTTPError as exc:
            raise TokenEndpointError(
                f"{what}: {type(exc).__name__} talking to the token endpoint; the stored refresh token is kept"
            ) from None
        return parse_token_answer(response.status_code, response.headers, response.content, what=what)


def token_endpoint(settings: Settings, transport: httpx.BaseTransport | None = None) -> TokenEndpoint:
    return TokenEndpoint(
        str(settings.wave_oauth_url).rstrip("/") + "/token/",
        settings.wave_client_id,
        settings.wave_client_secret.get_secret_value(),
        timeout=settings.http_timeout,
        transport=transport,
    )


def describe_pause(state: str, since: datetime, reason: str) -> str:
    what = "needs re-authorization" if state == credentials.NEEDS_REAUTHORIZATION else f"is {state}"
    return (
        f"the Wave connection {what} since {since.isoformat(timespec='seconds')}"
        f"{f' ({reason})' if reason else ''}: run `wavesync connect wave`"
    )


class OAuthTokens:
    """WAVESYNC_WAVE_AUTH=oauth: the stored access token, refreshed by one process of the fleet at a time."""

    def __init__(
        self,
        db: Database,
        client: redis.Redis,
        cipher: Cipher,
        endpoint: TokenEndpoint,
        *,
        system: str = SYSTEM,
        margin_s: float = REFRESH_MARGIN_S,
        lock_wait_s: float | None = None,
        lock_ttl_s: float | None = None,
        store_retry_s: float = STORE_RETRY_S,
        clock: Callable[[], datetime] = utcnow,
        after_token_answer: Callable[[], object] | None = None,
    ) -> None:
        self.db = db
        self.redis = client
        self.cipher = cipher
        self.endpoint = endpoint
        self.system = system
        self.margin_s = margin_s
        # The lease outlives one token-endpoint call (its overall deadline) by a margin, and the holder renews it
        # every third of it while it works; a holder that died frees it when the lease runs out.
        self.lock_ttl_s = lock_ttl_s if lock_ttl_s is not None else endpoint.timeout + LOCK_MARGIN_S
        self.store_retry_s = store_retry_s
        self.lock_wait_s = lock_wait_s if lock_wait_s is not None else self.lock_ttl_s + 5.0
        self.clock = clock
        # A test hook: runs after the token endpoint answered and before the pair is stored (see the kill test).
        self._after_token_answer = after_token_answer
        self._cached: StoredTokens | None = None
        self._mutex = threading.Lock()
        self.refreshes = 0  # token-endpoint calls this process made (tests, logs)

    def __repr__(self) -> str:
        return f"OAuthTokens(system={self.system!r})"

    # ----- TokenSource ---------------------------------------------------------------------------------------------

    def token(self) -> str:
        cached = self._cached
        if cached is not None and not self._expiring(cached):
            return cached.access_token
        return self._fresh(rejected=None)

    def refresh(self, rejected: str) -> str | None:
        return self._fresh(rejected=rejected)

    def paused(self) -> str | None:
        found = credentials.state(self.db, self.system)
        if found is None:
            return "Wave is not connected yet: run `wavesync connect wave`"
        if found["state"] != credentials.CONNECTED:
            return describe_pause(found["state"], found["since"], found["reason"])
        return None

    # ----- the refresh -------------------------------------------------------------------------------------------

    def _margin(self, stored: StoredTokens) -> float:
        lifetime = stored.lifetime_s
        return min(self.margin_s, lifetime / 4) if lifetime and lifetime > 0 else self.margin_s

    def _expiring(self, stored: StoredTokens) -> bool:
        return stored.expires_within(self.clock(), self._margin(stored))

    def _usable(self, stored: StoredTokens, rejected: str | None) -> bool:
        return stored.access_token != rejected and not self._expiring(stored)

    def _load(self) -> StoredTokens:
        try:
            stored = credentials.read(self.db, self.cipher, self.system)
        except CredentialKeyError as exc:
            # The tokens stay as they are: the right key (or a new connect) brings the connection back.
            raise PausedError(str(exc), system=self.system) from None
        if stored is None:
            raise PausedError("Wave is not connected yet: run `wavesync connect wave`", system=self.system)
        if stored.state != credentials.CONNECTED:
            raise PausedError(describe_pause(stored.state, stored.state_since, stored.reason), system=self.system)
        return stored

    def _use(self, stored: StoredTokens) -> str:
        self._cached = stored
        return stored.access_token

    def _fresh(self, rejected: str | None) -> str:
        with self._mutex:
            stored = self._load()
            if self._usable(stored, rejected):
                return self._use(stored)  # another thread or process refreshed already
            lock = self.redis.lock(
                keys.credential_refresh_lock_key(self.system),
                timeout=self.lock_ttl_s,
                blocking_timeout=self.lock_wait_s,
                thread_local=False,  # the renewing thread extends the lease this thread holds
            )
            if not lock.acquire():
                raise MustWaitError("another process is refreshing the Wave token", system=self.system, retry_after=1)
            renewing = _Renewal(lock, every_s=self.lock_ttl_s / 3)
            try:
                stored = self._load()
                if self._usable(stored, rejected):
                    return self._use(stored)
                return self._use(self._refresh_locked(stored))
            finally:
                renewing.stop()
                try:
                    lock.release()
                except redis.exceptions.LockError:
                    log.warning("the Wave token refresh outlived its lock (%.0fs)", self.lock_ttl_s)

    def _refresh_locked(self, stored: StoredTokens) -> StoredTokens:
        self.refreshes += 1
        try:
            answer = self.endpoint.refresh(stored.refresh_token)
        except GrantRefusedError as exc:
            reason = f"token refresh {exc.message.split(': ', 1)[-1]}"
            if credentials.mark_needs_reauthorization(
                self.db, self.system, expected_generation=stored.generation, reason=reason
            ):
                log.warning("the Wave connection needs re-authorization (%s): run `wavesync connect wave`", reason)
            self._cached = None
            return self._load()  # raises PausedError (or returns a pair a reconnect stored meanwhile)
        if self._after_token_answer is not None:
            self._after_token_answer()
        generation = self._store(stored, answer)
        if generation is None:
            # Only an operator's reconnect can move the generation under the lock: theirs is the pair to use.
            log.warning("the Wave tokens were replaced while refreshing them; using the stored ones")
            return self._load()
        log.info("refreshed the Wave access token (generation %d, valid %ds)", generation, answer.expires_in)
        return self._load()

    def _store(self, stored: StoredTokens, answer: TokenAnswer) -> int | None:
        """Store the pair Wave just issued, retrying a failing database while the lock is held: the old refresh
        token is spent, so losing this answer would disconnect the sync."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return credentials.replace_pair(
                    self.db,
                    self.cipher,
                    self.system,
                    expected_generation=stored.generation,
                    access_token=answer.access_token,
                    # Wave rotates the refresh token; a server that does not keeps the one that still works.
                    refresh_token=answer.refresh_token or stored.refresh_token,
                    expires_at=answer.expires_at(self.clock()),
                    scopes=answer.scope,
                )
            except SQLAlchemyError as exc:
                # Only the error's class: its text may quote the statement's parameters (the encrypted tokens).
                if attempt == STORE_ATTEMPTS:
                    log.error(
                        "COULD NOT STORE the Wave tokens just issued (%s, %d attempts): the old refresh token is "
                        "spent, so the next refresh will be refused and the connection will need "
                        "`wavesync connect wave`",
                        type(exc).__name__,
                        attempt,
                    )
                    raise TokenEndpointError(
                        f"refresh: the new Wave tokens could not be stored ({type(exc).__name__})"
                    ) from None
                log.error(
                    "could not store the Wave tokens just issued (%s, attempt %d of %d); trying again",
                    type(exc).__name__,
                    attempt,
                    STORE_ATTEMPTS,
                )
                time.sleep(self.store_retry_s * attempt)
        return None  # not reached: the last attempt returns or raises


class _Renewal:
    """Extends a held lock's lease every `every_s` until stopped (the refresh holds it however long it takes)."""

    def __init__(self, lock: redis.lock.Lock, *, every_s: float) -> None:
        self._lock = lock
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wavesync-token-lock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            try:
                self._lock.reacquire()
            except redis.exceptions.LockNotOwnedError:
                log.warning("the Wave token refresh lost its lock before it finished")
                return
            except redis.exceptions.RedisError as exc:
                log.warning("could not renew the Wave token refresh lock: %s", exc)  # tried again next round

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def token_source(settings: Settings, db: Database, client: redis.Redis) -> TokenSource:
    """The TokenSource WAVESYNC_WAVE_AUTH asks for."""
    if settings.wave_auth == "token":
        return StaticToken(settings.wave_token.get_secret_value())
    return OAuthTokens(db, client, Cipher(settings.secret_keys()), token_endpoint(settings))


__all__ = [
    "GrantRefusedError",
    "OAuthTokens",
    "StaticToken",
    "TokenAnswer",
    "TokenEndpoint",
    "TokenEndpointError",
    "TokenSource",
    "parse_token_answer",
    "token_endpoint",
    "token_source",
]
