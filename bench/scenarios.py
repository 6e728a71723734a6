"""The measurements of issue 7, each a function from a running `Stack` (or a way to make one) to a results dict.

`main_run` does (1) ceiling, (2) backfill and its floor (issue 15), (4) efficiency, (5) steady state and
(6) memory on ONE stack and ONE worker, so every ratio compares figures taken on the same broker, worker settings
and machine state.
`latency_run` (3) and `pools_run` (pool/concurrency choice) each use small fresh stacks.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import proc
from bench.data import Sizes, create_fallback_product, seed_customerp
from bench.floor import measure_minimal_io, summarise
from bench.stack import Child, Stack, WorkerSpec, split_counts, stack
from shared import keys
from shared.customerp.models import Customer
from shared.messages import ChangeMessage
from shared.settings import ENTITIES

Log = Callable[[str], None]
SYNC_QUEUES = ("customers", "products", "orders")
# The sandboxes cap no concurrency outside (3), so neither do the workers: like the lifted rate limits in
# bench/stack.py's BASE_SETTINGS, this keeps the other runs measuring the engine rather than the limiter.
NO_IN_FLIGHT_CAP: dict[str, Any] = {"wave_max_in_flight": 0, "customerp_max_in_flight": 0}


@dataclass
class Options:
    sizes: Sizes
    worker: WorkerSpec
    noop_messages: int
    backlog_messages: int
    poll_interval: float
    steady_seconds: float
    edit_rate: float
    latency_ms: float
    wave_cap: int
    wave_rps: float
    latency_fraction: float
    pool_specs: tuple[WorkerSpec, ...]
    pool_sizes: Sizes
    pool_latencies: tuple[float, ...] = (0.0, 50.0)
    # The floor's minimal create I/O, timed over this many repetitions after a warm-up (bench/floor.py).
    floor_repetitions: int = 500
    floor_warmup: int = 50
    # (3) at a real API's latency: Wave (and Customerp) at this many ms, `slow_records` records; 0 = not run.
    slow_latency_ms: float = 250.0
    slow_records: int = 500
    postgres: str | None = None
    # WAVESYNC_WAVE_MAX_IN_FLIGHT of the workers facing the capped sandbox in (3): None = the sandbox's cap, which
    # is what a deployer sets from Wave's documented limit; 0 = no fleet leases (how (3) ran before issue 7).
    wave_max_in_flight: int | None = None
    workdir: Path | None = None
    scenarios: frozenset[str] = frozenset()
    log: Log = print
    keep: bool = False
    notes: list[str] = field(default_factory=list)


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def rate(count: float, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


# --- building blocks ----------------------------------------------------------------------------------------


def send_noops(running: Stack, count: int) -> float:
    started = time.monotonic()
    with running.app.producer_or_acquire() as producer:
        for n in range(count):
            running.app.send_task(keys.NOOP_TASK, args=[None], queue=SYNC_QUEUES[n % 3], producer=producer)
    return rate(count, time.monotonic() - started)


def run_noops(running: Stack, count: int, children: list[Child]) -> dict[str, Any]:
    """(1) Bare Celery end to end: `count` no-op tasks over the three sync queues, from first send to drained."""
    meter = running.cpu_meter().start()
    started = time.monotonic()
    enqueue_rate = send_noops(running, count)
    idle = running.wait_idle(600, children=children)
    seconds = idle - started
    return {
        "messages": count,
        "seconds": round(seconds, 2),
        "per_second": rate(count, seconds),
        "enqueue_per_second": enqueue_rate,
        "cpu": meter.stop(),
    }


def drain_noops(running: Stack, spec: WorkerSpec, count: int) -> tuple[Child, dict[str, Any]]:
    """(1) Bare Celery consumption: `count` no-ops queued first, then the worker starts and drains them.

    Timed from the first message taken to the last one acked, so neither the producer nor worker start-up
    counts. This is the ceiling the engine's ratio uses.
    """
    enqueue_rate = send_noops(running, count)
    worker = running.start_worker(spec, wait=False)
    while running.busy() >= count:
        if not worker.alive():
            raise RuntimeError(f"{worker.name} died; its log ends:\n{worker.tail()}")
        time.sleep(0.005)
    meter = running.cpu_meter().start()
    started = time.monotonic()
    idle = running.wait_idle(600, children=[worker], quiet=0.3, interval=0.01)
    seconds = idle - started
    cpu = meter.stop()
    # The meter starts once the first message is taken, so a handful were done before it: per task, that errs low
    # (a lower floor, a ratio never flattered).
    worker_cpu = meter.seconds()
    return worker, {
        "messages": count,
        "seconds": round(seconds, 2),
        "per_second": rate(count, seconds),
        "enqueue_per_second": enqueue_rate,
        "cpu": cpu,
        "worker_cpu_s": round(worker_cpu, 2),
        "worker_cpu_ms_per_task": round(1000 * worker_cpu / count, 3),
    }


def send_polls(running: Stack, system: str, entities: tuple[str, ...] = ENTITIES) -> None:
    for entity in entities:
        running.app.send_task(keys.POLL_TASK, args=[system, entity], queue=keys.CONTROL_QUEUE)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def poll_stats(running: Stack) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for system in ("customerp", "wave"):
        for entity in ENTITIES:
            raw = running.redis.hgetall(keys.poll_stats_key(system, entity))
            out[f"{system}.{entity}"] = {_text(k): _text(v) for k, v in raw.items()}
    return out


def poll_round(running: Stack, system: str, timeout: float) -> int:
    """Run the three pollers of `system` once each, as beat would; returns how many poll tasks it took.

    A poll task that fails (e.g. a 429 on a page under Wave's concurrency cap) records no run: beat would send
    it again at the next interval, so the bench sends it again as soon as it has ended without a record.
    """
    since = time.time()
    deadline = time.monotonic() + timeout
    pending: tuple[str, ...] = tuple(ENTITIES)
    sent = 0
    while pending:
        send_polls(running, system, pending)
        sent += len(pending)
        ended_since: float | None = None
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{system} polls {pending} did not finish in {timeout:.0f} s")
            stats = poll_stats(running)
            pending = tuple(e for e in pending if not _finished_after(stats[f"{system}.{e}"], since))
            if not pending:
                break
            running_now = any(running.redis.exists(keys.poller_lock_key(system, e)) for e in pending)  # type: ignore[arg-type]
            if running.redis.llen(keys.CONTROL_QUEUE) == 0 and not running_now:
                ended_since = ended_since or time.monotonic()
                if time.monotonic() - ended_since > 1.0:
                    break  # ended without recording a run: send those again
            else:
                ended_since = None
            time.sleep(0.1)
    return sent


def _finished_after(stats: dict[str, str], since: float) -> bool:
    stamp = stats.get("last_success_at")
    return bool(stamp) and datetime.fromisoformat(str(stamp)).timestamp() >= since


def run_backfill(running: Stack, sizes: Sizes, children: list[Child], log: Log) -> dict[str, Any]:
    """(2)/(3) Initial backfill Customerp → Wave: Wave polls (empty), then Customerp polls, until all is idle."""
    running.reset_counters()
    before = running.record_counts()
    meter = running.cpu_meter().start()
    started = time.monotonic()
    polls = poll_round(running, "wave", 600)
    running.wait_idle(600, children=children)
    polls += poll_round(running, "customerp", 3600)
    idle = running.wait_idle(7200, children=children, quiet=1.0)
    cpu = meter.stop()
    seconds = idle - started
    links = running.link_counts()
    dead = running.dead_letter_counts()
    counters = running.counters()
    linked = sum(links.values())
    worker_cpu = meter.seconds()
    result: dict[str, Any] = {
        "records_seeded": sizes.records,
        "links": links,
        "dead_letters": dead,
        "seconds": round(seconds, 2),
        "records_per_second": rate(linked, seconds),
        "cpu": cpu,
        "worker_cpu_s": round(worker_cpu, 2),
        # Everything the worker did during the backfill (polls included) over the records it synced.
        "worker_cpu_ms_per_record": round(1000 * worker_cpu / max(1, linked), 2),
        "poll_tasks": polls,
        "counters": counters,
        "per_created": per_created(counters, before, running.record_counts()),
        "poll_stats": poll_stats(running),
    }
    if dead:
        result["dead_letter_examples"] = running.dead_letter_reasons()
    log(
        f"  backfill: {linked} links in {seconds:.1f} s = {result['records_per_second']} records/s; dead {dead}; "
        f"CPU {cpu}"
    )
    return result


def per_created(
    counters: dict[str, dict[str, int]], before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """API calls per record created during a backfill, from the sandboxes' counters and stores.

    Every GraphQL request counts (searches, list pages and polls included; a 429 too, since it was a call); the
    bench's own admin routes are not counted by the sandboxes. Records created are the growth of each store.
    """
    created = {
        system: {entity: after[system][entity] - before[system][entity] for entity in after[system]}
        for system in ("wave", "customerp")
    }
    in_wave, in_cp = sum(created["wave"].values()), sum(created["customerp"].values())
    wave_calls, cp_calls = sum(counters["wave"].values()), sum(counters["customerp"].values())
    cp_writes, cp_reads = split_counts(counters["customerp"], "customerp")
    wave_writes, wave_reads = split_counts(counters["wave"], "wave")
    return {
        "created": created,
        "created_in_wave": in_wave,
        "created_in_customerp": in_cp,
        "wave_calls": wave_calls,
        "wave_reads": wave_reads,
        "wave_writes": wave_writes,
        "wave_throttled": counters["wave_faults"].get("429", 0),
        "customerp_calls": cp_calls,
        "customerp_reads": cp_reads,
        "customerp_writes": cp_writes,
        "wave_calls_per_wave_create": round(wave_calls / in_wave, 3) if in_wave else None,
        # Customerp → Wave creates read their source: Customerp calls per record created in Wave.
        "customerp_calls_per_wave_create": round(cp_calls / in_wave, 3) if in_wave else None,
        # Meaningful only when the backfill runs that way too; the default one creates the fallback product only.
        "customerp_calls_per_customerp_create": round(cp_calls / in_cp, 3) if in_cp else None,
        "reads_per_created_record": round((wave_reads + cp_reads) / max(1, in_wave + in_cp), 3),
    }


def efficiency(backfill: dict[str, Any], echo: dict[str, Any], steady: dict[str, Any] | None) -> dict[str, Any]:
    """(4) API calls per unit of work, from the sandboxes' counters."""
    calls = backfill["counters"]
    cp_writes, cp_reads = split_counts(calls["customerp"], "customerp")
    wave_writes, wave_reads = split_counts(calls["wave"], "wave")
    changes = max(1, sum(backfill["links"].values()))
    poll_reads = sum(n for op, n in calls["customerp"].items() if op.endswith(".changes"))
    per_entity: dict[str, dict[str, float]] = {}
    for entity, wave_kind in (("customers", "customer"), ("products", "product"), ("orders", "invoice")):
        linked = max(1, backfill["links"].get(entity, 0))
        w = sum(n for op, n in calls["wave"].items() if op.startswith(wave_kind) and any(x in op for x in WRITES))
        c = sum(n for op, n in calls["customerp"].items() if op.startswith(entity) and op.endswith(CP_W))
        per_entity[entity] = {"wave_writes": round(w / linked, 3), "customerp_writes": round(c / linked, 3)}
    result: dict[str, Any] = {
        "backfill": {
            "writes_per_change": round((cp_writes + wave_writes) / changes, 3),
            "wave_writes_per_change": round(wave_writes / changes, 3),
            "customerp_writes_per_change": round(cp_writes / changes, 3),
            "reads_per_change": round((cp_reads + wave_reads) / changes, 3),
            "poll_page_reads_per_change": round(poll_reads / changes, 4),
            "per_entity": per_entity,
        },
        "echo": echo,
    }
    if steady:
        result["steady"] = {
            k: steady[k] for k in ("writes_per_change", "reads_per_change", "poll_reads_per_change") if k in steady
        }
    return result


WRITES = ("Create", "Patch", "Delete", "Archive", "Approve", "MarkSent", "Send")
CP_W = (".create", ".update", ".delete")


def run_echo_round(running: Stack, children: list[Child], log: Log) -> dict[str, Any]:
    """Poll both sides after the backfill: every record the engine wrote comes back as an echo."""
    running.reset_counters()
    poll_round(running, "wave", 600)
    poll_round(running, "customerp", 600)
    running.wait_idle(600, children=children, quiet=1.0)
    stats = poll_stats(running)
    seen = sum(int(s.get("seen", 0) or 0) for s in stats.values())
    enqueued = sum(int(s.get("enqueued", 0) or 0) for s in stats.values())
    echoes = sum(int(s.get("echoes", 0) or 0) for s in stats.values())
    counters = running.counters()
    cp_writes, cp_reads = split_counts(counters["customerp"], "customerp")
    wave_writes, wave_reads = split_counts(counters["wave"], "wave")
    result = {
        "records_seen": seen,
        "echoes_suppressed_by_poller": echoes,
        "messages_enqueued": enqueued,
        "writes": cp_writes + wave_writes,
        "reads": cp_reads + wave_reads,
        "writes_per_echo": round((cp_writes + wave_writes) / max(1, seen), 4),
        "reads_per_echo": round((cp_reads + wave_reads) / max(1, seen), 4),
    }
    log(f"  echo round: {seen} seen, {echoes} suppressed, {enqueued} enqueued, {result['writes']} writes")
    return result


# --- (5) steady state ---------------------------------------------------------------------------------------


@dataclass
class Edit:
    entity: str
    side: str
    target_id: str
    marker: str
    at: float
    seen_at: float | None = None


class EditDriver:
    """Random edits on both sides at a set rate (as people would, through the admin routes), and a watcher
    that notes when each edit is visible in the other system by reading that sandbox's store directly."""

    FIELDS = {
        "customers": ("phone", "phone"),
        "products": ("description", "description"),
        "orders": ("po_number", "poNumber"),
    }

    def __init__(self, running: Stack, rate_per_s: float, seconds: float, seed: int = 7) -> None:
        self.running = running
        self.rate = rate_per_s
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.pairs = {entity: running.links(entity) for entity in ENTITIES}
        self.edits: list[Edit] = []
        self.open: dict[str, Edit] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        watcher = threading.Thread(target=self._watch, name="bench-watch", daemon=True)
        watcher.start()
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < self.seconds:
            due = started + n / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self._edit(n)
            n += 1

    def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self.open:
                    break
            time.sleep(0.1)
        self._stop.set()

    def _edit(self, n: int) -> None:
        entity = self.rng.choices(ENTITIES, weights=(5, 2, 3))[0]
        pairs = self.pairs[entity]
        if not pairs:
            return
        cp_id, wave_id = self.rng.choice(pairs)
        key = f"{entity}:{cp_id}"
        with self._lock:
            if key in self.open:
                return  # one edit in flight per record, so every edit has one moment it becomes visible
        side = "customerp" if n % 2 == 0 else "wave"
        cp_field, wave_field = self.FIELDS[entity]
        marker = f"+1 555 {n:07d}" if entity == "customers" else f"bench-{n}"
        if side == "customerp":
            url = f"{self.running.cp_server.url}/_admin/{entity}/{cp_id}"
            body = {cp_field: marker}
        else:
            kind = "invoices" if entity == "orders" else entity
            url = f"{self.running.wave_server.url}/_admin/{kind}/{wave_id}"
            body = {wave_field: marker}
        edit = Edit(entity, side, wave_id if side == "customerp" else cp_id, marker, time.monotonic())
        response = self.running.http.patch(url, json=body)
        if response.status_code >= 400:
            self.errors.append(f"{entity} {side} {response.status_code}: {response.text[:200]}")
            return
        with self._lock:
            self.edits.append(edit)
            self.open[key] = edit

    def _visible(self, edit: Edit) -> bool:
        if edit.side == "customerp":  # look in Wave
            store = self.running.wave_store
            if edit.entity == "customers":
                return bool(store.customer(edit.target_id)[1].fields.get("phone") == edit.marker)
            if edit.entity == "products":
                return bool(store.product(edit.target_id)[1].description == edit.marker)
            return bool(store.invoice(edit.target_id)[1].text.get("poNumber") == edit.marker)
        entry = self.running.cp_store.tables[edit.entity].get(edit.target_id)
        field_name = self.FIELDS[edit.entity][0]
        return entry is not None and entry.data.get(field_name) == edit.marker

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = list(self.open.items())
            now = time.monotonic()
            for key, edit in pending:
                try:
                    visible = self._visible(edit)
                except Exception:  # noqa: BLE001 - a record mid-write: look again next round
                    visible = False
                if visible:
                    edit.seen_at = now
                    with self._lock:
                        self.open.pop(key, None)
            time.sleep(0.05)


def run_steady(running: Stack, opts: Options, log: Log) -> dict[str, Any]:
    """(5) Beat polls every poll_interval; edits on both sides at a set rate; edit-to-visible lag."""
    running.reset_counters()
    beat = running.start_beat()
    time.sleep(min(2.0, opts.poll_interval))
    driver = EditDriver(running, opts.edit_rate, opts.steady_seconds)
    started = time.monotonic()
    driver.run()
    driver.drain(timeout=opts.poll_interval * 3 + 30)
    seconds = time.monotonic() - started
    beat_memory = proc.tree_memory(beat.pid)
    running.stop_child(beat)
    counters = running.counters()
    lags = [e.seen_at - e.at for e in driver.edits if e.seen_at is not None]
    missing = [e for e in driver.edits if e.seen_at is None]
    cp_writes, cp_reads = split_counts(counters["customerp"], "customerp")
    wave_writes, wave_reads = split_counts(counters["wave"], "wave")
    poll_reads = sum(n for op, n in counters["customerp"].items() if op.endswith(".changes")) + sum(
        n for op, n in counters["wave"].items() if op.startswith("business.") and op.count(".") == 1
    )
    edits = max(1, len(driver.edits))
    by_entity = {
        entity: {
            "edits": len(vals),
            "p50_s": round(percentile(vals, 0.5), 2),
            "p95_s": round(percentile(vals, 0.95), 2),
        }
        for entity in ENTITIES
        if (vals := [e.seen_at - e.at for e in driver.edits if e.entity == entity and e.seen_at is not None])
    }
    result = {
        "poll_interval_s": opts.poll_interval,
        "edit_rate_per_s": opts.edit_rate,
        "seconds": round(seconds, 1),
        "edits": len(driver.edits),
        "visible": len(lags),
        "never_visible": len(missing),
        "lag_p50_s": round(percentile(lags, 0.5), 2),
        "lag_p95_s": round(percentile(lags, 0.95), 2),
        "lag_max_s": round(max(lags), 2) if lags else None,
        "lag_mean_s": round(statistics.fmean(lags), 2) if lags else None,
        "by_entity": by_entity,
        "writes_per_change": round((cp_writes + wave_writes) / edits, 3),
        "reads_per_change": round((cp_reads + wave_reads) / edits, 3),
        "poll_reads_per_change": round(poll_reads / edits, 3),
        "beat_rss_mib": round(beat_memory.rss_mib, 1),
        "beat_peak_rss_mib": round(beat_memory.hwm_mib, 1),
        "edit_errors": driver.errors[:5],
        "counters": counters,
    }
    log(
        f"  steady: {len(driver.edits)} edits, lag p50 {result['lag_p50_s']} s, p95 {result['lag_p95_s']} s "
        f"(poll interval {opts.poll_interval} s); {len(missing)} never visible"
    )
    return result


# --- (6) memory ---------------------------------------------------------------------------------------------


def run_backlog(running: Stack, worker: Child, count: int, log: Log) -> dict[str, Any]:
    """(6) A backlog of already-synced records (half stale, half unchanged: the no-op path of a sync task)."""
    pairs = running.links("customers")
    if not pairs:
        raise RuntimeError("the backlog needs linked customers: run the backfill first")
    table = running.cp_store.tables["customers"]
    versions = {cp: f"{table[cp].version:012d}" for cp, _ in pairs}
    # What the poller would carry: the record as the client reads it (a partial snapshot is a corrupted message).
    snapshots = {cp: Customer.model_validate(table[cp].render()).model_dump(mode="json") for cp, _ in pairs}
    dead_before = sum(running.dead_letter_counts().values())
    before = proc.tree_memory(worker.pid)
    samples: list[tuple[float, int, float]] = []
    started = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            memory = proc.tree_memory(worker.pid)
            samples.append((time.monotonic() - started, running.busy(), memory.rss_mib))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, name="bench-rss", daemon=True)
    sampler.start()
    for n in range(count):
        cp_id, _wave = pairs[n % len(pairs)]
        version = versions[cp_id]
        if n % 2:
            message = ChangeMessage(entity="customers", source="customerp", source_id=cp_id, version="000000000000")
        else:
            message = ChangeMessage(
                entity="customers",
                source="customerp",
                source_id=cp_id,
                version=version,
                snapshot=snapshots[cp_id],
            )
        running.app.send_task(keys.SYNC_TASK["customers"], args=[message.to_json()], queue="customers")
    enqueued = time.monotonic()
    idle = running.wait_idle(7200, children=[worker], quiet=1.0)
    stop.set()
    sampler.join()
    after = proc.tree_memory(worker.pid)
    seconds = idle - started
    # Growth is measured from the moment a tenth of the backlog was done (imports, pools and caches warm).
    warm = next((rss for _t, busy, rss in samples if count - busy >= count / 10), samples[0][2] if samples else 0.0)
    peak = max((rss for _t, _b, rss in samples), default=after.rss_mib)
    result = {
        "messages": count,
        "dead_lettered": sum(running.dead_letter_counts().values()) - dead_before,
        "enqueue_seconds": round(enqueued - started, 1),
        "seconds": round(seconds, 1),
        "per_second": rate(count, seconds),
        "worker_rss_before_mib": round(before.rss_mib, 1),
        "worker_rss_warm_mib": round(warm, 1),
        "worker_rss_end_mib": round(after.rss_mib, 1),
        "worker_rss_peak_sampled_mib": round(peak, 1),
        "worker_hwm_mib": round(after.hwm_mib, 1),
        "growth_pct": round(100 * (after.rss_mib - warm) / warm, 1) if warm else None,
        "worker_processes": after.processes,
        "samples": [(round(t, 1), b, round(r, 1)) for t, b, r in samples[:: max(1, len(samples) // 60)]],
    }
    log(
        f"  backlog: {count} msgs in {seconds:.0f} s ({result['per_second']}/s); worker RSS warm {warm:.0f} MiB → "
        f"end {after.rss_mib:.0f} MiB ({result['growth_pct']} %), peak {after.hwm_mib:.0f} MiB; "
        f"{result['dead_lettered']} dead-lettered"
    )
    return result


# --- the runs -----------------------------------------------------------------------------------------------


def main_run(opts: Options, results: dict[str, Any]) -> dict[str, Any]:
    """Ceiling, backfill, floor, efficiency, steady state and memory on one stack and one worker.

    Fills `results` as it goes, so a failure late in the run keeps what was measured before it.
    """
    log = opts.log
    with stack(
        opts.workdir,
        "main",
        postgres=opts.postgres,
        keep=opts.keep,
        poll_interval=opts.poll_interval,
        **NO_IN_FLIGHT_CAP,
    ) as running:
        fallback = create_fallback_product(running)
        # The settings object is frozen; rebuild the env with the fallback product for the children.
        running.settings = running.settings.model_copy(update={"fallback_product_id": fallback})
        t = time.monotonic()
        seed_customerp(running, opts.sizes)
        log(f"  seeded {opts.sizes.as_dict()} in {time.monotonic() - t:.1f} s")
        results["worker"] = opts.worker.label
        results["database"] = running.settings.database_url.split(":", 1)[0]
        if "ceiling" in opts.scenarios:
            worker, results["ceiling"] = drain_noops(running, opts.worker, opts.noop_messages)
            results["ceiling_end_to_end"] = run_noops(running, opts.noop_messages, [worker])
            log(
                f"  ceiling: {results['ceiling']['per_second']} no-op tasks/s drained from a full queue, "
                f"{results['ceiling_end_to_end']['per_second']}/s end to end with the producer "
                f"(which enqueues {results['ceiling_end_to_end']['enqueue_per_second']}/s)"
            )
        else:
            worker = running.start_worker(opts.worker)
        if {"backfill", "floor", "efficiency", "steady", "memory"} & opts.scenarios:
            results["backfill"] = run_backfill(running, opts.sizes, [worker], log)
            results["worker_after_backfill"] = _memory(running)
            if "ceiling" in results:
                results["backfill"]["ratio_to_ceiling"] = round(
                    results["backfill"]["records_per_second"] / ceiling_rate(results), 4
                )
            b = results["backfill"]
            log(
                f"  backfill: worker CPU {b['worker_cpu_ms_per_record']} ms/record; "
                f"{b['per_created']['wave_calls_per_wave_create']} Wave calls per record created in Wave; "
                f"{b['per_created']['reads_per_created_record']} reads per created record"
            )
        if "floor" in opts.scenarios:
            # After the backfill, with the worker idle: the link store holds its real rows and Wave its records.
            results["floor_io"] = measure_minimal_io(running, opts.floor_repetitions, opts.floor_warmup)
            results["floor"] = summarise(results)
            log(f"  floor: minimal create I/O {results['floor_io']}; {results['floor']}")
        echo = run_echo_round(running, [worker], log) if {"efficiency", "steady"} & opts.scenarios else None
        if "steady" in opts.scenarios:
            results["steady"] = run_steady(running, opts, log)
        if echo is not None and "backfill" in results:
            results["efficiency"] = efficiency(results["backfill"], echo, results.get("steady"))
        if "memory" in opts.scenarios:
            results["memory"] = run_backlog(running, worker, opts.backlog_messages, log)
        results["worker_final"] = _memory(running)
        results["worker_log_warnings"] = _log_summary(worker)
    return results


def ceiling_rate(main: dict[str, Any]) -> float:
    """The ceiling is the better of the two no-op measurements: the engine's ratio is never flattered."""
    rates = [main[k]["per_second"] for k in ("ceiling", "ceiling_end_to_end") if k in main]
    return max(rates) if rates else float("nan")


def _memory(running: Stack) -> dict[str, dict[str, float]]:
    return {
        name: {"rss_mib": round(m.rss_mib, 1), "peak_mib": round(m.hwm_mib, 1), "processes": float(m.processes)}
        for name, m in running.rss().items()
    }


def _log_summary(child: Child) -> dict[str, int]:
    text = child.log.read_text(errors="replace")
    return {
        "retrying": text.count("retrying "),
        "dead_lettered": text.count("dead-lettered "),
        "database_locked": text.count("database is locked"),
        "tracebacks": text.count("Traceback"),
    }


def backfill_on_fresh_stack(
    opts: Options, sizes: Sizes, spec: WorkerSpec, name: str, *, faults: dict[str, dict[str, Any]], **settings: Any
) -> dict[str, Any]:
    with stack(opts.workdir, name, postgres=opts.postgres, keep=opts.keep, **settings) as running:
        fallback = create_fallback_product(running)
        running.settings = running.settings.model_copy(update={"fallback_product_id": fallback})
        seed_customerp(running, sizes)
        workers = [running.start_worker(spec) for _ in range(spec.processes)]
        for system, config in faults.items():
            running.set_faults(system, **config)
        result = run_backfill(running, sizes, workers, opts.log)
        result["worker"] = spec.label
        result["worker_memory"] = _memory(running)
        result["worker_log_warnings"] = _log_summary(workers[0])
        calls = result["counters"]
        wave_total = sum(calls["wave"].values())
        throttled = calls["wave_faults"].get("429", 0)
        result["wave_calls"] = wave_total
        result["wave_throttled"] = throttled
        result["wave_ok_calls_per_second"] = rate(wave_total - throttled, result["seconds"])
        result["wave_calls_per_record"] = round((wave_total - throttled) / max(1, sum(result["links"].values())), 2)
        # How long an admitted call held the API: above the injected latency by the sandbox's own work, which
        # no client can win back. Busy time over (slots x run time) is the share of the cap the engine used.
        busy = running.wave_busy_seconds()
        result["wave_busy_seconds"] = round(busy, 2)
        result["wave_call_ms"] = round(1000 * busy / max(1, wave_total - throttled), 1)
        return result


@dataclass(frozen=True)
class LatencyVariant:
    """One backfill of (3): who runs it, what the sandboxes impose, how the workers are configured, the bound."""

    label: str
    spec: WorkerSpec
    faults: dict[str, dict[str, Any]]
    settings: dict[str, Any]
    bound: float
    latency_ms: float
    sizes: Sizes
    # The share of the bound it must reach; None for the baseline, shown for comparison only.
    target: float | None = 0.9


def latency_variants(opts: Options) -> list[LatencyVariant]:
    sizes = opts.sizes.scaled(opts.latency_fraction)
    latency = {"latency_ms": opts.latency_ms}
    capped_api = {"customerp": latency, "wave": {**latency, "max_in_flight": opts.wave_cap}}
    bound_cap = opts.wave_cap / (opts.latency_ms / 1000)
    leases = opts.wave_cap if opts.wave_max_in_flight is None else opts.wave_max_in_flight
    capped = {**NO_IN_FLIGHT_CAP, "wave_max_in_flight": leases}
    fleet = replace(opts.worker, concurrency=max(1, opts.worker.concurrency // 2), processes=2)
    variants = [
        LatencyVariant(
            # The baseline, side by side: the same worker with no leases (as before the fleet's in-flight cap).
            f"cap {opts.wave_cap} in flight, {opts.worker.label}, client rate = bound, no leases (baseline)",
            opts.worker,
            capped_api,
            {**NO_IN_FLIGHT_CAP, "wave_rate_per_second": bound_cap, "wave_burst": opts.wave_cap},
            bound_cap,
            opts.latency_ms,
            sizes,
            target=None,
        ),
        # Wave publishes no rate, only ~2 concurrent calls: the leases alone pace the fleet. A client rate set
        # at the bound as well would refuse every call that a late answer pushed off the beat.
        LatencyVariant(
            f"cap {opts.wave_cap} in flight, {opts.worker.label}, {leases or 'no'} leases",
            opts.worker,
            capped_api,
            capped,
            bound_cap,
            opts.latency_ms,
            sizes,
        ),
        # Scaled out, as docker-compose runs it: the same 8 threads in two processes, each with its own GIL.
        LatencyVariant(
            f"cap {opts.wave_cap} in flight, {fleet.label}, {leases or 'no'} leases",
            fleet,
            capped_api,
            capped,
            bound_cap,
            opts.latency_ms,
            sizes,
        ),
        LatencyVariant(
            f"cap {opts.wave_cap} in flight, threads -c {opts.wave_cap}, {leases or 'no'} leases",
            WorkerSpec("threads", opts.wave_cap, opts.worker.loglevel, opts.worker.extra),
            capped_api,
            capped,
            bound_cap,
            opts.latency_ms,
            sizes,
        ),
        # A rate-capped API with no concurrency cap: the client matches the rate and takes no leases.
        LatencyVariant(
            f"rate cap {opts.wave_rps:g}/s, {opts.worker.label}, client rate = cap",
            opts.worker,
            {"customerp": latency, "wave": {**latency, "max_rps": opts.wave_rps}},
            {**NO_IN_FLIGHT_CAP, "wave_rate_per_second": opts.wave_rps, "wave_burst": 1},
            opts.wave_rps,
            opts.latency_ms,
            sizes,
        ),
    ]
    if opts.slow_latency_ms > 0:
        # Close to the real API (issue 15): the leased variant's shape at Wave's real latency, on fewer records so
        # that it ends in a few minutes at the bound (2 / 250 ms = 8 calls/s, ~2.3 calls per record).
        slow = {"latency_ms": opts.slow_latency_ms}
        # Listed right after the leased variant at `--latency-ms`, so the table shows the two side by side.
        variants.insert(
            2,
            LatencyVariant(
                f"cap {opts.wave_cap} in flight, {opts.worker.label}, {leases or 'no'} leases (a real API's latency)",
                opts.worker,
                {"customerp": slow, "wave": {**slow, "max_in_flight": opts.wave_cap}},
                capped,
                opts.wave_cap / (opts.slow_latency_ms / 1000),
                opts.slow_latency_ms,
                opts.sizes.scaled(opts.slow_records / max(1, opts.sizes.records)),
                target=0.95,
            ),
        )
    return variants


def latency_run(opts: Options) -> dict[str, Any]:
    """(3) Backfill at API latency with Wave's concurrency cap, and with its rate cap instead.

    Against the concurrency cap the workers run as a deployer would configure them from Wave's documented limit:
    WAVESYNC_WAVE_MAX_IN_FLIGHT = the cap, so the fleet's leases keep its calls under it instead of collecting 429s.
    """
    leases = opts.wave_cap if opts.wave_max_in_flight is None else opts.wave_max_in_flight
    results: dict[str, Any] = {
        "sizes": opts.sizes.scaled(opts.latency_fraction).as_dict(),
        "latency_ms": opts.latency_ms,
        "wave_max_in_flight": leases,
    }
    rows = []
    for variant in latency_variants(opts):
        opts.log(f"  latency variant: {variant.latency_ms:g} ms, {variant.label}")
        result = backfill_on_fresh_stack(
            opts, variant.sizes, variant.spec, "latency", faults=variant.faults, **variant.settings
        )
        result["label"] = variant.label
        result["latency_ms"] = variant.latency_ms
        result["sizes"] = variant.sizes.as_dict()
        result["baseline"] = variant.target is None
        result["target_ratio"] = variant.target
        result["api_bound_calls_per_second"] = round(variant.bound, 1)
        result["ratio_to_api_bound"] = round(result["wave_ok_calls_per_second"] / variant.bound, 3)
        if "in flight" in variant.label:
            result["cap_utilisation"] = round(result["wave_busy_seconds"] / (opts.wave_cap * result["seconds"]), 3)
        opts.log(
            f"    {result['wave_ok_calls_per_second']} Wave calls/s of a {variant.bound:.0f}/s bound "
            f"(ratio {result['ratio_to_api_bound']}), {result['wave_throttled']} throttled, "
            f"{result['records_per_second']} records/s in {result['seconds']:.0f} s"
        )
        rows.append(result)
    results["variants"] = rows
    return results


def pools_run(opts: Options) -> dict[str, Any]:
    """Pool and concurrency choice: the same small backfill per worker configuration, at 0 ms and at latency."""
    rows = []
    for latency_ms in opts.pool_latencies:
        for spec in opts.pool_specs:
            faults = {s: {"latency_ms": latency_ms} for s in ("customerp", "wave")} if latency_ms else {}
            opts.log(f"  pool {spec.label} at {latency_ms:g} ms")
            try:
                result = backfill_on_fresh_stack(
                    opts, opts.pool_sizes, spec, "pools", faults=faults, **NO_IN_FLIGHT_CAP
                )
            except (RuntimeError, TimeoutError) as exc:
                rows.append({"worker": spec.label, "latency_ms": latency_ms, "error": str(exc)[:500]})
                continue
            rows.append(
                {
                    "worker": spec.label,
                    "latency_ms": latency_ms,
                    "records_per_second": result["records_per_second"],
                    "seconds": result["seconds"],
                    "links": sum(result["links"].values()),
                    "dead_letters": sum(result["dead_letters"].values()),
                    "worker_rss_mib": sum(m["rss_mib"] for m in result["worker_memory"].values()),
                    "cpu": result["cpu"],
                    "log": result["worker_log_warnings"],
                }
            )
            opts.log(f"    {result['records_per_second']} records/s")
    return {"sizes": opts.pool_sizes.as_dict(), "rows": rows}
