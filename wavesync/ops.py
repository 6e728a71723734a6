"""The operator's view: `status`, `reconcile` and dead-letter listings, as data and as readable tables."""

from __future__ import annotations

import base64
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from shared import keys
from shared.deadletters import DeadLetters
from shared.metrics import queue_depths as queue_depths  # re-exported: the demo watches the queues too
from shared.ratelimit import FleetRateLimiter
from shared.settings import ENTITIES, Settings
from shared.store import credentials
from shared.store import links as store
from shared.store.db import Database
from shared.versions import parse_timestamp, utcnow

if TYPE_CHECKING:
    # Reconcile loads every flow; `status` and `dlq` should start fast, so it is imported where it runs.
    from producers.reconcile import EntityReport


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[("" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _utc_iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _age(now: datetime, value: datetime | str | None) -> float | None:
    if value is None or value == "":
        return None
    return round(max(0.0, (now - parse_timestamp(value)).total_seconds()), 1)


def oldest_waiting_change(client: redis.Redis, queue: str) -> str | None:
    """When the oldest change still waiting in `queue` happened (its record's modification time), if known.

    Kombu pushes on the left and consumers pop on the right, so the oldest message is the last element.
    """
    raw = client.lindex(queue, -1)
    if raw is None:
        return None
    try:
        envelope = json.loads(raw)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        snapshot = args[0].get("snapshot") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    stamp = snapshot.get("updated_at") or snapshot.get("modifiedAt")
    return str(stamp) if stamp else None


def collect_status(settings: Settings) -> dict[str, Any]:
    """Everything `wavesync status` shows, as JSON-ready data.

    Sync lag of an entity is an upper bound on how old a change can be and still not be synced: the age of the
    oldest change waiting in its queue, or, when the queue is empty, the time since its pollers last finished
    (a change made just after that has not been seen yet).
    """
    now = utcnow()
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
                "last_success_at": _utc_iso(m.last_success_at),
                "since_success_s": _age(now, m.last_success_at),
                "newest_change_age_s": _age(now, m.position or None),
            }
            for m in store.all_watermarks(session)
            if m.system in ("customerp", "wave")
        ]
        report["connections"] = wave_connection(settings, session)
    oldest: dict[str, str | None] = {}
    if settings.redis_url is None:
        report["queues"] = None
        report["rate_limits"] = None
        report["beat"] = None
        report["note"] = "WAVESYNC_REDIS_URL is not set: queue depths unknown (embedded Redis runs inside `up`)"
    else:
        client = redis.Redis.from_url(str(settings.redis_url), socket_connect_timeout=5, socket_timeout=5)
        try:
            report["queues"] = queue_depths(client)
            oldest = {entity: oldest_waiting_change(client, entity) for entity in ENTITIES}
            report["rate_limits"] = {
                system: FleetRateLimiter.from_settings(client, settings, system).state()
                for system in ("customerp", "wave")
            }
            for poller in report["pollers"]:
                stats = client.hgetall(keys.poll_stats_key(poller["system"], poller["entity"]))
                poller["last_run"] = {k.decode(): v.decode() for k, v in stats.items()}  # type: ignore[union-attr]
            report["beat"] = beat_lease(client)
        except redis.RedisError as exc:
            report["queues"] = None
            report["rate_limits"] = None
            report["beat"] = None
            report["note"] = f"Redis unreachable: {exc}"
        finally:
            client.close()
    report["entities"] = {}
    for entity in ENTITIES:
        depth = (report["queues"] or {}).get(entity)
        polls = [p for p in report["pollers"] if p["entity"] == entity]
        since_poll = [p["since_success_s"] for p in polls]
        waiting_age = _age(now, oldest.get(entity))
        if waiting_age is not None:
            lag: float | None = waiting_age
        elif since_poll and None not in since_poll:
            lag = max(since_poll)
        else:
            lag = None  # a poller of this entity never finished a run
        report["entities"][entity] = {
            "waiting": depth["waiting"] if depth else None,
            "unacked": depth["unacked"] if depth else None,
            "links": report["links"].get(entity, 0),
            "dead_letters": sum(report["dead_letters"].get(entity, {}).values()),
            "dead_letters_by_reason": report["dead_letters"].get(entity, {}),
            "oldest_waiting_change_s": waiting_age,
            "sync_lag_s": lag,
        }
    return report


