"""`wavesync doctor` against real parts: the sandboxes, a real Valkey, a migrated (or not) SQLite link store.

Every ✗ is provoked for real (a wrong key, an empty database, a business archived through the Wave sandbox's
/_admin, a Redis with `allkeys-lru`, a Customerp server whose clock is an hour off, a wrong OAuth client secret) and
must carry its fix. A beat is "running" when a real BeatLease holds the lease in the session's Valkey.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from cryptography.fernet import Fernet
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandboxes.customerp.app import CustomerpSandboxConfig
from sandboxes.customerp.app import create_app as create_customerp_app
from sandboxes.serve import ServerThread, free_port
from sandboxes.wave import DEFAULT_BUSINESS_ID, WaveSandboxConfig
from sandboxes.wave import create_app as create_wave_app
from sandboxes.wave.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from shared import keys
from shared.beat_lease import BeatLease
from shared.settings import Settings
from shared.store import credentials
from shared.store.credentials import Cipher
from shared.store.db import Database, upgrade
from shared.wave.auth import token_endpoint
from wavesync.doctor import PROBE_PREFIX, Check, exit_code, render, run_doctor
from wavesync.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
CP_KEY = "doctor-customerp-key-0f3a9c"
WAVE_TOKEN = "doctor-wave-token-7be21d"  # asserted absent from every output


@pytest.fixture(scope="module")
def customerp() -> Iterator[ServerThread]:
    with ServerThread(create_customerp_app(CustomerpSandboxConfig(api_keys=(CP_KEY,)))) as server:
        yield server


@pytest.fixture(scope="module")
def wave() -> Iterator[ServerThread]:
    with ServerThread(create_wave_app(WaveSandboxConfig(tokens=frozenset({WAVE_TOKEN})))) as server:
        yield server


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'links.db'}"
    upgrade(url)
    return url


@pytest.fixture
def env(
    redis_server: EmbeddedRedis, customerp: ServerThread, wave: ServerThread, migrated: str, tmp_path: Path
) -> dict[str, str]:
    """The WAVESYNC_* environment of a healthy deployment on the sandboxes (no beat yet); sandboxes reset."""
    for server in (customerp, wave):
        httpx.post(f"{server.url}/_admin/reset").raise_for_status()
    with redis.Redis.from_url(redis_server.url) as client:
        client.delete(keys.beat_lease_key())
    return {
        "WAVESYNC_REDIS_URL": redis_server.url,
        "WAVESYNC_DATABASE_URL": migrated,
        "WAVESYNC_DATA_DIR": str(tmp_path),
        "WAVESYNC_CUSTOMERP_URL": customerp.url,
        "WAVESYNC_CUSTOMERP_API_KEY": CP_KEY,
        "WAVESYNC_WAVE_URL": f"{wave.url}/graphql/public",
        "WAVESYNC_WAVE_TOKEN": WAVE_TOKEN,
        "WAVESYNC_WAVE_BUSINESS_ID": DEFAULT_BUSINESS_ID,
        "WAVESYNC_POLL_OVERLAP": "5",
        "WAVESYNC_HTTP_TIMEOUT": "5",
    }


BEAT = "beat-host-3:4242:5e1f0c2a"


@pytest.fixture
def beat(redis_server: EmbeddedRedis) -> Iterator[BeatLease]:
    """A beat holding the fleet's lease, as `wavesync beat` takes it (its owner: process id, then scope)."""
    with redis.Redis.from_url(redis_server.url) as client:
        lease = BeatLease(client, f"{BEAT} 0b6e2f1d/pid:[4026531836]")
        assert lease.hold()
        yield lease
        lease.release()


def settings_from(env: dict[str, str], **overrides: str) -> Settings:
    values = {**env, **{f"WAVESYNC_{k.upper()}": v for k, v in overrides.items()}}
    return Settings(**{k.removeprefix("WAVESYNC_").lower(): v for k, v in values.items()})  # type: ignore[arg-type]


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def failed(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks if c.status == "fail"}


