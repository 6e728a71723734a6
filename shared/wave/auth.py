"""Where the Wave client's Bearer token comes from: a static full-access token, or OAuth2 tokens refreshed fleet-wide.

OAuth2 (docs/connecting.md; reference notes §1, §15). Wave is reported to rotate the refresh token on every refresh,
so a refresh token can be used once: two processes refreshing with the same one would spend it twice and disconnect
the sync. Therefore:

* exactly one refresh at a time across the fleet: a Redis lock around "re-read the store; if another process
  already refreshed (the generation moved), use that; else call the token endpoint, store the new pair, use it".
  The threads of one process queue on a local mutex first, so a process asks Redis once, not once per thread.
  The holder renews the lock while it works (a slow token endpoint or a busy database must not let a second
  process in with the refresh token the first is spending);
* the refresh runs in a thread of its own, which holds the lock until the answer is stored (or the call definitely
  failed) and releases it itself; the caller only waits. A caller interrupted while waiting (Celery's soft time
  limit raises in the task's thread) or out of patience (it waits the endpoint's timeout) therefore loses nothing:
  the answer that spent the old refresh token is still stored, and nobody else refreshes before it is. The call
  itself has an overall deadline inside the lock's lease, so a holder whose renewals fail is done before another
  may start;
* the new pair is stored (one conditional UPDATE, shared/store/credentials.py) before anything uses it; a write
  that fails after Wave rotated is retried a few times under the lock, because the answer cannot be asked for again,
  and if it still fails the process keeps the pair in memory, works with it and stores it at its next refresh;
* a refresh happens before expiry (from `expires_in`, with a margin) and once when Wave refuses the token (HTTP 401
  or a 200 carrying `UNAUTHENTICATED`, decided by the client);
* a refusal of the refresh token itself (`invalid_grant`, `access_denied`, or HTTP 403, which Wave reportedly
  answers when the Pro subscription lapsed) puts the connection in `needs_reauthorization`: every caller then gets
  PausedError until `wavesync connect wave`;
* a refusal of the client (`invalid_client`, `unauthorized_client`: a wrong client id or secret) is configuration:
  an AuthError that changes nothing stored, because the refresh token was not spent and a fixed secret resumes;
* transient trouble at the token endpoint (timeout, 5xx, 429, an answer without an access token) raises
  TokenEndpointError (a MustWaitError: nothing was sent to Wave, so no write can be pending) and leaves the stored
  pair as it was; an answer with an access token is taken even when its `expires_in` is odd (an hour is assumed).

A process killed after the token endpoint answered and before the new pair was stored leaves the old, now spent,
refresh token in the store: the next refresh is answered `invalid_grant` and the connection enters
`needs_reauthorization`. That is the documented recovery state; `wavesync connect wave` leaves it. No token ever
appears in a message, a log line or an exception raised here.
"""

from __future__ import annotations

import json
import logging
import math
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


