"""The console's guards through its real HTTP surface: login, roles, CSRF, escaping, and no secret anywhere."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandboxes.serve import ServerThread
from shared.deadletters import DeadLetters, Filter
from shared.settings import Settings
from shared.store.db import Database
from tests.wavesync.console.conftest import SECRETS, VIEWER_PASSWORD, XSS, csrf_of, log_in
from wavesync.console.app import bind_warning, create_app

pytestmark = pytest.mark.integration

PAGES = (
    "/",
    "/dead-letters",
    "/dead-letters?status=all",
    "/dead-letters?status=resolved",
    "/records?q=evil",
    "/records?q=nothing-like-this",
    "/records/customers/customerp/101",
    "/records/customers/wave/W-101",
    "/reconcile",
)


def _first_dead_letter(settings: Settings) -> dict[str, Any]:
    [entry] = DeadLetters(Database(settings.database_url)).list(Filter())
    return entry


def _actions(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    entry = _first_dead_letter(settings)
    return [
        ("/dead-letters/replay", {"scope": "selected", "ids": str(entry["id"])}),
        ("/dead-letters/replay", {"scope": "matching", "status": "open"}),
        ("/dead-letters/purge", {"scope": "selected", "ids": str(entry["id"]), "confirm": "yes"}),
        ("/dead-letters/purge", {"scope": "matching", "status": "all", "confirm": "yes"}),
        ("/records/customers/customerp/101/sync", {}),
        ("/records/customers/customerp/101/reconcile", {}),
        ("/reconcile/check", {}),
        ("/reconcile/repair", {"confirm": "yes"}),
    ]


def _untouched(settings: Settings) -> None:
    """No action happened: the open dead letter is still there, never replayed, and nothing was purged."""
    entry = _first_dead_letter(settings)
    assert entry["replayed_at"] is None
    assert len(DeadLetters(Database(settings.database_url)).list(Filter(status="all"))) == 2


def test_every_page_needs_a_login(client: httpx.Client) -> None:
    for page in PAGES:
        answer = client.get(page, follow_redirects=False)
        assert answer.status_code == 303, page
        assert answer.headers["location"].startswith("/login"), page


def test_no_action_without_a_session(client: httpx.Client, settings: Settings) -> None:
    for path, form in _actions(settings):
        answer = client.post(path, data=form, follow_redirects=False)
        assert answer.status_code == 401, path
    _untouched(settings)


def test_no_action_without_the_csrf_token_or_with_a_wrong_one(client: httpx.Client, settings: Settings) -> None:
    token = log_in(client)
    for path, form in _actions(settings):
        assert client.post(path, data=form, follow_redirects=False).status_code == 403, path
        wrong = {**form, "csrf": token[:-2] + "xx"}
        assert client.post(path, data=wrong, follow_redirects=False).status_code == 403, path
    _untouched(settings)


def test_a_token_from_another_session_is_refused(client: httpx.Client, settings: Settings) -> None:
    with httpx.Client(base_url=str(client.base_url), follow_redirects=True, timeout=30) as other:
        foreign = log_in(other)
    log_in(client)
    path, form = _actions(settings)[0]
    assert client.post(path, data={**form, "csrf": foreign}, follow_redirects=False).status_code == 403
    _untouched(settings)


def test_the_read_only_role_sees_no_action_and_cannot_act(client: httpx.Client, settings: Settings) -> None:
    token = log_in(client, "viewer", VIEWER_PASSWORD)
    entry = _first_dead_letter(settings)
    for page in (*PAGES, f"/dead-letters/{entry['id']}"):
        html = client.get(page).text
        assert "read-only" in html
        for action in ("/replay", "/purge", "/sync", "/reconcile/check", "/reconcile/repair", 'name="ids"'):
            assert action not in html, (page, action)
    for path, form in _actions(settings):
        assert client.post(path, data={**form, "csrf": token}, follow_redirects=False).status_code == 403, path
    _untouched(settings)


def test_an_operator_with_the_token_acts_and_purge_asks_first(client: httpx.Client, settings: Settings) -> None:
    token = log_in(client)
    entry = _first_dead_letter(settings)
    asked = client.post("/dead-letters/purge", data={"csrf": token, "scope": "selected", "ids": str(entry["id"])})
    assert asked.status_code == 200
    assert "Purge 1 dead letter(s)?" in asked.text
    _untouched(settings)
    confirm = {"csrf": csrf_of(asked.text), "scope": "selected", "ids": str(entry["id"]), "confirm": "yes"}
    done = client.post("/dead-letters/purge", data=confirm)
    assert "purged 1 dead letter(s)" in done.text
    assert DeadLetters(Database(settings.database_url)).list(Filter()) == []
    # The purge is in the record's history.
    assert "purged" in client.get(f"/records/customers/customerp/{entry['source_id']}").text


def test_login_refuses_a_wrong_password_and_a_missing_token(client: httpx.Client) -> None:
    token = csrf_of(client.get("/login").text)
    wrong = client.post("/login", data={"csrf": token, "username": "operator", "password": "nope"})
    assert wrong.status_code == 401
    assert "Wrong user or password" in wrong.text
    no_token = client.post("/login", data={"username": "operator", "password": "x"})
    assert no_token.status_code == 403
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_hostile_customer_name_renders_as_text_everywhere(client: httpx.Client, settings: Settings) -> None:
    log_in(client)
    entry = _first_dead_letter(settings)
    seen = 0
    for page in (*PAGES, f"/dead-letters/{entry['id']}", "/records?q=alert"):
        html = client.get(page).text
        assert XSS not in html, page
        seen += "&lt;script&gt;alert(1)&lt;/script&gt;" in html or "\\u003cscript\\u003e" in html
    assert seen >= 5  # it is shown (escaped) on the overview, the dead letters, the record and its search


def test_no_configured_secret_reaches_any_page_or_header(client: httpx.Client, settings: Settings) -> None:
    responses = [client.get("/login"), client.get("/static/console.css"), client.get("/static/console.js")]
    log_in(client)
    entry = _first_dead_letter(settings)
    responses += [client.get(page) for page in (*PAGES, f"/dead-letters/{entry['id']}")]
    for answer in responses:
        blob = answer.text + "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        for secret in SECRETS:
            assert secret not in blob, answer.url


def test_the_session_cookie_is_httponly_and_samesite_and_secure_only_over_tls(
    client: httpx.Client, settings: Settings
) -> None:
    cookie = client.get("/login").headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "secure" not in cookie.replace("samesite", "")
    tls = settings.model_copy(update={"console_tls_cert": "cert.pem", "console_tls_key": "key.pem"})
    with ServerThread(create_app(tls, live_reads=False)) as server:
        assert "; secure" in httpx.get(f"{server.url}/login").headers["set-cookie"].lower()


def test_pages_forbid_inline_script_and_framing(client: httpx.Client) -> None:
    headers = client.get("/login").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_the_console_binds_loopback_by_default_and_warns_when_exposed_without_tls() -> None:
    assert Settings().console_host == "127.0.0.1"
    assert bind_warning(Settings()) is None
    exposed = Settings(console_host="0.0.0.0")
    warning = bind_warning(exposed)
    assert warning is not None
    assert "without TLS" in warning
    tls = Settings(console_host="0.0.0.0", console_tls_cert="c.pem", console_tls_key="k.pem")
    assert bind_warning(tls) is None
