"""`python -m bench` (`make bench`): run the scenarios, print the table, write bench/results.json."""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import console, proc, report
from bench.data import Sizes
from bench.scenarios import NO_IN_FLIGHT_CAP, Options, backfill_on_fresh_stack, latency_run, main_run, pools_run
from bench.stack import WorkerSpec

HERE = Path(__file__).resolve().parent
SCENARIOS = (
    "ceiling",
    "backfill",
    "floor",
    "efficiency",
    "steady",
    "memory",
    "latency",
    "pools",
    "console",
    "history",
)
MAIN_SCENARIOS = frozenset(SCENARIOS[:6])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--customers", type=int, default=None, help="Customerp customers to seed (default 2000; the issue: 10000)."
    )
    parser.add_argument(
        "--products", type=int, default=None, help="Customerp products to seed (default 400; the issue: 2000)."
    )
    parser.add_argument(
        "--orders", type=int, default=None, help="Customerp orders to seed (default 2000; the issue: 10000)."
    )
    parser.add_argument("--lines", type=int, default=None, help="Lines per order (default 3).")
    parser.add_argument("--quick", action="store_true", help="A small smoke run (well under a minute).")
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIOS),
        help=f"Comma-separated subset of {', '.join(SCENARIOS)} (default: all).",
    )
    parser.add_argument("--pool", default="threads", help="Worker pool of the main run (default threads).")
    parser.add_argument("--concurrency", type=int, default=8, help="Worker concurrency of the main run (default 8).")
    parser.add_argument("--loglevel", default="INFO", help="WAVESYNC_LOG_LEVEL of the workers (default INFO).")
    parser.add_argument("--noops", type=int, default=None, help="No-op tasks for the ceiling (default 5000).")
    parser.add_argument(
        "--floor-repetitions",
        type=int,
        default=None,
        help="Repetitions of the floor's minimal create I/O, after a tenth as many to warm up (default 500).",
    )
    parser.add_argument(
        "--backlog", type=int, default=None, help="Messages in the memory backlog (default 30000; the issue: 100000)."
    )
    parser.add_argument("--poll-interval", type=float, default=None, help="Poll interval in steady state (default 5).")
    parser.add_argument("--steady-seconds", type=float, default=None, help="Length of the edit phase (default 60).")
    parser.add_argument("--edit-rate", type=float, default=None, help="Edits per second in steady state (default 2).")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="API latency of (3) and the pool runs.")
    parser.add_argument("--wave-cap", type=int, default=2, help="Wave's concurrency cap in (3) (default 2).")
    parser.add_argument("--wave-rps", type=float, default=20.0, help="Wave's rate cap in (3) (default 20/s).")
    parser.add_argument(
        "--latency-fraction", type=float, default=None, help="Share of the sizes used by (3) (default 0.1)."
    )
    parser.add_argument(
        "--slow-latency-ms",
        type=float,
        default=250.0,
        help="API latency of (3)'s variant close to the real API, leases as configured (default 250; 0 = skip).",
    )
    parser.add_argument(
        "--slow-records",
        type=int,
        default=None,
        help="Records that variant backfills (default 500: about 2.5 min at the 8 calls/s bound; --quick 16).",
    )
    parser.add_argument(
        "--pools",
        default=None,
        help="Worker configs to compare, e.g. 'threads:8,prefork:2,gevent:32' (default: a standard set).",
    )
    parser.add_argument("--postgres", action="store_true", help="Link store on a throwaway PostgreSQL cluster.")
    parser.add_argument(
        "--console",
        action="store_true",
        help="Only the console scenario: page times over 100,000 links, 1M history rows, 10,000 dead letters.",
    )
    parser.add_argument(
        "--console-scale", type=float, default=None, help="Share of that volume (default 1; --quick 0.05)."
    )
    parser.add_argument("--console-requests", type=int, default=15, help="Requests per console page (default 15).")
    parser.add_argument("--out", type=Path, default=HERE / "results.json", help="Where to write the JSON results.")
    parser.add_argument("--no-readme", action="store_true", help="Do not update the table in bench/README.md.")
    parser.add_argument("--keep", action="store_true", help="Keep each stack's directory (logs, link store).")
    parser.add_argument(
        "--report", type=Path, default=None, help="Only re-render the table (and README) from a results.json."
    )
    parser.add_argument("--workdir", type=Path, default=None, help="Where stacks keep their files (default /tmp).")
    return parser.parse_args(argv)


def parse_pools(text: str, loglevel: str, extra: tuple[str, ...]) -> tuple[WorkerSpec, ...]:
    specs = []
    for item in text.split(","):
        pool, _, concurrency = item.strip().partition(":")
        specs.append(WorkerSpec(pool, int(concurrency or 8), loglevel, extra))
    return tuple(specs)


