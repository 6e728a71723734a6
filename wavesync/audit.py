"""`wavesync history ENTITY ID`: find a record by either system's id, email, number or name, and print its stream."""

from __future__ import annotations

import json
from typing import Any

from shared import history
from shared.store.db import Database


def record_history(database_url: str, entity: str, query: str, *, limit: int = 200) -> list[dict[str, Any]]:
    """Every record `query` finds, each with its decisions newest first (at most `limit` each)."""
    db = Database(database_url)
    out = []
    with db.session() as session:
        for found in history.find(session, query, entity=entity):
            events = history.for_record(session, found.entity, found.customerp_id, found.wave_id, limit=limit)
            out.append(
                {
                    "entity": found.entity,
                    "customerp_id": found.customerp_id,
                    "wave_id": found.wave_id,
                    "linked": found.link is not None,
                    "label": found.label,
                    "history": [history.entry_json(e) for e in events],
                }
            )
    return out


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def render_history(records: list[dict[str, Any]]) -> str:
    blocks = []
    for r in records:
        lines = [
            f"{r['entity']} {r['label']}  (customerp {r['customerp_id'] or '-'}, wave {r['wave_id'] or '-'}"
            f"{'' if r['linked'] else ', not linked'})"
        ]
        if not r["history"]:
            lines.append("  no decisions recorded")
        for e in r["history"]:
            head = f"  {e['at'][:19].replace('T', ' ')}  {e['kind']:<13}"
            if e["direction"]:
                head += f" {e['direction']}"
            if e["reason"]:
                head += f"  {e['reason']}"
            lines.append(head.rstrip())
            for name, d in (e["diff"] or {}).items():
                change = f"      {name}: {_value(d.get('from'))} -> {_value(d.get('to'))} ({d.get('side')})"
                if d.get("conflict"):
                    c = d["conflict"]
                    change += f"  conflict customerp={_value(c['customerp'])} wave={_value(c['wave'])} by {c['policy']}"
                lines.append(change)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
