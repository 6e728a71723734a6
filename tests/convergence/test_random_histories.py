"""Randomised two-sided histories converge under faults: no drift, no orphan, no duplicate, no lost update.

Each seed is one history of user actions in both systems (creates, edits of the same and of different fields on
both sides, deletes, dependency changes) while a real worker and beat sync them through 429s, 503s, latency,
hangs and lost answers. `WAVESYNC_HISTORY_SEEDS=7,8,9 pytest tests/convergence` plays other seeds; a seed that
ever failed joins `REGRESSION_SEEDS`.
"""

from __future__ import annotations

import os

import pytest

from tests.convergence.history import History
from tests.harness import System

pytestmark = pytest.mark.integration

SEEDS = [int(s) for s in os.environ.get("WAVESYNC_HISTORY_SEEDS", "11,12,13").split(",") if s]
OPERATIONS = int(os.environ.get("WAVESYNC_HISTORY_OPERATIONS", "60"))
# Seeds that once failed, kept as regression tests. Interleavings differ from run to run, so each failed in some
# runs only; together they exercise what was fixed.
REGRESSION_SEEDS: list[int] = [
    17,  # a Wave create that hung past the client's timeout landed after the retry made a second product
    29,  # a write whose answer was lost, then a newer one: the older value counted as a person's edit; and (with
    # creates made from the poll's snapshot) an older snapshot finishing a newer attempt's create
]


@pytest.mark.parametrize("seed", SEEDS + REGRESSION_SEEDS)
def test_a_random_two_sided_history_converges(running: System, seed: int) -> None:
    figures = History(running, seed).play(OPERATIONS)
    print(figures.render())
    assert figures.ok, figures.render()
