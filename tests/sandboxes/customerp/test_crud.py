"""Create, read, merge-patch and delete through the real client against the running Customerp sandbox."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import httpx
import pytest

from shared.customerp.client import CustomerpClient
from shared.customerp.models import Customer, Order, Product
from shared.errors import ForbiddenEditError, InvalidDataError, NotFoundError
from tests.sandboxes.customerp.conftest import CUSTOMER, PRODUCT


def test_create_customer_returns_typed_record_with_version_one_and_assigned_number(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    assert isinstance(customer, Customer)
    assert customer.id.startswith("cus_")
    assert customer.version == 1
    assert customer.customer_number == "10001"
    assert customer.billing_address is not None
    assert customer.billing_address.subdivision_code == "NO-03"
    assert customer.created_at == customer.updated_at
    assert client.get("customers", customer.id) == customer


def test_get_answers_etag_with_the_version(client: CustomerpClient, admin: httpx.Client) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    response = admin.get(f"/api/v1/customers/{customer.id}")

    assert response.headers["etag"] == '"1"'
    assert response.json()["updated_at"].endswith("Z")
    assert len(response.json()["updated_at"]) == len("2024-05-01T12:00:00.000000Z")


def test_create_answers_201_with_location_and_etag(admin: httpx.Client) -> None:
    response = admin.post("/api/v1/products", json=PRODUCT, headers={"Idempotency-Key": "p"})

    assert response.status_code == 201
    assert response.headers["etag"] == '"1"'
    assert response.headers["location"] == f"/api/v1/products/{response.json()['id']}"
    assert response.json()["unit_price"] == "12.5"  # canonical decimal


def test_update_merges_fields_bumps_version_and_updated_at(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    updated = client.update(
        "customers", customer.id, {"phone": "+47 22 00 00 00", "billing_address": {"city": "Bergen"}}, version=1
    )

    assert updated.version == 2
    assert updated.updated_at > customer.updated_at
    assert updated.phone == "+47 22 00 00 00"
    assert updated.billing_address is not None
    assert (updated.billing_address.city, updated.billing_address.line1) == ("Bergen", "Storgata 1")
    assert updated.email == customer.email


def test_update_with_null_clears_an_optional_field(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    updated = client.update("customers", customer.id, {"email": None, "billing_address": None}, version=1)

    assert (updated.email, updated.billing_address) == (None, None)


def test_update_that_changes_nothing_keeps_version_and_timestamp(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    same = client.update("customers", customer.id, {"email": CUSTOMER["email"]}, version=1)

    assert (same.version, same.updated_at) == (1, customer.updated_at)


def test_equal_decimal_in_another_spelling_is_no_change(client: CustomerpClient) -> None:
    product = client.create("products", PRODUCT, idempotency_key="p-1")

    same = client.update("products", product.id, {"unit_price": "12.500"}, version=1)

    assert same.version == 1
    assert same.unit_price == Decimal("12.5")


@pytest.mark.parametrize(
    ("patch", "path", "code"),
    [
        ({"company_name": None}, ["company_name"], "required"),
        ({"version": 7}, ["version"], "read_only"),
        ({"colour": "red"}, ["colour"], "unknown_field"),
    ],
)
def test_update_refuses_invalid_patches(
    client: CustomerpClient, patch: dict[str, object], path: list[str], code: str
) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")

    with pytest.raises(InvalidDataError) as caught:
        client.update("customers", customer.id, patch, version=1)

    assert [(list(e.path), e.code) for e in caught.value.field_errors] == [(path, code)]


def test_delete_then_get_is_not_found_and_delete_again_is_not_found(client: CustomerpClient) -> None:
    product = client.create("products", PRODUCT, idempotency_key="p-1")

    client.delete("products", product.id, version=1)

    with pytest.raises(NotFoundError):
        client.get("products", product.id)
    with pytest.raises(NotFoundError):
        client.delete("products", product.id)


def test_order_with_lines_round_trips_as_typed_values(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")
    product = client.create("products", PRODUCT, idempotency_key="p-1")
    body = {
        "customer_id": customer.id,
        "order_date": date(2024, 5, 1),
        "due_date": "2024-05-31",
        "currency": "NOK",
        "lines": [
            {"product_id": product.id, "quantity": Decimal("2"), "unit_price": "12.50"},
            {"product_id": None, "description": "Discount", "quantity": "1", "unit_price": "-5"},
        ],
    }

    order = client.create("orders", body, idempotency_key="o-1")

    assert isinstance(order, Order)
    assert order.order_number == "SO-10001"
    assert order.status == "draft"
    assert [(line.quantity, line.unit_price) for line in order.lines] == [
        (Decimal(2), Decimal("12.5")),
        (Decimal(1), Decimal(-5)),
    ]


def test_find_matches_email_case_insensitively_and_ignores_deleted(client: CustomerpClient) -> None:
    first = client.create("customers", CUSTOMER, idempotency_key="c-1")
    second = client.create("customers", {**CUSTOMER, "company_name": "Other"}, idempotency_key="c-2")
    client.create("customers", {**CUSTOMER, "email": "someone@else.example"}, idempotency_key="c-3")
    client.delete("customers", second.id)

    found = client.find("customers", email="INGRID@northwind.example")

    assert [c.id for c in found] == [first.id]
    assert client.find("customers", customer_number=first.customer_number or "") == [first]


def test_find_products_by_sku_and_name(client: CustomerpClient) -> None:
    product = client.create("products", PRODUCT, idempotency_key="p-1")

    assert client.find("products", sku="HW-1") == [product]
    assert client.find("products", name="steel BRACKET") == [product]
    assert client.find("products", sku="hw-1") == []
    assert all(isinstance(p, Product) for p in client.find("products"))


def test_find_follows_pages(client: CustomerpClient, admin: httpx.Client) -> None:
    admin.post("/_admin/seed", json={"customers": 0, "products": 0, "orders": 0}).raise_for_status()
    for index in range(3):
        client.create("products", {**PRODUCT, "sku": f"S-{index}"}, idempotency_key=f"p-{index}")

    page = admin.get("/api/v1/products", params={"limit": 2, "page": 2}).json()

    assert (len(page["items"]), page["has_more"], page["page"]) == (1, False, 2)
    assert len(client.find("products")) == 3


def test_unknown_list_filter_is_400(admin: httpx.Client) -> None:
    response = admin.get("/api/v1/customers", params={"emial": "x@y.example"})

    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == ["query", "emial"]


def test_deleting_a_customer_with_orders_is_forbidden(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")
    client.create("orders", {"customer_id": customer.id, "order_date": "2024-05-01"}, idempotency_key="o-1")

    with pytest.raises(ForbiddenEditError, match="has_orders"):
        client.delete("customers", customer.id)


def test_deleting_a_product_used_by_an_order_is_forbidden(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")
    product = client.create("products", PRODUCT, idempotency_key="p-1")
    line = {"product_id": product.id, "quantity": "1", "unit_price": "1"}
    client.create(
        "orders", {"customer_id": customer.id, "order_date": "2024-05-01", "lines": [line]}, idempotency_key="o"
    )

    with pytest.raises(ForbiddenEditError, match="in_use"):
        client.delete("products", product.id)


def test_paid_order_only_allows_status_and_notes(client: CustomerpClient) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="c-1")
    order = client.create(
        "orders", {"customer_id": customer.id, "order_date": "2024-05-01", "status": "paid"}, idempotency_key="o"
    )

    with pytest.raises(ForbiddenEditError) as caught:
        client.update("orders", order.id, {"po_number": "PO-9"}, version=1)
    noted = client.update("orders", order.id, {"notes": "Paid by card", "status": "cancelled"}, version=1)

    assert [e.path for e in caught.value.field_errors] == [("po_number",)]
    assert (noted.version, noted.status) == (2, "cancelled")


def test_unique_numbers_are_refused_when_taken(client: CustomerpClient) -> None:
    client.create("products", PRODUCT, idempotency_key="p-1")

    with pytest.raises(InvalidDataError) as caught:
        client.create("products", {**PRODUCT, "name": "Other"}, idempotency_key="p-2")

    assert [(e.path, e.code) for e in caught.value.field_errors] == [(("sku",), "taken")]


def test_a_unique_number_is_free_again_after_rename_or_delete(client: CustomerpClient) -> None:
    first = client.create("products", PRODUCT, idempotency_key="p-1")
    client.update("products", first.id, {"sku": "HW-1-OLD"}, version=1)
    second = client.create("products", PRODUCT, idempotency_key="p-2")
    client.delete("products", second.id)

    third = client.create("products", PRODUCT, idempotency_key="p-3")

    assert third.sku == "HW-1"
    with pytest.raises(InvalidDataError):
        client.update("products", third.id, {"sku": "HW-1-OLD"}, version=1)


def test_auto_numbers_skip_numbers_already_taken(client: CustomerpClient) -> None:
    client.create("customers", {**CUSTOMER, "customer_number": "10001"}, idempotency_key="c-1")

    assert client.create("customers", CUSTOMER, idempotency_key="c-2").customer_number == "10002"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/api/v1/customers", {"params": {"limit": "²"}}),
        ("GET", "/api/v1/customers/changes", {"params": {"cursor": "x" * 501}}),
        ("POST", "/api/v1/customers", {"content": b"[" * 100_000 + b"]" * 100_000}),
        ("POST", "/api/v1/customers", {"content": b'{"company_name": NaN}'}),
    ],
)
def test_hostile_inputs_are_400_not_500(admin: httpx.Client, method: str, path: str, kwargs: dict[str, object]) -> None:
    response = admin.request(method, path, **kwargs)  # type: ignore[arg-type]

    assert response.status_code == 400
