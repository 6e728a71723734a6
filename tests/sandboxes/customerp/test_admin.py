"""The Customerp sandbox's /_admin side: seed, reset, snapshot, user-like edits, and the served contract."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import httpx
import pytest

from shared.customerp.client import CustomerpClient
from shared.customerp.models import Customer, Order, Product
from shared.errors import ConflictError
from tests.sandboxes.customerp.conftest import CUSTOMER, Clock


def _without_times(snapshot: dict[str, Any]) -> dict[str, Any]:
    def strip(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k not in ("created_at", "updated_at")}

    return {r: [strip(x) for x in snapshot[r]] for r in ("customers", "products", "orders")}


def test_seed_is_deterministic_and_realistic(admin: httpx.Client, clock: Clock) -> None:
    clock.freeze()
    request = {"customers": 5, "products": 4, "orders": 6, "lines": 3, "seed": 7}
    ids = admin.post("/_admin/seed", json=request).json()
    first = admin.get("/_admin/snapshot").json()
    admin.post("/_admin/reset")
    admin.post("/_admin/seed", json=request)
    second = admin.get("/_admin/snapshot").json()
    admin.post("/_admin/reset")
    admin.post("/_admin/seed", json={**request, "seed": 8})
    other = admin.get("/_admin/snapshot").json()

    assert {k: len(v) for k, v in ids.items()} == {"customers": 5, "products": 4, "orders": 6}
    assert first == second
    assert _without_times(first) != _without_times(other)
    customers = [Customer.model_validate(c) for c in first["customers"]]
    products = [Product.model_validate(p) for p in first["products"]]
    orders = [Order.model_validate(o) for o in first["orders"]]
    assert all(c.email and c.customer_number and c.billing_address for c in customers)
    assert len({c.email for c in customers}) == 5
    assert all(p.sku for p in products)
    product_ids = {p.id for p in products}
    assert all(len(o.lines) == 3 and o.customer_id in {c.id for c in customers} for o in orders)
    assert all(line.product_id in product_ids for o in orders for line in o.lines if line.product_id)


def test_seed_adds_to_existing_data_and_defaults_apply(admin: httpx.Client) -> None:
    admin.post("/_admin/seed", json={"customers": 2, "products": 2, "orders": 0})
    admin.post("/_admin/seed", json={})

    snapshot = admin.get("/_admin/snapshot").json()

    assert [len(snapshot[r]) for r in ("customers", "products", "orders")] == [12, 12, 10]


def test_seed_rejects_bad_requests(admin: httpx.Client) -> None:
    response = admin.post("/_admin/seed", json={"customers": -1, "colour": "red"})

    assert response.status_code == 422
    assert {tuple(e["path"]) for e in response.json()["errors"]} == {("customers",), ("colour",)}


def test_snapshot_lists_live_records_and_tombstones(client: CustomerpClient, admin: httpx.Client) -> None:
    kept = client.create("customers", CUSTOMER, idempotency_key="a")
    gone = client.create("customers", {**CUSTOMER, "company_name": "Gone"}, idempotency_key="b")
    client.delete("customers", gone.id)

    snapshot = admin.get("/_admin/snapshot").json()

    assert [c["id"] for c in snapshot["customers"]] == [kept.id]
    assert snapshot["tombstones"]["customers"] == [
        {
            "id": gone.id,
            "deleted": True,
            "version": 2,
            "updated_at": snapshot["tombstones"]["customers"][0]["updated_at"],
        }
    ]
    assert snapshot["tombstones"]["products"] == []


def test_a_user_edit_skips_if_match_and_makes_the_sync_lose_its_race(
    client: CustomerpClient, admin: httpx.Client
) -> None:
    customer = client.create("customers", CUSTOMER, idempotency_key="a")

    edited = admin.patch(f"/_admin/customers/{customer.id}", json={"phone": "555"}, headers={"X-API-Key": ""})

    assert (edited.status_code, edited.json()["version"]) == (200, 2)
    with pytest.raises(ConflictError):
        client.update("customers", customer.id, {"phone": "666"}, version=1)


def test_user_create_and_delete_show_in_the_feed(client: CustomerpClient, admin: httpx.Client) -> None:
    created = admin.post("/_admin/products", json={"name": "Typed in by hand", "unit_price": "5"})
    assert created.status_code == 201
    product_id = created.json()["id"]

    assert admin.delete(f"/_admin/products/{product_id}").status_code == 204
    assert [(i.id, getattr(i, "deleted", False)) for i in client.changes("products").items] == [(product_id, True)]


def test_user_edits_follow_validation_rules(admin: httpx.Client) -> None:
    bad = admin.post("/_admin/customers", json={"company_name": "X", "email": "nope"})
    missing = admin.patch("/_admin/customers/cus_nobody", json={"phone": "1"})

    assert (bad.status_code, bad.json()["errors"][0]["path"]) == (422, ["email"])
    assert missing.status_code == 404


def test_the_contract_is_served_as_yaml(admin: httpx.Client) -> None:
    response = admin.get("/openapi.yaml")

    assert response.headers["content-type"].startswith("application/yaml")
    assert response.text == files("sandboxes.customerp").joinpath("openapi.yaml").read_text(encoding="utf-8")
