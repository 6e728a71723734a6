"""Table-driven field mapping: one `FieldMap` row per synced property, and pure functions that apply a table.

Wave records are read in the shape the Wave client's models dump (`model_dump(by_alias=True)`): Wave's names,
with nested references flattened the way Wave's inputs name them (`currency`, `customerId`, `provinceCode`).

A record of either system is first turned into a *canonical* record: a flat dict of JSON values keyed by
canonical field name, normalised so that equal meaning gives equal values (empty strings are None, decimals
are rounded the way Wave rounds them and printed without trailing zeros, codes upper-case). Merging and echo
detection compare canonical records; writes turn canonical values back into each system's payload shape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

Canonical = dict[str, Any]
Path = tuple[str, ...]


def _text(value: Any) -> Any:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value if value.strip() else None


def _code(value: Any) -> Any:
    text = _text(value)
    return text.strip().upper() if text is not None else None


def _email(value: Any) -> Any:
    text = _text(value)
    return text.strip() if text is not None else None


def decimal_places(places: int) -> Callable[[Any], Any]:
    """Round half away from zero to `places` (Wave's documented rule) and print without trailing zeros."""
    quantum = Decimal(1).scaleb(-places)

    def normalise(value: Any) -> Any:
        if value is None or value == "":
            return None
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise TypeError(f"expected a decimal number, got {type(value).__name__}")
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal number") from None
        if not number.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        rounded = number.quantize(quantum, rounding=ROUND_HALF_UP)
        text = format(rounded.normalize(), "f")
        return "0" if text in ("-0", "") else text

    return normalise


def _date(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return date.fromisoformat(value[:10]).isoformat()
    raise TypeError(f"expected a date, got {type(value).__name__}")


def _bool(value: Any) -> Any:
    return bool(value) if value is not None else False


NORMALISERS: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "email": _email,
    "code": _code,
    "decimal5": decimal_places(5),
    "decimal8": decimal_places(8),
    "date": _date,
    "bool": _bool,
    "ref": _text,
}


@dataclass(frozen=True)
class FieldMap:
    """One synced property: where it lives on each side, Wave's type, and how values are normalised.

    `wave_write` is None when Wave sets the property through a dedicated mutation (archive, approve) instead of
    the create/patch input; `group` names a nested input object that Wave replaces as a whole on patch.
    """

    name: str
    customerp: Path
    wave_read: Path
    wave_write: Path | None
    wave_type: str
    kind: str = "text"
    note: str = ""

    @property
    def group(self) -> str | None:
        return self.wave_write[0] if self.wave_write and len(self.wave_write) > 1 else None

    def normalise(self, value: Any) -> Any:
        return NORMALISERS[self.kind](value)


def get_path(record: Mapping[str, Any] | None, path: Path) -> Any:
    node: Any = record
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def set_path(target: dict[str, Any], path: Path, value: Any) -> None:
    node = target
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


class FieldValueError(ValueError):
    """A source value that cannot be normalised; carries the canonical field name for the dead letter."""

    def __init__(self, field: str, path: Path, message: str) -> None:
        super().__init__(f"{'.'.join(path)}: {message}")
        self.field = field
        self.path = path


def canonical_from(record: Mapping[str, Any], fields: Iterable[FieldMap], side: str) -> Canonical:
    """Read each field from `record` at its path on `side` ("customerp" or "wave") and normalise it."""
    out: Canonical = {}
    for f in fields:
        path = f.customerp if side == "customerp" else f.wave_read
        if not path:
            continue
        try:
            out[f.name] = f.normalise(get_path(record, path))
        except (TypeError, ValueError) as exc:
            raise FieldValueError(f.name, path, str(exc)) from None
    return out


def changed_fields(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> set[str]:
    if before is None:
        return set(after)
    return {k for k, v in after.items() if before.get(k) != v}


def payload(
    canonical: Mapping[str, Any], fields: Iterable[FieldMap], side: str, only: set[str] | None = None
) -> dict[str, Any]:
    """Build a create (only=None) or patch payload in `side`'s shape.

    Wave replaces nested input objects (address, shippingDetails) as a whole, so a change to one member sends
    the complete group; plain fields are sent only when changed.
    """
    rows = list(fields)
    wanted = set(canonical) if only is None else set(only)
    if side == "wave":
        groups = {f.group for f in rows if f.name in wanted and f.group}
        wanted |= {f.name for f in rows if f.group in groups}
    body: dict[str, Any] = {}
    for f in rows:
        path = f.customerp if side == "customerp" else f.wave_write
        if not path or f.name not in wanted or f.name not in canonical:
            continue
        set_path(body, path, canonical[f.name])
    return body
