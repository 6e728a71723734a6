"""The console's scenarios: page render times over a big link store, and the worker CPU the history costs.

`console_run` fills a link store (100,000 links, 1,000,000 history rows, 10,000 dead letters by default) on SQLite
and, with --postgres, on PostgreSQL, then times each console page over real HTTP (median and p95 of several
requests; live reads of both systems off: those are the systems' time, not the console's). It reports; it asserts
nothing. `history_cost_run` backfills the same records twice on fresh stacks, with and without the history, and
compares the workers' CPU seconds per synced record.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from sandboxes.serve import ServerThread
from shared.settings import Settings
from shared.store import link_state
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from shared.store.models import DeadLetter, HistoryEntry, Link
from shared.versions import utcnow
from wavesync.embedded import EmbeddedRedis

Log = Callable[[str], None]
PASSWORD = "bench-console-password"  # noqa: S105 - a throwaway console of the bench
KINDS = ("merged", "echo", "created", "stale", "dead-lettered", "replayed", "unchanged")
ENTITY_OF = ("customers", "customers", "customers", "products", "orders", "orders")


@dataclass(frozen=True)
class Volume:
    links: int = 100_000
    history: int = 1_000_000
    dead_letters: int = 10_000

    def scaled(self, share: float) -> Volume:
        return Volume(int(self.links * share), int(self.history * share), int(self.dead_letters * share))


def _entity(n: int) -> str:
    return ENTITY_OF[n % len(ENTITY_OF)]


def fill(database_url: str, volume: Volume, log: Log, batch: int = 20_000) -> dict[str, float]:
    """Bulk-insert the volume: links with realistic agreed records, history spread over 90 days, dead letters."""
    upgrade(database_url)
    db = Database(database_url)
    rng = random.Random(7)
    now = utcnow()
    timings: dict[str, float] = {}
    started = time.monotonic()
    for start in range(0, volume.links, batch):
        rows = [
            {
                "entity": _entity(n),
                "customerp_id": f"cp{n:07d}",
                "wave_id": f"QnVzaW5lc3M6{n:012d}",
                "state_document": link_state.dump(
                    Settled(
                        {
                            "name": f"Company {n} Ltd",
                            "email": f"buyer{n}@example.com",
                            "number": f"C-{n:07d}",
                            "phone": f"+1 555 {n % 10000:04d}",
                            "notes": "Net 30",
                        }
                    )
                ),
                "customerp_version": str(n % 50 + 1),
                "wave_version": "2026-11-01T00:00:00.000Z",
                "created_at": now,
                "synced_at": now,
                "row_version": 1,
            }
            for n in range(start, min(volume.links, start + batch))
        ]
        with db.session() as session:
            session.execute(insert(Link), rows)
    timings["links_s"] = round(time.monotonic() - started, 1)
    log(f"    {volume.links} links in {timings['links_s']} s")
    started = time.monotonic()
    span = 90 * 24 * 3600
    for start in range(0, volume.history, batch):
        rows = []
        for i in range(start, min(volume.history, start + batch)):
            n = rng.randrange(max(1, volume.links))
            kind = KINDS[i % len(KINDS)]
            rows.append(
                {
                    "at": now - timedelta(seconds=span * (1 - i / max(1, volume.history))),
                    "kind": kind,
                    "entity": _entity(n),
                    "customerp_id": f"cp{n:07d}",
                    "wave_id": f"QnVzaW5lc3M6{n:012d}",
                    "link_id": n + 1,
                    "task_id": f"{i:08x}-bench",
                    "direction": "customerp->wave",
                    "reason": None,
                    "diff": {"phone": {"from": "+1 555 0000", "to": f"+1 555 {i % 10000:04d}", "side": "wave"}}
                    if kind == "merged"
                    else None,
                }
            )
        with db.session() as session:
            session.execute(insert(HistoryEntry), rows)
    timings["history_s"] = round(time.monotonic() - started, 1)
    log(f"    {volume.history} history rows in {timings['history_s']} s")
    started = time.monotonic()
    for start in range(0, volume.dead_letters, batch):
        rows = [
            {
                "entity": _entity(n),
                "source": "customerp",
                "source_id": f"dl{n:07d}",
                "customerp_id": f"dl{n:07d}",
                "wave_id": None,
                "message": {"entity": _entity(n), "source": "customerp", "source_id": f"dl{n:07d}"},
                "version": "1",
                "error_class": ("InvalidDataError", "PermanentError", "RetryableError")[n % 3],
                "reason": f"refused: field {n % 7} is not valid",
                "field_paths": ["name"],
                "attempts": 1 + n % 3,
                "first_failed_at": now,
                "last_failed_at": now,
                # A third resolved: they stay in the table, so the open list must skip them quickly.
                "resolved_at": now if n % 3 == 0 else None,
                "resolution": "synced" if n % 3 == 0 else None,
            }
            for n in range(start, min(volume.dead_letters, start + batch))
        ]
        with db.session() as session:
            session.execute(insert(DeadLetter), rows)
    timings["dead_letters_s"] = round(time.monotonic() - started, 1)
    return timings


def pages(volume: Volume) -> dict[str, str]:
    """The pages timed: every console page, at its heaviest reasonable use."""
    busy = max(1, volume.links // 2)
    busy_entity = _entity(busy)
    return {
        "overview": "/",
        "dead letters (open)": "/dead-letters",
        "dead letters (all, filtered)": "/dead-letters?status=all&entity=orders&error_class=PermanentError",
        "dead letters (page 20)": f"/dead-letters?before={max(1, volume.dead_letters - 1000)}",
        "dead letter": f"/dead-letters/{max(1, volume.dead_letters // 2)}",
        "record + history": f"/records/{busy_entity}/customerp/cp{busy:07d}",
        "record history page 2": f"/records/{busy_entity}/customerp/cp{busy:07d}?before={volume.history // 2}",
        "search by id": f"/records?q=QnVzaW5lc3M6{busy:012d}",
        "search by email": f"/records?q=buyer{busy}@example.com",
        "search, no match": "/records?q=nobody-has-this",
        "reconcile": "/reconcile",
    }


@contextmanager
def running_console(database_url: str, workdir: Path) -> Iterator[httpx.Client]:
    from wavesync.console.app import create_app

    with ExitStack() as stack:
        valkey = stack.enter_context(EmbeddedRedis(workdir / "valkey"))
        settings = Settings(
            database_url=database_url,
            redis_url=valkey.url,
            data_dir=workdir,
            console_password=PASSWORD,
        )
        server = stack.enter_context(ServerThread(create_app(settings, live_reads=False)))
        client = stack.enter_context(httpx.Client(base_url=server.url, timeout=120, follow_redirects=True))
        login = client.get("/login").text
        token = login.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.post("/login", data={"csrf": token, "username": "operator", "password": PASSWORD})
        yield client


def time_pages(client: httpx.Client, volume: Volume, requests: int) -> dict[str, dict[str, float]]:
    out = {}
    for name, path in pages(volume).items():
        client.get(path)  # warm: first use of a query plan, the page cache
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            answer = client.get(path)
            samples.append(1000 * (time.perf_counter() - started))
            answer.raise_for_status()
        ordered = sorted(samples)
        out[name] = {
            "median_ms": round(statistics.median(samples), 1),
            "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        }
    return out


def console_run(
    *, postgres: str | None, volume: Volume, requests: int, workdir: Path | None, log: Log
) -> dict[str, Any]:
    results: dict[str, Any] = {"volume": volume.__dict__, "requests_per_page": requests, "databases": {}}
    databases = ["sqlite", *(["postgresql"] if postgres else [])]
    for database in databases:
        with ExitStack() as stack:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wavesync-bench-console-", dir=workdir)))
            if database == "sqlite":
                url = f"sqlite:///{root / 'links.db'}"
            else:
                from sandboxes.postgres import fresh_database

                assert postgres is not None
                url = stack.enter_context(fresh_database(postgres, "bench_console"))
            log(f"  console on {database}: filling")
            filled = fill(url, volume, log)
            client = stack.enter_context(running_console(url, root))
            timed = time_pages(client, volume, requests)
            for name, t in timed.items():
                flag = "" if t["p95_ms"] < 300 else "  (over 300 ms)"
                log(f"    {name:<30} median {t['median_ms']:>7.1f} ms   p95 {t['p95_ms']:>7.1f} ms{flag}")
            results["databases"][database] = {"fill": filled, "pages": timed}
    return results


def _worker_cpu_seconds(result: dict[str, Any]) -> float:
    cpu = result.get("cpu") or {}
    skip = ("bench_cores", "valkey_cores", "total_cores", "machine_cores", "other_cores")
    cores = sum(v for k, v in cpu.items() if k.endswith("_cores") and k not in skip)
    return float(cores) * float(result.get("seconds") or 0)


def history_cost_run(backfill: Callable[[bool], dict[str, Any]], log: Log) -> dict[str, Any]:
    """Worker CPU per synced record with the history on and off (`backfill(enabled)` runs one fresh backfill).

    Four backfills in the order off, on, on, off: a drift of the machine during the run (another process, a
    warming cache) then weighs on both sides alike instead of on whichever ran second."""
    runs: dict[bool, list[tuple[int, float, float, float]]] = {False: [], True: []}
    for enabled in (False, True, True, False):
        result = backfill(enabled)
        links = max(1, sum(result["links"].values()))
        runs[enabled].append((links, _worker_cpu_seconds(result), result["seconds"], result["records_per_second"]))
    rows: dict[str, Any] = {}
    for enabled, done in runs.items():
        links = sum(r[0] for r in done)
        cpu = sum(r[1] for r in done)
        rows["with_history" if enabled else "without_history"] = {
            "links": links,
            "seconds": round(sum(r[2] for r in done), 1),
            "worker_cpu_s": round(cpu, 2),
            "worker_cpu_ms_per_record": round(1000 * cpu / links, 2),
            "worker_cpu_ms_per_record_each_run": [round(1000 * r[1] / r[0], 2) for r in done],
            "records_per_second": round(sum(r[3] for r in done) / len(done), 1),
        }
    base = rows["without_history"]["worker_cpu_ms_per_record"]
    extra = rows["with_history"]["worker_cpu_ms_per_record"] - base
    rows["history_share_of_worker_cpu"] = round(extra / base, 3) if base else None
    log(
        f"  history cost: {rows['without_history']['worker_cpu_ms_per_record']} ms CPU/record without, "
        f"{rows['with_history']['worker_cpu_ms_per_record']} with = {rows['history_share_of_worker_cpu']} more"
    )
    return rows
