"""Child processes that cannot outlive their parent, and the lock file that keeps one owner per data directory.

`wavesync up` starts Valkey, a worker, beat and the console as children. Killed with SIGKILL it cannot stop them,
and a second `up` on the same WAVESYNC_DATA_DIR would then run a second Valkey on the same append-only files and a
second fleet whose record locks live in another Redis: duplicate creates. Two rules prevent that:
- every child asks Linux to send it SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), so it stops the way a
  Ctrl-C would stop it;
- the owner of a data directory holds an exclusive `flock` on a file in it and passes that descriptor to its
  children, so the lock is held until the last process of that fleet has exited, not only until its parent has.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class LockBusy(Exception):
    """Another process holds the lock: `owner` took it (and still runs if `owner_alive`); `holders` have it open, as
    far as this user can see (the owner's children among them)."""

    def __init__(self, path: Path, owner: int | None, owner_alive: bool, holders: list[int]) -> None:
        super().__init__(f"{path} is locked")
        self.path = path
        self.owner = owner
        self.owner_alive = owner_alive
        self.holders = holders


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return function


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that has the child sent `sig` when the process calling this dies (None off Linux).

    Linux sends the signal when the *thread* that forked the child exits: start children from the main thread.
    The signal survives `exec` (not for set-user-ID binaries, which none of ours are)."""
    prctl = _prctl()  # resolved here: the child between fork and exec should do as little as possible
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody will send the signal
            os._exit(1)

    return preexec


def holders_of(path: Path) -> list[int]:
    """The pids with `path` open, from /proc (empty where there is no /proc or we may not look)."""
    target = str(path.resolve())
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") == target:
                    found.append(int(entry))
                    break
            except OSError:
                continue
    return sorted(found)


def _recorded_owner(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def lock_exclusively(path: Path, *, wait_for_leftovers: float = 0.0) -> int:
    """Take an exclusive `flock` on `path` and write our pid into it; return the descriptor (keep it open).

    Raises `LockBusy` when another process holds it. If the process that took the lock is gone but others still
    hold it (the children of a killed `up`, stopping on their SIGTERM), wait up to `wait_for_leftovers` seconds."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + wait_for_leftovers
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
            owner = _recorded_owner(fd)
            holders = [pid for pid in holders_of(path) if pid != os.getpid()]  # our own descriptor is not the lock
            alive = owner is not None and (owner == os.getpid() or owner in holders)
            if alive or time.monotonic() >= deadline:
                raise LockBusy(path, owner, alive, holders)
            time.sleep(0.2)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
