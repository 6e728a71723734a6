"""CRUD and business rules of the Wave sandbox, driven through the real WaveClient over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from sandboxes.wave import DEFAULT_BUSINESS_ID, InvoiceRules
from shared.errors import ForbiddenEditError, InvalidDataError, NotFoundError
from shared.wave.client import WaveClient
from shared.wave.models import WaveInvoice, WaveProduct
from tests.sandboxes.wave.conftest import START, Sandbox

ADDRESS = {"addressLine1": "1 King St W", "city": "Toronto", "provinceCode": "CA-ON", "countryCode": "CA"}


def income_account(client: WaveClient) -> str:
    return client.list_accounts(["INCOME"])[0].id


def product(client: WaveClient, name: str = "Widget", price: str = "10.00") -> WaveProduct:
    return client.create_product({"name": name, "unitPrice": price, "incomeAccountId": income_account(client)})


def invoice(client: WaveClient, lines: list[tuple[WaveProduct, str]], **fields: Any) -> WaveInvoice:
    customer = client.create_customer({"name": "Buyer"})
    items = [{"productId": p.id, "quantity": q} for p, q in lines]
    return client.create_invoice({"customerId": customer.id, "items": items, **fields})


def pay(wave: Sandbox, invoice_id: str, amount: str) -> dict[str, Any]:
    response = wave.http.post("/_admin/payments", json={"invoiceId": invoice_id, "amount": amount})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# ----- customers -------------------------------------------------------------------------------------------------


def test_customer_create_get_patch_delete(wave: Sandbox, wave_client: WaveClient) -> None:
    created = wave_client.create_customer(
        {"name": "Maple Leaf Ltd", "email": "ap@maple.example", "currency": "CAD", "address": ADDRESS}
    )
    assert created.address is not None
    assert (created.address.province_code, created.address.province_name) == ("CA-ON", "Ontario")
    assert (created.address.country_code, created.currency) == ("CA", "CAD")
    assert wave_client.get_customer(created.id) == created

    wave.clock.advance(seconds=2)
    patched = wave_client.patch_customer(created.id, {"phone": "+1 416 555 0100"})
    assert patched.phone == "+1 416 555 0100"
    assert patched.email == "ap@maple.example"  # omitted fields are untouched
    assert patched.modified_at == created.modified_at + timedelta(seconds=2)

    wave_client.delete_customer(created.id)
    with pytest.raises(NotFoundError):
        wave_client.get_customer(created.id)
    assert wave_client.find_customers(email="ap@maple.example") == []


def test_customer_input_errors_have_wave_shape(wave: Sandbox) -> None:
    mutation = """mutation($input: CustomerCreateInput!) {
        customerCreate(input: $input) { didSucceed inputErrors { path message code } customer { id } } }"""
    body = wave.gql(
        mutation,
        {
            "input": {
                "businessId": DEFAULT_BUSINESS_ID,
                "name": " ",
                "email": "not-an-email",
                "website": "x" * 256,
                "address": {"provinceCode": "US-NY", "countryCode": "CA"},
            }
        },
    ).json()
    payload = body["data"]["customerCreate"]
    assert payload["didSucceed"] is False
    assert payload["customer"] is None
    assert {(tuple(e["path"]), e["code"]) for e in payload["inputErrors"]} == {
        (("input", "name"), "REQUIRED"),
        (("input", "email"), "INVALID"),
        (("input", "website"), "MAX_LENGTH"),
        (("input", "address", "provinceCode"), "INVALID"),
    }


def test_client_turns_input_errors_into_field_errors(wave_client: WaveClient) -> None:
    with pytest.raises(InvalidDataError) as caught:
        wave_client.create_customer({"name": "Ok", "email": "nope"})
    assert [(e.path, e.code) for e in caught.value.field_errors] == [(("email",), "INVALID")]


def test_province_code_gives_the_country_when_it_is_missing(wave_client: WaveClient) -> None:
    created = wave_client.create_customer({"name": "N", "address": {"provinceCode": "US-TX"}})
    assert created.address is not None
    assert created.address.country_code == "US"


# ----- products --------------------------------------------------------------------------------------------------


def test_product_price_rounds_to_five_places_ties_away_from_zero(wave_client: WaveClient) -> None:
    created = product(wave_client, price="1.234565")
    assert created.unit_price == Decimal("1.23457")
    assert created.is_sold
    assert not created.is_bought
    patched = wave_client.patch_product(created.id, {"unitPrice": 2})
    assert patched.unit_price == Decimal("2.00")
    with pytest.raises(InvalidDataError) as caught:
        wave_client.patch_product(created.id, {"unitPrice": "-1"})
    assert caught.value.field_errors[0].path == ("unitPrice",)


def test_archived_product_leaves_the_default_list_and_cannot_be_invoiced(wave_client: WaveClient) -> None:
    kept, archived = product(wave_client, "Kept"), product(wave_client, "Gone")
    assert wave_client.archive_product(archived.id).is_archived
    assert [p.name for p in wave_client.iter_products()] == ["Kept"]
    assert [p.name for p in wave_client.iter_products(archived=True)] == ["Gone"]
    assert {p.name for p in wave_client.iter_products(archived=None)} == {"Kept", "Gone"}
    assert wave_client.get_product(archived.id).is_archived
    with pytest.raises(InvalidDataError) as caught:
        invoice(wave_client, [(kept, "1"), (archived, "1")])
    assert caught.value.field_errors[0].path == ("items", "1", "productId")


# ----- invoices --------------------------------------------------------------------------------------------------


def test_invoice_totals_and_defaults(wave_client: WaveClient) -> None:
    widget, gadget = product(wave_client, "Widget", "10.00"), product(wave_client, "Gadget", "0.333")
    created = invoice(wave_client, [(widget, "3"), (gadget, "2.123456789")])
    assert created.status == "DRAFT"
    assert created.invoice_number == "1"
    assert created.invoice_date == START.date()
    assert created.due_date == START.date() + timedelta(days=30)
    assert created.currency == "USD"
    assert [i.quantity for i in created.items] == [Decimal(3), Decimal("2.12345679")]
    assert [i.subtotal for i in created.items] == [Decimal("30.00"), Decimal("0.71")]
    assert created.total == created.amount_due == Decimal("30.71")
    assert created.amount_paid == Decimal(0)
    second = invoice(wave_client, [(widget, "1")])
    assert second.invoice_number == "2"


def test_duplicate_invoice_number_and_unknown_customer_are_refused(wave_client: WaveClient) -> None:
    widget = product(wave_client)
    invoice(wave_client, [(widget, "1")], invoiceNumber="INV-7")
    with pytest.raises(InvalidDataError) as duplicate:
        invoice(wave_client, [(widget, "1")], invoiceNumber="INV-7")
    assert duplicate.value.field_errors[0].code == "DUPLICATE"
    with pytest.raises(InvalidDataError) as unknown:
        wave_client.create_invoice({"customerId": "QnVzaW5lc3M6eDtDdXN0b21lcjox", "items": []})
    assert unknown.value.field_errors[0].path == ("customerId",)
    assert [i.invoice_number for i in wave_client.find_invoices("INV-7")] == ["INV-7"]


def test_patch_with_items_replaces_every_line(wave_client: WaveClient) -> None:
    widget, gadget = product(wave_client, "Widget", "10"), product(wave_client, "Gadget", "4")
    created = invoice(wave_client, [(widget, "1"), (widget, "2")])
    patched = wave_client.patch_invoice(created.id, {"items": [{"productId": gadget.id, "quantity": "5"}]})
    assert [(i.product_id, i.quantity) for i in patched.items] == [(gadget.id, Decimal(5))]
    assert patched.total == Decimal("20.00")
    assert wave_client.patch_invoice(created.id, {"memo": "thanks"}).items == patched.items


def test_invoice_lifecycle_draft_saved_sent(wave: Sandbox, wave_client: WaveClient) -> None:
    created = invoice(wave_client, [(product(wave_client), "1")])
    with pytest.raises(ForbiddenEditError):
        wave_client.mark_invoice_sent(created.id)  # a draft must be approved first
    approved = wave_client.approve_invoice(created.id)
    assert approved.status == "SAVED"
    wave.clock.advance(seconds=1)
    sent = wave_client.mark_invoice_sent(created.id)
    assert (sent.status, sent.last_sent_via) == ("SENT", "MARKED_SENT")
    assert sent.last_sent_at == sent.modified_at > approved.modified_at
    wave.clock.advance(days=31)
    assert wave_client.get_invoice(created.id).status == "OVERDUE"


def test_payments_make_invoices_partial_then_paid_and_forbid_edits(wave: Sandbox, wave_client: WaveClient) -> None:
    created = invoice(wave_client, [(product(wave_client, price="50"), "2")])
    wave_client.approve_invoice(created.id)
    assert pay(wave, created.id, "40")["status"] == "PARTIAL"
    with pytest.raises(ForbiddenEditError) as patch_refused:
        wave_client.patch_invoice(created.id, {"memo": "late change"})
    assert patch_refused.value.field_errors[0].code == "INVALID_STATE"
    with pytest.raises(ForbiddenEditError):
        wave_client.delete_invoice(created.id)
    paid = pay(wave, created.id, "60")
    assert (paid["status"], paid["amountDue"]["value"], paid["amountPaid"]["value"]) == ("PAID", "0.00", "100.00")
    assert wave_client.get_invoice(created.id).status == "PAID"


def test_payment_on_a_draft_is_refused_by_admin(wave: Sandbox, wave_client: WaveClient) -> None:
    created = invoice(wave_client, [(product(wave_client), "1")])
    response = wave.http.post("/_admin/payments", json={"invoiceId": created.id, "amount": "1"})
    assert response.status_code == 422


def test_edit_rules_are_configurable(custom_wave: Callable[..., Sandbox]) -> None:
    rules = InvoiceRules(
        forbid_patch_when_paid=False, forbid_delete_when_paid=False, forbid_patch_statuses=frozenset({"SENT"})
    )
    sandbox = custom_wave(invoice_rules=rules)
    with sandbox.client() as client:
        paid = invoice(client, [(product(client), "1")])
        client.approve_invoice(paid.id)
        pay(sandbox, paid.id, "5")
        assert client.patch_invoice(paid.id, {"memo": "allowed"}).memo == "allowed"
        client.delete_invoice(paid.id)
        with pytest.raises(NotFoundError):
            client.get_invoice(paid.id)
        sent = invoice(client, [(product(client), "1")])
        client.approve_invoice(sent.id)
        client.mark_invoice_sent(sent.id)
        with pytest.raises(ForbiddenEditError):
            client.patch_invoice(sent.id, {"memo": "refused"})


@pytest.mark.parametrize("mode", ["top_level", "input_error"])
def test_unknown_target_id_is_not_found_either_way(custom_wave: Callable[..., Sandbox], mode: str) -> None:
    with custom_wave(unknown_target_id=mode).client() as client:
        missing = "QnVzaW5lc3M6MWRhMmExNzctNzg2OC00NmMxLTgzMzktM2M4NjdlZDJlZGQ5O0N1c3RvbWVyOjE="
        with pytest.raises(NotFoundError):
            client.patch_customer(missing, {"name": "x"})
        with pytest.raises(NotFoundError):
            client.delete_invoice(missing.replace("Q3VzdG9tZXI", "SW52b2ljZT"))


# ----- admin: user-like edits, seed, snapshot ----------------------------------------------------------------------


def test_admin_edits_bump_modified_at_and_show_up_in_incremental_reads(wave: Sandbox, wave_client: WaveClient) -> None:
    ids = wave.seed(customers=3, products=1, invoices=1)
    watermark = max(c.modified_at for c in wave_client.iter_customers())
    wave.clock.advance(seconds=5)
    response = wave.http.patch(f"/_admin/customers/{ids['customers'][1]}", json={"name": "Renamed by a person"})
    assert response.status_code == 200, response.text
    changed = list(wave_client.iter_customers(modified_after=watermark))
    assert [c.name for c in changed] == ["Renamed by a person"]
    assert wave.http.patch(f"/_admin/customers/{ids['customers'][1]}", json={"email": "x"}).status_code == 422
    assert wave.http.delete(f"/_admin/customers/{ids['customers'][0]}").status_code == 200
    assert wave.http.delete(f"/_admin/customers/{ids['customers'][0]}").status_code == 404
    assert wave.http.patch(f"/_admin/invoices/{ids['invoices'][0]}", json={"memo": "m"}).json()["memo"] == "m"
    snapshot = wave.snapshot()
    assert len(snapshot["customers"]) == 2
    assert snapshot["deletedCustomers"] == [ids["customers"][0]]
    assert snapshot["invoices"][0]["customer"]["id"] in ids["customers"]  # invoices keep deleted customers


def test_seed_is_deterministic_per_seed(wave: Sandbox) -> None:
    wave.seed(customers=5, products=3, invoices=2, seed=7)
    first = [(c["name"], c["email"]) for c in wave.snapshot()["customers"]]
    wave.http.post("/_admin/reset").raise_for_status()
    wave.seed(customers=5, products=3, invoices=2, seed=7)
    assert [(c["name"], c["email"]) for c in wave.snapshot()["customers"]] == first
    assert all(len(i["items"]) == 3 for i in wave.snapshot()["invoices"])


def test_reset_empties_the_store(wave: Sandbox) -> None:
    wave.seed(customers=2)
    wave.http.post("/_admin/reset").raise_for_status()
    assert wave.snapshot()["customers"] == []
    assert wave.calls() == {}


def test_invoices_are_dated_by_the_sandbox_clock(wave: Sandbox, wave_client: WaveClient) -> None:
    wave.clock.advance(days=1)
    created = invoice(wave_client, [(product(wave_client), "1")], invoiceDate="2024-02-10")
    assert (created.invoice_date, created.due_date) == (date(2024, 2, 10), date(2024, 3, 11))
    assert invoice(wave_client, [(product(wave_client), "1")]).invoice_date == date(2024, 3, 2)
