"""Pure validation and normalisation of Customerp request bodies: field specs per resource, 422 field paths.

Cross-record rules (references, uniqueness, locks) need the store and live in store.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from sandboxes.customerp.codes import COUNTRY_CODES, CURRENCY_CODES

Resource = Literal["customers", "products", "orders"]
RESOURCES: tuple[Resource, ...] = ("customers", "products", "orders")
PathItem = str | int
Path = tuple[PathItem, ...]

ORDER_STATUSES = ("draft", "confirmed", "sent", "partially_paid", "paid", "cancelled")
READ_ONLY_FIELDS = frozenset({"id", "version", "created_at", "updated_at", "deleted"})
MAX_LINES = 500
# Up to 12 integer digits and 8 decimals, as a numeric(20, 8) column holds; no exponent, no thousands separators.
_DECIMAL = re.compile(r"-?\d{1,12}(\.\d{1,8})?")
_DECIMAL_LOOSE = re.compile(r"-?\d+(\.\d+)?")
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
_SUBDIVISION = re.compile(r"[A-Z]{2}-[A-Z0-9]{1,3}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# C0 control characters other than tab, line feed and carriage return; NUL is the one databases choke on.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Problem:
    """One invalid value: where it is in the body, what is wrong, and a stable machine code."""

    path: Path
    message: str
    code: str

    def to_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "message": self.message, "code": self.code}


Validator = Callable[[Any, Path, list[Problem]], Any]


@dataclass(frozen=True)
class FieldSpec:
    validate: Validator
    required: bool = False
    # Fields with a default are never null: leaving them out gives the default, sending null is an error.
    default: Any = None
    has_default: bool = False


def text(max_length: int, *, required: bool = False) -> FieldSpec:
    def check(value: Any, path: Path, errors: list[Problem]) -> Any:
        if not isinstance(value, str):
            errors.append(Problem(path, "must be a string", "type"))
            return None
        if len(value) > max_length:
            errors.append(Problem(path, f"must be at most {max_length} characters", "too_long"))
        if _CONTROL.search(value):
            errors.append(Problem(path, "must not contain control characters (such as NUL)", "invalid_character"))
        if required and not value.strip():
            errors.append(Problem(path, "must not be blank", "blank"))
        return value

    return FieldSpec(check, required=required)


def _email(value: Any, path: Path, errors: list[Problem]) -> Any:
    value = text(254).validate(value, path, errors)
    if isinstance(value, str) and not _EMAIL.fullmatch(value):
        errors.append(Problem(path, "must be an email address like name@example.com", "invalid"))
    return value


def _country(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, str):
        errors.append(Problem(path, "must be a string", "type"))
    elif value not in COUNTRY_CODES:
        errors.append(Problem(path, "must be an upper-case ISO 3166-1 alpha-2 country code", "invalid"))
    return value


def _subdivision(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, str):
        errors.append(Problem(path, "must be a string", "type"))
    elif not _SUBDIVISION.fullmatch(value):
        errors.append(Problem(path, "must be an ISO 3166-2 subdivision code like US-CA", "invalid"))
    return value


def _currency(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, str):
        errors.append(Problem(path, "must be a string", "type"))
    elif value not in CURRENCY_CODES:
        errors.append(Problem(path, "must be an upper-case ISO 4217 currency code", "invalid"))
    return value


def canonical_decimal(value: Decimal) -> str:
    """Plain notation without trailing zeros ("12.50" -> "12.5", "100" -> "100", "-0" -> "0")."""
    if value == 0:
        return "0"
    text_value = format(value.normalize(), "f")
    return text_value


def decimal(*, minimum: Decimal | None = None, exclusive: bool = False, required: bool = False) -> FieldSpec:
    def check(value: Any, path: Path, errors: list[Problem]) -> Any:
        if not isinstance(value, str):
            errors.append(Problem(path, 'must be a decimal string like "12.50"', "type"))
            return None
        if not _DECIMAL.fullmatch(value):
            if _DECIMAL_LOOSE.fullmatch(value):
                errors.append(Problem(path, "must have at most 12 digits before and 8 after the point", "precision"))
            else:
                errors.append(Problem(path, 'must be a decimal string like "12.50"', "invalid"))
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern already guarantees a parseable number
            errors.append(Problem(path, "is not a number", "invalid"))
            return None
        if minimum is not None and (number <= minimum if exclusive else number < minimum):
            relation = "greater than" if exclusive else "at least"
            errors.append(Problem(path, f"must be {relation} {minimum}", "out_of_range"))
        return canonical_decimal(number)

    return FieldSpec(check, required=required)


def _date(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        errors.append(Problem(path, "must be a date like 2024-01-31", "invalid"))
        return None
    try:
        date.fromisoformat(value)
    except ValueError:
        errors.append(Problem(path, "is not a calendar date", "invalid"))
        return None
    return value


def _bool(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, bool):
        errors.append(Problem(path, "must be true or false", "type"))
    return value


def _status(value: Any, path: Path, errors: list[Problem]) -> Any:
    if value not in ORDER_STATUSES:
        errors.append(Problem(path, "must be one of " + ", ".join(ORDER_STATUSES), "invalid"))
    return value


ADDRESS_SPEC: dict[str, FieldSpec] = {
    "line1": text(255),
    "line2": text(255),
    "city": text(100),
    "postal_code": text(20),
    "country_code": FieldSpec(_country),
    "subdivision_code": FieldSpec(_subdivision),
}


def _address(value: Any, path: Path, errors: list[Problem]) -> Any:
    address = check_object(value, ADDRESS_SPEC, path, errors)
    if address is None:
        return None
    country, subdivision = address["country_code"], address["subdivision_code"]
    if isinstance(subdivision, str) and _SUBDIVISION.fullmatch(subdivision):
        if country is None:
            errors.append(Problem((*path, "subdivision_code"), "needs a country_code", "requires_country"))
        elif country in COUNTRY_CODES and not subdivision.startswith(country + "-"):
            errors.append(
                Problem((*path, "subdivision_code"), f"must be a subdivision of {country} ({country}-...)", "mismatch")
            )
    return address


LINE_SPEC: dict[str, FieldSpec] = {
    "product_id": text(64),
    "description": text(2000),
    # A line sells something: zero or negative quantities are refused; a negative price is a discount line.
    "quantity": decimal(minimum=Decimal(0), exclusive=True, required=True),
    "unit_price": decimal(required=True),
}


def _lines(value: Any, path: Path, errors: list[Problem]) -> Any:
    if not isinstance(value, list):
        errors.append(Problem(path, "must be an array of order lines", "type"))
        return []
    if len(value) > MAX_LINES:
        errors.append(Problem(path, f"must have at most {MAX_LINES} lines", "too_long"))
        return []
    lines = []
    for index, raw in enumerate(value):
        line = check_object(raw, LINE_SPEC, (*path, index), errors)
        if line is None:
            continue
        if line["product_id"] is None and not (line["description"] or "").strip():
            errors.append(
                Problem((*path, index, "description"), "a line without product needs a description", "required")
            )
        lines.append(line)
    return lines


CUSTOMER_SPEC: dict[str, FieldSpec] = {
    "customer_number": text(50),
    "company_name": text(255, required=True),
    "contact_first_name": text(100),
    "contact_last_name": text(100),
    "email": FieldSpec(_email),
    "phone": text(50),
    "mobile": text(50),
    "website": text(255),
    "billing_address": FieldSpec(_address),
    "shipping_address": FieldSpec(_address),
    "currency": FieldSpec(_currency),
    "vat_number": text(50),
    "notes": text(10_000),
}

PRODUCT_SPEC: dict[str, FieldSpec] = {
    "sku": text(64),
    "name": text(255, required=True),
    "description": text(10_000),
    "unit_price": decimal(minimum=Decimal(0), required=True),
    "currency": FieldSpec(_currency),
    "archived": FieldSpec(_bool, default=False, has_default=True),
}

ORDER_SPEC: dict[str, FieldSpec] = {
    "order_number": text(50),
    "customer_id": text(64, required=True),
    "order_date": FieldSpec(_date, required=True),
    "due_date": FieldSpec(_date),
    "currency": FieldSpec(_currency),
    "po_number": text(100),
    "notes": text(10_000),
    "status": FieldSpec(_status, default="draft", has_default=True),
    "lines": FieldSpec(_lines, default=(), has_default=True),
}

SPECS: dict[Resource, dict[str, FieldSpec]] = {
    "customers": CUSTOMER_SPEC,
    "products": PRODUCT_SPEC,
    "orders": ORDER_SPEC,
}


def check_object(
    value: Any, spec: Mapping[str, FieldSpec], path: Path, errors: list[Problem], *, top_level: bool = False
) -> dict[str, Any] | None:
    """Validate a JSON object against `spec`; return it normalised with every field present (None if unusable)."""
    if not isinstance(value, dict):
        errors.append(Problem(path, "must be an object", "type"))
        return None
    for key in value:
        if top_level and key in READ_ONLY_FIELDS:
            errors.append(Problem((*path, key), "is read-only", "read_only"))
        elif key not in spec:
            errors.append(Problem((*path, key), "is not a known field", "unknown_field"))
    result: dict[str, Any] = {}
    for name, field in spec.items():
        raw = value.get(name)
        if raw is None:
            if name in value and field.has_default:
                errors.append(Problem((*path, name), "must not be null", "null"))
            elif field.required:
                errors.append(Problem((*path, name), "is required", "required"))
            result[name] = list(field.default) if isinstance(field.default, tuple) else field.default
            continue
        result[name] = field.validate(raw, (*path, name), errors)
    return result


def check_record(resource: Resource, body: Any) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Validate a whole record body (a create, or a patch already merged onto the current record)."""
    errors: list[Problem] = []
    record = check_object(body, SPECS[resource], (), errors, top_level=True)
    if record is not None and resource == "orders":
        order_date, due_date = record["order_date"], record["due_date"]
        if isinstance(order_date, str) and isinstance(due_date, str) and due_date < order_date:
            errors.append(Problem(("due_date",), "must not be before order_date", "before_order_date"))
    return record, errors


def check_patch_keys(resource: Resource, patch: Any) -> list[Problem]:
    """The keys a merge patch may carry: writable fields only."""
    if not isinstance(patch, dict):
        return [Problem((), "must be a JSON object", "type")]
    errors: list[Problem] = []
    for key in patch:
        if key in READ_ONLY_FIELDS:
            errors.append(Problem((key,), "is read-only", "read_only"))
        elif key not in SPECS[resource]:
            errors.append(Problem((key,), "is not a known field", "unknown_field"))
        elif patch[key] is None and SPECS[resource][key].has_default:
            errors.append(Problem((key,), "must not be null", "null"))
    return errors


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, null removes, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
