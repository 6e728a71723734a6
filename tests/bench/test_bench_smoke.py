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
    assert {"ceiling", "ceiling_end_to_end", "backfill", "floor", "efficiency", "steady", "memory"} <= main.keys()
    assert main["ceiling"]["per_second"] > 0
    backfill = main["backfill"]
    # 12 customers, 4 products, 8 orders, plus the fallback product that Wave → Customerp creates.
    assert sum(backfill["links"].values()) == 25
    assert backfill["dead_letters"] == {}
    assert backfill["ratio_to_ceiling"] > 0
    assert main["efficiency"]["echo"]["writes"] == 0
    # Issue 15: the floor's parts, measured on the main stack, and the backfill's worker CPU per record to it.
    io, floor = main["floor_io"], main["floor"]
    assert io["repetitions"] == 50
    assert all(io[part] > 0 for part in ("lock_ms", "link_ms", "http_ms"))
    assert io["io_ms"] == pytest.approx(io["lock_ms"] + io["link_ms"] + io["http_ms"], abs=0.01)
    assert floor["noop_ms"] == main["ceiling"]["worker_cpu_ms_per_task"] > 0
    assert floor["floor_ms"] == pytest.approx(floor["noop_ms"] + floor["io_ms"], abs=0.01)
    assert floor["worker_cpu_ms_per_record"] == backfill["worker_cpu_ms_per_record"] > 0
    assert floor["ratio"] == pytest.approx(floor["worker_cpu_ms_per_record"] / floor["floor_ms"], abs=0.01)
    assert io["scratch_links_left"] == 0  # the floor's own rows are gone from the link store
    # Wave calls per record created in Wave, and reads per created record, from the counters and the stores.
    created = backfill["per_created"]
    assert created["created"]["wave"] == {"customers": 12, "products": 4, "orders": 8}
    assert created["created_in_customerp"] == 1  # the fallback product
    assert created["wave_calls"] == sum(backfill["counters"]["wave"].values())
    assert created["wave_calls_per_wave_create"] == pytest.approx(created["wave_calls"] / 24, abs=0.001)
    assert created["wave_calls_per_wave_create"] >= 1  # every create is at least its own mutation
    assert 0 < created["reads_per_created_record"] < 10
    targets = results["targets"]
    assert {"cpu_per_record_vs_floor", "wave_calls_per_created_record", "reads_per_created_record"} <= targets.keys()
    assert {"latency_vs_api_bound", "latency_real_api_vs_bound"} <= targets.keys()
    steady = main["steady"]
    assert steady["edits"] > 0
    assert steady["visible"] + steady["never_visible"] == steady["edits"]
    memory = main["memory"]
    assert memory["messages"] == 300
    assert memory["dead_lettered"] == 0  # the backlog measures the no-op path, not the dead-letter one
    assert memory["worker_rss_end_mib"] > 0
    variants = results["latency"]["variants"]
    assert [v["baseline"] for v in variants] == [True, False, False, False, False, False]
    # The variant at a real API's latency (250 ms, 2 in flight: a bound of 8 calls/s) sits next to the leased one.
    slow = variants[2]
    assert (slow["latency_ms"], slow["api_bound_calls_per_second"], slow["target_ratio"]) == (250, 8.0, 0.95)
    assert sum(slow["links"].values()) == 17  # 16 records + the fallback product
    assert slow["dead_letters"] == {}
    assert targets["latency_real_api_vs_bound"]["value"] == slow["ratio_to_api_bound"] > 0
    assert variants[3]["worker"].startswith("2 × ")  # the scaled-out fleet
    assert results["latency"]["wave_max_in_flight"] == 2  # the configured variants take leases up to the cap
    assert all(v["ratio_to_api_bound"] > 0 for v in results["latency"]["variants"])
    # Under a concurrency cap the bench also says how long a call held the API and how much of the cap was used.
    assert all(0 < v["cap_utilisation"] <= 1.05 and v["wave_call_ms"] > 0 for v in variants[:5])
    assert all("records_per_second" in row for row in results["pools"]["rows"])
    assert "| measurement | result | target | |" in completed.stdout
    for row in ("(2) worker CPU per synced record ÷ floor", "(4) backfill: Wave calls per record created in Wave"):
        assert row in completed.stdout
    assert "(3) 250 ms, cap 2 in flight" in completed.stdout
