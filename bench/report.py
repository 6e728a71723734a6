"""Turning results into the markdown table that is printed and kept in bench/README.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:results:begin -->"
END = "<!-- bench:results:end -->"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _status(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def _other_load(row: dict[str, Any]) -> str:
    other = (row.get("cpu") or {}).get("other_cores")
    return f" (other processes: {other:g} cores)" if other is not None else ""


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each of the issue's targets: the measured value, the target and whether it is met."""
    out: dict[str, dict[str, Any]] = {}
    main = results.get("main", {})
    backfill, ceiling = main.get("backfill"), main.get("ceiling")
    if backfill and ceiling:
        best = max(main[k]["per_second"] for k in ("ceiling", "ceiling_end_to_end") if k in main)
        ratio = round(backfill["records_per_second"] / best, 4)
        backfill["ratio_to_ceiling"] = ratio
        out["backfill_vs_ceiling"] = {"value": ratio, "target": ">= 0.50", "met": ratio is not None and ratio >= 0.5}
    latency = results.get("latency")
    if latency and latency.get("variants"):
        # Every configured variant must reach the bound; the unconfigured baseline is there for comparison only.
        worst = min(v["ratio_to_api_bound"] for v in latency["variants"] if not v.get("baseline"))
        out["latency_vs_api_bound"] = {"value": worst, "target": ">= 0.90 (every variant)", "met": worst >= 0.9}
    efficiency = main.get("efficiency")
    if efficiency:
        wpc = efficiency["backfill"]["writes_per_change"]
        out["writes_per_change"] = {"value": wpc, "target": "<= 1", "met": wpc <= 1}
        steady = efficiency.get("steady")
        if steady:
            out["steady_writes_per_change"] = {
                "value": steady["writes_per_change"],
                "target": "<= 1",
                "met": steady["writes_per_change"] <= 1,
            }
        wpe = efficiency["echo"]["writes_per_echo"]
        out["writes_per_echo"] = {"value": wpe, "target": "0", "met": wpe == 0}
    steady_run = main.get("steady")
    if steady_run:
        limit = steady_run["poll_interval_s"] + 1
        p95 = steady_run["lag_p95_s"]
        out["lag_p95"] = {
            "value": p95,
            "target": f"<= {limit:g} s",
            "met": p95 == p95 and p95 <= limit and steady_run["never_visible"] == 0,
        }
    memory = main.get("memory")
    if memory and memory.get("growth_pct") is not None:
        growth = memory["growth_pct"]
        out["rss_growth"] = {"value": growth, "target": "< 10 %", "met": growth < 10}
    return out


