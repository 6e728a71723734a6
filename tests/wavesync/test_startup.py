"""Long-running services on a fresh, read-only-root deployment: they make their data directory or say why they
cannot, and refuse a link store whose migrations are behind. One line and exit status 2, never a traceback."""

from __future__ import annotations

import functools
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from shared.store.db import alembic_config, upgrade
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def unprivileged() -> dict[str, int]:
    """Run as `nobody` when the tests run as root (root could write anywhere and prove nothing), where `nobody` can
    run this Python at all (not when it lives under root's private home)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("nobody")
    ids = {"user": user.pw_uid, "group": user.pw_gid}
    try:
        subprocess.run([sys.executable, "-c", "0"], check=True, capture_output=True, timeout=30, **ids)  # type: ignore[call-overload]
    except (OSError, subprocess.CalledProcessError):
        return {}
    return ids


def start(*args: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    return subprocess.Popen(
        [sys.executable, "-m", "wavesync", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**clean, "PYTHONPATH": str(REPO), "HOME": str(cwd), **env},
        cwd=cwd,
        **unprivileged(),  # type: ignore[arg-type]
    )


@pytest.fixture
def fresh(tmp_path: Path, redis_server: EmbeddedRedis) -> dict[str, str]:
    """A deployment directory the service user owns, a migrated PostgreSQL-free link store, an external Redis."""
    clean_redis(redis_server.url)
    home = tmp_path / "home"
    home.mkdir()
    data = home / "data"  # does not exist yet: the service makes it
    database = home / "links.db"
    upgrade(f"sqlite:///{database}")
    ids = unprivileged()
    if ids:
        for path in (tmp_path, home, database):
            os.chown(path, ids["user"], ids["group"])
    return {
        "WAVESYNC_REDIS_URL": redis_server.url,
        "WAVESYNC_DATA_DIR": str(data),
        "WAVESYNC_DATABASE_URL": f"sqlite:///{database}",
        "HOME_DIR": str(home),
    }


def wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float) -> str:
    assert process.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(process.stderr.fileno(), False)
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if line:
            seen.append(line)
            if needle in line:
                return line
        elif process.poll() is not None:
            break
        else:
            time.sleep(0.1)
    raise AssertionError(f"no {needle!r} within {timeout}s:\n{''.join(seen)[-3000:]}")


def test_beat_starts_on_a_data_directory_that_does_not_exist_yet(fresh: dict[str, str]) -> None:
    home = Path(fresh.pop("HOME_DIR"))
    beat = start("beat", "--loglevel", "INFO", env=fresh, cwd=home)
    try:
        wait_for_line(beat, "beat: Starting", 30)
        deadline = time.monotonic() + 15
        while not list(Path(fresh["WAVESYNC_DATA_DIR"]).glob("celerybeat-schedule*")):
            assert beat.poll() is None, beat.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "beat wrote no schedule in its data directory"
            time.sleep(0.2)
        assert beat.poll() is None
    finally:
        beat.send_signal(signal.SIGKILL)
        beat.wait()


@pytest.mark.parametrize("service", ["beat", "worker", "up"])
def test_a_data_directory_that_cannot_be_written_is_one_line_and_exit_2(
    fresh: dict[str, str], tmp_path: Path, service: str
) -> None:
    home = Path(fresh.pop("HOME_DIR"))
    # Under a regular file nothing can be created, whoever runs; as `nobody`, a root-owned directory is refused too.
    (tmp_path / "a-file").write_text("")
    blocked = tmp_path / "a-file" / "data"
    process = start(service, env={**fresh, "WAVESYNC_DATA_DIR": str(blocked)}, cwd=home)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "WAVESYNC_DATA_DIR" in lines[0]
    assert "Traceback" not in stderr


def test_a_root_owned_data_directory_is_refused_for_the_service_user(fresh: dict[str, str], tmp_path: Path) -> None:
    if not unprivileged():
        pytest.skip("this machine cannot run the service as another user (not root, or Python under a private home)")
    home = Path(fresh.pop("HOME_DIR"))
    root_owned = tmp_path / "root-owned"
    root_owned.mkdir(mode=0o755)
    process = start("beat", env={**fresh, "WAVESYNC_DATA_DIR": str(root_owned / "data")}, cwd=home)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    assert "Permission denied" in stderr
    assert len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("service", ["beat", "worker"])
def test_a_link_store_whose_migrations_are_behind_is_refused(
    fresh: dict[str, str], tmp_path: Path, service: str
) -> None:
    home = Path(fresh.pop("HOME_DIR"))
    behind = home / "old.db"
    scripts = ScriptDirectory.from_config(alembic_config(f"sqlite:///{behind}"))
    [head] = scripts.get_heads()
    previous = scripts.get_revision(head).down_revision
    upgrade(f"sqlite:///{behind}", str(previous) if previous else "base")
    if unprivileged():
        os.chown(behind, unprivileged()["user"], unprivileged()["group"])
    process = start(service, env={**fresh, "WAVESYNC_DATABASE_URL": f"sqlite:///{behind}"}, cwd=home)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "wavesync db upgrade" in lines[0]
    assert "Traceback" not in stderr