def assert_no_secret(text: str) -> None:
    assert CP_KEY not in text
    assert WAVE_TOKEN not in text


def test_every_check_passes_against_the_sandboxes_with_a_migrated_database(
    env: dict[str, str], beat: BeatLease
) -> None:
    checks = run_doctor(settings_from(env))
    assert failed(checks) == {}, render(checks)
    assert exit_code(checks) == 0
    names = set(by_name(checks))
    assert {
        "redis.reachable",
        "redis.eviction_policy",
        "redis.persistence",
        "beat.running",
        "database.reachable",
        "database.migrated",
        "wave.reachable",
        "wave.clock_skew",
        "wave.credential",
        "wave.business",
        "wave.business_archived",
        "wave.classic_invoicing",
        "wave.currency",
        "wave.scopes",
        "wave.income_account",
        "customerp.reachable",
        "customerp.clock_skew",
        "customerp.api_key",
        "customerp.feed_customers",
        "customerp.feed_products",
        "customerp.feed_orders",
        "settings.consistent",
    } <= names
    assert by_name(checks)["wave.scopes"].detail == "Scopes: full-access token: all scopes"
    assert "full-access token" in by_name(checks)["wave.credential"].detail
    assert all(c.status == "ok" for c in checks), render(checks)


def test_a_wrong_customerp_key_fails_with_its_fix_and_is_never_shown(env: dict[str, str]) -> None:
    checks = run_doctor(settings_from(env, customerp_api_key="not-the-key-51b0"))
    problem = failed(checks)["customerp.api_key"]
    assert "refuses the API key" in problem.detail
    assert problem.fix.startswith("Set WAVESYNC_CUSTOMERP_API_KEY")
    assert "not-the-key-51b0" not in render(checks)
    assert exit_code(checks) == 1


def test_a_wrong_wave_token_fails_with_its_fix(env: dict[str, str]) -> None:
    checks = run_doctor(settings_from(env, wave_token="not-the-token-9d2e"))
    problem = failed(checks)["wave.credential"]
    assert problem.detail == "Wave refuses the full-access token"
    assert "WAVESYNC_WAVE_TOKEN" in problem.fix
    assert "not-the-token-9d2e" not in render(checks)


