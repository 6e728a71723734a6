"""`wavesync sandbox` serves both sandboxes on loopback, on the configured ports, seeded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sandboxes.serve import free_port
from shared.settings import SANDBOX_CUSTOMERP_KEY, SANDBOX_WAVE_TOKEN

pytestmark = pytest.mark.integration


def test_sandbox_command_serves_both_apis_seeded(tmp_path: Path) -> None:
    cp_port, wave_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")} | {
        "WAVESYNC_SANDBOX_CUSTOMERP_PORT": str(cp_port),
        "WAVESYNC_SANDBOX_WAVE_PORT": str(wave_port),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "wavesync", "sandbox", "--seed-customers", "7"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        customers: list[object] = []
        while time.monotonic() < deadline and len(customers) < 7:
            time.sleep(0.3)
            try:
                response = httpx.get(
                    f"http://127.0.0.1:{cp_port}/api/v1/customers", headers={"X-API-Key": SANDBOX_CUSTOMERP_KEY}
                )
                customers = response.json()["items"] if response.status_code == 200 else []
            except httpx.TransportError:
                continue
        assert len(customers) == 7
        answer = httpx.post(
            f"http://127.0.0.1:{wave_port}/graphql/public",
            json={"query": "{ user { id } }"},
            headers={"Authorization": f"Bearer {SANDBOX_WAVE_TOKEN}"},
        ).json()
        assert "data" in answer or "errors" in answer
        bad = httpx.post(
            f"http://127.0.0.1:{wave_port}/graphql/public",
            json={"query": "{ nope }"},
            headers={"Authorization": f"Bearer {SANDBOX_WAVE_TOKEN}"},
        ).json()
        assert bad["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(20)
