"""The console's guards through its real HTTP surface: login, roles, CSRF, escaping, and no secret anywhere."""

from __future__ import annotations

import base64
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from sandboxes.serve import ServerThread
from shared import history
from shared.deadletters import DeadLetters, Filter
from shared.settings import Settings, describe_validation_error
from shared.store import links as store
from shared.store.db import Database
from shared.store.link_state import Settled
from tests.wavesync.console.conftest import (
    CP_KEY,
    OPERATOR_PASSWORD,
    SECRETS,
    VIEWER_PASSWORD,
    WAVE_TOKEN,
    XSS,
    console_settings,
    csrf_of,
    hidden_fields,
    log_in,
    seed,
)
from wavesync.console.app import FAILED_LOGIN_DELAY, bind_warning, create_app
from wavesync.console.auth import SESSION_MAX_AGE, Sessions
from wavesync.console.core import Console
from wavesync.embedded import EmbeddedRedis

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


EVERY_ID = str(2**62)  # a confirmation's "up to" that names every entry: the guards alone must stop these actions


def _first_dead_letter(settings: Settings) -> dict[str, Any]:
    [entry] = DeadLetters(Database(settings.database_url)).list(Filter())
    return entry


def _actions(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    entry = _first_dead_letter(settings)
    return [
        ("/dead-letters/replay", {"scope": "selected", "ids": str(entry["id"])}),
        ("/dead-letters/replay", {"scope": "matching", "status": "open", "confirm": "yes", "up_to": EVERY_ID}),
        ("/dead-letters/purge", {"scope": "selected", "ids": str(entry["id"]), "confirm": "yes", "up_to": EVERY_ID}),
        ("/dead-letters/purge", {"scope": "matching", "status": "all", "confirm": "yes", "up_to": EVERY_ID}),
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
    done = client.post("/dead-letters/purge", data=hidden_fields(asked.text))
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


def _guessed(client: httpx.Client, url: str, guess: str) -> str:
    """The page with the guess itself blanked out: what is left must not depend on whether it was a secret."""
    answer = client.get(url.format(guess=guess))
    assert answer.status_code in (200, 404), (url, answer.status_code)
    return answer.text.replace(guess, "GUESS")


def test_a_guess_at_a_secret_is_answered_like_any_other_guess(client: httpx.Client) -> None:
    others = ("not-a-secret-1234", "zz-nothing-like-it")
    client.get("/login")  # the session (and its CSRF token) exists before the comparison
    for secret in SECRETS:
        for other in others:
            assert _guessed(client, "/login?next=/{guess}", secret) == _guessed(client, "/login?next=/{guess}", other)
    log_in(client, "viewer", VIEWER_PASSWORD)
    for url in (
        "/records?q={guess}",
        "/dead-letters?reason={guess}",
        "/dead-letters?error_class={guess}&status=all",
        "/records/customers/customerp/{guess}",
        "/records/customers/customerp/{guess}?before=5",
    ):
        for secret in SECRETS:
            assert _guessed(client, url, secret) == _guessed(client, url, others[0]), url


def test_the_login_page_never_echoes_next_and_the_login_returns_where_it_was_asked(client: httpx.Client) -> None:
    assert "next" not in client.get("/login?next=/records").text
    assert client.get("/dead-letters", follow_redirects=False).headers["location"] == "/login"
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"csrf": token, "username": "operator", "password": OPERATOR_PASSWORD})
    assert str(answer.url).endswith("/dead-letters")


def test_failed_logins_wait_their_turn_and_are_logged_without_the_password(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(n: int) -> int:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as own:
            token = csrf_of(own.get("/login").text)
            form = {"csrf": token, "username": "operator", "password": f"wrong-guess-{n}"}
            return own.post("/login", data=form).status_code

    caplog.set_level(logging.WARNING, logger="wavesync.console.app")
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(fail, range(6))) == [401] * 6
    # In parallel, six failures would take ~0.5s if each slept on its own; queued they take ~3s.
    assert time.monotonic() - started >= 6 * FAILED_LOGIN_DELAY * 0.9
    assert caplog.text.count("console login failed for 'operator' from 127.0.0.1") == 6
    assert "wrong-guess" not in caplog.text


def test_a_right_guess_among_parallel_wrong_ones_waits_its_turn(client: httpx.Client) -> None:
    """Checking the password before taking the turn let a right guess return at once while only wrong ones queued:
    a parallel guesser learned which one was right within milliseconds, far beyond two guesses a second."""
    wrong = 6
    clients = [httpx.Client(base_url=str(client.base_url), timeout=30) for _ in range(wrong + 1)]
    try:
        tokens = [csrf_of(c.get("/login").text) for c in clients]
        finished: dict[str, float] = {}

        def attempt(n: int) -> int:
            password = OPERATOR_PASSWORD if n == wrong else f"wrong-guess-{n}"
            form = {"csrf": tokens[n], "username": "operator", "password": password}
            status = clients[n].post("/login", data=form).status_code
            finished[str(n)] = time.monotonic()
            return status

        with ThreadPoolExecutor(wrong + 1) as pool:
            failures = [pool.submit(attempt, n) for n in range(wrong)]
            time.sleep(FAILED_LOGIN_DELAY)  # the wrong guesses are all queued for their turn by now
            sent = time.monotonic()
            right = pool.submit(attempt, wrong)
            assert right.result() == 303
            assert [f.result() for f in failures] == [401] * wrong
        # The first wrong guess had its turn before; the other five were queued ahead of the right one.
        assert finished[str(wrong)] - sent >= (wrong - 2) * FAILED_LOGIN_DELAY
        assert sum(t <= finished[str(wrong)] for n, t in finished.items() if n != str(wrong)) >= wrong - 1
    finally:
        for each in clients:
            each.close()