def beat_lease(client: redis.Redis) -> dict[str, Any]:
    """Which beat holds the fleet's beat lease (shared/beat_lease.py) and how long ago it renewed it.

    `holder` is the lease's `<host>:<pid>` (None: no beat holds it, so nothing is scheduled). The holder renews the
    lease to a full LEASE_TTL_S each time, so the TTL left tells how long ago it last did."""
    from shared.beat_lease import LEASE_TTL_S  # brings celery.beat: only where it is needed (status starts fast)

    key = keys.beat_lease_key()
    with client.pipeline() as pipe:  # one transaction: the value and the TTL of the same moment
        pipe.get(key)
        pipe.pttl(key)
        value, ttl_ms = pipe.execute()
    if not isinstance(value, bytes):
        return {"holder": None, "renewed_s_ago": None, "expires_in_s": None}
    name = value.decode(errors="replace").split(" ", 1)[0]  # "<host>:<pid>:<nonce> <scope>"
    host, _, rest = name.partition(":")
    holder = f"{host}:{rest.split(':', 1)[0]}" if rest else host
    if not isinstance(ttl_ms, int) or ttl_ms < 0:  # -1: a lease without a TTL (not one a beat set)
        return {"holder": holder, "renewed_s_ago": None, "expires_in_s": None}
    left = ttl_ms / 1000
    return {"holder": holder, "renewed_s_ago": round(max(0.0, LEASE_TTL_S - left), 1), "expires_in_s": round(left, 1)}


def _describe_beat(beat: dict[str, Any]) -> str:
    if beat["holder"] is None:
        return (
            "! beat: none holds the lease: no polls are scheduled "
            "(start `wavesync beat`; `wavesync up` and compose's beat service run one)"
        )
    renewed = beat["renewed_s_ago"]
    when = f"lease renewed {renewed:.0f} s ago" if renewed is not None else "lease without a TTL"
    return f"beat: scheduling ({beat['holder']}), {when}"


def wave_connection(settings: Settings, session: Any) -> list[dict[str, Any]]:
    """How wavesync authenticates at Wave and whether a person is needed (never a token, only state)."""
    if settings.wave_auth == "token":
        return [{"system": "wave", "auth": "token", "state": "static_token", "since": None, "reason": ""}]
    found = [c for c in credentials.all_states(session) if c["system"] == "wave"]
    if not found:
        reason = "never connected: run `wavesync connect wave`"
        return [{"system": "wave", "auth": "oauth", "state": "not_connected", "since": None, "reason": reason}]
    entry = {"auth": "oauth", **found[0]}
    try:
        credentials.read(Database(settings.database_url), credentials.Cipher(settings.secret_keys()), "wave")
    except credentials.CredentialKeyError as exc:
        entry["state"], entry["reason"] = "key_mismatch", str(exc)
    return [entry]


def describe_connection(c: dict[str, Any]) -> str:
    """One connection's state in words (status, and the console's overview)."""
    text = f"{c['system']} ({c['auth']}): {c['state'].replace('_', ' ')}"
    if c.get("since") and c["state"] != "connected":
        text += f" since {c['since'][:19].replace('T', ' ')} UTC"
    if c.get("reason"):
        text += f" - {c['reason']}"
    if c["state"] in ("needs_reauthorization", "not_connected"):
        text += "; work that needs Wave is paused until `wavesync connect wave`"
    return text


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.0f}m"
    return f"{value / 3600:.1f}h"


