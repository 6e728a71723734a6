"""The Wave token manager against the real sandbox, a real Redis and a real link store: refresh, rotation, one refresh
across the fleet, the kill-after-answer recovery, pauses, and every bad input keeping the refresh token."""

from __future__ import annotations

import json
import logging
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from cryptography.fernet import Fernet

from sandboxes.serve import ServerThread
from sandboxes.wave import DEFAULT_BUSINESS_ID, ManualClock, WaveSandboxConfig, create_app
from sandboxes.wave.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from shared import keys
from shared.errors import AuthError, MustWaitError, PausedError
from shared.settings import Settings
from shared.store import credentials
from shared.store.credentials import Cipher
from shared.store.db import Database, upgrade
from shared.wave.auth import (
    GrantRefusedError,
    OAuthTokens,
    TokenEndpoint,
    TokenEndpointError,
    parse_token_answer,
    token_endpoint,
)
from shared.wave.client import WaveClient
from wavesync.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[3]
REDIRECT = "http://127.0.0.1:9/callback"


@pytest.fixture(scope="module")
def box() -> Iterator[ServerThread]:
    server = ServerThread(create_app(WaveSandboxConfig())).start()  # refuses a token with 200 + UNAUTHENTICATED
    yield server
    server.stop()


@pytest.fixture(scope="module")
def box_401() -> Iterator[ServerThread]:
    server = ServerThread(create_app(WaveSandboxConfig(auth_failure_status=401))).start()
    yield server
    server.stop()


