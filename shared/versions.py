"""Record versions that compare as strings: what the pollers, the engine and the link store agree on."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def normalise_timestamp(value: str | datetime) -> str:
    """A fixed-format UTC timestamp (microseconds) whose string order is time order."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_version(system: str, record: dict[str, Any]) -> str:
    """Customerp: the record's integer version, zero-padded. Wave: its modifiedAt, normalised."""
    if system == "customerp":
        return f"{int(record['version']):012d}"
    return normalise_timestamp(record["modifiedAt"])


def modified_at(system: str, record: dict[str, Any]) -> str:
    return normalise_timestamp(record["updated_at"] if system == "customerp" else record["modifiedAt"])


def is_older(candidate: str, reference: str) -> bool:
    return bool(candidate) and bool(reference) and candidate < reference
