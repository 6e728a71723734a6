"""Every failure class through a real worker: what is retried, what waits for the fleet, what dead-letters at once.

Faults are injected into the sandboxes over HTTP (see sandboxes/faults.py); the worker is a real Celery process
on the session's Redis; dead letters are read from the link store the worker wrote.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from shared import keys
from shared.celery_app import app
from tests.harness import CP_KEY, WAVE_TOKEN, Sandboxes
from tests.workers.support import (
    cp_customers,
    drain,
    faults_injected,
    new_customer,
    ready,
    running,
    wait_for,
    wave_calls,
    wave_customers,
)
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration


@pytest.fixture
def env(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> tuple[Sandboxes, str, Path]:
    return boxes, redis_server.url, tmp_path


# --- retryable errors -------------------------------------------------------------------------------------


def test_a_wave_outage_is_retried_with_backoff_until_the_record_syncs(env: tuple[Sandboxes, str, Path]) -> None:
    with running(*env, max_retries=30) as system:
        ready(system)
        system.boxes.faults("wave", error_rate=1.0)
        new_customer(system, "Patient Co")
        system.poll(("customerp",))
        # Every attempt answers 503; the worker keeps coming back, with growing pauses.
        wait_for("three failed attempts", lambda: wave_calls(system) >= 3, system=system)
        assert system.dead_letters() == []
        # The retry the worker holds shows the record's key to Flower and the logs, not the customer's data.
        held = [json.loads(raw)[0]["headers"] for raw in system.redis.hgetall("unacked").values()]
        shown = [h["argsrepr"] for h in held if h["task"] == "wavesync.sync.customers"]
        assert shown
        assert all(r.startswith("(customers:customerp:") for r in shown), shown
        system.boxes.faults("wave", error_rate=0.0)
        system.wait_idle()
        assert len(wave_customers(system, "Patient Co")) == 1
        assert system.dead_letters() == []
        assert "retrying customers:customerp:" in system.log_text()
        assert faults_injected(system, "wave")["5xx"] >= 3


def test_when_retries_run_out_the_record_is_dead_lettered_with_the_last_error(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env, max_retries=2) as system:
        ready(system)
        system.boxes.faults("wave", error_rate=1.0)
        created = new_customer(system, "Unlucky Co")
        drain(system)
        [entry] = system.dead_letters()
        assert entry["error_class"] == "RetryableError"
        assert entry["reason"].startswith("gave up after 2 retries: wave:")
        assert "503" in entry["reason"]
        assert (entry["source"], entry["source_id"], entry["attempts"]) == ("customerp", str(created["id"]), 1)
        # The first attempt and two retries: each failed on its first Wave call.
        assert wave_calls(system) == 3
        assert "Traceback" not in system.log_text()


def test_waiting_out_a_create_whose_answer_was_lost_spends_no_retries(env: tuple[Sandboxes, str, Path]) -> None:
    # One retry in the budget: the lost answer spends it. Waiting until the create can no longer land, then finding
    # it, must not count, or a record nothing is wrong with would be dead-lettered (history seed 11 once was).
    with running(*env, max_retries=1, http_timeout=1.0) as system:
        ready(system)
        system.boxes.faults("wave", lost_response_rate=1.0)
        new_customer(system, "Lost Answer Co")
        system.poll(("customerp",))
        wait_for("the create to land", lambda: len(wave_customers(system, "Lost Answer Co")) == 1, system=system)
        system.boxes.faults("wave", lost_response_rate=0.0)
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system, "Lost Answer Co")) == 1
        assert faults_injected(system, "wave").get("lost_response", 0) >= 1
        assert "MustWaitError, not counted" in system.log_text()
        system.settle()  # linked, not orphaned: later polls make nothing new
        assert len(wave_customers(system, "Lost Answer Co")) == 1


# --- rate limits --------------------------------------------------------------------------------------------


def test_a_429_storm_is_ridden_out_by_the_whole_fleet_without_dead_letters(env: tuple[Sandboxes, str, Path]) -> None:
    # No retry budget at all: a 429 that counted as a retry would dead-letter its record at once.
    with running(*env, max_retries=0) as system:
        ready(system)
        system.boxes.faults("wave", max_rps=4, retry_after_s=0.5)
        for n in range(8):
            new_customer(system, f"Busy {n}")
        system.poll(("customerp",))
        cooldowns_seen = 0
        deadline = time.monotonic() + 60
        while system.busy() and time.monotonic() < deadline:
            cooldowns_seen += bool(system.redis.exists(keys.cooldown_key("wave")))
            time.sleep(0.02)
        system.wait_idle()
        assert system.dead_letters() == []
        assert len(wave_customers(system)) == 8
        assert faults_injected(system, "wave").get("429", 0) > 0
        assert cooldowns_seen > 0, "a 429 should pause every worker through the shared cooldown"
        assert "RateLimitedError, not counted" in system.log_text()


def test_the_fleet_rate_limit_keeps_every_worker_under_the_api_limit(env: tuple[Sandboxes, str, Path]) -> None:
    # The API allows 4 calls a second; the fleet is configured for 3, shared by the poller and 4 worker threads.
    with running(*env, wave_rate_per_second=3.0, wave_burst=1) as system:
        ready(system)
        system.boxes.faults("wave", max_rps=4)
        for n in range(10):
            new_customer(system, f"Steady {n}")
        started = time.monotonic()
        drain(system)
        assert len(wave_customers(system)) == 10
        assert faults_injected(system, "wave").get("429", 0) == 0
        calls = wave_calls(system, "ustomer")
        assert calls >= 10
        # Paced, not bursted: 10+ calls at 3 a second take a few seconds.
        assert time.monotonic() - started >= (calls - 5) / 3 * 0.8


# --- permanent errors ------------------------------------------------------------------------------------------


def test_values_either_side_refuses_are_dead_lettered_at_once_with_their_field_paths(
    env: tuple[Sandboxes, str, Path],
) -> None:
    with running(*env, worker_env={"WAVESYNC_LOG_FORMAT": "json"}) as system:
        ready(system)
        # Wave keeps at most 4000 characters of notes (Customerp 10000); Customerp at most 100 of a city (Wave 255).
        created = new_customer(system, "Verbose Ltd", notes="n" * 4500)
        record = system.ctx.wave.create_customer(
            {"name": "Long City Inc", "email": "city@example.com", "address": {"city": "C" * 150, "countryCode": "US"}}
        )
        system.settle()
        by_source = {e["source"]: e for e in system.dead_letters()}
        assert set(by_source) == {"customerp", "wave"}

        wave_refused = by_source["customerp"]  # a Customerp record that Wave refused (inputErrors)
        assert wave_refused["error_class"] == "InvalidDataError"
        assert wave_refused["field_paths"] == ["internalNotes"]
        assert "internalNotes: Ensure this value has at most 4000 characters" in wave_refused["reason"]
        assert (wave_refused["customerp_id"], wave_refused["wave_id"], wave_refused["attempts"]) == (
            str(created["id"]),
            None,
            1,
        )
        assert wave_refused["message"]["source_id"] == str(created["id"])
        assert wave_refused["first_failed_at"] == wave_refused["last_failed_at"]

        cp_refused = by_source["wave"]  # a Wave record that Customerp refused (422)
        assert (cp_refused["wave_id"], cp_refused["customerp_id"]) == (record.id, None)
        assert cp_refused["error_class"] == "InvalidDataError"
        assert cp_refused["field_paths"] == ["billing_address.city"]
        assert "HTTP 422" in cp_refused["reason"]
        assert "billing_address.city: must be at most 100 characters" in cp_refused["reason"]
        assert cp_customers(system, "Long City Inc") == []

        # At once: one create attempt each, no retry; later polls do not enqueue the failed versions again.
        assert wave_calls(system, "customerCreate") == 2  # ours (refused) and the test's own Wave customer
        assert system.boxes.counters("customerp").get("customers.create") == 1
        assert "retrying" not in system.log_text()

        # The worker's JSON log line names the record and the task; no secret reached the log.
        [line] = [
            x
            for x in system.json_log()
            if str(x["message"]).startswith("dead-lettered") and x.get("system") == "customerp"
        ]
        assert (line["level"], line["entity"], line["record_id"], line["customerp_id"]) == (
            "error",
            "customers",
            str(created["id"]),
            str(created["id"]),
        )
        assert line["task_id"]
        assert line["task_name"] == keys.SYNC_TASK["customers"]
        assert CP_KEY not in system.log_text()
        assert WAVE_TOKEN not in system.log_text()


def test_a_record_failing_again_after_an_edit_keeps_one_entry_and_counts(env: tuple[Sandboxes, str, Path]) -> None:
    with running(*env) as system:
        ready(system)
        created = new_customer(system, "Stubborn Ltd", notes="n" * 4500)
        system.settle()
        [first] = system.dead_letters()
        system.boxes.cp("PATCH", f"customers/{created['id']}", {"notes": "m" * 4800})
        system.settle()
        [again] = system.dead_letters()
        assert again["id"] == first["id"]
        assert again["attempts"] == 2
        assert again["first_failed_at"] == first["first_failed_at"]
        assert again["last_failed_at"] > first["last_failed_at"]
        assert "it has 4800" in again["reason"]


# --- credentials ---------------------------------------------------------------------------------------------


def test_rejected_credentials_are_retried_slowly_and_drain_once_fixed(env: tuple[Sandboxes, str, Path]) -> None:
    wrong = {"WAVESYNC_WAVE_TOKEN": "expired-token"}
    # Five retries, each 0.5-1 s apart for a credential problem: at least 2.5 s before any record gives up
    # (the ordinary backoff would have spent the budget in about 1.7 s).
    with running(*env, worker_env=wrong, max_retries=5, retry_backoff_max=1.0) as system:
        ready(system)
        for n in range(3):
            new_customer(system, f"Locked {n}")
        system.poll(("customerp",))
        wait_for("the first auth retry", lambda: "(AuthError)" in system.log_text(), system=system)
        time.sleep(2)
        assert system.dead_letters() == [], "a credential problem must not dead-letter every record at once"
        assert system.waiting_tasks() == 3  # the records wait for the fix, as retries

        # The operator fixes the token and restarts the worker: the waiting records sync.
        system.stop_worker()
        system.worker_env = {}
        system.start_worker()
        system.wait_idle()
        assert len(wave_customers(system)) == 3
        assert system.dead_letters() == []


def test_credentials_never_fixed_end_in_the_dead_letters_with_a_hint(env: tuple[Sandboxes, str, Path]) -> None:
    wrong = {"WAVESYNC_WAVE_TOKEN": "expired-token"}
    with running(*env, worker_env=wrong, max_retries=1, retry_backoff_max=0.3) as system:
        ready(system)
        new_customer(system, "Forgotten Co")
        drain(system)
        [entry] = system.dead_letters()
        assert entry["error_class"] == "AuthError"
        assert "gave up after 1 retries" in entry["reason"]
        assert "check the credentials" in entry["reason"]
        # Neither the wrong token nor the Customerp key reach the dead letter or the log.
        text = json.dumps(entry) + system.log_text()
        for secret in ("expired-token", CP_KEY):
            assert secret not in text


# --- messages that are not ours -------------------------------------------------------------------------------


def test_a_malformed_message_is_dropped_and_the_worker_carries_on(env: tuple[Sandboxes, str, Path]) -> None:
    with running(*env) as system:
        ready(system)
        app.send_task(keys.SYNC_TASK["customers"], args=[{"entity": "customers", "nonsense": 1}], queue="customers")
        new_customer(system, "After The Junk")
        drain(system)
        assert len(wave_customers(system, "After The Junk")) == 1
        assert system.dead_letters() == []
        assert "dropping a malformed message" in system.log_text()
