"""Process memory from /proc (no psutil): VmRSS and VmHWM of a process and all its descendants, and machine facts."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Memory:
    """Kibibytes summed over a process tree: resident now, and each process's own peak (high-water mark)."""

    rss_kib: int
    hwm_kib: int
    processes: int

    @property
    def rss_mib(self) -> float:
        return self.rss_kib / 1024

    @property
    def hwm_mib(self) -> float:
        return self.hwm_kib / 1024


def _status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return values
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0])
    return values


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from every thread's `children` list."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children(current)
    return out


def tree_memory(pid: int) -> Memory:
    rss = hwm = count = 0
    for member in descendants(pid):
        status = _status(member)
        if status:
            rss += status.get("VmRSS", 0)
            hwm += status.get("VmHWM", 0)
            count += 1
    return Memory(rss, hwm, count)


def machine() -> dict[str, object]:
    """Cores, memory and CPU model, for the results and the README."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "cpu_model": model or platform.processor() or "unknown",
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def cpu_seconds(pid: int, *, tree: bool = True) -> float:
    """User + system CPU time of a process (and its live descendants), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in descendants(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / ticks


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, all processes), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU used by named processes between start() and stop(), as cores busy on average."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float] = {}
        # CPU seconds each process used between start() and stop(), for per-task and per-record figures.
        self.used: dict[str, float] = {}
        self._t0 = 0.0
        self._machine = 0.0

    def start(self) -> CpuMeter:
        import time

        self._t0 = time.monotonic()
        self._machine = machine_busy_seconds()
        self._start = {name: cpu_seconds(pid, tree=name != "bench") for name, pid in self.pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        import time

        wall = max(1e-9, time.monotonic() - self._t0)
        used = {
            name: cpu_seconds(pid, tree=name != "bench") - self._start.get(name, 0.0) for name, pid in self.pids.items()
        }
        self.used = used
        out = {f"{name}_cores": round(seconds / wall, 2) for name, seconds in used.items()}
        out["total_cores"] = round(sum(used.values()) / wall, 2)
        machine = (machine_busy_seconds() - self._machine) / wall
        out["machine_cores"] = round(machine, 2)
        # Anything else on the machine (other test runs, a demo): it competes for the same cores.
        out["other_cores"] = round(max(0.0, machine - sum(used.values()) / wall), 2)
        return out

    def seconds(self, prefix: str = "worker") -> float:
        """CPU seconds used by the processes whose name starts with `prefix` (the workers), after stop()."""
        return sum(seconds for name, seconds in self.used.items() if name.startswith(prefix))
