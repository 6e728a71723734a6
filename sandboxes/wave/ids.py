"""Wave's global IDs: padded base64 of `Business:<uuid>` or `Business:<uuid>;<Type>:<integer>`."""

from __future__ import annotations

import base64
import binascii
from typing import NamedTuple


class RecordRef(NamedTuple):
    """What a business-scoped global id points at."""

    business_uuid: str
    type_name: str
    number: int


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def business_id(business_uuid: str) -> str:
    return _b64(f"Business:{business_uuid}")


def record_id(business_uuid: str, type_name: str, number: int) -> str:
    return _b64(f"Business:{business_uuid};{type_name}:{number}")


def _decode(global_id: str) -> str | None:
    # Wave hands out padded ids; accept unpadded copies too, as lenient servers usually do.
    try:
        return base64.b64decode(global_id + "=" * (-len(global_id) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def parse_business_id(global_id: str) -> str | None:
    """The business uuid, or None when `global_id` is not a business id."""
    text = _decode(global_id)
    if text is None or not text.startswith("Business:") or ";" in text:
        return None
    return text.removeprefix("Business:")


def parse_record_id(global_id: str) -> RecordRef | None:
    """The parts of a business-scoped id, or None when it is malformed."""
    text = _decode(global_id)
    if text is None:
        return None
    head, _, tail = text.partition(";")
    type_name, _, number = tail.partition(":")
    if not head.startswith("Business:") or not type_name or not number.isdigit():
        return None
    return RecordRef(head.removeprefix("Business:"), type_name, int(number))
