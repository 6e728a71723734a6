"""Security: secrets never leak into logs, dead letters, status output or exceptions; safe defaults.

The leak test runs a system that fails on purpose against servers that echo the credentials back in every error
(as a misconfigured proxy or a verbose API might), then searches everything the run produced for the secrets.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandboxes.serve import ServerThread, free_port
from shared import keys
from shared.celery_app import app, celery_config
from shared.context import Context
from shared.customerp.client import CustomerpClient
from shared.errors import SyncError
from shared.messages import ChangeMessage
from shared.settings import SANDBOX_BUSINESS_ID, Settings
from shared.store.db import Database
from shared.wave.client import WaveClient
from tests.harness import REPO, Sandboxes, System
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

CP_SECRET = "cpk-live-7Hq2-secret-do-not-log"
WAVE_SECRET = "wave-live-9Zx4-token-do-not-log"


def echo_app(seen: list[str]) -> Starlette:
    """Answers every call with an error that quotes the credentials it was sent."""

    async def endpoint(request: Request) -> Response:
        key = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        seen.append(key + auth)
        if request.url.path.startswith("/graphql"):
            error = {"message": f"token {auth} is not valid here", "extensions": {"code": "UNAUTHENTICATED"}}
            return JSONResponse({"errors": [error]}, headers={"X-Echo": auth})
        body = {"code": f"unauthenticated:{key}", "detail": f"key {key} rejected", "errors": [{"message": key}]}
        return JSONResponse(body, status_code=401, headers={"X-Echo": key})

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST", "PATCH", "DELETE"])])


@pytest.fixture
def echo() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    server = ServerThread(echo_app(seen)).start()
    yield server.url, seen
    server.stop()


def wavesync_cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args],
        env=system.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_a_run_that_fails_on_purpose_never_shows_a_secret(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path, echo: tuple[str, list[str]]
) -> None:
    url, seen = echo
    clean_redis(redis_server.url)
    system = System(  # both "systems" are the echo server
        boxes,
        redis_server.url,
        tmp_path,
        customerp_url=url,
        customerp_api_key=CP_SECRET,
        wave_url=f"{url}/graphql/public",
        wave_token=WAVE_SECRET,
        max_retries=1,
        retry_backoff_max=0.5,
        retry_backoff_base=0.1,
        poll_interval=0.5,
    )
    outputs: dict[str, str] = {}
    try:
        system.start_worker(concurrency=2)
        system.start_beat()  # its pollers fail too, every half second
        for source, entity in (("customerp", "customers"), ("wave", "products"), ("customerp", "orders")):
            message = ChangeMessage(entity=entity, source=source, source_id=f"{entity}-1", reread=True)  # type: ignore[arg-type]
            app.send_task(keys.SYNC_TASK[entity], args=[message.to_json()], queue=entity)
        deadline = time.monotonic() + 60
        while len(system.dead_letters()) < 3:
            assert time.monotonic() < deadline, f"no dead letters; log: {system.log}"
            time.sleep(0.2)
        time.sleep(1.0)  # a few more failing polls
        # What an operator looks at (each command costs a process start, so the fullest form of each).
        for name, args in {
            "status": ("status",),
            "dlq list --json": ("dlq", "list", "--json"),
            "reconcile --check": ("reconcile", "--check"),
        }.items():
            result = wavesync_cli(system, *args)
            outputs[name] = result.stdout + result.stderr
    finally:
        system.close()
    outputs["worker and beat logs"] = system.log.read_text()
    outputs["dead letters"] = json.dumps(_all_dead_letters(system.settings.database_url), default=str)
    # The run did fail, and the servers did see (and echo) the secrets.
    assert any(CP_SECRET in s for s in seen)
    assert any(WAVE_SECRET in s for s in seen)
    assert "AuthError" in outputs["dead letters"]
    assert "gave up" in outputs["dead letters"]
    assert outputs["reconcile --check"]
    leaks = {name: [secret for secret in (CP_SECRET, WAVE_SECRET) if secret in text] for name, text in outputs.items()}
    assert {name: found for name, found in leaks.items() if found} == {}
    assert "***" in outputs["worker and beat logs"] + outputs["dead letters"]


def _all_dead_letters(url: str) -> list[dict[str, Any]]:
    from shared.deadletters import DeadLetters, Filter

    return DeadLetters(Database(url)).list(Filter())


def test_a_client_exception_never_carries_a_secret() -> None:
    """Exceptions raised to callers (and so to tracebacks) are scrubbed at the client boundary."""
    seen: list[str] = []
    with (
        ServerThread(echo_app(seen)) as server,
        CustomerpClient(server.url, CP_SECRET) as cp,
        WaveClient(f"{server.url}/graphql/public", WAVE_SECRET, SANDBOX_BUSINESS_ID) as wave,
    ):
        for call in (lambda: cp.get("customers", "c1"), lambda: wave.get_customer("w1")):
            with pytest.raises(SyncError) as caught:
                call()
            text = f"{caught.value!s} {caught.value!r} {caught.value.args}"
            assert CP_SECRET not in text
            assert WAVE_SECRET not in text
    assert seen


def test_celery_accepts_json_only() -> None:
    config = celery_config(Settings(redis_url="redis://127.0.0.1:6379/0"))
    assert config["accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == config["event_serializer"] == "json"


def test_sandboxes_metrics_and_embedded_redis_bind_loopback_by_default() -> None:
    settings = Settings()
    assert settings.sandbox_host == "127.0.0.1"
    assert settings.metrics_host == "127.0.0.1"
    server = ServerThread(echo_app([]))
    assert server.host == "127.0.0.1"
    import inspect

    from wavesync.embedded import EmbeddedRedis as Embedded

    assert '"--bind", "127.0.0.1"' in inspect.getsource(Embedded.start)


@pytest.fixture
def self_signed_tls_server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTPS server whose certificate no one vouches for; the list collects its failed handshakes."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()
    refused: list[str] = []

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
            except ssl.SSLError as exc:
                refused.append(str(exc))
                conn.close()
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{port}", refused
    stop.set()
    listener.close()
    thread.join(5)


def test_clients_verify_tls_by_default(
    self_signed_tls_server: tuple[str, list[str]], redis_server: EmbeddedRedis
) -> None:
    url, refused = self_signed_tls_server
    settings = Settings(
        redis_url=redis_server.url,
        customerp_url=url,
        customerp_api_key=CP_SECRET,
        wave_url=f"{url}/graphql/public",
        wave_token=WAVE_SECRET,
    )
    assert settings.verify_tls is True
    ctx = Context.from_settings(settings)
    try:
        for call in (lambda: ctx.customerp.get("customers", "c1"), lambda: ctx.wave.get_customer("w1")):
            before = len(refused)
            with pytest.raises(SyncError):
                call()
            deadline = time.monotonic() + 5
            while len(refused) == before and time.monotonic() < deadline:
                time.sleep(0.05)
            # The client hung up in the handshake: it did not trust the certificate ("unknown ca").
            assert len(refused) > before
            assert "unknown ca" in refused[-1].lower() or "certificate" in refused[-1].lower(), refused[-1]
    finally:
        ctx.close()
