"""422 answers with field paths for realistic bad inputs, through the real client and plain HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.customerp.client import CustomerpClient
from shared.errors import InvalidDataError
from tests.sandboxes.customerp.conftest import CUSTOMER, PRODUCT

LONG = "x" * 10_000
BAD_CUSTOMERS: list[tuple[dict[str, Any], tuple[str, ...], str]] = [
    ({"email": "ingrid at northwind"}, ("email",), "invalid"),
    ({"email": "a@b"}, ("email",), "invalid"),
    ({"billing_address": {"country_code": "XX"}}, ("billing_address", "country_code"), "invalid"),
    ({"billing_address": {"country_code": "no"}}, ("billing_address", "country_code"), "invalid"),
    (
        {"billing_address": {"country_code": "US", "subdivision_code": "CA-ON"}},
        ("billing_address", "subdivision_code"),
        "mismatch",
    ),
    ({"shipping_address": {"subdivision_code": "US-CA"}}, ("shipping_address", "subdivision_code"), "requires_country"),
    ({"shipping_address": {"town": "Oslo"}}, ("shipping_address", "town"), "unknown_field"),
    ({"company_name": "Nul\x00byte"}, ("company_name",), "invalid_character"),
    ({"company_name": LONG}, ("company_name",), "too_long"),
    ({"company_name": "   "}, ("company_name",), "blank"),
    ({"company_name": None}, ("company_name",), "required"),
    ({"notes": LONG + "x"}, ("notes",), "too_long"),
    ({"currency": "XYZ"}, ("currency",), "invalid"),
    ({"phone": 12345}, ("phone",), "type"),
    ({"id": "cus_mine"}, ("id",), "read_only"),
]


@pytest.mark.parametrize(("change", "path", "code"), BAD_CUSTOMERS)
def test_bad_customer_is_refused_with_the_field_path(
    client: CustomerpClient, change: dict[str, Any], path: tuple[str, ...], code: str
) -> None:
    with pytest.raises(InvalidDataError) as caught:
        client.create("customers", {**CUSTOMER, **change}, idempotency_key="k")

    assert [(e.path, e.code) for e in caught.value.field_errors] == [(path, code)]


def test_notes_of_exactly_10000_characters_are_accepted(client: CustomerpClient) -> None:
    customer = client.create("customers", {**CUSTOMER, "notes": LONG}, idempotency_key="k")

    assert customer.notes == LONG


@pytest.mark.parametrize(
    ("price", "code"),
    [
        ("12,50", "invalid"),
        ("1e3", "invalid"),
        (12.5, "type"),
        ("0.123456789", "precision"),
        ("1234567890123", "precision"),
        ("-0.01", "out_of_range"),
        ("NaN", "invalid"),
    ],
)
def test_bad_product_price_is_refused(client: CustomerpClient, price: object, code: str) -> None:
    with pytest.raises(InvalidDataError) as caught:
        client.create("products", {**PRODUCT, "unit_price": price}, idempotency_key="k")

    assert [(e.path, e.code) for e in caught.value.field_errors] == [(("unit_price",), code)]


def test_order_errors_point_into_lines_and_references(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c")
    body = {
        "customer_id": customer.id,
        "order_date": "2024-05-10",
        "lines": [
            {"product_id": "prd_missing", "quantity": "1", "unit_price": "1"},
            {"product_id": None, "quantity": "0", "unit_price": "1"},
        ],
    }

    with pytest.raises(InvalidDataError) as caught:
        client.create("orders", body, idempotency_key="o")

    assert {(e.path, e.code) for e in caught.value.field_errors} == {
        (("lines", "1", "description"), "required"),
        (("lines", "1", "quantity"), "out_of_range"),
    }
    body["lines"] = body["lines"][:1]
    with pytest.raises(InvalidDataError) as caught:
        client.create("orders", body, idempotency_key="o")
    assert [(e.path, e.code) for e in caught.value.field_errors] == [(("lines", "0", "product_id"), "not_found")]


@pytest.mark.parametrize(
    ("change", "path", "code"),
    [
        ({"customer_id": "cus_nobody"}, ("customer_id",), "not_found"),
        ({"order_date": "2024-02-30"}, ("order_date",), "invalid"),
        ({"order_date": "01/05/2024"}, ("order_date",), "invalid"),
        ({"due_date": "2024-04-01"}, ("due_date",), "before_order_date"),
        ({"status": "shipped"}, ("status",), "invalid"),
        ({"status": None}, ("status",), "null"),
        ({"lines": {"quantity": "1"}}, ("lines",), "type"),
    ],
)
def test_bad_order_is_refused(
    client: CustomerpClient, change: dict[str, Any], path: tuple[str, ...], code: str
) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c")
    body = {"customer_id": customer.id, "order_date": "2024-05-01", **change}

    with pytest.raises(InvalidDataError) as caught:
        client.create("orders", body, idempotency_key="o")

    assert [(e.path, e.code) for e in caught.value.field_errors] == [(path, code)]


def test_422_problem_shape_over_plain_http(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/orders", json={"order_date": "2024-05-01", "lines": [{"quantity": "x"}]})

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["title"] == "Unprocessable Entity"
    assert {"path": ["lines", 0, "quantity"], "message": body["errors"][1]["message"], "code": "invalid"} in body[
        "errors"
    ]
    assert {"path": ["customer_id"], "message": "is required", "code": "required"} in body["errors"]


def test_patch_validates_the_merged_record(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c")

    with pytest.raises(InvalidDataError) as caught:
        client.update("customers", customer.id, {"billing_address": {"country_code": "SE"}}, version=1)

    assert [(e.path, e.code) for e in caught.value.field_errors] == [
        (("billing_address", "subdivision_code"), "mismatch")
    ]