def test_an_unmigrated_database_fails_with_the_upgrade_command(env: dict[str, str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    checks = run_doctor(settings_from(env, database_url=f"sqlite:///{empty}"))
    problem = failed(checks)["database.migrated"]
    assert "no revision" in problem.detail
    assert "`wavesync db upgrade`" in problem.fix


def test_a_missing_sqlite_file_is_reported_and_not_created(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "links.db"
    checks = run_doctor(settings_from(env, database_url=f"sqlite:///{missing}"))
    assert "`wavesync db upgrade`" in failed(checks)["database.reachable"].fix
    assert not missing.exists()


@pytest.mark.parametrize(
    ("flag", "check", "fix_starts"),
    [
        ("isArchived", "wave.business_archived", "Restore the business in Wave"),
        ("isClassicInvoicing", "wave.classic_invoicing", "Upgrade the business to Wave's new invoicing"),
    ],
)
def test_a_business_wave_cannot_sync_with_fails(
    env: dict[str, str], wave: ServerThread, flag: str, check: str, fix_starts: str
) -> None:
    httpx.patch(f"{wave.url}/_admin/business", json={flag: True}).raise_for_status()
    checks = run_doctor(settings_from(env))
    assert set(failed(checks)) == {check}
    assert failed(checks)[check].fix.startswith(fix_starts)


def test_a_currency_mismatch_names_the_business_currency(env: dict[str, str]) -> None:
    checks = run_doctor(settings_from(env, wave_currency="EUR"))
    problem = failed(checks)["wave.currency"]
    assert problem.detail == "Business currency is USD, WAVESYNC_WAVE_CURRENCY is EUR"
    assert problem.fix == "Set WAVESYNC_WAVE_CURRENCY=USD."


def test_an_income_account_or_fallback_product_that_does_not_exist_fails(env: dict[str, str]) -> None:
    ghost = DEFAULT_BUSINESS_ID.rstrip("=") + "O0Fjb3VudDox"
    checks = run_doctor(settings_from(env, wave_income_account_id=ghost, fallback_product_id="UHJvZHVjdDox"))
    problems = failed(checks)
    assert "is not an active income account" in problems["wave.income_account"].detail
    assert "does not exist in Wave" in problems["settings.fallback_product"].detail


def test_creation_disabled_both_ways_with_no_links_is_a_contradiction(env: dict[str, str]) -> None:
    checks = run_doctor(
        Settings(
            **{k.removeprefix("WAVESYNC_").lower(): v for k, v in env.items()},  # type: ignore[arg-type]
            create_in_wave=frozenset({"customers", "orders"}),
            create_in_customerp=frozenset({"customers", "orders"}),
        )
    )
    problem = failed(checks)["settings.creation_products"]
    assert "nothing will sync" in problem.detail
    assert "WAVESYNC_CREATE_IN_WAVE" in problem.fix


def test_redis_that_evicts_keys_fails_with_the_config_command(env: dict[str, str], tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "lru", persistent=False) as evicting:
        redis.Redis.from_url(evicting.url).config_set("maxmemory-policy", "allkeys-lru")
        checks = run_doctor(settings_from(env, redis_url=evicting.url))
    problems = failed(checks)
    assert "allkeys-lru" in problems["redis.eviction_policy"].detail
    assert "noeviction" in problems["redis.eviction_policy"].fix
    assert "appendonly yes" in problems["redis.persistence"].fix


def test_redis_that_refuses_config_get_is_a_warning_not_a_failure(env: dict[str, str], tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "acl") as managed:
        # Managed Redis services refuse CONFIG to their users; an ACL user without it behaves the same.
        redis.Redis.from_url(managed.url).acl_setuser(
            "app", enabled=True, passwords=["+app-password-3c1"], keys=["*"], commands=["+@all", "-config"]
        )
        url = managed.url.replace("redis://", "redis://app:app-password-3c1@")
        checks = run_doctor(settings_from(env, redis_url=url))
    assert by_name(checks)["redis.config"].status == "warn"
    assert "redis.eviction_policy" not in by_name(checks)
    assert exit_code(checks) == 0
    assert "app-password-3c1" not in render(checks)


class _SkewedDate:
    """Answers with a `Date` this far from real time: the server of an ERP whose clock is off."""

    def __init__(self, app: ASGIApp, skew_s: float) -> None:
        self.app = app
        self.skew_s = skew_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                headers.append((b"date", formatdate(time.time() + self.skew_s, usegmt=True).encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, dated)


@pytest.fixture
def skewed_customerp() -> Iterator[str]:
    """A Customerp sandbox an hour ahead, served without uvicorn's own Date header."""
    port = free_port()
    app = _SkewedDate(create_customerp_app(CustomerpSandboxConfig(api_keys=(CP_KEY,))), 3600)
    config = uvicorn.Config(app, port=port, log_level="warning", lifespan="off", date_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_a_server_clock_beyond_the_poll_overlap_fails(env: dict[str, str], skewed_customerp: str) -> None:
    checks = run_doctor(settings_from(env, customerp_url=skewed_customerp))
    problem = failed(checks)["customerp.clock_skew"]
    assert re.fullmatch(r"Customerp clock is 3(599|600|601) s ahead of this host, more than .* 5 s", problem.detail)
    assert "WAVESYNC_POLL_OVERLAP" in problem.fix
    assert by_name(checks)["wave.clock_skew"].status == "ok"
    # The same skew inside a generous overlap passes.
    relaxed = run_doctor(settings_from(env, customerp_url=skewed_customerp, poll_overlap="7200"))
    assert by_name(relaxed)["customerp.clock_skew"].status == "ok"


def test_a_business_id_wave_does_not_know_fails_with_its_fix(env: dict[str, str]) -> None:
    ghost = DEFAULT_BUSINESS_ID.rstrip("=") + "O0Z"
    checks = run_doctor(settings_from(env, wave_business_id=ghost))
    problem = failed(checks)["wave.business"]
    assert f"Wave business {ghost} not found" in problem.detail
    assert "WAVESYNC_WAVE_BUSINESS_ID" in problem.fix
    assert by_name(checks)["wave.credential"].status == "ok"


def _seed_sparing_the_first_call(share: float) -> int:
    """A seed for the Wave sandbox's fault dice that lets the first call through and hits the second (the injector
    rolls once per call for each fault whose share is set; the counters below check it did)."""
    return next(s for s in range(1000) if (dice := random.Random(s)).random() >= share and dice.random() < share)


@pytest.mark.parametrize(
    ("faults", "injected", "said"),
    [
        ({"max_rps": 1}, "429", "answered HTTP 429 (THROTTLED) to the business query"),
        ({"error_rate": 0.5, "seed": _seed_sparing_the_first_call(0.5)}, "5xx", "answered HTTP 503"),
        (
            {"hang_rate": 0.5, "hang_s": 3, "seed": _seed_sparing_the_first_call(0.5)},
            "hang",
            "did not answer the business query (ReadTimeout)",
        ),
    ],
    ids=["429", "503", "timeout"],
)
def test_trouble_answering_the_business_query_is_not_verified_not_a_missing_business(
    env: dict[str, str], wave: ServerThread, faults: dict[str, Any], injected: str, said: str
) -> None:
    httpx.delete(f"{wave.url}/_admin/counters").raise_for_status()
    httpx.patch(f"{wave.url}/_admin/faults", json=faults).raise_for_status()
    checks = run_doctor(settings_from(env, http_timeout="1"))
    assert httpx.get(f"{wave.url}/_admin/counters").json()["faults"] == {injected: 1}  # the business query's
    text = render(checks)
    assert not [c for c in checks if c.area == "wave" and c.status == "fail"], text
    assert "Wave accepts" not in text
    business = by_name(checks)["wave.business"]
    assert business.status == "warn"
    assert said in business.detail
    assert "not verified" in business.detail
    assert "WAVESYNC_WAVE_BUSINESS_ID" not in text
    assert by_name(checks)["wave.scopes"].status == "ok"
    assert_no_secret(text)


def test_unreachable_systems_fail_without_a_traceback(env: dict[str, str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    checks = run_doctor(settings_from(env, customerp_url=dead, wave_url=f"{dead}/graphql/public"))
    assert {"customerp.reachable", "wave.reachable"} <= set(failed(checks))


# ----- the command --------------------------------------------------------------------------------------------------


def wavesync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
        cwd=REPO,
    )


def test_the_command_prints_ticks_and_exits_0_when_healthy(env: dict[str, str], beat: BeatLease) -> None:
    result = wavesync("doctor", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ Wave accepts the full-access token" in result.stdout
    assert "✗" not in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")
    assert_no_secret(result.stdout + result.stderr)


def test_the_json_output_lists_every_check_and_exits_1_on_a_failure(env: dict[str, str]) -> None:
    result = wavesync("doctor", "--json", env={**env, "WAVESYNC_WAVE_TOKEN": "wrong-token-4e1a"})
    assert result.returncode == 1, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["ok"] is False
    assert all(set(c) == {"area", "name", "status", "detail", "fix"} for c in report["checks"])
    assert all(c["status"] in ("ok", "fail", "warn") for c in report["checks"])
    wrong = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in wrong] == ["wave.credential"]
    assert wrong[0]["fix"]
    assert "wrong-token-4e1a" not in result.stdout + result.stderr
    assert_no_secret(result.stdout + result.stderr)


def test_the_customerp_subcommand_checks_customerp_only(env: dict[str, str]) -> None:
    result = wavesync("doctor", "customerp", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {c["area"] for c in json.loads(result.stdout)["checks"]} == {"customerp"}


# ----- OAuth2 mode --------------------------------------------------------------------------------------------------


def oauth_env(env: dict[str, str], wave: ServerThread) -> dict[str, str]:
    without_token = {k: v for k, v in env.items() if k != "WAVESYNC_WAVE_TOKEN"}
    return {
        **without_token,
        "WAVESYNC_WAVE_AUTH": "oauth",
        "WAVESYNC_WAVE_CLIENT_ID": DEFAULT_CLIENT_ID,
        "WAVESYNC_WAVE_CLIENT_SECRET": DEFAULT_CLIENT_SECRET,
        "WAVESYNC_WAVE_OAUTH_URL": f"{wave.url}/oauth2/",
        "WAVESYNC_SECRET_KEY": Fernet.generate_key().decode(),
    }


ALL_SCOPES = "business:read customer:* product:* invoice:* account:read"


def oauth_connect(
    settings: Settings, wave: ServerThread, *, expired: bool = False, scope: str = "business:read"
) -> datetime:
    """What `wavesync connect wave` stores, without the browser; the stored expiry."""
    redirect = "http://127.0.0.1:9/callback"
    code = httpx.post(f"{wave.url}/_admin/oauth/code", json={"redirect_uri": redirect, "scope": scope})
    endpoint = token_endpoint(settings)
    answer = endpoint.exchange_code(code.json()["code"], redirect, None)
    endpoint.close()
    now = datetime.now(UTC)
    expires_at = now - timedelta(minutes=5) if expired else answer.expires_at(now)
    credentials.connect(
        Database(settings.database_url),
        Cipher(settings.secret_keys()),
        "wave",
        access_token=answer.access_token,
        refresh_token=answer.refresh_token or "",
        expires_at=expires_at,
        scopes=answer.scope or "",
    )
    return expires_at


def refresh_calls(wave: ServerThread) -> int:
    calls: dict[str, int] = httpx.get(f"{wave.url}/_admin/oauth").json()["token_calls"]
    return calls.get("refresh_token", 0)


def still_refreshes(settings: Settings, refresh_token: str) -> bool:
    """Whether the sandbox still takes `refresh_token` (spending it: only at the end of a test)."""
    endpoint = token_endpoint(settings)
    try:
        return bool(endpoint.refresh(refresh_token).access_token)
    finally:
        endpoint.close()


def test_oauth_with_a_missing_link_store_warns_and_creates_nothing(
    env: dict[str, str], wave: ServerThread, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "links.db"
    settings = settings_from(oauth_env(env, wave), database_url=f"sqlite:///{missing}")
    checks = run_doctor(settings)
    credential = by_name(checks)["wave.credential"]
    assert credential.status == "warn", render(checks)
    assert "link store not ready" in credential.detail
    assert "`wavesync db upgrade`" in credential.fix
    assert "no such table" not in render(checks)
    assert not missing.parent.exists()  # no directory, no links.db, no -wal or -shm


def test_oauth_with_an_expired_access_token_warns_and_refreshes_nothing(
    env: dict[str, str], wave: ServerThread
) -> None:
    settings = settings_from(oauth_env(env, wave))
    expires_at = oauth_connect(settings, wave, expired=True, scope=ALL_SCOPES)
    before = credentials.read(Database(settings.database_url), Cipher(settings.secret_keys()), "wave")
    checks = run_doctor(settings)
    credential = by_name(checks)["wave.credential"]
    assert credential.status == "warn", render(checks)
    assert f"expired at {expires_at.isoformat(timespec='seconds')}" in credential.detail
    assert "workers refresh it on next use" in credential.detail
    assert "! Wave OAuth2 access token expired at" in render(checks)
    assert not [c for c in checks if c.area == "wave" and c.status == "fail"], render(checks)
    # What could not be checked is said, and what needs no token still is.
    business = by_name(checks)["wave.business"]
    assert business.status == "warn"
    assert f"Wave business {DEFAULT_BUSINESS_ID} not verified" in business.detail
    assert by_name(checks)["wave.scopes"].status == "ok"
    assert exit_code(checks) == 0  # an expired token is normal between syncs: a warning, not a failure
    assert by_name(checks)["wave.oauth_client"].status == "ok"
    assert refresh_calls(wave) == 1  # the client probe's, with a never-issued token: doctor never rotates
    after = credentials.read(Database(settings.database_url), Cipher(settings.secret_keys()), "wave")
    assert before is not None
    assert after is not None
    assert (after.generation, after.refresh_token) == (before.generation, before.refresh_token)
    assert still_refreshes(settings, after.refresh_token)  # the stored one was not spent


def test_oauth_with_an_expired_access_token_still_checks_the_granted_scopes(
    env: dict[str, str], wave: ServerThread
) -> None:
    settings = settings_from(oauth_env(env, wave))
    oauth_connect(settings, wave, expired=True, scope="business:read customer:read")
    checks = run_doctor(settings)
    problem = failed(checks)["wave.scopes"]
    assert "lacks" in problem.detail
    assert "invoice:write" in problem.detail
    assert "WAVESYNC_WAVE_SCOPES" in problem.fix
    assert exit_code(checks) == 1
    assert refresh_calls(wave) == 1  # the client probe only


def test_oauth_with_a_valid_access_token_passes_with_kind_and_expiry(env: dict[str, str], wave: ServerThread) -> None:
    settings = settings_from(oauth_env(env, wave))
    expires_at = oauth_connect(settings, wave)
    checks = run_doctor(settings)
    credential = by_name(checks)["wave.credential"]
    assert credential.status == "ok", render(checks)
    expected = f"Wave accepts the OAuth2 access token (expires {expires_at.isoformat(timespec='seconds')})"
    assert credential.detail == expected
    text = render(checks)
    stored = credentials.read(Database(settings.database_url), Cipher(settings.secret_keys()), "wave")
    assert stored is not None
    assert stored.access_token not in text
    assert stored.refresh_token not in text


def test_the_oauth_client_is_probed_and_accepted_without_a_connection(env: dict[str, str], wave: ServerThread) -> None:
    checks = run_doctor(settings_from(oauth_env(env, wave)))
    client = by_name(checks)["wave.oauth_client"]
    assert client.status == "ok", render(checks)
    assert client.detail == f"Wave OAuth client {DEFAULT_CLIENT_ID!r}: client credentials accepted"
    # Listed right after reachability, before the (missing) connection it does not need.
    wave_names = [c.name for c in checks if c.area == "wave"]
    assert wave_names[:4] == ["wave.reachable", "wave.clock_skew", "wave.oauth_client", "wave.credential"]
    assert failed(checks)["wave.credential"].detail == "Wave OAuth2 is configured but not connected yet"
    counters = httpx.get(f"{wave.url}/_admin/oauth").json()
    assert counters["token_calls"] == {"refresh_token": 1, "total": 1}  # one probe, and nothing issued by it
    assert counters["grants"] == 0
    assert DEFAULT_CLIENT_SECRET not in render(checks)


def test_a_wrong_oauth_client_secret_fails_with_its_fix_and_is_never_shown(
    env: dict[str, str], wave: ServerThread
) -> None:
    wrong = "not-the-client-secret-8c4d"
    oauth = oauth_env(env, wave)
    settings = settings_from(oauth, wave_client_secret=wrong)
    oauth_connect(settings_from(oauth), wave, scope=ALL_SCOPES)  # connected with the right secret
    checks = run_doctor(settings)
    problem = failed(checks)["wave.oauth_client"]
    assert problem.detail == f"Wave's token endpoint refuses the OAuth client {DEFAULT_CLIENT_ID!r} (invalid_client)"
    assert problem.fix.startswith("Check WAVESYNC_WAVE_CLIENT_ID / WAVESYNC_WAVE_CLIENT_SECRET")
    assert exit_code(checks) == 1
    # The stored access token still works at the GraphQL endpoint: that is not what is wrong.
    assert by_name(checks)["wave.credential"].status == "ok"
    result = wavesync("doctor", "--json", env={**oauth, "WAVESYNC_WAVE_CLIENT_SECRET": wrong})
    assert result.returncode == 1
    refused = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "wave.oauth_client"]
    assert [c["status"] for c in refused] == ["fail"]
    for text in (render(checks), result.stdout + result.stderr):
        assert wrong not in text
        assert DEFAULT_CLIENT_SECRET not in text
        assert PROBE_PREFIX not in text


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ({"endpoint_fault": "error_500"}, "answered HTTP 500 server_error to the probe"),
        ({"endpoint_fault": "malformed"}, "answered HTTP 200 to the probe"),  # 200 without a token: not a verdict
        ({"endpoint_fault": "hang", "hang_s": 3}, "did not answer (ReadTimeout)"),
    ],
    ids=["500", "malformed", "timeout"],
)
def test_trouble_at_the_token_endpoint_leaves_the_oauth_client_not_verified(
    env: dict[str, str], wave: ServerThread, fault: dict[str, Any], said: str
) -> None:
    httpx.patch(f"{wave.url}/_admin/oauth", json={**fault, "endpoint_fault_count": 1}).raise_for_status()
    checks = run_doctor(settings_from(oauth_env(env, wave), http_timeout="1"))
    assert httpx.get(f"{wave.url}/_admin/oauth").json()["token_calls"].get("faulted") == 1
    client = by_name(checks)["wave.oauth_client"]
    assert client.status == "warn", render(checks)
    assert client.detail.startswith("Wave OAuth client not verified: the token endpoint")
    assert said in client.detail
    assert "WAVESYNC_WAVE_OAUTH_URL" in client.fix


def test_token_auth_sends_no_oauth_probe(env: dict[str, str], wave: ServerThread) -> None:
    checks = run_doctor(settings_from(env))
    assert "wave.oauth_client" not in by_name(checks)
    assert httpx.get(f"{wave.url}/_admin/oauth").json()["token_calls"] == {}


# ----- beat ---------------------------------------------------------------------------------------------------------


def test_no_beat_holding_the_lease_is_a_warning_and_a_holder_is_named(
    env: dict[str, str], redis_server: EmbeddedRedis
) -> None:
    checks = run_doctor(settings_from(env))
    nobody = by_name(checks)["beat.running"]
    assert nobody.status == "warn", render(checks)
    assert nobody.detail == "No beat holds the beat lease: no polls or reconciles are scheduled"
    assert "`wavesync beat`" in nobody.fix
    assert exit_code(checks) == 0  # beat may well start after doctor: a warning, not a failure
    assert render(checks).endswith("0 problem(s), 1 warning(s)")
    with redis.Redis.from_url(redis_server.url) as client:
        lease = BeatLease(client, f"{BEAT} 0b6e2f1d/pid:[4026531836]")
        assert lease.hold()
        try:
            held = by_name(run_doctor(settings_from(env)))["beat.running"]
        finally:
            lease.release()
    assert held.status == "ok"
    assert re.fullmatch(
        r"Beat beat-host-3:4242 holds the beat lease, lease renewed [01] s ago: polls are scheduled", held.detail
    )


def test_up_s_preflight_does_not_warn_about_the_beat_it_is_starting(env: dict[str, str]) -> None:
    result = wavesync("doctor", "--preflight", env=env)  # as wavesync/services.py's preflight runs it
    assert result.returncode == 0, result.stdout + result.stderr
    assert "✓ Beat: started by `wavesync up` with this preflight" in result.stdout
    assert result.stdout.rstrip().endswith("all checks passed")
    # Without --preflight the same setup names the missing beat.
    assert "! No beat holds the beat lease" in wavesync("doctor", env=env).stdout