def table(results: dict[str, Any]) -> str:
    """The headline table: one row per measurement, with its target."""
    main = results.get("main", {})
    rows: list[tuple[str, str, str, str]] = []
    checks = results.get("targets", {})
    ceiling = main.get("ceiling")
    if ceiling:
        e2e = main.get("ceiling_end_to_end", {})
        rows.append(
            (
                "(1) bare Celery no-op ceiling",
                f"{_fmt(ceiling['per_second'])} tasks/s drained from a full queue; "
                f"{_fmt(e2e.get('per_second'))} tasks/s end to end with the producer (the better one is the ceiling)",
                "",
                "",
            )
        )
    backfill = main.get("backfill")
    if backfill:
        links = sum(backfill["links"].values())
        rows.append(
            (
                "(2) backfill Customerp → Wave, 0 ms",
                f"{_fmt(backfill['records_per_second'])} records/s ({links:,} records, {backfill['seconds']:.0f} s)"
                + _other_load(backfill),
                "",
                "",
            )
        )
        if "backfill_vs_ceiling" in checks:
            c = checks["backfill_vs_ceiling"]
            rows.append(("(2) ratio to ceiling", _fmt(c["value"], 3), c["target"], _status(c["met"])))
    latency = results.get("latency")
    if latency:
        for variant in latency.get("variants", []):
            rows.append(
                (
                    f"(3) {latency['latency_ms']:g} ms, {variant['label']}",
                    f"{_fmt(variant['wave_ok_calls_per_second'])} Wave calls/s of "
                    f"{_fmt(variant['api_bound_calls_per_second'])} = {_fmt(variant['ratio_to_api_bound'], 2)}; "
                    f"{_fmt(variant['records_per_second'])} records/s"
                    + (
                        f"; a call held the API {_fmt(variant['wave_call_ms'])} ms, cap in use "
                        f"{_fmt(variant['cap_utilisation'], 2)}"
                        if "cap_utilisation" in variant
                        else ""
                    )
                    + _other_load(variant),
                    "baseline" if variant.get("baseline") else ">= 0.90",
                    "" if variant.get("baseline") else _status(variant["ratio_to_api_bound"] >= 0.9),
                )
            )
    efficiency = main.get("efficiency")
    if efficiency:
        b = efficiency["backfill"]
        rows.append(
            (
                "(4) backfill: writes per real change",
                f"{_fmt(b['writes_per_change'], 2)} (Wave {_fmt(b['wave_writes_per_change'], 2)}, "
                f"Customerp {_fmt(b['customerp_writes_per_change'], 2)})",
                "<= 1",
                _status(checks.get("writes_per_change", {}).get("met")),
            )
        )
        per = ", ".join(
            f"{e} {_fmt(v['wave_writes'], 2)}+{_fmt(v['customerp_writes'], 2)}" for e, v in b["per_entity"].items()
        )
        rows.append(("(4) backfill writes per record, by entity (Wave+Customerp)", per, "", ""))
        rows.append(
            (
                "(4) backfill: reads per change",
                f"{_fmt(b['reads_per_change'], 2)} (poll pages {_fmt(b['poll_page_reads_per_change'], 3)})",
                "amortised",
                "",
            )
        )
        e = efficiency["echo"]
        rows.append(
            (
                "(4) echo round: writes per echo",
                f"{_fmt(e['writes_per_echo'], 3)} ({e['records_seen']:,} echoes, {e['messages_enqueued']:,} enqueued, "
                f"{_fmt(e['reads_per_echo'], 3)} reads each)",
                "0",
                _status(checks.get("writes_per_echo", {}).get("met")),
            )
        )
        s = efficiency.get("steady")
        if s:
            rows.append(
                (
                    "(4) steady: writes / reads per real change",
                    f"{_fmt(s['writes_per_change'], 2)} / {_fmt(s['reads_per_change'], 2)} "
                    f"(of which poll pages {_fmt(s['poll_reads_per_change'], 2)})",
                    "<= 1 write",
                    _status(checks.get("steady_writes_per_change", {}).get("met")),
                )
            )
    steady = main.get("steady")
    if steady:
        rows.append(
            (
                "(5) edit-to-visible lag p50 / p95",
                f"{_fmt(steady['lag_p50_s'], 2)} s / {_fmt(steady['lag_p95_s'], 2)} s ({steady['edits']} edits at "
                f"{steady['edit_rate_per_s']:g}/s, poll every {steady['poll_interval_s']:g} s, "
                f"{steady['never_visible']} never visible)",
                f"p95 <= {steady['poll_interval_s'] + 1:g} s",
                _status(checks.get("lag_p95", {}).get("met")),
            )
        )
        rows.append(("(6) beat RSS (peak)", f"{_fmt(steady['beat_peak_rss_mib'])} MiB", "", ""))
    memory = main.get("memory")
    if memory:
        rows.append(
            (
                "(6) worker RSS over the backlog",
                f"{_fmt(memory['worker_rss_warm_mib'])} → {_fmt(memory['worker_rss_end_mib'])} MiB "
                f"({_fmt(memory['growth_pct'])} %), peak {_fmt(memory['worker_hwm_mib'])} MiB; "
                f"{memory['messages']:,} msgs at {_fmt(memory['per_second'])}/s",
                "growth < 10 %",
                _status(checks.get("rss_growth", {}).get("met")),
            )
        )
    pools = results.get("pools")
    if pools:
        for row in pools.get("rows", []):
            value = (
                f"{_fmt(row['records_per_second'])} records/s, RSS {_fmt(row['worker_rss_mib'])} MiB" + _other_load(row)
                if "records_per_second" in row
                else f"failed: {row['error'][:80]}"
            )
            rows.append((f"pool {row['worker']} at {row['latency_ms']:g} ms", value, "", ""))
    for name in ("main", "latency", "pools"):
        section = results.get(name)
        if isinstance(section, dict) and "error" in section:
            rows.append((f"{name} run failed", section["error"][:200].replace("|", "/").replace("\n", " "), "", ""))
    lines = ["| measurement | result | target | |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    return (
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB RAM, Python {m['python']}, "
        f"Linux {m['kernel']}. Link store: {results['config']['database']}. Worker: {results['config']['worker']}."
    )


def markdown(results: dict[str, Any]) -> str:
    return "\n\n".join(
        [
            f"Run of {results['finished_at']} ({results['seconds']:.0f} s): `{results['command']}`",
            machine_line(results),
            f"Sizes: {results['config']['sizes']}.",
            table(results),
        ]
    )


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def update_readme(readme: Path, body: str) -> None:
    """Replace the block between the result markers of bench/README.md with the latest table."""
    text = readme.read_text() if readme.exists() else f"# Benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{body}\n{END}{tail}")