class Fleet:
    """One test's world: the sandbox, settings for the OAuth mode, the link store and Redis."""

    def __init__(self, box: ServerThread, redis_url: str, tmp: Path, key: str) -> None:
        self.box = box
        self.http = httpx.Client(base_url=box.url, timeout=30)
        self.values: dict[str, Any] = {
            "redis_url": redis_url,
            "database_url": f"sqlite:///{tmp / 'links.db'}",
            "data_dir": str(tmp),
            "wave_url": f"{box.url}/graphql/public",
            "wave_auth": "oauth",
            "wave_client_id": DEFAULT_CLIENT_ID,
            "wave_client_secret": DEFAULT_CLIENT_SECRET,
            "wave_oauth_url": f"{box.url}/oauth2/",
            "secret_key": key,
            "http_timeout": 5.0,
        }
        self.settings = Settings(**self.values)
        upgrade(self.settings.database_url)
        self.db = Database(self.settings.database_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.redis.delete(keys.credential_refresh_lock_key("wave"))
        self.endpoints: list[TokenEndpoint] = []

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()
        self.http.close()
        self.redis.close()

    def connect(self, *, expires_in_past: bool = False) -> None:
        """What `wavesync connect wave` does, without the browser: a code, the exchange, the encrypted pair."""
        code = self.http.post("/_admin/oauth/code", json={"redirect_uri": REDIRECT, "scope": "business:read"})
        endpoint = token_endpoint(self.settings)
        answer = endpoint.exchange_code(code.json()["code"], REDIRECT, None)
        endpoint.close()
        now = datetime.now(UTC)
        credentials.connect(
            self.db,
            Cipher(self.settings.secret_keys()),
            "wave",
            access_token=answer.access_token,
            refresh_token=answer.refresh_token or "",
            expires_at=now - timedelta(seconds=1) if expires_in_past else answer.expires_at(now),
            scopes=answer.scope or "",
        )

    def tokens(self, **kwargs: Any) -> OAuthTokens:
        settings = Settings(**{**self.values, **kwargs.pop("settings", {})})
        cipher = kwargs.pop("cipher", Cipher(settings.secret_keys()))
        endpoint = token_endpoint(settings, transport=kwargs.pop("transport", None))
        self.endpoints.append(endpoint)
        return OAuthTokens(self.db, self.redis, cipher, endpoint, **kwargs)

    def stored(self) -> credentials.StoredTokens:
        found = credentials.read(self.db, Cipher(self.settings.secret_keys()), "wave")
        assert found is not None
        return found

    def token_calls(self) -> dict[str, int]:
        calls: dict[str, int] = self.http.get("/_admin/oauth").json()["token_calls"]
        return calls

    def oauth(self, **changes: Any) -> None:
        self.http.patch("/_admin/oauth", json=changes).raise_for_status()


@pytest.fixture
def fleet(box: ServerThread, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Fleet]:
    httpx.post(f"{box.url}/_admin/reset").raise_for_status()
    world = Fleet(box, redis_server.url, tmp_path, Fernet.generate_key().decode())
    yield world
    world.close()


# ----- the token endpoint's answers, as a table --------------------------------------------------------------------


def _answer(status: int, body: Any = None, text: str | None = None) -> tuple[int, httpx.Headers, bytes]:
    content = text.encode() if text is not None else json.dumps(body).encode()
    return status, httpx.Headers({}), content


TABLE: list[tuple[str, tuple[int, httpx.Headers, bytes], type[Exception]]] = [
    ("not json", _answer(200, text="<html>oops</html>"), TokenEndpointError),
    ("no access_token", _answer(200, {"refresh_token": "r", "expires_in": 60}), TokenEndpointError),
    ("no access_token, odd expires_in", _answer(200, {"refresh_token": "r", "expires_in": "soon"}), TokenEndpointError),
    ("empty access_token", _answer(200, {"access_token": "", "refresh_token": "r"}), TokenEndpointError),
    ("invalid_grant", _answer(400, {"error": "invalid_grant"}), GrantRefusedError),
    ("access_denied", _answer(400, {"error": "access_denied"}), GrantRefusedError),
    ("invalid_client", _answer(401, {"error": "invalid_client"}), AuthError),
    ("unauthorized_client", _answer(400, {"error": "unauthorized_client"}), AuthError),
    ("lapsed subscription 403", _answer(403, text="Forbidden"), GrantRefusedError),
    ("500", _answer(500, text="boom"), TokenEndpointError),
    ("429", _answer(429, {}), TokenEndpointError),
    ("redirect", _answer(302, text=""), AuthError),
    ("400 invalid_request", _answer(400, {"error": "invalid_request"}), AuthError),
]


@pytest.mark.parametrize(("name", "answer", "expected"), TABLE, ids=[t[0] for t in TABLE])
def test_token_endpoint_answers_are_classified(name: str, answer: Any, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught:
        parse_token_answer(*answer, what="refresh")
    assert type(caught.value) is expected
    assert "\n" not in str(caught.value)


def test_an_error_body_echoing_the_client_secret_never_reaches_the_message() -> None:
    body = {"error": "invalid_grant", "error_description": f"bad secret {DEFAULT_CLIENT_SECRET}"}
    with pytest.raises(GrantRefusedError) as caught:
        parse_token_answer(*_answer(400, body), what="refresh")
    assert DEFAULT_CLIENT_SECRET not in str(caught.value)
    weird = {"error": f"x {DEFAULT_CLIENT_SECRET}"}
    with pytest.raises(AuthError) as caught_again:
        parse_token_answer(*_answer(400, weird), what="refresh")
    assert DEFAULT_CLIENT_SECRET not in str(caught_again.value)


ODD_BUT_USABLE: list[tuple[str, dict[str, Any], tuple[str | None, int]]] = [
    ("expires_in a numeric string", {"access_token": "a", "refresh_token": "r", "expires_in": "7199.5"}, ("r", 7199)),
    ("expires_in a float", {"access_token": "a", "refresh_token": "r", "expires_in": 59.9}, ("r", 59)),
    ("expires_in zero", {"access_token": "a", "refresh_token": "r", "expires_in": 0}, ("r", 3600)),
    ("expires_in not a number", {"access_token": "a", "refresh_token": "r", "expires_in": "soon"}, ("r", 3600)),
    ("expires_in negative", {"access_token": "a", "refresh_token": "r", "expires_in": -5}, ("r", 3600)),
    ("expires_in not finite", {"access_token": "a", "refresh_token": "r", "expires_in": "nan"}, ("r", 3600)),
    ("expires_in a boolean", {"access_token": "a", "refresh_token": "r", "expires_in": True}, ("r", 3600)),
    # Would overflow the expiry's datetime after Wave rotated the refresh token.
    ("expires_in absurdly long", {"access_token": "a", "refresh_token": "r", "expires_in": 1e12}, ("r", 3600)),
    ("refresh_token not a string", {"access_token": "a", "refresh_token": 5, "expires_in": 60}, (None, 60)),
]


@pytest.mark.parametrize(("name", "body", "expected"), ODD_BUT_USABLE, ids=[t[0] for t in ODD_BUT_USABLE])
def test_an_answer_with_an_access_token_is_taken_even_when_the_rest_is_odd(
    name: str, body: dict[str, Any], expected: tuple[str | None, int]
) -> None:
    """The refresh token it replaced may be spent already: throwing the answer away could disconnect the sync."""
    answer = parse_token_answer(*_answer(200, body), what="refresh")
    assert (answer.access_token, answer.refresh_token, answer.expires_in) == ("a", *expected)


def test_a_good_answer_without_a_rotated_refresh_token_keeps_none() -> None:
    answer = parse_token_answer(*_answer(200, {"access_token": "a", "expires_in": 60}), what="refresh")
    assert (answer.refresh_token, answer.expires_in) == (None, 60)
    assert "a" not in repr(answer).replace("TokenAnswer", "").replace("scope", "").replace("expires", "")


# ----- refresh and rotation -----------------------------------------------------------------------------------------


def test_a_token_near_expiry_is_refreshed_and_the_rotated_pair_stored_before_use(fleet: Fleet) -> None:
    fleet.connect()
    clock = ManualClock(datetime.now(UTC))
    tokens = fleet.tokens(clock=clock)
    first = tokens.token()
    assert first == fleet.stored().access_token
    assert tokens.refreshes == 0
    old_refresh = fleet.stored().refresh_token
    clock.advance(3600 - 30)  # inside the margin: refresh before Wave would refuse it
    second = tokens.token()
    stored = fleet.stored()
    assert second != first
    assert second == stored.access_token
    assert stored.refresh_token != old_refresh
    assert stored.generation == 2
    assert fleet.token_calls()["refresh_token"] == 1
    assert tokens.token() == second  # cached: no more calls
    assert fleet.token_calls()["refresh_token"] == 1


@pytest.mark.parametrize("answer", ["200 UNAUTHENTICATED", "401"])
def test_a_refused_access_token_is_refreshed_once_and_the_call_made_again(
    answer: str, box_401: ServerThread, redis_server: EmbeddedRedis, tmp_path: Path, fleet: Fleet
) -> None:
    if answer == "401":
        httpx.post(f"{box_401.url}/_admin/reset").raise_for_status()
        (tmp_path / "401").mkdir()
        fleet = Fleet(box_401, redis_server.url, tmp_path / "401", Fernet.generate_key().decode())
    fleet.connect()
    tokens = fleet.tokens()
    client = WaveClient(fleet.settings.wave_url.unicode_string(), tokens, DEFAULT_BUSINESS_ID)
    with client:
        assert client.get_business().id == DEFAULT_BUSINESS_ID
        fleet.http.post("/_admin/oauth/expire").raise_for_status()  # Wave forgets it; our clock says it is valid
        assert client.get_business().id == DEFAULT_BUSINESS_ID
    assert fleet.token_calls()["refresh_token"] == 1


def test_sixteen_threads_in_two_processes_hitting_expiry_make_one_refresh(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.shared.wave.oauth_child", json.dumps(fleet.values), "8", "ready"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for child in children:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"  # blocks until that interpreter is set up
    start_at = time.time() + 0.5  # both are up: all sixteen threads go at one instant
    results = []
    for child in children:
        out, err = child.communicate(f"{start_at}\n", timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["errors"] for r in results] == [[], []]
    seen = [t for r in results for t in r["tokens"]]
    assert len(seen) == 16
    assert len(set(seen)) == 1
    assert sum(r["refreshes"] for r in results) == 1
    assert fleet.token_calls()["refresh_token"] == 1
    assert fleet.stored().generation == 2


def test_a_process_killed_after_the_answer_leaves_needs_reauthorization_and_connect_recovers(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    before = fleet.stored()
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.shared.wave.oauth_child",
            json.dumps(fleet.values),
            "1",
            "0",
            "--kill-after-answer",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr
    # Wave rotated (the old refresh token is spent), the store still holds the old pair: nothing was half-written.
    assert fleet.token_calls()["refresh_token"] == 1
    after_kill = fleet.stored()
    assert (after_kill.generation, after_kill.refresh_token) == (before.generation, before.refresh_token)
    fleet.redis.delete(keys.credential_refresh_lock_key("wave"))  # as its TTL would, a little later
    tokens = fleet.tokens()
    with pytest.raises(PausedError) as caught:
        tokens.token()
    assert "connect wave" in str(caught.value)
    assert "invalid_grant" in str(caught.value)
    assert fleet.stored().state == credentials.NEEDS_REAUTHORIZATION
    assert tokens.paused() is not None
    fleet.connect()  # the operator runs `wavesync connect wave`
    assert tokens.paused() is None
    assert tokens.token() == fleet.stored().access_token


def test_a_revoked_grant_pauses_with_reason_and_since(fleet: Fleet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fleet.connect()
    stored = fleet.stored()
    fleet.http.post("/_admin/oauth/revoke").raise_for_status()
    tokens = fleet.tokens()
    client = WaveClient(fleet.settings.wave_url.unicode_string(), tokens, DEFAULT_BUSINESS_ID)
    with client, pytest.raises(PausedError) as caught:
        client.get_business()
    state = credentials.state(fleet.db, "wave")
    assert state is not None
    assert state["state"] == credentials.NEEDS_REAUTHORIZATION
    assert "invalid_grant" in state["reason"]
    assert state["since"] <= datetime.now(UTC)
    assert fleet.stored().refresh_token == stored.refresh_token  # kept, for the record; useless now
    with pytest.raises(PausedError):
        tokens.token()  # and every later caller waits, without calling the token endpoint again
    assert fleet.token_calls()["refresh_token"] == 1
    for secret in (stored.access_token, stored.refresh_token, DEFAULT_CLIENT_SECRET):
        assert secret not in caplog.text
        assert secret not in str(caught.value)


@pytest.mark.parametrize("fault", ["error_500", "html", "malformed", "hang"])
def test_trouble_at_the_token_endpoint_is_transient_and_keeps_the_refresh_token(fleet: Fleet, fault: str) -> None:
    fleet.connect(expires_in_past=True)
    before = fleet.stored()
    fleet.oauth(endpoint_fault=fault, endpoint_fault_count=1, hang_s=2.0)
    tokens = fleet.tokens(settings={"http_timeout": 0.5})
    with pytest.raises(TokenEndpointError) as caught:
        tokens.token()
    assert not isinstance(caught.value, PausedError)
    assert isinstance(caught.value, MustWaitError)  # nothing went to Wave: the engine holds no write for it
    # A hang leaves the call running (Wave may still answer, and that answer will be stored): nothing is "kept".
    kept = "its answer is stored when it comes" if fault == "hang" else "refresh token is kept"
    assert kept in str(caught.value)
    assert "\n" not in str(caught.value)
    after = fleet.stored()
    assert (after.state, after.generation, after.refresh_token) == ("connected", 1, before.refresh_token)
    fresh = tokens.token()  # the endpoint behaves again: the kept refresh token still works
    assert fresh == fleet.stored().access_token
    assert fleet.stored().generation == 2


def test_a_secret_key_that_cannot_decrypt_pauses_and_rotation_with_multifernet_works(fleet: Fleet) -> None:
    fleet.connect()
    old_key = fleet.settings.secret_keys()[0]
    new_key = Fernet.generate_key().decode()
    with pytest.raises(PausedError) as caught:
        fleet.tokens(cipher=Cipher([new_key])).token()
    assert "WAVESYNC_SECRET_KEY" in str(caught.value)
    assert old_key not in str(caught.value)
    assert fleet.stored().state == credentials.CONNECTED  # nothing was changed or lost
    rotating = Cipher([new_key, old_key])
    assert fleet.tokens(cipher=rotating).token() == fleet.stored().access_token
    assert credentials.reencrypt(fleet.db, rotating, "wave")
    assert fleet.tokens(cipher=Cipher([new_key])).token()  # the old key can go now


def test_a_stale_writer_cannot_replace_a_newer_pair(fleet: Fleet) -> None:
    fleet.connect()
    cipher = Cipher(fleet.settings.secret_keys())
    current = fleet.stored()
    newer = credentials.replace_pair(
        fleet.db,
        cipher,
        "wave",
        expected_generation=current.generation,
        access_token="a2",
        refresh_token="r2",
        expires_at=None,
    )
    assert newer == current.generation + 1
    stale = credentials.replace_pair(
        fleet.db,
        cipher,
        "wave",
        expected_generation=current.generation,
        access_token="a3",
        refresh_token="r3",
        expires_at=None,
    )
    assert stale is None
    assert fleet.stored().refresh_token == "r2"


def test_not_connected_yet_is_a_pause_that_names_the_command(fleet: Fleet) -> None:
    with pytest.raises(PausedError) as caught:
        fleet.tokens().token()
    assert "wavesync connect wave" in str(caught.value)


# ----- a slow refresh, a dead client, a trickling endpoint ----------------------------------------------------------


def test_a_refresh_slower_than_its_lock_lease_keeps_the_lock_and_spends_the_refresh_token_once(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    answered = threading.Event()

    def slow_store() -> None:  # a database waiting on its lock, say, after Wave rotated the pair
        answered.set()
        time.sleep(3.0)  # twice the lease: only the holder's renewals keep the lock

    first = fleet.tokens(lock_ttl_s=1.5, after_token_answer=slow_store)
    second = fleet.tokens(lock_ttl_s=1.5, lock_wait_s=30)
    got: dict[str, object] = {}

    def ask(name: str, tokens: OAuthTokens) -> None:
        try:
            got[name] = tokens.token()
        except Exception as exc:  # reported by the assertions below
            got[name] = exc

    slow = threading.Thread(target=ask, args=("first", first))
    slow.start()
    assert answered.wait(10)
    waiter = threading.Thread(target=ask, args=("second", second))
    waiter.start()
    slow.join(30)
    waiter.join(30)
    stored = fleet.stored()
    assert got == {"first": stored.access_token, "second": stored.access_token}
    assert (stored.state, stored.generation) == (credentials.CONNECTED, 2)
    assert fleet.token_calls()["refresh_token"] == 1


def test_a_pair_issued_after_a_racing_refusal_is_stored_and_reconnects(fleet: Fleet) -> None:
    """A racing refresh that spent the same refresh token marked the connection; the winner's pair still counts."""
    fleet.connect()
    cipher = Cipher(fleet.settings.secret_keys())
    current = fleet.stored()
    assert credentials.mark_needs_reauthorization(
        fleet.db, "wave", expected_generation=current.generation, reason="token refresh refused with invalid_grant"
    )
    stored = credentials.replace_pair(
        fleet.db,
        cipher,
        "wave",
        expected_generation=current.generation,
        access_token="a2",
        refresh_token="r2",
        expires_at=None,
    )
    assert stored == current.generation + 1
    after = fleet.stored()
    assert (after.state, after.reason, after.refresh_token) == (credentials.CONNECTED, "", "r2")
    assert after.state_since > current.state_since


def test_a_refused_client_is_configuration_and_changes_nothing_stored(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    before = fleet.stored()
    tokens = fleet.tokens(settings={"wave_client_secret": "not-the-secret"})
    with pytest.raises(AuthError) as caught:
        tokens.token()
    assert not isinstance(caught.value, (PausedError, GrantRefusedError))
    assert "WAVESYNC_WAVE_CLIENT_SECRET" in str(caught.value)
    after = fleet.stored()
    assert (after.state, after.generation, after.refresh_token) == (
        credentials.CONNECTED,
        before.generation,
        before.refresh_token,
    )
    assert fleet.tokens().token() == fleet.stored().access_token  # the right secret: the same refresh token works


def test_a_token_endpoint_trickling_its_answer_is_abandoned_at_the_deadline() -> None:
    """httpx's timeout is per read: one byte every 0.2 s never trips it. The overall deadline must."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
            for _ in range(200):
                if stop.wait(0.2):
                    return
                try:
                    conn.sendall(b" ")
                except OSError:
                    return

    server = threading.Thread(target=trickle, daemon=True)
    server.start()
    endpoint = TokenEndpoint(f"http://127.0.0.1:{port}/oauth2/token/", "id", "secret", timeout=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(TokenEndpointError, match="did not answer in time"):
            endpoint.refresh("r")
        assert time.monotonic() - started < 3.0
    finally:
        stop.set()
        endpoint.close()
        server.join(5)
        listener.close()


def test_rekey_keeps_the_generation_and_the_pair(fleet: Fleet) -> None:
    fleet.connect()
    old_key = fleet.settings.secret_keys()[0]
    before = fleet.stored()
    rotating = Cipher([Fernet.generate_key().decode(), old_key])
    assert credentials.reencrypt(fleet.db, rotating, "wave")
    after = credentials.read(fleet.db, rotating, "wave")
    assert after is not None
    assert (after.generation, after.access_token, after.refresh_token) == (
        before.generation,
        before.access_token,
        before.refresh_token,
    )


class _RefreshingMidway(Cipher):
    """A real cipher that lets a worker's refresh land right after `reencrypt` read the pair (the race to close)."""

    def __init__(self, keys: list[str], refresh: list[Any]) -> None:
        super().__init__(keys)
        self.refresh = refresh

    def rotate(self, value: str) -> str:
        if self.refresh:
            self.refresh.pop()()
        return super().rotate(value)


def test_rekey_racing_a_refresh_never_writes_back_the_spent_refresh_token(fleet: Fleet) -> None:
    fleet.connect()
    old_key = fleet.settings.secret_keys()[0]
    old = Cipher([old_key])

    def a_worker_refreshes() -> None:
        stored = credentials.replace_pair(
            fleet.db, old, "wave", expected_generation=1, access_token="a2", refresh_token="r2", expires_at=None
        )
        assert stored == 2

    new_key = Fernet.generate_key().decode()
    assert credentials.reencrypt(fleet.db, _RefreshingMidway([new_key, old_key], [a_worker_refreshes]), "wave")
    after = credentials.read(fleet.db, Cipher([new_key]), "wave")  # re-encrypted: the new key alone reads it
    assert after is not None
    assert (after.generation, after.access_token, after.refresh_token) == (2, "a2", "r2")


# ----- an answer Wave sent must be stored, whatever happens to the caller -------------------------------------------


class _LateAnswers(httpx.BaseTransport):
    """The real network to the sandbox, with each answer handed over `delay_s` after Wave sent it (Wave rotated the
    refresh token already), and optionally the answer's `expires_in` rewritten as some servers send it."""

    def __init__(self, delay_s: float = 0.0, *, expires_in: Any = None, drop_expires_in: bool = False) -> None:
        self._inner = httpx.HTTPTransport()
        self.delay_s = delay_s
        self.expires_in = expires_in
        self.drop_expires_in = drop_expires_in

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        time.sleep(self.delay_s)
        if self.expires_in is None and not self.drop_expires_in:
            return response
        body = json.loads(response.read())
        if self.drop_expires_in:
            body.pop("expires_in", None)
        else:
            body["expires_in"] = self.expires_in
        return httpx.Response(response.status_code, json=body)

    def close(self) -> None:
        self._inner.close()


class _SoftTimeLimit(Exception):
    """Stands in for Celery's SoftTimeLimitExceeded, which a signal raises in the task's thread under prefork."""


def _interrupted_after(seconds: float, call: Any) -> None:
    def soft_limit(_signum: int, _frame: Any) -> None:
        raise _SoftTimeLimit

    previous = signal.signal(signal.SIGALRM, soft_limit)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        with pytest.raises(_SoftTimeLimit):
            call()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_caller_interrupted_while_wave_answers_loses_no_rotated_refresh_token(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    late = _LateAnswers(delay_s=1.5)
    tokens = fleet.tokens(transport=late)
    _interrupted_after(0.5, tokens.token)  # the soft time limit fires while Wave's answer is on its way
    late.delay_s = 0.0
    # Another process asks while the answer is still on its way: it must wait for it, not spend the old token.
    other = fleet.tokens().token()
    stored = fleet.stored()
    assert (stored.state, stored.generation) == (credentials.CONNECTED, 2)
    assert other == stored.access_token
    assert tokens.token() == stored.access_token  # the interrupted process goes on with the stored pair
    assert fleet.token_calls()["refresh_token"] == 1


def test_an_answer_arriving_after_the_callers_deadline_is_stored(fleet: Fleet) -> None:
    fleet.connect(expires_in_past=True)
    tokens = fleet.tokens(transport=_LateAnswers(delay_s=1.5), settings={"http_timeout": 0.5})
    with pytest.raises(TokenEndpointError) as caught:
        tokens.token()
    assert "refresh token is kept" not in str(caught.value)  # it is not: Wave may have spent it already
    assert "its answer is stored when it comes" in str(caught.value)
    fresh = tokens.token()
    stored = fleet.stored()
    assert (stored.state, stored.generation, stored.access_token) == (credentials.CONNECTED, 2, fresh)
    assert fleet.token_calls()["refresh_token"] == 1


def test_a_pair_the_store_refuses_is_kept_in_memory_and_stored_at_the_next_refresh(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet.connect(expires_in_past=True)
    before = fleet.stored()
    path = fleet.settings.database_url.split("///", 1)[1]

    def rename(old: str, new: str) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")

    breaks = [lambda: rename("credentials", "credentials_away")]  # every write of the pair fails, at once
    clock = ManualClock(datetime.now(UTC))
    tokens = fleet.tokens(after_token_answer=lambda: breaks and breaks.pop()(), store_retry_s=0.01, clock=clock)
    issued = tokens.token()
    assert issued != before.access_token
    assert tokens.token() == issued  # kept for this process: no second refresh
    client = WaveClient(fleet.settings.wave_url.unicode_string(), tokens, DEFAULT_BUSINESS_ID)
    with client:
        assert client.get_business().id == DEFAULT_BUSINESS_ID  # and Wave takes it
    lost = [r for r in caplog.records if r.levelno >= logging.ERROR and "in memory" in r.getMessage()]
    assert len(lost) == 1
    rename("credentials_away", "credentials")
    assert fleet.stored().generation == before.generation
    clock.advance(3600 - 30)  # the next refresh uses the refresh token Wave issued last, not the spent one
    fresh = tokens.token()
    stored = fleet.stored()
    assert (stored.state, stored.access_token) == (credentials.CONNECTED, fresh)
    assert stored.generation > before.generation
    assert fleet.token_calls()["refresh_token"] == 2
    for secret in (before.access_token, before.refresh_token, issued, stored.refresh_token):
        assert secret not in caplog.text


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [("7199.5", 7199), (7199.5, 7199), (" 3600 ", 3600), (0, 3600), ("soon", 3600), (None, 3600)],
    ids=["numeric string", "float", "padded string", "zero", "not a number", "missing"],
)
def test_a_rotated_pair_with_an_odd_expires_in_is_stored(fleet: Fleet, expires_in: Any, lifetime: int) -> None:
    fleet.connect(expires_in_past=True)
    before = fleet.stored()
    odd = _LateAnswers(expires_in=expires_in, drop_expires_in=expires_in is None)
    tokens = fleet.tokens(transport=odd)
    started = datetime.now(UTC)
    fresh = tokens.token()
    stored = fleet.stored()
    assert (stored.generation, stored.access_token) == (2, fresh)
    assert stored.refresh_token != before.refresh_token
    assert stored.expires_at is not None
    assert abs((stored.expires_at - started).total_seconds() - lifetime) < 5
    assert fleet.tokens().refresh(fresh)  # the rotated refresh token works: it was kept
    assert fleet.stored().generation == 3