def test_a_changed_password_ends_the_sessions_made_with_the_old_one(client: httpx.Client, settings: Settings) -> None:
    log_in(client)
    with ServerThread(create_app(settings, live_reads=False)) as same:
        assert client.get(f"{same.url}/", follow_redirects=False).status_code == 200  # the cookie is good elsewhere
    changed = settings.model_copy(update={"console_password": SecretStr("a-brand-new-password")})
    with ServerThread(create_app(changed, live_reads=False)) as other:
        answer = client.get(f"{other.url}/", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"


def test_console_passwords_and_the_session_key_shorter_than_12_are_refused() -> None:
    for name in ("console_password", "console_readonly_password", "console_session_key"):
        with pytest.raises(ValidationError) as refused:
            Settings(**{name: "short-11-ch"})
        assert describe_validation_error(refused.value) == [
            f"invalid setting WAVESYNC_{name.upper()}: must be at least 12 characters long"
        ]
        assert Settings(**{name: "long-enough!"})  # 12


def test_over_large_ids_are_not_found_rather_than_an_error(client: httpx.Client) -> None:
    token = log_in(client)
    huge = str(2**64)
    assert client.get(f"/dead-letters/{huge}").status_code == 404
    assert client.get(f"/dead-letters?before={huge}").status_code == 200
    assert client.get(f"/records/customers/customerp/101?before={huge}").status_code == 200
    replayed = client.post("/dead-letters/replay", data={"csrf": token, "scope": "selected", "ids": huge})
    assert "nothing selected" in replayed.text


def test_ids_in_links_are_url_encoded(client: httpx.Client, settings: Settings) -> None:
    odd = "a/b?c#d e"
    with Database(settings.database_url).session() as session:
        store.record_dead_letter(
            session,
            entity="customers",
            source="customerp",
            source_id=odd,
            customerp_id=odd,
            wave_id=None,
            message={"entity": "customers", "source": "customerp", "source_id": odd},
            version="1",
            error_class="InvalidDataError",
            reason="odd id",
            field_paths=[],
        )
    log_in(client)
    assert 'href="/records/customers/customerp/a%2Fb%3Fc%23d%20e"' in client.get("/dead-letters").text
    record = client.get("/records/customers/customerp/a%2Fb%3Fc%23d%20e")
    assert 'formaction="/records/customers/customerp/a%2Fb%3Fc%23d%20e/sync"' in record.text


def test_a_search_that_finds_an_odd_id_opens_that_record(client: httpx.Client, settings: Settings) -> None:
    odd = "a/b?c#d e"
    with Database(settings.database_url).session() as session:
        store.save_link(
            session,
            None,
            entity="customers",
            customerp_id=odd,
            wave_id="W-odd",
            state=Settled({"name": "Odd Ids Ltd", "email": "odd@example.com", "number": "C-odd"}),
            customerp_version="1",
            wave_version="2026-01-01T00:00:00.000Z",
        )
    log_in(client)
    encoded = "/records/customers/customerp/a%2Fb%3Fc%23d%20e"
    found = client.get("/records", params={"q": "W-odd"}, follow_redirects=False)
    assert found.headers["location"] == encoded
    opened = client.get("/records", params={"q": "W-odd"})
    assert opened.url.raw_path.decode() == encoded
    assert "Odd Ids Ltd" in opened.text
    # Two results: the list links each the same way.
    listed = client.get("/records", params={"q": "Ltd"}).text
    assert f'href="{encoded}"' in listed


def test_an_over_long_search_is_refused_with_a_message(client: httpx.Client) -> None:
    log_in(client)
    answer = client.get("/records", params={"q": "x" * 60_000})
    assert answer.status_code == 400
    assert "The search is too long: at most 200 characters" in answer.text
    assert client.get("/records", params={"q": "W-101" + " " * 10}).status_code == 200  # spaces are trimmed first


def test_a_secret_that_reached_the_data_is_never_shown(client: httpx.Client, settings: Settings) -> None:
    leak = f"Leaky {CP_KEY} & Co"
    with Database(settings.database_url).session() as session:
        store.save_link(
            session,
            None,
            entity="customers",
            customerp_id="105",
            wave_id="W-105",
            state=Settled({"name": leak, "email": "leaky@example.com", "number": "C-105"}),
            customerp_version="1",
            wave_version="2026-01-01T00:00:00.000Z",
        )
        store.record_dead_letter(
            session,
            entity="customers",
            source="customerp",
            source_id="106",
            customerp_id="106",
            wave_id=None,
            message={"entity": "customers", "source": "customerp", "source_id": "106", "snapshot": {"n": leak}},
            version="1",
            error_class="InvalidDataError",
            reason=f"refused: {leak} (token {WAVE_TOKEN})",
            field_paths=[f"name.{CP_KEY}"],
        )
    log_in(client)
    pages = (*PAGES, "/records?q=Leaky", "/records/customers/customerp/105", "/records/customers/customerp/106")
    letters = DeadLetters(Database(settings.database_url)).list(Filter(status="all"))
    seen = 0
    for page in (*pages, *(f"/dead-letters/{e['id']}" for e in letters)):
        html = client.get(page).text
        for secret in SECRETS:
            assert secret not in html, page
        seen += "Leaky *** &amp; Co" in html
    assert seen >= 3  # the name is shown, redacted: the list, the record, its dead letter


def test_secrets_with_html_or_json_special_characters_or_cut_short_are_never_shown(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """tojson writes & < ' as \\u0026 \\u003c \\u0027 (not what redaction looks for), and a long space-free secret cut
    by truncate or a slice is no longer the whole secret: both showed part of a secret before."""
    amp_key = "amp&lt<'key-9f3e2a7c"
    long_token = "tok" + "7b3e9d1c" * 25  # 203 characters, no space for truncate to break at
    # The data was written while neither was a configured secret (say, before a key rotation)...
    before = console_settings(tmp_path, redis_server.url)
    seed(before)
    leak = f"Leaky {amp_key} Co token={long_token}"
    with Database(before.database_url).session() as session:
        store.record_dead_letter(
            session,
            entity="customers",
            source="customerp",
            source_id=long_token,
            customerp_id=long_token,
            wave_id=None,
            message={"entity": "customers", "source_id": long_token, "snapshot": {"n": leak, amp_key: 1}},
            version="1",
            error_class="InvalidDataError",
            reason=f"token={long_token} {amp_key}",
            field_paths=[],
        )
        skipped = history.decision(before, "skipped", "customers", "wave", long_token, reason=f"token={long_token}")
        history.record(session, skipped)
    # ...and is shown while both are.
    after = console_settings(tmp_path, redis_server.url, customerp_api_key=amp_key, wave_token=long_token)
    letters = DeadLetters(Database(after.database_url)).list(Filter(status="all"))
    with (
        ServerThread(create_app(after, live_reads=False)) as server,
        httpx.Client(base_url=server.url, follow_redirects=True, timeout=30) as client,
    ):
        log_in(client)
        pages = ("/", "/dead-letters", *(f"/dead-letters/{e['id']}" for e in letters))
        fragments = ("9f3e2a7c", "7b3e9d1c")
        leaked = [page for page in pages if any(f in client.get(page).text for f in fragments)]
        assert leaked == []
        entry = client.get(f"/dead-letters/{letters[-1]['id']}").text
        assert "Leaky *** Co token=***" in entry  # the message is shown, redacted


def test_logging_out_ends_the_session_for_a_copied_cookie_too(client: httpx.Client, settings: Settings) -> None:
    token = log_in(client)
    with httpx.Client(base_url=str(client.base_url), timeout=30, cookies=client.cookies) as thief:
        assert thief.get("/", follow_redirects=False).status_code == 200
        client.post("/logout", data={"csrf": token})
        answer = thief.get("/", follow_redirects=False)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303


def test_a_session_lasts_twelve_hours_after_its_last_use_in_every_console(
    client: httpx.Client, settings: Settings, redis_server: EmbeddedRedis
) -> None:
    log_in(client)
    console = Console(settings, live_reads=False)
    try:
        assert console.redis is not None
        signed = client.cookies["wavesync_console"]
        key = Sessions.key(json.loads(base64.b64decode(signed.split(".")[0]))["sid"])
        assert SESSION_MAX_AGE - 60 < console.redis.ttl(key) <= SESSION_MAX_AGE
        console.redis.expire(key, 100)
        assert client.get("/", follow_redirects=False).status_code == 200
        assert console.redis.ttl(key) > SESSION_MAX_AGE - 60  # used: the expiry moved on
        with ServerThread(create_app(settings, live_reads=False)) as other:
            assert client.get(f"{other.url}/", follow_redirects=False).status_code == 200  # one session store
        console.redis.delete(key)  # expired, or deleted by a logout elsewhere
        assert client.get("/", follow_redirects=False).status_code == 303
    finally:
        console.close()


def test_the_cookie_can_be_marked_secure_behind_a_tls_proxy(settings: Settings) -> None:
    behind_proxy = settings.model_copy(update={"console_secure_cookie": True})
    with ServerThread(create_app(behind_proxy, live_reads=False)) as server:
        assert "; secure" in httpx.get(f"{server.url}/login").headers["set-cookie"].lower()
    assert Settings.model_validate({"console_secure_cookie": "false"}).console_secure_cookie is False
