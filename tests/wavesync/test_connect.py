"""`wavesync connect wave` against the Wave sandbox: loopback redirect, pasted code, wrong state, resuming a paused
connection; `status` shows the connection's state; no token is ever printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
from cryptography.fernet import Fernet

from sandboxes.serve import ServerThread, free_port
from sandboxes.wave import DEFAULT_BUSINESS_ID, WaveSandboxConfig, create_app
from sandboxes.wave.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from shared.metrics import CONNECTION_STATES, StateCollector
from shared.settings import Settings
from shared.store import credentials
from shared.store.credentials import Cipher
from shared.store.db import Database, upgrade
from wavesync.connect import PENDING_FILE, ConnectError, connect_wave
from wavesync.ops import collect_status, render_status

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def box() -> Iterator[ServerThread]:
    with ServerThread(create_app(WaveSandboxConfig())) as server:
        yield server


@pytest.fixture
def settings(box: ServerThread, tmp_path: Path) -> Settings:
    httpx.post(f"{box.url}/_admin/reset").raise_for_status()
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'links.db'}",
        "data_dir": tmp_path,
        "wave_url": f"{box.url}/graphql/public",
        "wave_auth": "oauth",
        "wave_client_id": DEFAULT_CLIENT_ID,
        "wave_client_secret": DEFAULT_CLIENT_SECRET,
        "wave_oauth_url": f"{box.url}/oauth2/",
        "secret_key": Fernet.generate_key().decode(),
        "http_timeout": 5.0,
    }
    configured = Settings(**values)
    upgrade(configured.database_url)
    return configured


def stored(settings: Settings) -> credentials.StoredTokens:
    found = credentials.read(Database(settings.database_url), Cipher(settings.secret_keys()), "wave")
    assert found is not None
    return found


def printed_url(lines: list[str]) -> str:
    return next(line for line in lines if line.startswith("http"))


def redirect_of(url: str) -> dict[str, str]:
    """Follow the authorize address as a browser would, up to Wave's redirect; the redirect's parameters."""
    response = httpx.get(url)
    assert response.status_code == 302, response.text
    return {k: v[0] for k, v in parse_qs(urlparse(response.headers["location"]).query).items()}


def no_secret_in(text: str, settings: Settings) -> None:
    pair = stored(settings)
    for secret in (pair.access_token, pair.refresh_token, DEFAULT_CLIENT_SECRET, *settings.secret_keys()):
        assert secret not in text


def test_the_authorize_address_asks_for_the_scopes_with_state_and_pkce(settings: Settings) -> None:
    lines: list[str] = []
    connect_wave(settings, listen=False, port=8765, echo=lines.append)
    query = parse_qs(urlparse(printed_url(lines)).query)
    assert query["client_id"] == [DEFAULT_CLIENT_ID]
    assert query["response_type"] == ["code"]
    assert query["redirect_uri"] == ["http://127.0.0.1:8765/callback"]
    assert "customer:write" in query["scope"][0].split()
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["state"][0]) >= 32
    pending = json.loads((settings.data_dir / PENDING_FILE).read_text())
    assert pending["state"] == query["state"][0]
    assert oct((settings.data_dir / PENDING_FILE).stat().st_mode)[-3:] == "600"


def test_connect_through_the_loopback_redirect_stores_encrypted_tokens_and_says_who(settings: Settings) -> None:
    lines: list[str] = []
    ready = threading.Event()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            connect_wave(settings, port=free_port(), timeout=30, echo=lines.append, ready=ready)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert ready.wait(10)
    page = httpx.get(printed_url(lines), follow_redirects=True)  # Wave -> 302 -> our loopback server
    worker.join(30)
    assert failures == []
    assert page.status_code == 200
    text = "\n".join(lines)
    assert "Connected to Wave as Sandy Owner <owner@sandbox.example>." in text
    assert f"({DEFAULT_BUSINESS_ID})  <- WAVESYNC_WAVE_BUSINESS_ID" in text
    pair = stored(settings)
    assert pair.state == credentials.CONNECTED
    with Database(settings.database_url).engine.connect() as conn:
        raw = conn.exec_driver_sql("SELECT * FROM credentials").one()
    row = "|".join(str(value) for value in raw)
    assert pair.access_token not in row  # encrypted at rest
    assert pair.refresh_token not in row
    no_secret_in(text, settings)
    assert not (settings.data_dir / PENDING_FILE).exists()


def test_a_pasted_code_and_state_connect_and_resume_a_paused_connection(settings: Settings) -> None:
    lines: list[str] = []
    connect_wave(settings, listen=False, echo=lines.append)
    first = redirect_of(printed_url(lines))
    connect_wave(settings, code=first["code"], state=first["state"], echo=lines.append)
    db = Database(settings.database_url)
    credentials.mark_needs_reauthorization(
        db, "wave", expected_generation=stored(settings).generation, reason="token refresh refused with invalid_grant"
    )
    lines.clear()
    connect_wave(settings, listen=False, echo=lines.append)
    second = redirect_of(printed_url(lines))
    connect_wave(settings, code=second["code"], state=second["state"], echo=lines.append)
    assert stored(settings).state == credentials.CONNECTED
    assert stored(settings).generation == 2
    assert any(line.startswith("The paused sync resumes") for line in lines)
    no_secret_in("\n".join(lines), settings)


def test_a_redirect_with_a_wrong_state_stores_nothing(settings: Settings) -> None:
    lines: list[str] = []
    connect_wave(settings, listen=False, echo=lines.append)
    redirect = redirect_of(printed_url(lines))
    with pytest.raises(ConnectError, match="state does not match"):
        connect_wave(settings, code=redirect["code"], state="forged", echo=lines.append)
    assert credentials.state(Database(settings.database_url), "wave") is None
    # The genuine redirect still works: the pending authorization was kept.
    connect_wave(settings, code=redirect["code"], state=redirect["state"], echo=lines.append)
    assert stored(settings).state == credentials.CONNECTED


def test_a_wrong_state_on_the_loopback_is_ignored_and_the_real_redirect_still_connects(settings: Settings) -> None:
    lines: list[str] = []
    ready = threading.Event()
    port = free_port()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            connect_wave(settings, port=port, timeout=30, echo=lines.append, ready=ready)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert ready.wait(10)
    redirect = redirect_of(printed_url(lines))
    callback = f"http://127.0.0.1:{port}/callback?"
    forged = httpx.get(callback + urlencode({"code": redirect["code"], "state": "forged"}))
    no_state = httpx.get(callback + urlencode({"code": redirect["code"]}))
    assert (forged.status_code, no_state.status_code) == (400, 400)
    assert credentials.state(Database(settings.database_url), "wave") is None
    assert worker.is_alive()  # still waiting for the redirect with the right state
    assert httpx.get(callback + urlencode(redirect)).status_code == 200
    worker.join(30)
    assert failures == []
    assert sum("ignored a redirect whose state does not match" in line for line in lines) == 2
    assert stored(settings).state == credentials.CONNECTED


def test_only_wrong_states_on_the_loopback_end_at_the_deadline_with_nothing_stored(settings: Settings) -> None:
    lines: list[str] = []
    ready = threading.Event()
    port = free_port()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            connect_wave(settings, port=port, timeout=2, echo=lines.append, ready=ready)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    assert ready.wait(10)
    redirect = redirect_of(printed_url(lines))
    httpx.get(f"http://127.0.0.1:{port}/callback?" + urlencode({"code": redirect["code"], "state": "forged"}))
    worker.join(30)
    assert len(failures) == 1
    assert isinstance(failures[0], ConnectError)
    assert "no redirect arrived" in str(failures[0])
    assert credentials.state(Database(settings.database_url), "wave") is None


def test_a_used_code_is_a_clear_message(settings: Settings) -> None:
    lines: list[str] = []
    connect_wave(settings, listen=False, echo=lines.append)
    redirect = redirect_of(printed_url(lines))
    connect_wave(settings, code=redirect["code"], state=redirect["state"], echo=lines.append)
    connect_wave(settings, listen=False, echo=lines.append)  # a new pending authorization, the old code replayed
    pending = json.loads((settings.data_dir / PENDING_FILE).read_text())
    with pytest.raises(ConnectError, match="refused the code"):
        connect_wave(settings, code=redirect["code"], state=pending["state"], echo=lines.append)


def test_status_shows_the_paused_connection_and_since_when_without_tokens(settings: Settings) -> None:
    lines: list[str] = []
    connect_wave(settings, listen=False, echo=lines.append)
    redirect = redirect_of(printed_url(lines))
    connect_wave(settings, code=redirect["code"], state=redirect["state"], echo=lines.append)
    report = collect_status(settings)
    assert report["connections"][0]["state"] == "connected"
    credentials.mark_needs_reauthorization(
        Database(settings.database_url),
        "wave",
        expected_generation=1,
        reason="token refresh refused with invalid_grant",
    )
    report = collect_status(settings)
    connection = report["connections"][0]
    assert (connection["auth"], connection["state"]) == ("oauth", "needs_reauthorization")
    assert connection["since"]
    text = render_status(report)
    assert "connection: wave (oauth): needs reauthorization since" in text
    assert "`wavesync connect wave`" in text
    no_secret_in(text + json.dumps(report, default=str), settings)
    rotated = Settings(**{**settings.model_dump(), "secret_key": Fernet.generate_key().decode()})
    assert collect_status(rotated)["connections"][0]["state"] == "key_mismatch"


def test_metrics_export_not_connected_and_key_mismatch_too(settings: Settings) -> None:
    def states(keys: list[str]) -> dict[str, float]:
        collector = StateCollector(None, settings.database_url, oauth_keys=keys)
        family = next(m for m in collector.collect() if m.name == "wavesync_connection_state")
        return {s.labels["state"]: s.value for s in family.samples if s.labels["system"] == "wave"}

    def only(state: str) -> dict[str, float]:
        return {name: 1.0 if name == state else 0.0 for name in CONNECTION_STATES}

    assert states(settings.secret_keys()) == only("not_connected")
    lines: list[str] = []
    connect_wave(settings, listen=False, echo=lines.append)
    redirect = redirect_of(printed_url(lines))
    connect_wave(settings, code=redirect["code"], state=redirect["state"], echo=lines.append)
    assert states(settings.secret_keys()) == only("connected")
    assert states([Fernet.generate_key().decode()]) == only("key_mismatch")


def wavesync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        cwd=REPO,
    )


def test_the_command_gives_one_line_and_no_traceback(settings: Settings, tmp_path: Path) -> None:
    env = {
        "WAVESYNC_DATABASE_URL": settings.database_url,
        "WAVESYNC_DATA_DIR": str(tmp_path),
        "WAVESYNC_WAVE_AUTH": "oauth",
        "WAVESYNC_WAVE_CLIENT_ID": DEFAULT_CLIENT_ID,
        "WAVESYNC_WAVE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
    }
    missing_key = wavesync("connect", "wave", "--code", "c", "--state", "s", env=env)
    assert missing_key.returncode == 2
    assert missing_key.stderr.strip().startswith("wavesync: invalid setting")
    assert "WAVESYNC_SECRET_KEY is required" in missing_key.stderr
    env["WAVESYNC_SECRET_KEY"] = settings.secret_keys()[0]
    nothing_pending = wavesync("connect", "wave", "--code", "c", "--state", "s", env=env)
    assert nothing_pending.returncode == 1
    assert nothing_pending.stderr.strip().splitlines() == [
        "wavesync: no authorization in progress: run `wavesync connect wave` first, then paste the code it led to"
    ]
    assert "Traceback" not in nothing_pending.stderr
    env["WAVESYNC_SECRET_KEY"] = "not-a-key"
    bad_key = wavesync("status", env=env)
    assert bad_key.returncode == 2
    assert "not a Fernet key" in bad_key.stderr
    assert "not-a-key" not in bad_key.stderr
