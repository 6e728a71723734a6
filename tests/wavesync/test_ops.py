"""The operator's commands as a person runs them: `wavesync status` and `wavesync dlq ...`, as tables and JSON.

Each test prepares a real SQLite link store and uses the session's real Redis; the commands run as subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from sandboxes.serve import free_port
from shared import keys
from shared.beat_lease import LEASE_TTL_S, BeatLease, beat_owner
from shared.deadletters import DeadLetters, Filter
from shared.leases import process_id
from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from tests.harness import CP_KEY, WAVE_TOKEN, Sandboxes
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis
from workers.deadletters import send_sync

REPO = Path(__file__).resolve().parents[2]


class Ops:
    """A link store with some history, and a way to run `wavesync` against it."""

    def __init__(self, workdir: Path, redis_url: str) -> None:
        self.workdir = workdir
        self.redis_url = redis_url
        self.database_url = f"sqlite:///{workdir / 'links.db'}"
        upgrade(self.database_url)
        self.db = Database(self.database_url)
        self.redis = redis.Redis.from_url(redis_url)
        self.now = datetime.now(UTC)

    def env(self, **extra: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
        return {
            **clean,
            "WAVESYNC_DATABASE_URL": self.database_url,
            "WAVESYNC_REDIS_URL": self.redis_url,
            "WAVESYNC_DATA_DIR": str(self.workdir),
            "WAVESYNC_LOG_FORMAT": "text",
            **extra,
        }

    def run(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wavesync", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=self.env(**extra_env),
            cwd=REPO,
        )

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def dead_letter(self, entity: str, source_id: str, error_class: str, reason: str, **fields: Any) -> None:
        with self.db.session() as session:
            store.record_dead_letter(
                session,
                entity=entity,
                source="customerp",
                source_id=source_id,
                customerp_id=source_id,
                wave_id=fields.get("wave_id"),
                message={"entity": entity, "source": "customerp", "source_id": source_id, "version": "000000000003"},
                version="000000000003",
                error_class=error_class,
                reason=reason,
                field_paths=fields.get("field_paths", []),
                now=fields.get("now"),
            )

    def entries(self, **where: Any) -> list[dict[str, Any]]:
        """The dead letters as the store holds them (for setting up and checking; the CLI is what is tested)."""
        return DeadLetters(self.db).list(Filter(**where))

    def queued(self, queue: str) -> list[dict[str, Any]]:
        """The sync messages waiting in `queue`, oldest first, as the worker would receive them."""
        out = []
        for raw in reversed(self.redis.lrange(queue, 0, -1)):
            envelope = json.loads(raw)
            args = json.loads(base64.b64decode(envelope["body"]))[0]
            out.append({"task": envelope["headers"]["task"], "message": args[0]})
        return out


@pytest.fixture
def ops(tmp_path: Path, redis_server: EmbeddedRedis) -> Any:
    clean_redis(redis_server.url)
    prepared = Ops(tmp_path, redis_server.url)
    now = prepared.now
    with prepared.db.session() as session:
        for n in range(3):
            store.save_link(
                session,
                None,
                entity="customers",
                customerp_id=f"cus_{n}",
                wave_id=f"W{n}",
                state=Settled({}),
                customerp_version="1",
                wave_version="1",
            )
        store.get_watermark(session, "customerp", "customers").position = (now - timedelta(minutes=3)).isoformat()
        store.get_watermark(session, "customerp", "customers").last_success_at = now - timedelta(seconds=20)
        store.get_watermark(session, "wave", "customers").position = (now - timedelta(minutes=1)).isoformat()
        store.get_watermark(session, "wave", "customers").last_success_at = now - timedelta(seconds=5)
    prepared.dead_letter(
        "customers",
        "cus_7",
        "InvalidDataError",
        "wave: customerCreate: Wave refused the input (internalNotes: Ensure this value has at most 4000 characters)",
        field_paths=["internalNotes"],
        now=now - timedelta(hours=2),
    )
    prepared.dead_letter("customers", "cus_7", "InvalidDataError", "still too long", field_paths=["internalNotes"])
    prepared.dead_letter("customers", "cus_8", "RetryableError", "gave up after 8 retries: wave: HTTP 503")
    prepared.dead_letter(
        "products",
        "prd_1",
        "ForbiddenEditError",
        "wave: the Wave product 'Old model' is archived and Wave's API cannot un-archive it",
        wave_id="WP1",
        field_paths=["archived"],
    )
    yield prepared
    clean_redis(redis_server.url)
    prepared.redis.close()


# --- dlq ----------------------------------------------------------------------------------------------------


def test_dlq_list_shows_every_entry_and_filters_by_entity_and_reason(ops: Ops) -> None:
    entries = ops.json("dlq", "list")
    assert [(e["entity"], e["source_id"], e["attempts"]) for e in entries] == [
        ("customers", "cus_7", 2),
        ("customers", "cus_8", 1),
        ("products", "prd_1", 1),
    ]
    first = entries[0]
    assert first["field_paths"] == ["internalNotes"]
    assert first["first_failed_at"] < first["last_failed_at"]
    assert first["customerp_id"] == "cus_7"
    assert [e["source_id"] for e in ops.json("dlq", "list", "--entity", "products")] == ["prd_1"]
    # The reason filter also matches the error class, case-insensitively.
    assert [e["source_id"] for e in ops.json("dlq", "list", "--reason", "forbiddenedit")] == ["prd_1"]


def test_dlq_list_as_a_table_is_readable(ops: Ops) -> None:
    assert ops.run("dlq", "list", "--entity", "orders").stdout.strip() == "no dead letters"
    result = ops.run("dlq", "list")
    assert result.returncode == 0, result.stderr
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == [
        *("id", "entity", "record", "error", "fields", "attempts", "last", "failure", "(UTC)", "reason")
    ]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 3
    assert "customerp:cus_7" in rows[0]
    assert rows[0].split()[3:6] == ["InvalidDataError", "internalNotes", "2"]
    assert "ForbiddenEditError" in rows[2]


def test_dlq_show_prints_one_entry_in_full(ops: Ops) -> None:
    [entry] = ops.entries(entity="products")
    shown = ops.json("dlq", "show", str(entry["id"]))
    assert shown == entry
    assert shown["message"]["source_id"] == "prd_1"
    text = ops.run("dlq", "show", str(entry["id"])).stdout
    assert "error_class: ForbiddenEditError" in text
    assert "field_paths: archived" in text
    assert '"source_id": "prd_1"' in text


def test_dlq_replay_one_entry_enqueues_a_reread_and_keeps_the_entry(ops: Ops) -> None:
    [entry] = ops.entries(reason="503")
    assert ops.json("dlq", "replay", str(entry["id"])) == {"replayed": 1}
    [queued] = ops.queued("customers")
    assert queued["task"] == keys.SYNC_TASK["customers"]
    assert queued["message"] == {
        "entity": "customers",
        "source": "customerp",
        "source_id": "cus_8",
        "version": "",
        "deleted": False,
        "snapshot": None,
        "reread": True,
    }
    # The entry stays until the worker syncs the record.
    [after] = ops.entries(reason="503")
    assert after["replayed_at"] is not None
    assert after["attempts"] == 1


def test_replaying_many_entries_reports_progress_in_batches(ops: Ops) -> None:
    for n in range(230):
        ops.dead_letter("orders", f"ord_{n}", "InvalidDataError", "line 1: no product")
    result = ops.run("dlq", "replay", "--entity", "orders")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ["replayed 100/230", "replayed 200/230", "replayed 230/230"]
    assert result.stdout.strip() == "230 dead letter(s) re-enqueued"
    assert (len(ops.queued("orders")), len(ops.queued("customers")), len(ops.queued("products"))) == (230, 0, 0)


def test_dlq_commands_refuse_bad_input_with_one_clear_line(ops: Ops) -> None:
    for args, status, message in [
        (("dlq", "replay"), 2, "name an entry ID, or use --entity, --reason or --all"),
        (("dlq", "purge"), 2, "name an entry ID, or use --entity, --reason or --all"),
        (("dlq", "list", "--entity", "invoices"), 2, "--entity must be one of customers, products, orders"),
        (("dlq", "show", "9999"), 1, "no dead letter 9999"),
    ]:
        result = ops.run(*args)
        assert (result.returncode, message in result.stderr) == (status, True), (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert len(ops.entries()) == 3


def test_dlq_on_a_database_never_migrated_says_what_to_do(ops: Ops, tmp_path: Path) -> None:
    result = ops.run("dlq", "list", WAVESYNC_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.returncode == 1
    assert "run `wavesync db upgrade`" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_replay_redis_refuses_is_one_line_and_not_recorded_as_replayed(ops: Ops) -> None:
    [first, *_] = ops.entries()
    down = ops.run("dlq", "replay", str(first["id"]), WAVESYNC_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert down.stderr.strip().splitlines()[-1].startswith("wavesync: cannot reach Redis (")
    [after] = [e for e in ops.entries() if e["id"] == first["id"]]
    assert after["replayed_at"] is None  # nothing was sent, so nothing says it was


def test_dlq_purge_gives_up_without_syncing_and_remembers_the_failed_versions(ops: Ops) -> None:
    with ops.db.session() as session:
        failed = store.dead_letter_versions(session, "customers", "customerp", ["cus_7", "cus_8"])
    assert ops.json("dlq", "purge", "--reason", "forbidden") == {"purged": 1}
    first = ops.entries()[0]
    assert ops.run("dlq", "purge", str(first["id"])).stdout.strip() == "1 dead letter(s) purged"
    assert ops.json("dlq", "purge", "--all") == {"purged": 1}
    assert ops.entries() == []
    with ops.db.session() as session:
        # Pollers still skip the versions given up on: only an edit sends the records again.
        assert store.dead_letter_versions(session, "customers", "customerp", ["cus_7", "cus_8"]) == failed
    assert {e["resolution"] for e in ops.entries(status="resolved")} == {"purged"}
    assert ops.queued("customers") == []


# --- status -------------------------------------------------------------------------------------------------


def test_status_json_has_queues_dead_letters_watermarks_links_and_lag(ops: Ops) -> None:
    DeadLetters(ops.db).replay(Filter(entity="customers"), send_sync)  # two replays wait in the customers queue
    # A product change made ten minutes ago waits in its queue.
    changed = (ops.now - timedelta(minutes=10)).isoformat()
    message = {"entity": "products", "source": "customerp", "source_id": "prd_9", "snapshot": {"updated_at": changed}}
    send_sync(keys.SYNC_TASK["products"], message, "products")
    ops.redis.hset(keys.poll_stats_key("wave", "customers"), mapping={"seen": 4, "enqueued": 1})
    report = ops.json("status")
    assert 600 <= report["entities"]["products"]["sync_lag_s"] < 700
    assert report["entities"]["products"]["waiting"] == 1
    customers = report["entities"]["customers"]
    assert customers["waiting"] == 2
    assert customers["unacked"] == 0
    assert customers["links"] == 3
    assert customers["dead_letters"] == 2
    assert customers["dead_letters_by_reason"] == {"InvalidDataError": 1, "RetryableError": 1}
    # The queued replays carry no record time: the lag is the time since the pollers last finished.
    assert 19 <= customers["sync_lag_s"] < 60
    assert report["entities"]["products"]["dead_letters_by_reason"] == {"ForbiddenEditError": 1}
    assert report["entities"]["orders"]["sync_lag_s"] is None  # its pollers never ran
    assert report["queues"]["control"] == {"waiting": 0, "unacked": 0}
    pollers = {(p["system"], p["entity"]): p for p in report["pollers"]}
    assert set(pollers) == {("customerp", "customers"), ("wave", "customers")}
    wave = pollers[("wave", "customers")]
    assert wave["last_run"] == {"seen": "4", "enqueued": "1"}
    assert 55 <= wave["newest_change_age_s"] < 120
    assert 4 <= wave["since_success_s"] < 60
    assert report["rate_limits"]["wave"]["configured_per_s"] == 20.0
    # Wave's fleet-wide in-flight cap (default 2) is shown with the calls holding a lease now; Customerp has none.
    assert report["rate_limits"]["wave"]["max_in_flight"] == 2
    assert report["rate_limits"]["wave"]["in_flight"] >= 0
    assert "max_in_flight" not in report["rate_limits"]["customerp"]


def test_status_table_is_readable(ops: Ops) -> None:
    result = ops.run("status")
    assert result.returncode == 0, result.stderr
    queues, pollers, *rest = result.stdout.split("\n\n")
    lines = queues.splitlines()
    assert lines[0].split() == [
        "queue",
        "waiting",
        "unacked",
        "links",
        "dead",
        "letters",
        "by",
        "reason",
        "sync",
        "lag",
    ]
    customers = next(line for line in lines if line.startswith("customers"))
    assert "InvalidDataError 1, RetryableError 1" in customers
    assert any(line.startswith("control") for line in lines)
    assert pollers.splitlines()[0].split()[:4] == ["poller", "entity", "watermark", "last"]
    assert "rate limit" in rest[0]
    assert "of 2 in flight" in rest[0]


def test_status_names_the_beat_holding_the_lease_and_warns_when_none_does(ops: Ops) -> None:
    assert ops.json("status")["beat"] == {"holder": None, "renewed_s_ago": None, "expires_in_s": None}
    nobody = ops.run("status")
    assert nobody.returncode == 0, nobody.stderr
    assert "! beat: none holds the lease: no polls are scheduled" in nobody.stdout
    lease = BeatLease(ops.redis, beat_owner())  # as a running `wavesync beat` holds it
    assert lease.hold()
    try:
        ops.redis.pexpire(keys.beat_lease_key(), int((LEASE_TTL_S - 3) * 1000))  # last renewed 3 s ago
        beat = ops.json("status")["beat"]
        shown = ops.run("status").stdout
    finally:
        lease.release()
    holder = process_id().rsplit(":", 1)[0]  # this test's host:pid, without the nonce
    assert beat["holder"] == holder
    # Read off the TTL left, which only falls while the test's subprocesses start: no upper bound on how long.
    assert beat["renewed_s_ago"] >= 3
    assert beat["expires_in_s"] <= LEASE_TTL_S - 3
    assert abs(beat["renewed_s_ago"] + beat["expires_in_s"] - LEASE_TTL_S) <= 0.2
    line = re.search(rf"^beat: scheduling \({re.escape(holder)}\), lease renewed (\d+) s ago$", shown, re.M)
    assert line is not None, shown
    assert int(line.group(1)) >= 3
    assert "none holds the lease" not in shown


def test_status_without_redis_still_reports_what_the_database_knows(ops: Ops) -> None:
    result = ops.run("status", WAVESYNC_REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 0, result.stderr
    assert "note: Redis unreachable" in result.stdout
    assert "beat:" not in result.stdout  # unknown, neither claimed nor denied
    customers = next(line for line in result.stdout.splitlines() if line.startswith("customers"))
    assert customers.split()[:5] == ["customers", "?", "?", "3", "2"]


# --- long-running commands ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def boxes() -> Iterator[Sandboxes]:
    sandboxes = Sandboxes()
    yield sandboxes
    sandboxes.stop()


@pytest.mark.integration
def test_reconcile_reports_progress_on_stderr_and_its_result_on_stdout(ops: Ops, boxes: Sandboxes) -> None:
    boxes.reset()
    boxes.cp("POST", "seed", {"customers": 2, "products": 0, "orders": 0, "seed": 4})
    env = {
        "WAVESYNC_CUSTOMERP_URL": boxes.customerp.url,
        "WAVESYNC_CUSTOMERP_API_KEY": CP_KEY,
        "WAVESYNC_WAVE_URL": f"{boxes.wave.url}/graphql/public",
        "WAVESYNC_WAVE_TOKEN": WAVE_TOKEN,
    }
    result = ops.run("reconcile", "--check", **env)
    assert result.returncode == 1  # two Customerp customers are missing in Wave
    assert "customers: reading Customerp" in result.stderr
    assert "customers: reading Wave" in result.stderr
    assert "problem(s) found" in result.stdout
    quiet = ops.run("reconcile", "--check", "--json", **env)
    assert quiet.stderr == ""
    [customers] = [r for r in json.loads(quiet.stdout) if r["entity"] == "customers"]
    assert len(customers["missing_in_wave"]) == 2
