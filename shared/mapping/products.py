"""Customerp Product ⇄ Wave Product: the field table."""

from __future__ import annotations

from shared.mapping.fields import FieldMap

FIELDS: tuple[FieldMap, ...] = (
    FieldMap("name", ("name",), ("name",), ("name",), "String!", note="onboarding match key (Wave has no SKU)"),
    FieldMap("description", ("description",), ("description",), ("description",), "String"),
    FieldMap(
        "unit_price",
        ("unit_price",),
        ("unitPrice",),
        ("unitPrice",),
        "Decimal!",
        kind="decimal5",
        note="excl. VAT; rounded half away from zero to 5 decimals, as Wave stores it",
    ),
    FieldMap(
        "archived",
        ("archived",),
        ("isArchived",),
        None,
        "Boolean!",
        kind="bool",
        note="written with productArchive; Wave cannot un-archive (dead letter)",
    ),
)

# Customerp-only: sku (kept in Customerp; Wave has no SKU field), currency (must equal the Wave business
# currency, checked before writing).
