"""Wave's captured response shapes and the sandbox's earlier ones read alike through the client and the mapping.

Reference notes §16: an empty list reports `totalPages: 1`, Decimals come back unpadded (`"100"`, `"10.5"`),
unset customer strings come back as `""`. The sandbox serves those by default and the earlier forms (`0`,
`"100.00"`, `null`) with `legacy_shapes=True`; each test runs against both and checks the raw shape, then that
the typed client and the canonical mapping see the same thing either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from sandboxes.serve import ServerThread
from sandboxes.wave import DEFAULT_BUSINESS_ID, DEFAULT_TOKEN, GRAPHQL_PATH, WaveSandboxConfig, create_app
from shared.mapping import customers as customer_map
from shared.mapping import orders as order_map
from shared.mapping import products as product_map
from shared.mapping.fields import canonical_from
from shared.wave.client import WaveClient

MODES = {"captured": False, "legacy": True}


@pytest.fixture(scope="module")
def _servers() -> Iterator[dict[bool, ServerThread]]:
    servers = {
        legacy: ServerThread(create_app(WaveSandboxConfig(legacy_shapes=legacy))).start() for legacy in (False, True)
    }
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=list(MODES), ids=list(MODES))
def mode(request: pytest.FixtureRequest, _servers: dict[bool, ServerThread]) -> tuple[bool, str]:
    legacy = MODES[request.param]
    server = _servers[legacy]
    httpx.post(f"{server.url}/_admin/reset").raise_for_status()
    return legacy, server.url


def _raw(url: str, query: str, variables: dict[str, Any]) -> Any:
    response = httpx.post(
        url + GRAPHQL_PATH,
        json={"query": query, "variables": {"b": DEFAULT_BUSINESS_ID, **variables}},
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["business"]


def _client(url: str) -> WaveClient:
    return WaveClient(url + GRAPHQL_PATH, DEFAULT_TOKEN, DEFAULT_BUSINESS_ID)


def test_an_empty_list_reports_one_page_and_the_client_reads_it_as_empty_in_one_call(mode: tuple[bool, str]) -> None:
    legacy, url = mode
    query = "query($b: ID!) { business(id: $b) { customers { pageInfo { currentPage totalPages totalCount } } } }"
    info = _raw(url, query, {})["customers"]["pageInfo"]
    assert info == {"currentPage": 1, "totalPages": 0 if legacy else 1, "totalCount": 0}

    httpx.delete(f"{url}/_admin/counters").raise_for_status()
    with _client(url) as wave:
        assert list(wave.iter_customers()) == []
        assert list(wave.iter_products()) == []
        assert list(wave.iter_invoices()) == []
    calls = httpx.get(f"{url}/_admin/counters").json()["calls"]
    assert calls == {"business.customers": 1, "business.products": 1, "business.invoices": 1}


def test_decimals_come_back_unpadded_and_read_as_the_same_numbers(mode: tuple[bool, str]) -> None:
    legacy, url = mode
    with _client(url) as wave:
        customer = wave.create_customer({"name": "Decimal Buyer"})
        whole = wave.create_product({"name": "Whole", "unitPrice": "100", "incomeAccountId": _income(wave)})
        half = wave.create_product({"name": "Half", "unitPrice": "10.50", "incomeAccountId": _income(wave)})
        invoice = wave.create_invoice(
            {
                "customerId": customer.id,
                "items": [{"productId": whole.id, "quantity": "2"}, {"productId": half.id, "quantity": "1.5"}],
            }
        )
        raw = _raw(
            url,
            "query($b: ID!) { business(id: $b) { products(sort: [NAME_ASC]) { edges { node { unitPrice } } } } }",
            {},
        )
        assert [e["node"]["unitPrice"] for e in raw["products"]["edges"]] == (
            ["10.50", "100.00"] if legacy else ["10.5", "100"]
        )
        assert (whole.unit_price, half.unit_price) == (Decimal(100), Decimal("10.5"))
        assert [(i.quantity, i.unit_price) for i in invoice.items] == [
            (Decimal(2), Decimal(100)),
            (Decimal("1.5"), Decimal("10.5")),
        ]
        canonical = [canonical_from(p.model_dump(by_alias=True), product_map.FIELDS, "wave") for p in (whole, half)]
        assert [c["unit_price"] for c in canonical] == ["100", "10.5"]
        lines = [canonical_from(i.model_dump(by_alias=True), order_map.LINE_FIELDS, "wave") for i in invoice.items]
        assert [(line["quantity"], line["unit_price"]) for line in lines] == [("2", "100"), ("1.5", "10.5")]


def _income(wave: WaveClient) -> str:
    return wave.list_accounts(["INCOME"])[0].id


def test_unset_customer_strings_come_back_blank_and_read_as_unset(mode: tuple[bool, str]) -> None:
    legacy, url = mode
    with _client(url) as wave:
        created = wave.create_customer({"name": "Only A Name", "email": "only@example.com"})
        raw = _raw(
            url,
            "query($b: ID!, $id: ID!) { business(id: $b) { customer(id: $id) { "
            "firstName lastName displayId email mobile phone fax tollFree website internalNotes } } }",
            {"id": created.id},
        )["customer"]
        unset = None if legacy else ""
        assert raw == {
            "firstName": unset,
            "lastName": unset,
            "displayId": unset,
            "email": "only@example.com",
            "mobile": unset,
            "phone": unset,
            "fax": unset,
            "tollFree": unset,
            "website": unset,
            "internalNotes": unset,
        }
        for customer in (created, wave.get_customer(created.id), *wave.iter_customers()):
            assert (customer.phone, customer.last_name, customer.internal_notes, customer.fax) == (None,) * 4
            assert customer.email == "only@example.com"
            canonical = canonical_from(customer.model_dump(by_alias=True), customer_map.FIELDS, "wave")
            assert {k for k, v in canonical.items() if v is not None} == {"name", "email"}