def _lifetime(value: Any) -> int | None:
    """`expires_in` as whole seconds: a number or a numeric string (some servers send "7199.5"); None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    # More than a year is as unusable as less than a second (and 1e12 would overflow the expiry's datetime).
    if not isinstance(value, int | float) or not math.isfinite(value) or not 1 <= value <= 366 * 86400:
        return None
    return int(value)


def parse_token_answer(status: int, headers: httpx.Headers, content: bytes, *, what: str) -> TokenAnswer:
    """A TokenAnswer, or the classified error: GrantRefusedError, TokenEndpointError (transient or malformed),
    AuthError.

    A 2xx answer with an access token is taken even when the rest is odd: when it carries a rotated refresh token,
    the refresh token it replaced may be spent already, so throwing the answer away could disconnect the sync."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        body = None
    code = _error_code(body)
    if 200 <= status < 300:
        fields: dict[str, Any] = body if isinstance(body, dict) else {}
        access, refresh, scope = fields.get("access_token"), fields.get("refresh_token"), fields.get("scope")
        if not isinstance(access, str) or not access:
            raise TokenEndpointError(
                f"{what}: the token endpoint answered HTTP {status} without a usable access_token "
                "(malformed answer); the stored refresh token is kept"
            )
        if refresh is not None and (not isinstance(refresh, str) or not refresh):
            log.warning("%s: the token endpoint's refresh_token is unusable; the stored one is kept", what)
            refresh = None
        expires_in = _lifetime(fields.get("expires_in", DEFAULT_EXPIRES_IN_S))
        if expires_in is None:
            log.warning("%s: the token endpoint's expires_in is unusable; assuming %ds", what, DEFAULT_EXPIRES_IN_S)
            expires_in = DEFAULT_EXPIRES_IN_S
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

    `timeout` bounds each network step and, by default, the whole call: a server trickling its answer byte by byte
    cannot hold a call (and the refresh lock) past its deadline, because the answer is read in the calling thread
    and the connection is closed once the deadline passes. OAuthTokens gives its refresh a longer deadline."""

    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        verify: bool = True,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._client_id = client_id
        self._client_secret = client_secret
        self._http = httpx.Client(timeout=timeout, transport=transport, verify=verify, follow_redirects=False)

    def __repr__(self) -> str:
        return f"TokenEndpoint(url={self.url!r})"

    def close(self) -> None:
        self._http.close()

    def refresh(self, refresh_token: str, *, deadline_s: float | None = None) -> TokenAnswer:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._post("refresh", form, deadline_s or self.timeout)

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None) -> TokenAnswer:
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            form["code_verifier"] = code_verifier
        return self._post("code exchange", form, self.timeout)

    def _send(self, form: dict[str, str], deadline_s: float) -> tuple[int, httpx.Headers, bytes]:
        """The POST, in this thread; abandoned (a TimeoutException, the connection closed) when its answer is not
        complete within `deadline_s`."""
        give_up = time.monotonic() + deadline_s
        # httpx's timeouts bound each step (connect, write, one read), not the call, and the deadline is checked
        # between chunks: with steps of a quarter of it, a server trickling its answer ends the call by 1.25x it.
        with self._http.stream(
            "POST", self.url, data=form, headers={"Accept": "application/json"}, timeout=deadline_s / 4
        ) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if time.monotonic() > give_up:
                    break
            if time.monotonic() > give_up:
                raise httpx.TimeoutException(f"no complete answer within {deadline_s:g}s")
            return response.status_code, response.headers, bytes(body)

    def _post(self, what: str, form: dict[str, str], deadline_s: float) -> TokenAnswer:
        form = {**form, "client_id": self._client_id, "client_secret": self._client_secret}
        try:
            status, headers, content = self._send(form, deadline_s)
        except httpx.TimeoutException:
            # Whether Wave acted on the request is unknown: the stored pair is unchanged, and if Wave did rotate it
            # the next refresh is refused and says so.
            raise TokenEndpointError(
                f"{what}: the token endpoint did not answer in time ({deadline_s:g}s); the call was abandoned and "
                "the stored tokens are unchanged"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL):
            raise AuthError(f"{what}: WAVESYNC_WAVE_OAUTH_URL is not a usable URL", system=SYSTEM) from None
        except httpx.HTTPError as exc:
            raise TokenEndpointError(
                f"{what}: {type(exc).__name__} talking to the token endpoint; the stored refresh token is kept"
            ) from None
        return parse_token_answer(status, headers, content, what=what)


def token_endpoint(settings: Settings, transport: httpx.BaseTransport | None = None) -> TokenEndpoint:
    return TokenEndpoint(
        str(settings.wave_oauth_url).rstrip("/") + "/token/",
        settings.wave_client_id,
        settings.wave_client_secret.get_secret_value(),
        timeout=settings.http_timeout,
        transport=transport,
        verify=settings.verify_tls,  # as the API clients do (a TLS-inspecting proxy's own CA, WAVESYNC_VERIFY_TLS)
    )


def describe_pause(state: str, since: datetime, reason: str) -> str:
    what = "needs re-authorization" if state == credentials.NEEDS_REAUTHORIZATION else f"is {state}"
    return (
        f"the Wave connection {what} since {since.isoformat(timespec='seconds')}"
        f"{f' ({reason})' if reason else ''}: run `wavesync connect wave`"
    )


class _StoreFailed(Exception):
    """The pair Wave issued could not be stored within STORE_ATTEMPTS (the error class's name, never its text)."""


@dataclass
class _Refresh:
    """One refresh in flight, run by its own thread; the thread that started it only waits for it."""

    answered: threading.Event = field(default_factory=threading.Event)  # the token endpoint's call is over
    done: threading.Event = field(default_factory=threading.Event)  # stored (or failed) and the lock released
    result: StoredTokens | None = None
    error: Exception | None = None


class OAuthTokens:
    """WAVESYNC_WAVE_AUTH=oauth: the stored access token, refreshed by one process of the fleet at a time.

    The refresh runs in a thread of its own, which holds the fleet lock from before the token call until the answer
    is stored (or the call definitely failed) and releases it itself. The caller only waits for it: a caller
    interrupted while waiting (Celery's soft time limit raises in the task's thread) or tired of waiting cannot
    release the lock early or drop an answer that spent the old refresh token."""

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
        # A caller waits `endpoint.timeout` for Wave's answer; the refresh thread waits longer (an answer that comes
        # late is still stored) but gives up well inside the lease, so a holder whose renewals fail is done first.
        # A call may run a quarter past its deadline (see TokenEndpoint._send): that must still end inside the lease.
        self.call_deadline_s = max(endpoint.timeout, (self.lock_ttl_s - LOCK_MARGIN_S / 3) / 1.25)
        self.store_retry_s = store_retry_s
        self.lock_wait_s = lock_wait_s if lock_wait_s is not None else self.lock_ttl_s + 5.0
        self.clock = clock
        # A test hook: runs after the token endpoint answered and before the pair is stored (see the kill test).
        self._after_token_answer = after_token_answer
        self._cached: StoredTokens | None = None
        # A pair Wave issued that the store refused (its generation is the stored one it replaces): this process
        # goes on with it and stores it at its next refresh, since the stored refresh token is spent.
        self._unsaved: StoredTokens | None = None
        self._running: _Refresh | None = None
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
        if self._unsaved is not None:
            return None  # another process's refusal of the spent token marked the store; this one's pair works
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
            running = self._running
            # A refresh whose caller stopped waiting may still be in flight: its answer lands first. Waiting for it
            # is what another process does on the fleet lock, and as long.
            if running is not None and not running.done.wait(self.lock_wait_s):
                raise MustWaitError("a refresh of the Wave token is still in flight", system=self.system, retry_after=1)
            if self._unsaved is None:
                stored = self._load()
                if self._usable(stored, rejected):
                    return self._use(stored)  # another thread or process refreshed already
            lock = self.redis.lock(
                keys.credential_refresh_lock_key(self.system),
                timeout=self.lock_ttl_s,
                blocking_timeout=self.lock_wait_s,
                thread_local=False,  # the refresh thread and its renewer use the lock this thread took
            )
            if not lock.acquire():
                raise MustWaitError("another process is refreshing the Wave token", system=self.system, retry_after=1)
            job = self._running = _Refresh()
            try:
                # Not a daemon: an interpreter on its way out waits for an issued pair to be stored.
                threading.Thread(target=self._run, args=(job, lock, rejected), name="wavesync-token-refresh").start()
            except BaseException:
                self._running = None
                _release(lock, self.lock_ttl_s)
                raise
            return self._wait(job).access_token

    def _wait(self, job: _Refresh) -> StoredTokens:
        if not job.done.wait(self.endpoint.timeout) and not job.answered.is_set():
            raise TokenEndpointError(
                f"refresh: the token endpoint has not answered within {self.endpoint.timeout:g}s; the refresh goes "
                "on in the background and its answer is stored when it comes",
                retry_after=self.endpoint.timeout,
            )
        # The answer is in: storing it is bounded by STORE_ATTEMPTS, releasing the lock by Redis's socket timeout.
        if not job.done.wait(self.lock_wait_s):
            raise MustWaitError("the Wave token refresh is still being stored", system=self.system, retry_after=1)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _run(self, job: _Refresh, lock: redis.lock.Lock, rejected: str | None) -> None:
        """The refresh thread: holds the lock (renewing its lease) until the answer is stored or the call failed."""
        renewing: _Renewal | None = None
        try:
            renewing = _Renewal(lock, every_s=self.lock_ttl_s / 3)
            job.result = self._cached = self._refresh_held(job, rejected)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting caller, which raises it
            job.error = exc
        finally:
            if renewing is not None:
                renewing.stop()
            _release(lock, self.lock_ttl_s)
            if self._running is job:
                self._running = None
            job.answered.set()
            job.done.set()

    def _current(self) -> StoredTokens:
        """The pair to refresh from: the stored one, or the one this process holds because the store refused it
        (stored now if the store takes it)."""
        unsaved = self._unsaved
        if unsaved is None:
            return self._load()
        try:
            stored = self._replace(unsaved.generation, unsaved, unsaved.scopes)
        except SQLAlchemyError as exc:
            log.warning("the Wave tokens this process holds still cannot be stored (%s)", type(exc).__name__)
            return unsaved
        self._unsaved = None
        if stored is None:
            log.warning("the Wave tokens were replaced (reconnected) while this process held unstored ones")
        else:
            log.info("stored the Wave tokens this process held (generation %d)", stored)
        return self._load()

    def _refresh_held(self, job: _Refresh, rejected: str | None) -> StoredTokens:
        current = self._current()
        if self._usable(current, rejected):
            return current  # another process refreshed already (or this one's held pair is still good)
        self.refreshes += 1
        try:
            answer = self.endpoint.refresh(current.refresh_token, deadline_s=self.call_deadline_s)
        except GrantRefusedError as exc:
            reason = f"token refresh {exc.message.split(': ', 1)[-1]}"
            self._unsaved = self._cached = None
            if credentials.mark_needs_reauthorization(
                self.db, self.system, expected_generation=current.generation, reason=reason
            ):
                log.warning("the Wave connection needs re-authorization (%s): run `wavesync connect wave`", reason)
            return self._load()  # raises PausedError (or returns a pair a reconnect stored meanwhile)
        finally:
            job.answered.set()
        if self._after_token_answer is not None:
            self._after_token_answer()
        issued = StoredTokens(
            access_token=answer.access_token,
            # Wave rotates the refresh token; a server that does not keeps the one that still works.
            refresh_token=answer.refresh_token or current.refresh_token,
            expires_at=answer.expires_at(self.clock()),
            generation=current.generation,
            state=credentials.CONNECTED,
            state_since=self.clock(),
            reason="",
            scopes=answer.scope if answer.scope is not None else current.scopes,
            issued_at=self.clock(),
        )
        try:
            generation = self._store(issued, scopes=answer.scope)
        except _StoreFailed as exc:
            self._unsaved = issued
            log.error(
                "COULD NOT STORE the Wave tokens just issued (%s, %d attempts): this process keeps them in memory "
                "and stores them at its next refresh; other processes' refreshes are refused until then, and if "
                "this process stops first the connection needs `wavesync connect wave`",
                exc,
                STORE_ATTEMPTS,
            )
            return issued
        self._unsaved = None
        if generation is None:
            # Only an operator's reconnect can move the generation under the lock: theirs is the pair to use.
            log.warning("the Wave tokens were replaced while refreshing them; using the stored ones")
            return self._load()
        log.info("refreshed the Wave access token (generation %d, valid %ds)", generation, answer.expires_in)
        return self._load()

    def _replace(self, expected_generation: int, pair: StoredTokens, scopes: str | None) -> int | None:
        return credentials.replace_pair(
            self.db,
            self.cipher,
            self.system,
            expected_generation=expected_generation,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            expires_at=pair.expires_at,
            scopes=scopes,
        )

    def _store(self, issued: StoredTokens, *, scopes: str | None) -> int | None:
        """Store the pair Wave just issued, retrying a failing database while the lock is held: the old refresh
        token is spent, so losing this answer would disconnect the sync. _StoreFailed after STORE_ATTEMPTS."""
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                return self._replace(issued.generation, issued, scopes)
            except SQLAlchemyError as exc:
                # Only the error's class: its text may quote the statement's parameters (the encrypted tokens).
                if attempt == STORE_ATTEMPTS:
                    raise _StoreFailed(type(exc).__name__) from None
                log.warning(
                    "could not store the Wave tokens just issued (%s, attempt %d of %d); trying again",
                    type(exc).__name__,
                    attempt,
                    STORE_ATTEMPTS,
                )
                time.sleep(self.store_retry_s * attempt)
        return None  # not reached: the last attempt returns or raises


def _release(lock: redis.lock.Lock, ttl_s: float) -> None:
    try:
        lock.release()
    except redis.exceptions.LockError:
        log.warning("the Wave token refresh outlived its lock (%.0fs)", ttl_s)
    except redis.exceptions.RedisError as exc:
        # Its lease frees it: a refresh that cannot reach Redis now must still report its outcome.
        log.warning("could not release the Wave token refresh lock (%s)", type(exc).__name__)


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
        self._thread.join(self._every_s)  # a renewal stuck on a frozen Redis must not hold up the refresh's end


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
