"""SQLAlchemy tables of the sync state: links between records, poller watermarks, dead letters and history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.store import link_state
from shared.store.link_state import LinkState
from shared.versions import utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, datetime: DateTime(timezone=True)}


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, typed as one: for the Core statements a hot path builds once."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Link(Base):
    """One linked pair: a Customerp record and its Wave partner, plus what was last agreed between them.

    `state` is what the pair remembers between syncs (shared/store/link_state.py): the canonical record both sides
    agreed on (the base of the three-way merge and the reference for echoes), or each side's base until they agree.
    `row_version` makes concurrent updates of one link fail fast (SQLAlchemy raises StaleDataError) instead of
    silently overwriting each other.
    """

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("entity", "customerp_id", name="uq_links_entity_customerp"),
        UniqueConstraint("entity", "wave_id", name="uq_links_entity_wave"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(16))
    customerp_id: Mapped[str] = mapped_column(String(255))
    wave_id: Mapped[str] = mapped_column(String(255))
    state_document: Mapped[dict[str, Any]] = mapped_column("state", JSON)
    customerp_version: Mapped[str] = mapped_column(String(64), default="")
    wave_version: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    synced_at: Mapped[datetime] = mapped_column(default=utcnow)
    row_version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": row_version}

    @property
    def state(self) -> LinkState:
        return link_state.load(self.state_document)

    @state.setter
    def state(self, value: LinkState) -> None:
        self.state_document = link_state.dump(value)

    def partner_id(self, system: str) -> str:
        return self.wave_id if system == "customerp" else self.customerp_id

    def own_id(self, system: str) -> str:
        return self.customerp_id if system == "customerp" else self.wave_id

    def version_of(self, system: str) -> str:
        return self.customerp_version if system == "customerp" else self.wave_version


class Watermark(Base):
    """How far a poller has safely enqueued: a Customerp feed cursor or a Wave modifiedAt."""

    __tablename__ = "watermarks"

    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    entity: Mapped[str] = mapped_column(String(16), primary_key=True)
    position: Mapped[str] = mapped_column(String(255), default="")
    last_success_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# The resolution of a dead letter an operator gave up on: it keeps its failed version, which pollers and reconcile
# then leave alone (shared/deadletters.py, purge).
PURGED = "purged"


class DeadLetter(Base):
    """A record that could not sync, with a reason a person can act on. One row per record: repeats count."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        UniqueConstraint("entity", "source", "source_id", name="uq_dead_letters_record"),
        Index("ix_dead_letters_entity_reason", "entity", "error_class"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(255))
    customerp_id: Mapped[str | None] = mapped_column(String(255), default=None)
    wave_id: Mapped[str | None] = mapped_column(String(255), default=None)
    message: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The source version that failed: pollers do not enqueue that version again (only a new edit, or replay).
    version: Mapped[str] = mapped_column(String(64), default="")
    error_class: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    field_paths: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    first_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_failed_at: Mapped[datetime] = mapped_column(default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(default=None)
    # A resolved entry stays, for the operator to see when and how it ended: "synced", "replayed and synced",
    # "deleted". Open entries (resolved_at NULL) are the queue; a new failure of the record reopens its entry.
    resolved_at: Mapped[datetime | None] = mapped_column(default=None)
    resolution: Mapped[str | None] = mapped_column(String(32), default=None)


class HistoryEntry(Base):
    """One sync decision about one record (see shared/history.py): what was decided, why, and the fields it moved.

    Rows are only ever inserted, and pruned by age and count; the indexes serve a record's stream (newest first)
    and the pruning.
    """

    __tablename__ = "history"
    __table_args__ = (
        Index("ix_history_customerp", "entity", "customerp_id", "id"),
        Index("ix_history_wave", "entity", "wave_id", "id"),
        Index("ix_history_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(24))
    entity: Mapped[str] = mapped_column(String(16))
    customerp_id: Mapped[str | None] = mapped_column(String(255), default=None)
    wave_id: Mapped[str | None] = mapped_column(String(255), default=None)
    link_id: Mapped[int | None] = mapped_column(Integer, default=None)
    task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    direction: Mapped[str | None] = mapped_column(String(24), default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    diff: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class Credential(Base):
    """One connection's OAuth tokens (system 'wave'), encrypted with WAVESYNC_SECRET_KEY (shared/store/credentials.py).

    `generation` grows with every stored pair: a refresh writes only if the generation it read is still current, so
    a stale writer loses instead of overwriting a newer (rotated) refresh token. `state` is `connected` or
    `needs_reauthorization` (a person must run `wavesync connect wave`), with when and why it was entered.
    """

    __tablename__ = "credentials"

    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)
    refresh_token: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    scopes: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(32), default="connected")
    state_since: Mapped[datetime] = mapped_column(default=utcnow)
    reason: Mapped[str] = mapped_column(Text, default="")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
