"""`wavesync up` on embedded defaults: starts everything, syncs, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from sandboxes.serve import free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_up_runs_the_whole_service_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")} | {
        "WAVESYNC_DATA_DIR": str(tmp_path),
        "WAVESYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'links.db'}",
        "WAVESYNC_SANDBOX_CUSTOMERP_PORT": str(free_port()),
        "WAVESYNC_SANDBOX_WAVE_PORT": str(free_port()),
        "WAVESYNC_CONSOLE_PORT": str(free_port()),
        "WAVESYNC_POLL_INTERVAL": "1",
        "WAVESYNC_LOG_FORMAT": "text",
    }
    log = (tmp_path / "up.log").open("wb")
    up = subprocess.Popen(
        [sys.executable, "-m", "wavesync", "up"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        engine = create_engine(env["WAVESYNC_DATABASE_URL"])
        deadline = time.monotonic() + 90
        links = 0
        while time.monotonic() < deadline and links < 5:
            time.sleep(1)
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            try:
                with engine.connect() as conn:
                    links = conn.execute(text("select count(*) from links")).scalar_one()
            except Exception:
                links = 0
        engine.dispose()
        assert links >= 5, (tmp_path / "up.log").read_text()[-3000:]
        # The console came up with it, behind its login.
        console = httpx.get(f"http://127.0.0.1:{env['WAVESYNC_CONSOLE_PORT']}/", follow_redirects=False, timeout=10)
        assert console.status_code == 303
        assert console.headers["location"].startswith("/login")
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        log.close()
    output = (tmp_path / "up.log").read_text()
    assert code == 0, output[-3000:]
    assert "wavesync stopped" in output
    # The preflight ran against what `up` started, and everything it checks was in order.
    assert "preflight (`wavesync doctor`):" in output
    assert "all checks passed" in output, output[-3000:]
    # Nothing is left running: the embedded Valkey and the children went with it.
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False)
    assert leftovers.stdout.strip() == ""