def options(args: argparse.Namespace) -> Options:
    quick = args.quick
    defaults = Sizes(60, 15, 40, 2) if quick else Sizes(2_000, 400, 2_000, 3)
    sizes = Sizes(
        args.customers if args.customers is not None else defaults.customers,
        args.products if args.products is not None else defaults.products,
        args.orders if args.orders is not None else defaults.orders,
        args.lines if args.lines is not None else defaults.lines,
    )
    scenarios = frozenset(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = scenarios - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}; choose from {', '.join(SCENARIOS)}")
    # A smoke run skips mingle (a start-up wait for other workers' replies); throughput is unaffected.
    extra = ("--without-mingle",) if quick else ()
    latency_ms = args.latency_ms if not quick else min(args.latency_ms, 10.0)
    default_pools = "threads:4" if quick else "threads:4,threads:8,threads:16,prefork:4,gevent:32"
    repetitions = args.floor_repetitions or (50 if quick else 500)
    return Options(
        sizes=sizes,
        worker=WorkerSpec(args.pool, args.concurrency, args.loglevel, extra),
        noop_messages=args.noops if args.noops is not None else (300 if quick else 5_000),
        backlog_messages=args.backlog if args.backlog is not None else (1_000 if quick else 30_000),
        poll_interval=args.poll_interval if args.poll_interval is not None else (1.0 if quick else 5.0),
        steady_seconds=args.steady_seconds if args.steady_seconds is not None else (4.0 if quick else 60.0),
        edit_rate=args.edit_rate if args.edit_rate is not None else (3.0 if quick else 2.0),
        latency_ms=latency_ms,
        wave_cap=args.wave_cap,
        wave_rps=args.wave_rps,
        latency_fraction=args.latency_fraction if args.latency_fraction is not None else (0.3 if quick else 0.1),
        pool_specs=parse_pools(args.pools or default_pools, args.loglevel, extra),
        pool_sizes=Sizes(8, 2, 4, 2) if quick else Sizes(200, 40, 100, 3),
        pool_latencies=(0.0,) if quick else (0.0, latency_ms),
        floor_repetitions=repetitions,
        floor_warmup=max(5, repetitions // 10),
        slow_latency_ms=args.slow_latency_ms,
        slow_records=args.slow_records if args.slow_records is not None else (16 if quick else 500),
        workdir=args.workdir,
        keep=args.keep,
        scenarios=scenarios,
        log=lambda line: print(line, flush=True),
    )


def history_cost(opts: Options) -> dict[str, Any]:
    """Worker CPU per record with and without the history, on a quarter of the main run's records."""
    sizes = opts.sizes.scaled(0.25)

    def backfill(enabled: bool) -> dict[str, Any]:
        name = "history-on" if enabled else "history-off"
        settings = {**NO_IN_FLIGHT_CAP, "history_enabled": enabled}
        return backfill_on_fresh_stack(opts, sizes, opts.worker, name, faults={}, **settings)

    result = console.history_cost_run(backfill, opts.log)
    result["sizes"] = sizes.as_dict()
    return result


def guarded(results: dict[str, Any], name: str, scenario: Callable[[], dict[str, Any]], out: Path) -> None:
    """Run one scenario; on failure keep its partial results plus the error, and go on with the next one."""
    try:
        results[name] = scenario()
    except Exception as exc:  # noqa: BLE001 - one failed scenario must not lose the others' figures
        traceback.print_exc()
        part = results.get(name)
        results[name] = {**(part if isinstance(part, dict) else {}), "error": f"{type(exc).__name__}: {exc}"[:2000]}
    report.write_json(results, out)


def rerender(path: Path, *, readme: bool) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    results["targets"] = report.targets(results)
    report.write_json(results, path)
    body = report.markdown(results)
    print(body)
    if readme:
        report.update_readme(HERE / "README.md", body)
    return results


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.report is not None:
        return rerender(args.report, readme=not args.no_readme)
    if args.console:
        args.scenarios = "console"
    opts = options(args)
    started = time.monotonic()
    command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command.strip(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": proc.machine(),
        "config": {
            "sizes": opts.sizes.as_dict(),
            "worker": opts.worker.label,
            "loglevel": opts.worker.loglevel,
            "database": "postgresql" if args.postgres else "sqlite",
            "poll_interval_s": opts.poll_interval,
            "noop_messages": opts.noop_messages,
            "backlog_messages": opts.backlog_messages,
            "floor_repetitions": opts.floor_repetitions,
            "slow_latency_ms": opts.slow_latency_ms,
            "scenarios": sorted(opts.scenarios),
            "quick": args.quick,
        },
    }
    with ExitStack() as stack:
        if args.postgres:
            from sandboxes.postgres import postgres_cluster

            opts.postgres = stack.enter_context(postgres_cluster())
        if opts.scenarios & MAIN_SCENARIOS:
            opts.log(f"main run ({opts.worker.label}): {sorted(opts.scenarios & MAIN_SCENARIOS)}")
            results["main"] = {}
            guarded(results, "main", lambda: main_run(opts, results["main"]), args.out)
        if "latency" in opts.scenarios:
            opts.log("latency run")
            guarded(results, "latency", lambda: latency_run(opts), args.out)
        if "pools" in opts.scenarios:
            opts.log("pools run")
            guarded(results, "pools", lambda: pools_run(opts), args.out)
        if "console" in opts.scenarios:
            opts.log("console run")
            scale = args.console_scale if args.console_scale is not None else (0.05 if args.quick else 1.0)
            volume = console.Volume().scaled(scale)
            requests = args.console_requests

            def console_scenario() -> dict[str, Any]:
                return console.console_run(
                    postgres=opts.postgres, volume=volume, requests=requests, workdir=opts.workdir, log=opts.log
                )

            guarded(results, "console", console_scenario, args.out)
        if "history" in opts.scenarios:
            opts.log("history cost run")
            guarded(results, "history_cost", lambda: history_cost(opts), args.out)
    results["seconds"] = round(time.monotonic() - started, 1)
    results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["targets"] = report.targets(results)
    report.write_json(results, args.out)
    body = report.markdown(results)
    failed = [
        name
        for name in ("main", "latency", "pools")
        if isinstance(results.get(name), dict) and "error" in results[name]
    ]
    print()
    print(body)
    print(f"\nresults: {args.out}")
    if not args.no_readme and not args.quick:
        report.update_readme(HERE / "README.md", body)
    if failed:
        print(f"scenario(s) failed: {', '.join(failed)} (see the errors in {args.out})", file=sys.stderr)
    return results


if __name__ == "__main__":
    sys.exit(1 if any("error" in v for v in run().values() if isinstance(v, dict)) else 0)
