"""The benchmark harness runs end to end in --quick mode and writes results with every expected key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TINY = ["--customers", "12", "--products", "4", "--orders", "8", "--lines", "2"]
TINY += ["--noops", "100", "--backlog", "300", "--steady-seconds", "3", "--latency-fraction", "0.5"]


@pytest.mark.timeout(240)
def test_a_quick_bench_run_writes_sane_results_for_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", *TINY, "--out", str(out), "--no-readme", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads(out.read_text())

    assert {"machine", "config", "main", "latency", "pools", "targets", "seconds"} <= results.keys()
    assert results["machine"]["cores"] >= 1
    main = results["main"]
    assert {"ceiling", "ceiling_end_to_end", "backfill", "efficiency", "steady", "memory"} <= main.keys()
    assert main["ceiling"]["per_second"] > 0
    backfill = main["backfill"]
    # 12 customers, 4 products, 8 orders, plus the fallback product that Wave → Customerp creates.
    assert sum(backfill["links"].values()) == 25
    assert backfill["dead_letters"] == {}
    assert backfill["ratio_to_ceiling"] > 0
    assert main["efficiency"]["echo"]["writes"] == 0
    steady = main["steady"]
    assert steady["edits"] > 0
    assert steady["visible"] + steady["never_visible"] == steady["edits"]
    memory = main["memory"]
    assert memory["messages"] == 300
    assert memory["worker_rss_end_mib"] > 0
    variants = results["latency"]["variants"]
    assert [v["baseline"] for v in variants] == [True, False, False, False, False]
    assert variants[2]["worker"].startswith("2 × ")  # the scaled-out fleet
    assert results["latency"]["wave_max_in_flight"] == 2  # the configured variants take leases up to the cap
    assert all(v["ratio_to_api_bound"] > 0 for v in results["latency"]["variants"])
    # Under a concurrency cap the bench also says how long a call held the API and how much of the cap was used.
    assert all(0 < v["cap_utilisation"] <= 1.05 and v["wave_call_ms"] > 0 for v in variants[:4])
    assert all("records_per_second" in row for row in results["pools"]["rows"])
    assert "| measurement | result | target | |" in completed.stdout