def render_status(report: dict[str, Any]) -> str:
    parts = []
    rows = []
    for entity, e in report["entities"].items():
        rows.append(
            [
                entity,
                "?" if e["waiting"] is None else e["waiting"],
                "?" if e["unacked"] is None else e["unacked"],
                e["links"],
                e["dead_letters"],
                ", ".join(f"{k} {v}" for k, v in sorted(e["dead_letters_by_reason"].items())) or "-",
                _seconds(e["sync_lag_s"]),
            ]
        )
    control = (report.get("queues") or {}).get(keys.CONTROL_QUEUE)
    rows.append([keys.CONTROL_QUEUE, *((control["waiting"], control["unacked"]) if control else ("?", "?"))])
    rows[-1] += ["", "", "", ""]
    parts.append(_table(["queue", "waiting", "unacked", "links", "dead letters", "by reason", "sync lag"], rows))
    poll_rows = [
        [
            p["system"],
            p["entity"],
            p["watermark"] or "-",
            f"{_seconds(p['since_success_s'])} ago" if p["last_success_at"] else "never",
            p.get("last_run", {}).get("seen", "-"),
            p.get("last_run", {}).get("enqueued", "-"),
        ]
        for p in report["pollers"]
    ]
    if poll_rows:
        parts.append(_table(["poller", "entity", "watermark", "last success", "seen", "enqueued"], poll_rows))
    else:
        parts.append("pollers: none has run yet")
    limits = report.get("rate_limits")
    if limits:
        parts.append("rate limit: " + "; ".join(_describe_limit(system, limit) for system, limit in limits.items()))
    if report.get("beat") is not None:
        parts.append(_describe_beat(report["beat"]))
    for connection in report.get("connections") or []:
        parts.append("connection: " + describe_connection(connection))
    if report.get("note"):
        parts.append(f"note: {report['note']}")
    return "\n\n".join(parts)


def _describe_limit(system: str, limit: dict[str, float]) -> str:
    text = f"{system} {limit['configured_per_s']:g}/s"
    if limit["current_per_s"] < limit["configured_per_s"]:
        text += f" (slowed to {limit['current_per_s']:.3g}/s after 429s)"
    if limit["cooldown_s"] > 0:
        text += f" (paused {limit['cooldown_s']:g}s more)"
    if "max_in_flight" in limit:
        text += f", {limit['in_flight']:g} of {limit['max_in_flight']:g} in flight"
    return text


def run_reconcile(settings: Settings, *, repair: bool, quiet: bool) -> list[EntityReport]:
    """The reports; while the Wave connection is paused, one line on stderr and SystemExit instead: status 1 for
    `--check` (convergence is unknown), 0 for a repair (skipped, as the pollers skip)."""
    from producers.reconcile import Reconciler, paused
    from shared.context import Context
    from shared.errors import PausedError

    ctx = Context.from_settings(settings)
    try:

        def progress(message: str) -> None:
            if not quiet:
                print(message, file=sys.stderr)

        reason = paused(ctx)
        if reason is None:
            try:
                return Reconciler(ctx, repair=repair, progress=progress).run()
            except PausedError as exc:  # paused while it ran
                reason = exc.message
    finally:
        ctx.close()
    print(f"wavesync: reconcile skipped: {reason}", file=sys.stderr)
    raise SystemExit(0 if repair else 1)


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


def _middle(text: str, width: int) -> str:
    """Shorten long ids in the middle: their start and end are what tell two apart."""
    if len(text) <= width:
        return text
    keep = (width - 1) // 2
    return text[:keep] + "…" + text[-(width - 1 - keep) :]


def render_dead_letters(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return "no dead letters"
    rows = [
        [
            e["id"],
            e["entity"],
            _middle(f"{e['source']}:{e['source_id']}", 32),
            e["error_class"],
            ", ".join(e["field_paths"]) or "-",
            e["attempts"],
            e["last_failed_at"][:19].replace("T", " "),
            e["reason"] if len(e["reason"]) <= 72 else e["reason"][:71] + "…",
        ]
        for e in entries
    ]
    return _table(["id", "entity", "record", "error", "fields", "attempts", "last failure (UTC)", "reason"], rows)


def _shorten(value: Any, limit: int = 120) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value)} characters)"
    if isinstance(value, dict):
        return {k: _shorten(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, limit) for v in value]
    return value


def render_dead_letter(entry: dict[str, Any]) -> str:
    """One entry for a person: every field, the message indented; long values shortened (--json has them all)."""
    lines = []
    for key, value in entry.items():
        if key == "message":
            continue
        shown = ", ".join(value) if isinstance(value, list) else ("-" if value is None else value)
        lines.append(f"{key:>15}: {shown}")
    message = json.dumps(_shorten(entry["message"]), indent=2, default=str, ensure_ascii=False)
    message = message.replace("\n", "\n" + " " * 17)
    lines.append(f"{'message':>15}: {message}")
    return "\n".join(lines)
