"""Where timestamps and versions are parsed, normalised and compared: the one clock and the one version format.

Customerp versions are integers zero-padded to a fixed width and Wave versions are fixed-format UTC timestamps,
so within one system string order is version order: the pollers, the engine and the link store compare strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

# Wide enough for any Customerp version: "10" must not sort before "9".
CUSTOMERP_VERSION_WIDTH = 12


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_timestamp(value: str | datetime) -> datetime:
    """An aware UTC datetime from an ISO 8601 string ("Z" or an offset) or a datetime; naive values are UTC
    (SQLite hands back naive datetimes, and everything this project stores is UTC). ValueError when unreadable."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def normalise_timestamp(value: str | datetime) -> str:
    """A fixed-format UTC timestamp (microseconds) whose string order is time order."""
    return parse_timestamp(value if isinstance(value, datetime) else str(value)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def customerp_version(version: int | str) -> str:
    """A Customerp record version as a string whose order is the integers' order."""
    return f"{int(version):0{CUSTOMERP_VERSION_WIDTH}d}"


def record_version(system: str, record: dict[str, Any]) -> str:
    """Customerp: the record's integer version, zero-padded. Wave: its modifiedAt, normalised."""
    if system == "customerp":
        return customerp_version(record["version"])
    return normalise_timestamp(record["modifiedAt"])


def modified_at(system: str, record: dict[str, Any]) -> str:
    return normalise_timestamp(record["updated_at"] if system == "customerp" else record["modifiedAt"])


def is_older(candidate: str, reference: str) -> bool:
    return bool(candidate) and bool(reference) and candidate < reference
