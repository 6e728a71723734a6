"""The soak: thousands of seeded random operations on both systems through faults, in rounds that each end
converged, and a report of operations, faults, duplicates, lost updates, drift and dead letters.

`make soak`; WAVESYNC_SOAK_SEED, WAVESYNC_SOAK_ROUNDS and WAVESYNC_SOAK_OPERATIONS (per round) change the run.
"""

from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from tests.convergence.history import Figures, History
from tests.harness import System

pytestmark = [pytest.mark.soak, pytest.mark.integration]

SEED = int(os.environ.get("WAVESYNC_SOAK_SEED", "1000"))
ROUNDS = int(os.environ.get("WAVESYNC_SOAK_ROUNDS", "6"))
OPERATIONS = int(os.environ.get("WAVESYNC_SOAK_OPERATIONS", "500"))


def report(rounds: list[Figures], seconds: float) -> str:
    operations: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    for figures in rounds:
        operations.update(figures.operations)
        faults.update(figures.faults)
        calls.update(figures.api_calls)
    last = rounds[-1]
    lines = [
        "",
        "=" * 100,
        f"SOAK seed {SEED}: {len(rounds)} rounds, {sum(operations.values())} operations "
        f"({sum(sum(f.refused.values()) for f in rounds)} refused by the systems), {seconds:.0f}s",
        f"  faults injected: {sum(faults.values())} {dict(sorted(faults.items()))} in {dict(calls)} API calls",
        f"  duplicates: {sum(len(f.duplicates) for f in rounds)}   lost updates: "
        f"{sum(len(f.lost_updates) for f in rounds)}   drift/orphans (checker problems): "
        f"{sum(len(f.problems) for f in rounds)}   reconcile repairs: {sum(f.repairs for f in rounds)}",
        f"  dead letters at the end: {len(last.dead_letters)} ({len(last.unexplained_dead_letters)} unexplained)",
        f"  records at the end: {last.records}",
        f"  operations: {dict(sorted(operations.items()))}",
    ]
    for index, figures in enumerate(rounds, start=1):
        lines += [f"  round {index}: " + figures.render().replace("\n", "\n    ")]
    lines.append("=" * 100)
    return "\n".join(lines)


@pytest.mark.timeout(3 * 3600)
def test_soak(running: System) -> None:
    started = time.monotonic()
    rounds: list[Figures] = []
    for index in range(ROUNDS):
        # One history per round on the same, growing data; each round ends converged and judged.
        history = History(running, SEED + index)
        history.counter = index * 100_000  # unique names across rounds
        rounds.append(history.play(OPERATIONS, pause=0.05))
        print(rounds[-1].render())
    text = report(rounds, time.monotonic() - started)
    print(text)
    assert all(figures.ok for figures in rounds), text
