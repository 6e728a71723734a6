"""WaveClient at the transport: the variables it sends, its paginator's loop guards, and the models it returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from shared.errors import PermanentError
from shared.wave import documents as docs
from shared.wave.client import WaveClient, iterate_pages
from shared.wave.models import Page, WaveCustomer, WaveInvoice, WaveNode

BUSINESS = "QnVzaW5lc3M6MQ=="


def customer(n: int) -> dict[str, Any]:
    return {
        "id": f"c{n}",
        "name": f"Customer {n}",
        "createdAt": "2024-01-01T00:00:00.000Z",
        "modifiedAt": f"2024-01-01T00:00:{n % 60:02d}.000Z",
    }


def invoice(number: str) -> dict[str, Any]:
    return {
        "id": f"i{number}",
        "customer": {"id": "c1"},
        "status": "DRAFT",
        "invoiceNumber": number,
        "invoiceDate": "2024-01-01",
        "dueDate": "2024-01-31",
        "currency": {"code": "USD"},
        "items": None,
        "total": {"value": "0.00", "currency": {"code": "USD"}},
        "amountDue": {"value": "0.00"},
        "amountPaid": {"value": "0.00"},
        "taxTotal": {"value": "0.00"},
        "createdAt": "2024-01-01T00:00:00.000Z",
        "modifiedAt": "2024-01-01T00:00:00.000Z",
    }


class Recorder:
    """A MockTransport handler that records request bodies and answers from a function of them."""

    def __init__(self, answer: Callable[[dict[str, Any]], Any]) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        return httpx.Response(200, json=self.answer(body))

    def client(self, **kwargs: Any) -> WaveClient:
        return WaveClient(
            "https://wave.test/graphql/public", "t", BUSINESS, transport=httpx.MockTransport(self), **kwargs
        )

    @property
    def variables(self) -> list[dict[str, Any]]:
        return [r["variables"] for r in self.requests]


def connection(nodes: list[dict[str, Any]], page: int, total_pages: int | None) -> dict[str, Any]:
    return {
        "pageInfo": {"currentPage": page, "totalPages": total_pages, "totalCount": None},
        "edges": [{"node": n} for n in nodes],
    }


def test_customer_pages_send_sort_page_size_and_only_given_filters() -> None:
    recorder = Recorder(lambda b: {"data": {"business": {"customers": connection([], b["variables"]["page"], 0)}}})
    since = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    with recorder.client(page_size=50) as client:
        assert list(client.iter_customers(modified_after=since)) == []
        client.find_customers(email="a@b.example")
    first, second = recorder.variables
    assert first == {
        "businessId": BUSINESS,
        "page": 1,
        "pageSize": 50,
        "sort": ["MODIFIED_AT_ASC"],
        "modifiedAtAfter": "2024-05-01T10:00:00.123Z",
    }
    assert second["email"] == "a@b.example"
    assert "modifiedAtAfter" not in second
    assert recorder.requests[0]["query"] == docs.CUSTOMERS_PAGE


@pytest.mark.parametrize(("archived", "sent"), [(False, False), (True, True), (None, None)])
def test_products_archived_filter_is_always_explicit(archived: bool | None, sent: bool | None) -> None:
    recorder = Recorder(lambda _b: {"data": {"business": {"products": connection([], 1, 0)}}})
    with recorder.client() as client:
        list(client.iter_products(archived=archived))
    assert recorder.variables[0]["isArchived"] is sent


def test_mutations_add_business_or_record_id_and_send_decimals_as_strings() -> None:
    created = {**customer(1)}

    def answer(body: dict[str, Any]) -> Any:
        key = "customerCreate" if "customerCreate" in body["query"] else "invoicePatch"
        return {"data": {key: {"didSucceed": True, "inputErrors": [], "customer": created, "invoice": invoice("7")}}}

    recorder = Recorder(answer)
    with recorder.client() as client:
        client.create_customer({"name": "Ann"})
        client.patch_invoice(
            "i7", {"items": [{"productId": "p", "quantity": Decimal("1.50"), "unitPrice": Decimal("2")}]}
        )
        client.patch_invoice("i7", {"invoiceDate": date(2024, 2, 1)})
    assert recorder.variables[0] == {"input": {"name": "Ann", "businessId": BUSINESS}}
    assert recorder.variables[1]["input"] == {
        "items": [{"productId": "p", "quantity": "1.50", "unitPrice": "2"}],
        "id": "i7",
    }
    assert recorder.variables[2]["input"]["invoiceDate"] == "2024-02-01"


def test_unencodable_input_is_permanent() -> None:
    recorder = Recorder(lambda _b: {})
    with recorder.client() as client, pytest.raises(PermanentError):
        client.create_customer({"name": object()})
    assert recorder.requests == []


def test_find_invoices_keeps_exact_numbers_only() -> None:
    # Wave's invoiceNumber filter matches substrings: "12" also finds "112" and "120".
    nodes = [invoice("12"), invoice("112"), invoice("120")]
    recorder = Recorder(lambda _b: {"data": {"business": {"invoices": connection(nodes, 1, 1)}}})
    with recorder.client() as client:
        assert [i.invoice_number for i in client.find_invoices("12")] == ["12"]
    assert recorder.variables[0]["invoiceNumber"] == "12"


# ----- paginator -------------------------------------------------------------------------------------------------


class Node(WaveNode):
    pass


def pages(*contents: tuple[list[str], int, int | None]) -> Callable[[int], Page[Node]]:
    """fetch(page) answering the given (ids, currentPage, totalPages) in order, recording requested pages."""
    answers = list(contents)

    def fetch(_page: int) -> Page[Node]:
        ids, current, total = answers.pop(0)
        return Page[Node](items=tuple(Node(id=i) for i in ids), page=current, total_pages=total)

    return fetch


def test_paginator_stops_at_total_pages() -> None:
    fetch = pages((["a", "b"], 1, 2), (["c"], 2, 2))
    assert [n.id for n in iterate_pages(fetch)] == ["a", "b", "c"]


def test_paginator_stops_on_an_empty_page_without_total() -> None:
    fetch = pages((["a"], 1, None), (["b"], 2, None), ([], 3, None))
    assert [n.id for n in iterate_pages(fetch)] == ["a", "b"]


def test_paginator_stops_when_the_server_repeats_a_page() -> None:
    fetch = pages((["a", "b"], 1, None), (["a", "b"], 1, None))
    assert [n.id for n in iterate_pages(fetch)] == ["a", "b"]


def test_paginator_raises_on_page_ping_pong() -> None:
    fetch = pages((["a"], 1, 5), (["b"], 2, 5), (["c"], 1, 5))
    with pytest.raises(PermanentError, match="ping-pong"):
        list(iterate_pages(fetch))


def test_paginator_yields_records_shifted_across_pages_once() -> None:
    fetch = pages((["a", "b"], 1, 3), (["b", "c"], 2, 3), (["d"], 3, 3))
    assert [n.id for n in iterate_pages(fetch)] == ["a", "b", "c", "d"]


def test_paginator_has_a_hard_page_limit() -> None:
    def endless(page: int) -> Page[Node]:
        return Page[Node](items=(Node(id=str(page)),), page=page, total_pages=None)

    with pytest.raises(PermanentError, match="did not end"):
        list(iterate_pages(endless, max_pages=5))


# ----- models ----------------------------------------------------------------------------------------------------


def test_customer_model_flattens_references_to_input_names() -> None:
    model = WaveCustomer.model_validate(
        {
            **customer(1),
            "currency": {"code": "CAD"},
            "address": {"city": "Toronto", "province": {"code": "CA-ON", "name": "Ontario"}, "country": None},
            "unknownNewField": 1,
        }
    )
    assert model.currency == "CAD"
    assert model.address is not None
    assert (model.address.province_code, model.address.province_name, model.address.country_code) == (
        "CA-ON",
        "Ontario",
        None,
    )
    dumped = model.model_dump(mode="json", by_alias=True)
    assert dumped["address"]["provinceCode"] == "CA-ON"
    assert dumped["modifiedAt"] == "2024-01-01T00:00:01Z"
    assert WaveCustomer.model_validate(dumped) == model  # a dump reads back


def test_invoice_model_parses_money_dates_and_lines() -> None:
    raw = invoice("3")
    raw["items"] = [
        {
            "product": {"id": "p1"},
            "quantity": "2.5",
            "unitPrice": "4.00",
            "subtotal": {"value": "10.00"},
            "total": {"value": "10.00"},
        }
    ]
    raw["total"] = {"value": "10.00", "currency": {"code": "USD"}}
    model = WaveInvoice.model_validate(raw)
    assert model.customer_id == "c1"
    assert model.items[0].product_id == "p1"
    assert model.items[0].quantity == Decimal("2.5")
    assert model.total == Decimal("10.00")
    assert model.invoice_date == date(2024, 1, 1)
    assert model.currency == "USD"
    with pytest.raises(ValueError, match="frozen"):
        model.status = "PAID"  # type: ignore[misc]
