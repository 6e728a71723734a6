"""The change message a poller enqueues and a worker consumes: a small frozen value, JSON on the wire."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.settings import Entity

System = Literal["customerp", "wave"]
SYSTEMS: tuple[System, ...] = ("customerp", "wave")


def other(system: System) -> System:
    return "wave" if system == "customerp" else "customerp"


class ChangeMessage(BaseModel):
    """ "Record `source_id` of `entity` in `source` changed (or was deleted) at `version`."

    `version` is comparable within one system: Customerp's integer record version, Wave's `modifiedAt` as an
    ISO string (fixed format, so string order is time order). `snapshot` carries the record as the poll read
    it, to save the worker a read; the worker still guards against it being stale.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity: Entity
    source: System
    source_id: str = Field(min_length=1)
    version: str = ""
    deleted: bool = False
    snapshot: dict[str, Any] | None = None
    # Set by replay and reconcile: ignore the snapshot and re-read the current source state.
    reread: bool = False

    def key(self) -> str:
        return f"{self.entity}:{self.source}:{self.source_id}"

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
