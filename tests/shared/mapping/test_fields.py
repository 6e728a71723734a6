"""Normalisation and payload building of the field tables."""

from __future__ import annotations

from typing import Any

import pytest

from shared.mapping import customers, orders, products
from shared.mapping.fields import FieldValueError, canonical_from, decimal_places, payload

ROUNDING = [
    ("10", "10"),
    ("10.00", "10"),
    ("0.000005", "0.00001"),
    ("-0.000005", "-0.00001"),
    ("12.345674999", "12.34567"),
    (3, "3"),
    ("1e3", "1000"),
    ("0.0000001", "0"),
]


@pytest.mark.parametrize(("raw", "expected"), ROUNDING)
def test_prices_round_half_away_from_zero_to_five_places(raw: Any, expected: str) -> None:
    assert decimal_places(5)(raw) == expected


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", True, [1]])
def test_a_bad_decimal_is_a_field_error(bad: Any) -> None:
    with pytest.raises(FieldValueError) as err:
        canonical_from({"name": "x", "unit_price": bad}, products.FIELDS, "customerp")
    assert err.value.path == ("unit_price",)


def test_customer_reads_the_same_from_both_sides() -> None:
    cp = {
        "company_name": "Acme",
        "contact_first_name": "Ada",
        "email": " ada@acme.io ",
        "currency": "nok",
        "billing_address": {"line1": "Street 1", "country_code": "no", "subdivision_code": "NO-03"},
        "shipping_address": None,
        "phone": "",
    }
    wave = {
        "name": "Acme",
        "firstName": "Ada",
        "email": "ada@acme.io",
        "currency": "NOK",
        "address": {"addressLine1": "Street 1", "countryCode": "NO", "provinceCode": "NO-03"},
        "phone": None,
    }
    assert canonical_from(cp, customers.FIELDS, "customerp") == canonical_from(wave, customers.FIELDS, "wave")


def test_a_changed_address_part_sends_the_whole_address_to_wave() -> None:
    canon = canonical_from(
        {"company_name": "Acme", "billing_address": {"line1": "A", "city": "Oslo"}}, customers.FIELDS, "customerp"
    )
    body = payload(canon, customers.FIELDS, "wave", {"billing_city"})
    assert body == {
        "address": {
            "addressLine1": "A",
            "addressLine2": None,
            "city": "Oslo",
            "postalCode": None,
            "countryCode": None,
            "provinceCode": None,
        }
    }


def test_fields_written_by_their_own_mutation_are_not_in_the_input() -> None:
    canon = {"name": "Widget", "description": None, "unit_price": "5", "archived": True}
    assert "isArchived" not in payload(canon, products.FIELDS, "wave")
    assert "status" not in payload({"status": "sent", "number": "7"}, orders.FIELDS, "wave")
