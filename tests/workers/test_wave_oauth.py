"""Wave over OAuth2 under a real worker (and beat): short-lived tokens expire during a sync without losing anything;
a revoked grant pauses the work that needs Wave (nothing dead-lettered) until `connect wave` resumes it."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from producers.pollers import Poller
from producers.reconcile import run_scheduled
from sandboxes.wave.oauth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET
from shared.store import credentials
from shared.store.models import HistoryEntry
from tests.harness import Sandboxes, System
from tests.workers.support import running, wait_for
from wavesync.connect import connect_wave
from wavesync.embedded import EmbeddedRedis
from wavesync.ops import collect_status, render_status, run_reconcile

pytestmark = pytest.mark.integration

# Every token the sandbox issues starts with one of these: a log line holding one would show it.
TOKEN_PREFIXES = ("wsat_", "wsrt_")


def oauth(boxes: Sandboxes) -> dict[str, Any]:
    return {
        "wave_auth": "oauth",
        "wave_client_id": DEFAULT_CLIENT_ID,
        "wave_client_secret": DEFAULT_CLIENT_SECRET,
        "wave_oauth_url": f"{boxes.wave.url}/oauth2/",
        "secret_key": Fernet.generate_key().decode(),
    }


def connect(system: System) -> list[str]:
    """`wavesync connect wave`, the code pasted from Wave's redirect (the sandbox approves at once)."""
    lines: list[str] = []
    connect_wave(system.settings, listen=False, echo=lines.append)
    address = next(line for line in lines if line.startswith("http"))
    redirect = parse_qs(urlparse(httpx.get(address).headers["location"]).query)
    connect_wave(system.settings, code=redirect["code"][0], state=redirect["state"][0], echo=lines.append)
    return lines


def token_calls(system: System) -> dict[str, int]:
    calls: dict[str, int] = system.boxes.wave_admin("GET", "oauth")["token_calls"]
    return calls


def wave_customers(system: System) -> int:
    return len(system.boxes.snapshot("wave")["customers"])


def state(system: System) -> str | None:
    found = credentials.state(system.ctx.db, "wave")
    return None if found is None else str(found["state"])


def assert_no_tokens_in(text: str) -> None:
    for prefix in TOKEN_PREFIXES:
        assert prefix not in text


def test_tokens_expiring_every_two_seconds_during_a_sync_lose_nothing(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with running(boxes, redis_server.url, tmp_path, **oauth(boxes)) as system:
        boxes.wave_admin("PATCH", "oauth", {"access_token_lifetime_s": 2})
        boxes.faults("wave", latency_ms=100)  # a sync of some seconds, so tokens expire several times during it
        connect(system)
        boxes.cp("POST", "seed", {"customers": 40, "products": 0, "orders": 0, "seed": 11})
        system.start_beat()
        seen: dict[str, float] = {}

        def all_created() -> bool:
            count = wave_customers(system)
            if count and "first" not in seen:
                seen["first"] = time.monotonic()
            seen["last"] = time.monotonic()
            return count == 40

        wait_for("every customer in Wave", all_created, timeout=60, system=system)
        system.wait_idle(30)
        assert system.dead_letters() == []
        refreshes = token_calls(system).get("refresh_token", 0)
        # Wave was called with a valid token at both ends of this span, and a token lives 2 s: however fast or slow
        # the machine, a span of S seconds needed at least ceil(S / 2) tokens, all but the connect's refreshed.
        # (Less the polling period at each end, as slack.)
        span = max(0.0, seen["last"] - seen["first"] - 0.2)
        assert refreshes >= max(1, math.ceil(span / 2) - 1), f"{refreshes} refreshes over {span:.1f}s of creates"
        assert state(system) == credentials.CONNECTED
        assert_no_tokens_in(system.log.read_text(errors="replace"))


def test_a_revoked_grant_pauses_and_connect_wave_resumes(
    boxes: Sandboxes,
    redis_server: EmbeddedRedis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with running(boxes, redis_server.url, tmp_path, **oauth(boxes)) as system:
        connect(system)
        boxes.cp("POST", "seed", {"customers": 4, "products": 0, "orders": 0, "seed": 5})
        system.settle()
        assert wave_customers(system) == 4
        boxes.wave_admin("POST", "oauth/revoke")
        boxes.cp("POST", "seed", {"customers": 4, "products": 0, "orders": 0, "seed": 6})
        assert system.poll(("customerp",)) == 4
        wait_for("the pause", lambda: state(system) == credentials.NEEDS_REAUTHORIZATION, timeout=20, system=system)
        time.sleep(3)  # the messages come back, and wait again, a few times
        assert system.waiting_tasks() == 4  # waiting, not lost
        assert system.dead_letters() == []
        with system.ctx.db.session() as session:
            paused = session.scalars(select(HistoryEntry).where(HistoryEntry.kind == "paused")).all()
        assert len(paused) == 4, "each waiting record's history says it is paused, once"
        assert all("needs re-authorization" in (row.reason or "") for row in paused)
        assert wave_customers(system) == 4
        skipped = Poller(system.ctx, "wave", "customers").run().skipped
        assert "needs re-authorization" in skipped
        # Reconcile skips too, with one line: beat's run logs it, `reconcile --check` exits 1 with it.
        caplog.set_level(logging.WARNING, logger="producers.reconcile")
        assert run_scheduled(system.ctx) == []
        assert [r.getMessage() for r in caplog.records if r.name == "producers.reconcile"] == [
            f"reconcile skipped: {skipped}"
        ]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            run_reconcile(system.settings, repair=False, quiet=True)
        assert exited.value.code == 1
        assert capsys.readouterr().err.splitlines() == [f"wavesync: reconcile skipped: {skipped}"]
        text = render_status(collect_status(system.settings))
        assert "connection: wave (oauth): needs reauthorization since" in text

        lines = connect(system)
        assert any(line.startswith("The paused sync resumes") for line in lines)
        wait_for("the waiting customers in Wave", lambda: wave_customers(system) == 8, timeout=30, system=system)
        system.wait_idle(30)
        assert system.dead_letters() == []
        assert token_calls(system)["refresh_token"] == 1  # the one refused refresh; nothing retried it
        log = system.log.read_text(errors="replace")
        assert_no_tokens_in(log + text + "\n".join(lines))
        said = log.count("work that needs wave is paused")
        retried = log.count("retry: Retry in")
        assert 1 <= said < retried  # said once a minute, not once per waiting message
