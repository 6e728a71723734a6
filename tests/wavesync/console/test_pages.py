"""What the console's pages show: the overview's numbers are `status --json`'s, lists paginate, search finds a
record by any of its ids or values, and `wavesync console` / `wavesync history` behave as commands."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from shared.deadletters import DeadLetters, Filter
from shared.settings import Settings
from shared.store import links as store
from shared.store.db import Database
from tests.wavesync.console.conftest import log_in
from wavesync.ops import collect_status

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
