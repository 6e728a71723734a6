"""What the console's pages show: the overview's numbers are `status --json`'s, lists paginate, search finds a
record by any of its ids or values, and `wavesync console` / `wavesync history` behave as commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import func, insert, select

from sandboxes.serve import ServerThread
from shared import keys
from shared.beat_lease import BeatLease
from shared.deadletters import DeadLetters, Filter
from shared.settings import Settings
from shared.store import links as store
from shared.store.db import Database
from shared.store.models import DeadLetter, HistoryEntry
from tests.wavesync.console.conftest import hidden_fields, log_in
from wavesync.console.app import create_app
from wavesync.console.core import Console
from wavesync.console.dead_letters import COUNT_CAP, REPLAY_LOCK
from wavesync.ops import collect_status
from workers.deadletters import send_sync

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def status_numbers(html: str) -> dict[str, str]:
    return dict(re.findall(r'data-status="([^"]+)">(?:<a [^>]*>)?([^<]*)<', html))


def test_the_overview_shows_the_numbers_of_status_json(client: httpx.Client, settings: Settings) -> None:
    log_in(client)
    shown = status_numbers(client.get("/").text)
    report = collect_status(settings)
    expected = {}
    for entity, numbers in report["entities"].items():
        for name in ("links", "waiting", "unacked", "dead_letters"):
            expected[f"entities.{entity}.{name}"] = str(numbers[name])
        for reason, count in numbers["dead_letters_by_reason"].items():
            expected[f"dead_letters.{entity}.{reason}"] = str(count)
    assert {k: v for k, v in shown.items() if k in expected} == expected
    assert shown["entities.customers.links"] == "2"
    assert shown["entities.customers.dead_letters"] == "1"  # the resolved entry is not counted


def test_the_overview_says_which_beat_schedules_or_that_none_does(client: httpx.Client, settings: Settings) -> None:
    assert settings.redis_url is not None
    shared_redis = redis.Redis.from_url(str(settings.redis_url))
    shared_redis.delete(keys.beat_lease_key())  # the session's Redis: a killed test beat's lease may linger 15 s
    log_in(client)
    assert status_numbers(client.get("/").text)["beat.holder"] == "none holds the lease: no polls are scheduled"
    lease = BeatLease(shared_redis, "beat-host:4242:abcd1234 scope")
    assert lease.hold()
    try:
        assert status_numbers(client.get("/").text)["beat.holder"] == "beat-host:4242"
    finally:
        lease.release()


def test_the_overview_says_the_connection_state_in_words(client: httpx.Client) -> None:
    log_in(client)
    # `status`'s own words, not a dump of its fields (token auth here: nothing to connect).
    assert status_numbers(client.get("/").text)["connections.wave"] == "static token"


def test_resolved_dead_letters_stay_visible_as_resolved(client: httpx.Client) -> None:
    log_in(client)
    open_page = client.get("/dead-letters").text
    assert "customerp:103" in open_page
    assert "customerp:104" not in open_page
    resolved = client.get("/dead-letters?status=resolved").text
    assert "customerp:104" in resolved
    assert ">synced<" in resolved


def test_the_dead_letter_list_pages_newest_first(client: httpx.Client, settings: Settings) -> None:
    with Database(settings.database_url).session() as session:
        for n in range(120):
            store.record_dead_letter(
                session,
                entity="products",
                source="wave",
                source_id=f"P-{n:03d}",
                customerp_id=None,
                wave_id=f"P-{n:03d}",
                message={},
                version="",
                error_class="PermanentError",
                reason="refused",
                field_paths=[],
            )
    log_in(client)
    first = client.get("/dead-letters?entity=products").text
    assert "wave:P-119" in first
    assert "wave:P-069" not in first
    older = re.search(r'href="(/dead-letters\?[^"]*before=\d+)"', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert "wave:P-069" in second
    assert "wave:P-119" not in second


@pytest.mark.parametrize("query", ["W-101", "101", "evil@example.com", "C-101", "EVIL@"])
def test_search_finds_a_record_by_any_id_or_value(client: httpx.Client, query: str) -> None:
    log_in(client)
    answer = client.get("/records", params={"q": query})
    assert str(answer.url).endswith("/records/customers/customerp/101"), query
    assert "W-101" in answer.text


def test_replay_from_the_list_marks_the_entry_replayed_and_records_it(client: httpx.Client, settings: Settings) -> None:
    token = log_in(client)
    [entry] = DeadLetters(Database(settings.database_url)).list(Filter())
    done = client.post("/dead-letters/replay", data={"csrf": token, "scope": "selected", "ids": str(entry["id"])})
    assert "replayed 1 dead letter(s)" in done.text
    [after] = DeadLetters(Database(settings.database_url)).list(Filter())
    assert after["replayed_at"] is not None
    record = client.get("/records/customers/customerp/103").text
    assert "k-replayed" in record


def _wavesync(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    clean |= {"WAVESYNC_DATABASE_URL": settings.database_url, "WAVESYNC_DATA_DIR": str(settings.data_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args], capture_output=True, text=True, env=clean, cwd=REPO, timeout=60
    )


def test_history_command_prints_a_records_decisions(settings: Settings) -> None:
    text = _wavesync(settings, "history", "customers", "evil@example.com")
    assert text.returncode == 0, text.stderr
    assert "merged" in text.stdout
    assert "phone: 1 -> 2 (customerp)" in text.stdout
    as_json = json.loads(_wavesync(settings, "history", "customers", "W-101", "--json").stdout)
    [found] = as_json
    assert found["customerp_id"] == "101"
    assert [e["kind"] for e in found["history"]] == ["dead-lettered", "merged"]
    missing = _wavesync(settings, "history", "customers", "nobody-at-all")
    assert missing.returncode == 1
    assert "no customers record matches" in missing.stderr


def test_console_refuses_to_start_without_an_operator_password(settings: Settings) -> None:
    answer = _wavesync(settings, "console")
    assert answer.returncode == 2
    assert answer.stderr.strip().splitlines() == [
        "wavesync: set WAVESYNC_CONSOLE_PASSWORD (the operator's login) to serve the console"
    ]


def _add_dead_letters(settings: Settings, entity: str, names: list[str]) -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "entity": entity,
            "source": "wave",
            "source_id": name,
            "wave_id": name,
            "message": {},
            "error_class": "PermanentError",
            "reason": "refused",
            "field_paths": [],
            "first_failed_at": now,
            "last_failed_at": now,
        }
        for name in names
    ]
    with Database(settings.database_url).session() as session:
        session.execute(insert(DeadLetter), rows)


def _open(settings: Settings, entity: str) -> list[dict[str, Any]]:
    return DeadLetters(Database(settings.database_url)).list(Filter(entity=entity))


def test_purge_all_matching_names_the_exact_count_and_purges_only_what_was_confirmed(
    client: httpx.Client, settings: Settings
) -> None:
    _add_dead_letters(settings, "products", [f"P-{n:05d}" for n in range(COUNT_CAP + 1)])
    token = log_in(client)
    assert "10,000+ open entries match" in client.get("/dead-letters?entity=products").text
    filtered = {"csrf": token, "scope": "matching", "entity": "products", "status": "open"}
    asked = client.post("/dead-letters/purge", data=filtered)
    assert "Purge 10,001 dead letter(s)?" in asked.text
    assert "Every one of the open entries of products:" in asked.text  # what "all matching" means, in words
    assert len(_open(settings, "products")) == COUNT_CAP + 1  # asking changed nothing
    _add_dead_letters(settings, "products", ["P-arrived-meanwhile"])
    done = client.post("/dead-letters/purge", data=hidden_fields(asked.text))
    assert "purged 10001 dead letter(s)" in done.text
    assert [e["source_id"] for e in _open(settings, "products")] == ["P-arrived-meanwhile"]


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    opened = threading.Event()
    yield opened
    opened.set()  # never leave a replay thread waiting


@pytest.fixture
def gated_client(settings: Settings, gate: threading.Event) -> Iterator[tuple[httpx.Client, Console]]:
    """A console whose replays send through the real queue, each message only once the gate opens: a replay in
    progress stays in progress for as long as the test needs."""

    def send(task: str, message: dict[str, Any], queue: str) -> None:
        assert gate.wait(30), "the gate never opened"
        send_sync(task, message, queue)

    console = Console(settings, live_reads=False, send=send)
    with (
        ServerThread(create_app(settings, console=console)) as server,
        httpx.Client(base_url=server.url, follow_redirects=True, timeout=30) as http,
    ):
        yield http, console


def _replayed_rows(settings: Settings) -> int:
    with Database(settings.database_url).session() as session:
        return int(session.scalar(select(func.count()).where(HistoryEntry.kind == "replayed")) or 0)


def test_replay_all_matching_asks_first_runs_in_the_background_once_and_only_what_was_confirmed(
    gated_client: tuple[httpx.Client, Console], settings: Settings, gate: threading.Event
) -> None:
    client, console = gated_client
    _add_dead_letters(settings, "products", [f"P-{n}" for n in range(3)])
    token = log_in(client)
    asked = client.post("/dead-letters/replay", data={"csrf": token, "scope": "matching", "status": "open"})
    assert "Replay 4 dead letter(s)?" in asked.text  # customer 103 and three products
    assert all(e["replayed_at"] is None for e in _open(settings, "products"))
    _add_dead_letters(settings, "products", ["P-arrived-meanwhile"])
    confirmed = hidden_fields(asked.text)
    started = client.post("/dead-letters/replay", data=confirmed)
    assert "replaying 4 dead letter(s) (every one of the open entries (no filter)) in the background" in started.text
    again = client.post("/dead-letters/replay", data=confirmed)  # a double click, or a second operator
    assert "a replay of all matching entries is already running" in again.text
    assert console.redis is not None
    assert console.redis.exists(REPLAY_LOCK)  # another console process on this Redis is refused too
    assert "Replaying all matching entries in the background: 0 of 4 sent" in client.get("/dead-letters").text
    gate.set()
    deadline = time.monotonic() + 30
    while console.replay_progress is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert console.replay_progress is None
    assert not console.redis.exists(REPLAY_LOCK)
    replayed = {e["source_id"]: e["replayed_at"] is not None for e in _open(settings, "products")}
    assert replayed == {"P-0": True, "P-1": True, "P-2": True, "P-arrived-meanwhile": False}
    assert _replayed_rows(settings) == 4  # once each, not twice


def test_replay_all_matching_is_refused_while_another_console_runs_one(
    client: httpx.Client, settings: Settings
) -> None:
    other = Console(settings, live_reads=False)
    assert other.redis is not None
    lock = other.redis.lock(REPLAY_LOCK, timeout=60, thread_local=False)
    assert lock.acquire(blocking=False)
    try:
        token = log_in(client)
        asked = client.post("/dead-letters/replay", data={"csrf": token, "scope": "matching", "status": "open"})
        assert "running in another console process" in client.get("/dead-letters").text
        refused = client.post("/dead-letters/replay", data=hidden_fields(asked.text))
        assert "a replay of all matching entries is already running" in refused.text
        assert _replayed_rows(settings) == 0
    finally:
        lock.release()
        other.close()


def test_an_over_long_reason_filter_is_refused_with_a_message(client: httpx.Client) -> None:
    token = log_in(client)
    listed = client.get("/dead-letters", params={"reason": "x" * 60_000})
    assert listed.status_code == 200
    assert "The reason filter is too long: at most 200 characters" in listed.text
    form = {"csrf": token, "scope": "matching", "reason": "x" * 60_000}
    assert "the reason filter is over 200 characters" in client.post("/dead-letters/purge", data=form).text
