"""typed link state: `links.snapshot` (a record, or one marked by `__bases__`/`__pending__` keys) becomes `links.state`

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:10:00

A settled pair's snapshot becomes {"v": 1, "kind": "settled", "agreed": snapshot}; an unsettled one's
{"v": 1, "kind": "unsettled", "bases": ..., "pending": ..., "wave_writes_held_until": null} (see
shared/store/link_state.py). Rows are converted in batches in Python: the document is JSON on SQLite and json on
PostgreSQL, and the conversion is the same on both. Downgrade converts back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BASES, PENDING = "__bases__", "__pending__"  # the old format's markers, read here only
BATCH = 1000


def to_state(snapshot: dict[str, Any] | None) -> dict[str, Any]:
    snapshot = snapshot or {}
    if BASES in snapshot:
        bases = snapshot[BASES] or {}
        return {
            "v": 1,
            "kind": "unsettled",
            "bases": {"customerp": bases.get("customerp"), "wave": bases.get("wave")},
            "pending": snapshot.get(PENDING),
            "wave_writes_held_until": None,
        }
    return {"v": 1, "kind": "settled", "agreed": snapshot}


def to_snapshot(state: dict[str, Any] | None) -> dict[str, Any]:
    state = state or {}
    if state.get("kind") == "unsettled":
        return {BASES: state.get("bases") or {}, PENDING: state.get("pending")}
    return dict(state.get("agreed") or {})


def _convert(source: str, target: str, convert: Callable[[dict[str, Any] | None], dict[str, Any]]) -> None:
    links = sa.table("links", sa.column("id", sa.Integer), sa.column(source, sa.JSON), sa.column(target, sa.JSON))
    connection = op.get_bind()
    last = 0
    while True:
        rows = connection.execute(
            sa.select(links.c.id, links.c[source]).where(links.c.id > last).order_by(links.c.id).limit(BATCH)
        ).all()
        if not rows:
            return
        for row_id, value in rows:
            connection.execute(links.update().where(links.c.id == row_id).values({target: convert(value)}))
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("state", sa.JSON(), nullable=True))
    _convert("snapshot", "state", to_state)
    with op.batch_alter_table("links") as batch:
        batch.alter_column("state", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("snapshot")


def downgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.add_column(sa.Column("snapshot", sa.JSON(), nullable=True))
    _convert("state", "snapshot", to_snapshot)
    with op.batch_alter_table("links") as batch:
        batch.alter_column("snapshot", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("state")
