"""Orders ⇄ invoices: dependencies first, lines through product links, status, forbidden edits, deletes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import System

pytestmark = pytest.mark.integration


def invoices(system: System) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot("wave")["invoices"])


def orders(system: System) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot("customerp")["orders"])


def invoice_for(system: System, number: str) -> dict[str, Any]:
    found = [i for i in invoices(system) if i["invoiceNumber"] == number]
    assert len(found) == 1, f"{len(found)} invoices numbered {number}"
    return found[0]


def make_order(system: System, lines: int = 1, number: str = "SO-1") -> dict[str, Any]:
    """A customer, products and an order whose lines all have a product (seeded orders may have free text)."""
    system.boxes.cp("POST", "seed", {"customers": 1, "products": lines, "orders": 0, "seed": 31})
    cp = system.boxes.snapshot("customerp")
    order: dict[str, Any] = system.boxes.cp(
        "POST",
        "orders",
        {
            "customer_id": cp["customers"][0]["id"],
            "order_number": number,
            "order_date": "2026-11-20",
            "due_date": "2026-12-20",
            "lines": [{"product_id": p["id"], "quantity": "1", "unit_price": "10"} for p in cp["products"][:lines]],
        },
    )
    return order


def test_orders_become_invoices_with_their_customer_and_products_synced_first(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 3, "products": 4, "orders": 5, "lines": 3, "seed": 21})
    # Orders first: the worker must sync each order's customer and products on its own.
    for entity in ("orders",):
        from producers.pollers import Poller

        Poller(system.ctx, "wave", entity).run()
        Poller(system.ctx, "customerp", entity).run()
    system.wait_idle()
    system.settle()
    # The seed, like real ERPs, has some free-text lines: those orders wait in the dead-letter queue.
    complete = [o for o in orders(system) if all(line["product_id"] for line in o["lines"])]
    free_text = {o["id"] for o in orders(system)} - {o["id"] for o in complete}
    assert len(invoices(system)) == len(complete) >= 1
    assert {e["source_id"] for e in system.dead_letters()} == free_text
    wave = system.boxes.snapshot("wave")
    wave_customers = {c["id"]: c for c in wave["customers"]}
    for order in complete:
        invoice = invoice_for(system, order["order_number"])
        assert len(invoice["items"]) == len(order["lines"])
        assert [str(float(i["quantity"])) for i in invoice["items"]] == [
            str(float(line["quantity"])) for line in order["lines"]
        ]
        customer = next(c for c in system.boxes.snapshot("customerp")["customers"] if c["id"] == order["customer_id"])
        assert wave_customers[invoice["customer"]["id"]]["email"] == customer["email"]


def test_an_invoice_edit_in_wave_reaches_the_order_and_an_order_edit_reaches_the_invoice(system: System) -> None:
    make_order(system, lines=2)
    system.settle()
    order = orders(system)[0]
    invoice = invoice_for(system, order["order_number"])
    system.boxes.wave_admin("PATCH", f"invoices/{invoice['id']}", {"memo": "Edited in Wave", "poNumber": "PO-77"})
    system.settle()
    assert (orders(system)[0]["notes"], orders(system)[0]["po_number"]) == ("Edited in Wave", "PO-77")

    lines = [{**line, "quantity": "9"} for line in orders(system)[0]["lines"]]
    system.boxes.cp("PATCH", f"orders/{order['id']}", {"lines": lines})
    system.settle()
    assert [float(i["quantity"]) for i in invoice_for(system, order["order_number"])["items"]] == [9.0, 9.0]


def test_a_wave_born_invoice_creates_its_order_and_customer_in_customerp(system: System) -> None:
    customer = system.ctx.wave.create_customer({"name": "Wave Buyer", "email": "buyer@wave.test"})
    product = system.ctx.wave.create_product(
        {"name": "Wave Gadget", "unitPrice": "12.5", "incomeAccountId": system.ctx.wave.list_accounts(["INCOME"])[0].id}
    )
    invoice = system.ctx.wave.create_invoice(
        {"customerId": customer.id, "invoiceNumber": "W-1001", "items": [{"productId": product.id, "quantity": "2"}]}
    )
    system.settle()
    [order] = [o for o in orders(system) if o["order_number"] == "W-1001"]
    cp = system.boxes.snapshot("customerp")
    assert next(c for c in cp["customers"] if c["id"] == order["customer_id"])["email"] == "buyer@wave.test"
    assert [(line["quantity"], line["unit_price"]) for line in order["lines"]] in (
        [("2", "12.5")],
        [("2.00000000", "12.50000000")],
        [("2", "12.50")],
        [("2.00", "12.50")],
    )
    assert order["status"] == "draft"
    assert invoice.status == "DRAFT"


def test_confirming_and_sending_an_order_approves_and_marks_the_invoice_sent(system: System) -> None:
    make_order(system)
    system.settle()
    order = orders(system)[0]
    system.boxes.cp("PATCH", f"orders/{order['id']}", {"status": "sent"})
    system.settle()
    invoice = invoice_for(system, order["order_number"])
    assert invoice["status"] in ("SENT", "OVERDUE")  # sent; overdue once its due date has passed
    assert invoice["lastSentVia"] == "MARKED_SENT"


def test_editing_a_paid_invoice_is_a_dead_letter_with_wave_s_reason_not_a_retry_loop(system: System) -> None:
    make_order(system)
    system.settle()
    order = orders(system)[0]
    system.boxes.cp("PATCH", f"orders/{order['id']}", {"status": "confirmed"})
    system.settle()
    invoice = invoice_for(system, order["order_number"])
    system.boxes.wave_admin("POST", "payments", {"invoiceId": invoice["id"], "amount": invoice["total"]["value"]})
    system.settle()
    assert orders(system)[0]["status"] == "paid"

    system.boxes.cp("PATCH", f"orders/{order['id']}", {"notes": "too late"})
    system.settle()
    [entry] = system.dead_letters()
    assert entry["entity"] == "orders"
    assert entry["error_class"] == "ForbiddenEditError"
    assert entry["attempts"] == 1


def test_an_order_line_without_a_product_is_dead_lettered_with_its_path(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 1, "orders": 0, "seed": 25})
    cp = system.boxes.snapshot("customerp")
    system.boxes.cp(
        "POST",
        "orders",
        {
            "customer_id": cp["customers"][0]["id"],
            "order_number": "FREE-1",
            "order_date": "2026-11-01",
            "lines": [
                {"product_id": cp["products"][0]["id"], "quantity": "1", "unit_price": "5"},
                {"product_id": None, "description": "Free text", "quantity": "1", "unit_price": "2"},
            ],
        },
    )
    system.settle()
    [entry] = [e for e in system.dead_letters() if e["entity"] == "orders"]
    assert entry["field_paths"] == ["lines.1.product_id"]
    assert [i for i in invoices(system) if i["invoiceNumber"] == "FREE-1"] == []


def test_deleting_an_order_deletes_its_invoice(system: System) -> None:
    make_order(system, number="SO-1")
    make_order(system, number="SO-2")
    system.settle()
    doomed = orders(system)[0]
    system.boxes.cp("DELETE", f"orders/{doomed['id']}")
    system.settle()
    assert [i for i in invoices(system) if i["invoiceNumber"] == doomed["order_number"]] == []
    assert len(invoices(system)) == 1


def test_onboarding_matches_an_existing_invoice_by_number(system: System) -> None:
    order = make_order(system)
    # Sync customers and products only, then make the invoice in Wave by hand with the order's number.
    from producers.pollers import Poller

    for entity in ("customers", "products"):
        Poller(system.ctx, "wave", entity).run()
        Poller(system.ctx, "customerp", entity).run()
    system.wait_idle()
    wave = system.boxes.snapshot("wave")
    system.ctx.wave.create_invoice(
        {
            "customerId": wave["customers"][0]["id"],
            "invoiceNumber": order["order_number"],
            "items": [{"productId": wave["products"][0]["id"], "quantity": "1"}],
        }
    )
    system.settle()
    assert len([i for i in invoices(system) if i["invoiceNumber"] == order["order_number"]]) == 1
    assert len(orders(system)) == 1


def test_free_text_lines_use_the_fallback_product_and_settle_without_drift(system: System) -> None:
    from shared.context import Context

    fallback = system.ctx.wave.create_product({"name": "Freight", "unitPrice": "25", "description": "Carriage"})
    system.stop_worker()
    system.settings = system.settings.model_copy(update={"fallback_product_id": fallback.id})
    system.ctx = Context.from_settings(system.settings)
    system.start_worker()
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 1, "orders": 0, "seed": 31})
    cp = system.boxes.snapshot("customerp")
    lines = [
        {"product_id": cp["products"][0]["id"], "quantity": "1", "unit_price": "5"},
        {"product_id": None, "description": "Free text", "quantity": "1", "unit_price": "2"},
        {"product_id": None, "description": None, "quantity": "2", "unit_price": "3"},
    ]
    base = {"customer_id": cp["customers"][0]["id"], "order_date": "2026-11-01"}
    system.boxes.cp("POST", "orders", {**base, "order_number": "FREE-1", "lines": lines[:2]})
    system.boxes.cp("POST", "orders", {**base, "order_number": "FREE-2", "status": "confirmed", "lines": lines[:2]})
    system.converge()
    assert [(e["source_id"], e["reason"]) for e in system.dead_letters()] == []
    invoice = invoice_for(system, "FREE-1")
    assert [i["product"]["id"] for i in invoice["items"]][1] == fallback.id
    assert [i["description"] for i in invoice["items"]][1] == "Free text"
    reports = system.check()
    assert [r.problems for r in reports] == [0, 0, 0], reports
    # Settled: more poll rounds write nothing, and an edit in Wave reaches the order's free-text line.
    before = system.writes()
    system.settle()
    assert system.writes() == before
    items = [
        {
            "productId": i["product"]["id"],
            "description": i["description"],
            "quantity": i["quantity"],
            "unitPrice": i["unitPrice"],
        }
        for i in invoice["items"]
    ]
    items[1]["description"] = "Free text, edited in Wave"
    system.ctx.wave.patch_invoice(invoice["id"], {"items": items})
    system.settle()
    order = next(o for o in orders(system) if o["order_number"] == "FREE-1")
    assert (order["lines"][1]["product_id"], order["lines"][1]["description"]) == (None, "Free text, edited in Wave")


def test_one_worker_on_every_queue_takes_customers_and_products_before_the_orders_that_need_them(
    system: System,
) -> None:
    """A worker consuming every queue takes them in priority order (control, customers, products, orders): in a
    backfill an order finds its customer already linked, instead of syncing it inline with one more Customerp read
    (and the customer's own message then finding nothing to do)."""
    from producers.pollers import Poller

    system.stop_worker()
    system.boxes.cp("POST", "seed", {"customers": 4, "products": 1, "orders": 0, "seed": 41})
    cp = system.boxes.snapshot("customerp")
    product = cp["products"][0]["id"]
    for n, customer in enumerate(reversed(cp["customers"])):  # the first order needs the last customer queued
        line = {"product_id": product, "quantity": "1", "unit_price": "10"}
        body = {"customer_id": customer["id"], "order_number": f"SO-{n}", "order_date": "2026-11-20", "lines": [line]}
        system.boxes.cp("POST", "orders", body)
    for entity in ("customers", "products", "orders"):
        Poller(system.ctx, "wave", entity).run()  # Wave is empty: its index is complete
    for entity in ("orders", "customers", "products"):  # every order is queued before any customer
        assert Poller(system.ctx, "customerp", entity).run().enqueued >= 1
    system.boxes.http.delete(f"{system.boxes.customerp.url}/_admin/counters").raise_for_status()

    system.start_worker(concurrency=1)  # one message at a time: the order they are taken in is the order synced
    system.wait_idle()
    assert len(invoices(system)) == 4
    reads = {name: count for name, count in system.boxes.counters("customerp").items() if name.endswith(".get")}
    assert reads == {}, f"an order synced a dependency inline: {reads}"
