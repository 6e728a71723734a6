"""history of sync decisions; dead letters stay when resolved

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("entity", sa.String(length=16), nullable=False),
        sa.Column("customerp_id", sa.String(length=255), nullable=True),
        sa.Column("wave_id", sa.String(length=255), nullable=True),
        sa.Column("link_id", sa.Integer(), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("direction", sa.String(length=24), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("history", schema=None) as batch_op:
        batch_op.create_index("ix_history_customerp", ["entity", "customerp_id", "id"], unique=False)
        batch_op.create_index("ix_history_wave", ["entity", "wave_id", "id"], unique=False)
        batch_op.create_index("ix_history_at", ["at"], unique=False)
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolution", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # Before 0003 a resolved dead letter was deleted: kept, it would turn back into an open one and be replayed.
    op.execute("DELETE FROM dead_letters WHERE resolved_at IS NOT NULL")
    with op.batch_alter_table("dead_letters", schema=None) as batch_op:
        batch_op.drop_column("resolution")
        batch_op.drop_column("resolved_at")
    with op.batch_alter_table("history", schema=None) as batch_op:
        batch_op.drop_index("ix_history_at")
        batch_op.drop_index("ix_history_wave")
        batch_op.drop_index("ix_history_customerp")
    op.drop_table("history")
