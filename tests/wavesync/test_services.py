"""`wavesync up` owns its data directory: a second `up` is refused, and a killed one takes its children with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from sandboxes.serve import free_port
from shared.settings import Settings
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from shared.store.links import save_link
from tests.wavesync.test_processes import alive, wait_gone
from wavesync.processes import lock_exclusively
from wavesync.services import start_sandbox_state_afresh

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's"),
]


def children_of(pid: int) -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(") ", 1)[1].split()[1])
            if ppid == pid:
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def up_environment(data_dir: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")} | {
        "WAVESYNC_DATA_DIR": str(data_dir),
        "WAVESYNC_SANDBOX_CUSTOMERP_PORT": str(free_port()),
        "WAVESYNC_SANDBOX_WAVE_PORT": str(free_port()),
        "WAVESYNC_CONSOLE_PORT": str(free_port()),
        "WAVESYNC_LOG_FORMAT": "text",
    }


def test_a_second_up_is_refused_and_a_killed_up_takes_valkey_worker_beat_and_console_with_it(tmp_path: Path) -> None:
    env = up_environment(tmp_path)
    log = tmp_path / "up.log"
    with log.open("wb") as output:
        up = subprocess.Popen(
            [sys.executable, "-m", "wavesync", "up", "--no-seed"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            start_new_session=True,
        )
    children: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while "wavesync is running" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        children = children_of(up.pid)
        roles = sorted(
            next(role for role in ("valkey", "worker", "beat", "console") if role in command)
            for command in children.values()
        )
        assert roles == ["beat", "console", "valkey", "worker"], children

        # A second `up` on the same directory: one line naming the first, exit status 2, nothing started.
        second = subprocess.run(
            [sys.executable, "-m", "wavesync", "up", "--no-seed"],
            env=up_environment(tmp_path),
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert second.stderr.splitlines() == [
            f"wavesync: another `wavesync up` (pid {up.pid}) is running on WAVESYNC_DATA_DIR={tmp_path}: stop it "
            "first, or give this one its own WAVESYNC_DATA_DIR"
        ]
        assert children_of(up.pid).keys() == children.keys()

        up.kill()  # SIGKILL: no handler runs, nothing is stopped by `up` itself
        up.wait()
        deadline = time.monotonic() + 20
        left = [pid for pid in children if not wait_gone(pid, max(0.0, deadline - time.monotonic()))]
        assert left == [], {pid: children[pid] for pid in left}
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    # Everything that held the directory is gone, so the next `up` may have it.
    os.close(lock_exclusively(tmp_path / "wavesync.lock"))
    os.close(lock_exclusively(tmp_path / "redis" / "valkey.lock"))


def _settings_for(data_dir: Path, **given: str) -> Settings:
    # As `wavesync up` on embedded defaults would have them (the test process's own WAVESYNC_* left out).
    return Settings(data_dir=data_dir, redis_url=None, database_url=f"sqlite:///{data_dir / 'wavesync.db'}", **given)


def _an_earlier_run(data_dir: Path) -> Path:
    """A link store with a link in it, and the embedded Valkey's files, as a run leaves them; its store's path."""
    settings = _settings_for(data_dir)
    upgrade(settings.database_url)
    with Database(settings.database_url).session() as session:
        save_link(
            session,
            None,
            entity="customers",
            customerp_id="c1",
            wave_id="w1",
            state=Settled({}),
            customerp_version="1",
            wave_version="1",
        )
    aof = data_dir / "redis" / "appendonlydir" / "x.aof"
    aof.parent.mkdir(parents=True)
    aof.write_text("an earlier run's")
    return data_dir / "wavesync.db"


def _tables(store: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{store}")
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_embedded_sandboxes_start_the_sync_state_afresh_and_real_systems_keep_it(tmp_path: Path) -> None:
    """The embedded sandboxes are seeded anew on every `up`: links and watermarks from an earlier run would name
    records that no longer exist (a new operator's second `up` found 37 problems in `reconcile --check`)."""
    embedded = tmp_path / "embedded"
    store = _an_earlier_run(embedded)
    # A process that has the store open (here: an engine with a pooled connection) sees it emptied, not a file
    # unlinked under it that it would go on reading.
    reader = create_engine(f"sqlite:///{store}")
    with reader.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from links").scalar_one() == 1
    cleared = start_sandbox_state_afresh(_settings_for(embedded))
    assert cleared == ["the link store", "the embedded Valkey's data"]
    assert _tables(store) == []
    assert not (embedded / "redis").exists()
    upgrade(f"sqlite:///{store}")
    with reader.connect() as connection:
        assert connection.exec_driver_sql("select count(*) from links").scalar_one() == 0
    reader.dispose()

    real = tmp_path / "real"
    kept = _an_earlier_run(real)
    customerp = {"customerp_url": "http://127.0.0.1:1", "customerp_api_key": "a-real-key"}
    assert start_sandbox_state_afresh(_settings_for(real, **customerp)) == []
    assert "links" in _tables(kept)
    assert (real / "redis" / "appendonlydir" / "x.aof").exists()
