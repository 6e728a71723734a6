"""Children that die with their parent, and the data-directory lock, on real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wavesync.embedded import EmbeddedRedis
from wavesync.processes import LockBusy, lock_exclusively

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"  # a zombie has exited already
    except (OSError, IndexError):
        return False


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return not alive(pid)


def run_parent(script: str) -> tuple[subprocess.Popen[str], list[int]]:
    """A Python parent running `script`, which prints its children's pids on one line when they are up."""
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    parent.stdout.close()
    return parent, [int(pid) for pid in line.split()]


CHILD = """
    import subprocess, sys, time
    from wavesync.processes import die_with_parent
    child = subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent() if {guarded} else None)
    print(child.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("guarded", [True, False])
def test_a_child_dies_with_its_parent_killed_by_sigkill_only_when_started_with_die_with_parent(guarded: bool) -> None:
    parent, [child] = run_parent(CHILD.format(guarded=guarded))
    try:
        assert alive(child)
        parent.kill()
        parent.wait()
        # Without the guard the child lives on (re-parented to init): the check below can fail.
        assert wait_gone(child, 5) is guarded
    finally:
        if alive(child):
            os.kill(child, 9)


def test_a_second_lock_on_a_data_dir_is_refused_at_once_naming_the_live_owner(tmp_path: Path) -> None:
    parent, _ = run_parent(
        f"""
        import time
        from pathlib import Path
        from wavesync.processes import lock_exclusively
        lock_exclusively(Path({str(tmp_path / "wavesync.lock")!r}))
        print("", flush=True)
        time.sleep(60)
        """
    )
    try:
        started = time.monotonic()
        with pytest.raises(LockBusy) as busy:
            lock_exclusively(tmp_path / "wavesync.lock", wait_for_leftovers=30)
        assert time.monotonic() - started < 5  # a live owner is not waited for
        assert busy.value.owner == parent.pid
        assert busy.value.owner_alive
        assert busy.value.holders == [parent.pid]
    finally:
        parent.kill()
        parent.wait()
    os.close(lock_exclusively(tmp_path / "wavesync.lock"))  # the lock died with its holder


def test_a_lock_left_to_the_children_of_a_killed_owner_is_held_until_they_exit(tmp_path: Path) -> None:
    # The child takes 2 s to stop on its SIGTERM, like a worker finishing its task on a warm shutdown; it says its
    # pid (on the parent's stdout) once it is ready for the signal.
    child_code = (
        "import os, signal, time; "
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(2), os._exit(0))); "
        "print(os.getpid(), flush=True); time.sleep(60)"
    )
    parent, [child] = run_parent(
        f"""
        import subprocess, sys, time
        from pathlib import Path
        from wavesync.processes import die_with_parent, lock_exclusively
        fd = lock_exclusively(Path({str(tmp_path / "wavesync.lock")!r}))
        subprocess.Popen([sys.executable, "-c", {child_code!r}], pass_fds=(fd,), preexec_fn=die_with_parent())
        time.sleep(60)
        """
    )
    parent.kill()
    parent.wait()
    with pytest.raises(LockBusy) as busy:
        lock_exclusively(tmp_path / "wavesync.lock")
    assert busy.value.owner == parent.pid
    assert not busy.value.owner_alive
    assert child in busy.value.holders
    started = time.monotonic()
    os.close(lock_exclusively(tmp_path / "wavesync.lock", wait_for_leftovers=20))
    assert not alive(child)
    assert 0.5 < time.monotonic() - started < 15


def test_a_second_embedded_valkey_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis"):
        with pytest.raises(LockBusy) as busy:
            EmbeddedRedis(tmp_path / "redis").start(timeout=1)
        assert busy.value.owner == os.getpid()
    # Stopped, it lets the next one start on the same files.
    with EmbeddedRedis(tmp_path / "redis") as again:
        assert again.url


def test_an_embedded_valkey_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    parent, [server] = run_parent(
        f"""
        import time
        from pathlib import Path
        from wavesync.embedded import EmbeddedRedis
        redis = EmbeddedRedis(Path({str(tmp_path / "redis")!r})).start()
        print(redis._process.pid, flush=True)
        time.sleep(60)
        """
    )
    parent.kill()
    parent.wait()
    assert wait_gone(server, 10)
    with EmbeddedRedis(tmp_path / "redis", persistent=True) as again:  # its lock went with it
        assert again.url
