"""What a link remembers between syncs: the record both sides agreed on, or, until they agree, each side's base.

A pair is *settled* when both sides last held the same canonical record (`agreed`): the base of the next three-way
merge and the reference for echoes. It is *unsettled* while they have not agreed: a partner just made or matched
(it holds defaults of its own, or the two were never merged), or a write whose outcome is unknown (its answer never
came). Each side is then judged against its own base, and a side holding `pending` (what the sync last wrote, or
may have) holds the sync's value, not a person's edit. An unanswered Wave write may still land, and Wave has no
conditional write: `wave_writes_held_until` keeps the pair from writing Wave again before then.

Stored as a small JSON document with a version (`dump`/`load`), in the link row's `state` column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.messages import System
from shared.versions import parse_timestamp

Fields = Mapping[str, Any]
DOCUMENT_VERSION = 1


@dataclass(frozen=True)
class Settled:
    agreed: Fields


@dataclass(frozen=True)
class Unsettled:
    bases: Mapping[System, Fields | None]
    pending: Fields | None = None
    wave_writes_held_until: datetime | None = None


LinkState = Settled | Unsettled


def reference(state: LinkState) -> Fields:
    """The record a person would call the pair's last synced values (what the console shows beside the live ones)."""
    if isinstance(state, Settled):
        return state.agreed
    return state.pending or next((base for base in state.bases.values() if base), {})


def dump(state: LinkState) -> dict[str, Any]:
    if isinstance(state, Settled):
        return {"v": DOCUMENT_VERSION, "kind": "settled", "agreed": dict(state.agreed)}
    held = state.wave_writes_held_until
    return {
        "v": DOCUMENT_VERSION,
        "kind": "unsettled",
        "bases": {system: dict(base) if base is not None else None for system, base in state.bases.items()},
        "pending": dict(state.pending) if state.pending is not None else None,
        "wave_writes_held_until": held.isoformat() if held else None,
    }


def load(document: Mapping[str, Any]) -> LinkState:
    if document.get("v") != DOCUMENT_VERSION:
        raise ValueError(f"link state document of version {document.get('v')!r}: run `wavesync db upgrade`")
    if document["kind"] == "settled":
        return Settled(document["agreed"])
    held = document.get("wave_writes_held_until")
    bases = document["bases"]
    return Unsettled(
        {"customerp": bases.get("customerp"), "wave": bases.get("wave")},
        document.get("pending"),
        parse_timestamp(held) if held else None,
    )
