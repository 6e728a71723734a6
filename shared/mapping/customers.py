"""Customerp Customer ⇄ Wave Customer: the field table and its transforms."""

from __future__ import annotations

from shared.mapping.fields import FieldMap

_ADDRESS = (
    ("line1", "addressLine1", "addressLine1", "String", "text", ""),
    ("line2", "addressLine2", "addressLine2", "String", "text", ""),
    ("city", "city", "city", "String", "text", ""),
    ("postal_code", "postalCode", "postalCode", "String", "text", ""),
    ("country_code", "countryCode", "countryCode", "CountryCode", "code", "ISO 3166-1 alpha-2"),
    ("subdivision_code", "provinceCode", "provinceCode", "String", "code", "ISO 3166-2, e.g. US-CA"),
)


def _address_rows(
    prefix: str, cp_object: str, wave_read: tuple[str, ...], wave_write: tuple[str, ...]
) -> list[FieldMap]:
    rows = []
    for cp_name, w_read, w_write, w_type, kind, note in _ADDRESS:
        rows.append(
            FieldMap(
                name=f"{prefix}_{cp_name}",
                customerp=(cp_object, cp_name),
                wave_read=(*wave_read, *w_read.split(".")),
                wave_write=(*wave_write, w_write),
                wave_type=w_type,
                kind=kind,
                note=note + ("; " if note else "") + "the whole address is sent when one part changes",
            )
        )
    return rows


FIELDS: tuple[FieldMap, ...] = (
    FieldMap("name", ("company_name",), ("name",), ("name",), "String!", note="required on both sides"),
    FieldMap("first_name", ("contact_first_name",), ("firstName",), ("firstName",), "String"),
    FieldMap("last_name", ("contact_last_name",), ("lastName",), ("lastName",), "String"),
    FieldMap(
        "number",
        ("customer_number",),
        ("displayId",),
        ("displayId",),
        "String",
        note="Wave's account number; onboarding match key after email",
    ),
    FieldMap(
        "email",
        ("email",),
        ("email",),
        ("email",),
        "String",
        kind="email",
        note="onboarding match key (case-insensitive)",
    ),
    FieldMap("phone", ("phone",), ("phone",), ("phone",), "String"),
    FieldMap("mobile", ("mobile",), ("mobile",), ("mobile",), "String"),
    FieldMap("website", ("website",), ("website",), ("website",), "String"),
    FieldMap("currency", ("currency",), ("currency",), ("currency",), "CurrencyCode", kind="code", note="ISO 4217"),
    FieldMap(
        "notes",
        ("notes",),
        ("internalNotes",),
        ("internalNotes",),
        "String",
        note="internal notes, never shown to the customer",
    ),
    *_address_rows("billing", "billing_address", ("address",), ("address",)),
    *_address_rows("shipping", "shipping_address", ("shippingDetails", "address"), ("shippingDetails", "address")),
)

# Customerp-only properties (no Wave field): vat_number. Wave-only: fax, tollFree, shippingDetails.phone/
# instructions — left untouched by the sync.
