"""The operator's view: `status`, `reconcile` and dead-letter listings, as data and as readable tables."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import redis

from producers.reconcile import EntityReport, Reconciler
from shared import keys
from shared.context import Context
from shared.deadletters import DeadLetters
from shared.settings import ENTITIES, Settings
from shared.store import links as store
from shared.store.db import Database


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[("" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def queue_depths(client: redis.Redis) -> dict[str, dict[str, int]]:
    """Waiting messages per queue (all priority sub-lists) and unacknowledged ones (delivered, not done)."""
    out = {q: {"waiting": 0, "unacked": 0} for q in keys.QUEUES}
    for queue in keys.QUEUES:
        for step in ("", "\x06\x163", "\x06\x166", "\x06\x169"):
            out[queue]["waiting"] += int(client.llen(queue + step))
    unacked: Counter[str] = Counter()
    for _tag, raw in client.hscan_iter("unacked"):
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        unacked[routing_key] += 1
    for queue, count in unacked.items():
        out.setdefault(queue, {"waiting": 0, "unacked": 0})["unacked"] = count
    return out


def collect_status(settings: Settings) -> dict[str, Any]:
    now = datetime.now(UTC)
    db = Database(settings.database_url)
    report: dict[str, Any] = {"time": now.isoformat()}
    with db.session() as session:
        report["links"] = dict.fromkeys(ENTITIES, 0) | store.count_links(session)
        report["dead_letters"] = DeadLetters(db).counts(session)
        report["pollers"] = [
            {
                "system": m.system,
                "entity": m.entity,
                "watermark": m.position or None,
                "last_success_at": m.last_success_at.isoformat() if m.last_success_at else None,
                "lag_s": round((now - _aware(m.position)).total_seconds(), 1) if m.position else None,
            }
            for m in store.all_watermarks(session)
            if m.system in ("customerp", "wave")
        ]
    if settings.redis_url is None:
        report["queues"] = None
        report["note"] = "WAVESYNC_REDIS_URL is not set: queue depths unknown (embedded Redis runs inside `up`)"
    else:
        client = redis.Redis.from_url(str(settings.redis_url))
        try:
            report["queues"] = queue_depths(client)
            for poller in report["pollers"]:
                stats = client.hgetall(keys.poll_stats_key(poller["system"], poller["entity"]))
                poller["last_run"] = {k.decode(): v.decode() for k, v in stats.items()}  # type: ignore[union-attr]
        except redis.ConnectionError as exc:
            report["queues"] = None
            report["note"] = f"Redis unreachable: {exc}"
        finally:
            client.close()
    return report


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def render_status(report: dict[str, Any]) -> str:
    parts = []
    queues = report.get("queues")
    rows = []
    for entity in (*ENTITIES, keys.CONTROL_QUEUE):
        depth = (queues or {}).get(entity, {})
        dead = report["dead_letters"].get(entity, {})
        rows.append(
            [
                entity,
                depth.get("waiting", "?") if queues is not None else "?",
                depth.get("unacked", "?") if queues is not None else "?",
                report["links"].get(entity, "") if entity != keys.CONTROL_QUEUE else "",
                sum(dead.values()) if entity != keys.CONTROL_QUEUE else "",
                ", ".join(f"{k} {v}" for k, v in sorted(dead.items())),
            ]
        )
    parts.append(_table(["queue", "waiting", "unacked", "links", "dead letters", "by reason"], rows))
    poll_rows = [
        [
            p["system"],
            p["entity"],
            p["watermark"] or "-",
            p["last_success_at"] or "never",
            f"{p['lag_s']}s" if p["lag_s"] is not None else "-",
        ]
        for p in report["pollers"]
    ]
    parts.append(_table(["poller", "entity", "watermark", "last success", "lag"], poll_rows))
    if report.get("note"):
        parts.append(f"note: {report['note']}")
    return "\n\n".join(parts)


def run_reconcile(settings: Settings, *, repair: bool, quiet: bool) -> list[EntityReport]:
    ctx = Context.from_settings(settings)
    try:

        def progress(message: str) -> None:
            if not quiet:
                print(message, file=sys.stderr)

        return Reconciler(ctx, repair=repair, progress=progress).run()
    finally:
        ctx.close()


def render_reconcile(reports: list[EntityReport], *, check: bool) -> str:
    rows = [
        [
            r.entity,
            r.customerp_records,
            r.wave_records,
            r.links,
            r.in_sync,
            len(r.drift),
            len(r.missing_in_wave),
            len(r.missing_in_customerp),
            len(r.deleted_in_customerp) + len(r.deleted_in_wave),
            len(r.duplicates),
            r.dead_lettered,
            r.excluded,
        ]
        for r in reports
    ]
    text = _table(
        [
            "entity",
            "customerp",
            "wave",
            "links",
            "in sync",
            "drift",
            "missing in wave",
            "missing in customerp",
            "deleted",
            "duplicates",
            "dead letters",
            "excluded",
        ],
        rows,
    )
    problems = sum(r.problems for r in reports)
    if any(r.breaker_tripped for r in reports):
        text += "\nALERT: mass-delete circuit breaker tripped; deletions were not propagated"
    if check:
        text += "\nno drift: both systems agree" if not problems else f"\n{problems} problem(s) found"
    else:
        text += f"\nrepairs enqueued: {sum(r.repaired for r in reports)}"
    return text


def render_dead_letters(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead letters"
    rows = [
        [
            e["id"],
            e["entity"],
            f"{e['source']}:{e['source_id']}",
            e["error_class"],
            e["attempts"],
            e["last_failed_at"][:19],
            e["reason"][:90],
        ]
        for e in entries
    ]
    return _table(["id", "entity", "record", "error", "attempts", "last failure", "reason"], rows)
