"""A console over a real SQLite link store and the session's real Redis, seeded with links, dead letters and
history (a customer named like an attack among them), and a way to log in through the real login form."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sandboxes.serve import ServerThread
from shared import history
from shared.messages import ChangeMessage
from shared.settings import Settings
from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from wavesync.console.app import create_app
from wavesync.embedded import EmbeddedRedis

XSS = "<script>alert(1)</script>"
OPERATOR_PASSWORD = "op-pass-0d1f4b"
VIEWER_PASSWORD = "view-pass-7c2e91"
SESSION_KEY = "session-key-5a8e3c"
CP_KEY = "cp-key-9f7e2d"
WAVE_TOKEN = "wave-token-3b6a1c"
SECRETS = (OPERATOR_PASSWORD, VIEWER_PASSWORD, SESSION_KEY, CP_KEY, WAVE_TOKEN)


def console_settings(workdir: Path, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{workdir / 'links.db'}",
        "redis_url": redis_url,
        "data_dir": workdir,
        "customerp_url": "http://127.0.0.1:9",
        "customerp_api_key": CP_KEY,
        "wave_url": "http://127.0.0.1:9/graphql/public",
        "wave_token": WAVE_TOKEN,
        "console_password": OPERATOR_PASSWORD,
        "console_readonly_password": VIEWER_PASSWORD,
        "console_session_key": SESSION_KEY,
        **overrides,
    }
    return Settings(**values)


def seed(settings: Settings) -> dict[str, Any]:
    """Two linked customers (one named XSS), an open and a resolved dead letter, and their history."""
    upgrade(settings.database_url)
    db = Database(settings.database_url)
    with db.session() as session:
        evil = store.save_link(
            session,
            None,
            entity="customers",
            customerp_id="101",
            wave_id="W-101",
            state=Settled({"name": XSS, "email": "evil@example.com", "number": "C-101"}),
            customerp_version="3",
            wave_version="2026-01-01T00:00:00.000Z",
        )
        store.save_link(
            session,
            None,
            entity="customers",
            customerp_id="102",
            wave_id="W-102",
            state=Settled({"name": "Plain Ltd", "email": "plain@example.com", "number": "C-102"}),
            customerp_version="1",
            wave_version="2026-01-01T00:00:00.000Z",
        )
        for source_id, reason in (("103", f"name {XSS} is refused"), ("104", "too long")):
            store.record_dead_letter(
                session,
                entity="customers",
                source="customerp",
                source_id=source_id,
                customerp_id=source_id,
                wave_id=None,
                message={"entity": "customers", "source": "customerp", "source_id": source_id, "snapshot": {"n": XSS}},
                version="1",
                error_class="InvalidDataError",
                reason=reason,
                field_paths=["name"],
            )
        store.resolve_dead_letters(session, "customers", {"customerp": "104"})
        message = ChangeMessage(entity="customers", source="customerp", source_id="101")
        history.record(
            session,
            history.merged(
                settings,
                message,
                {"customerp": {"name": XSS, "phone": "1"}, "wave": {"name": "Old", "phone": "2"}},
                {"name": XSS, "phone": "2"},
                ("phone",),
                linked=True,
            ),
            evil,
        )
        history.record(session, history.dead_lettered(settings, message, {}, "InvalidDataError", XSS))
    return {"link_id": evil.id}


@pytest.fixture
def settings(tmp_path: Path, redis_server: EmbeddedRedis) -> Settings:
    made = console_settings(tmp_path, redis_server.url)
    seed(made)
    return made


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    """The console as a real HTTP server (uvicorn on a free port), live reads of both systems off."""
    with ServerThread(create_app(settings, live_reads=False)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, follow_redirects=True, timeout=30) as http:
        yield http


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def log_in(client: httpx.Client, user: str = "operator", password: str = OPERATOR_PASSWORD) -> str:
    """Log in through the form; returns the session's CSRF token."""
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"csrf": token, "username": user, "password": password, "next": "/"})
    assert answer.status_code == 200, answer.text[:500]  # followed the redirect to the overview
    return csrf_of(answer.text)


def hidden_fields(page: str) -> dict[str, list[str]]:
    """A confirmation page's form as the browser would submit it (its hidden inputs)."""
    fields: dict[str, list[str]] = {}
    for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page):
        fields.setdefault(html.unescape(name), []).append(html.unescape(value))
    return fields
