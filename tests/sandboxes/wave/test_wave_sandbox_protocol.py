"""The Wave sandbox speaks Wave's wire protocol: auth, error shapes, ids, formats, pagination, filters, counters."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from sandboxes.wave import DEFAULT_BUSINESS_ID, DEFAULT_BUSINESS_UUID
from tests.sandboxes.wave.conftest import Sandbox, decode_id

BUSINESS = "query($b: ID!) { business(id: $b) { id name currency { code } } }"
CUSTOMER = "query($b: ID!, $id: ID!) { business(id: $b) { customer(id: $id) { id name } } }"
CUSTOMERS = """
query($b: ID!, $page: Int, $pageSize: Int, $sort: [CustomerSort!]!, $email: String,
      $after: DateTime, $before: DateTime) {
  business(id: $b) {
    customers(page: $page, pageSize: $pageSize, sort: $sort, email: $email,
              modifiedAtAfter: $after, modifiedAtBefore: $before) {
      pageInfo { currentPage totalPages totalCount }
      edges { node { id name email createdAt modifiedAt } }
    }
  }
}
"""
CREATE_CUSTOMER = """
mutation($input: CustomerCreateInput!) {
  customerCreate(input: $input) { didSucceed inputErrors { path message code } customer { id name modifiedAt } }
}
"""
PATCH_CUSTOMER = """
mutation($input: CustomerPatchInput!) {
  customerPatch(input: $input) { didSucceed inputErrors { path message code } customer { id modifiedAt } }
}
"""
PRODUCTS = """
query($b: ID!, $archived: Boolean) {
  business(id: $b) { products(isArchived: $archived, sort: [NAME_ASC]) { edges { node { name isArchived } } } }
}
"""
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def create_customer(wave: Sandbox, **fields: Any) -> dict[str, Any]:
    payload = wave.data(CREATE_CUSTOMER, {"input": {"businessId": DEFAULT_BUSINESS_ID, **fields}})["customerCreate"]
    assert payload["didSucceed"], payload
    customer: dict[str, Any] = payload["customer"]
    return customer


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert len(body["errors"]) == 1, body
    error: dict[str, Any] = body["errors"][0]
    uuid.UUID(error["extensions"]["id"])  # every error carries an id for Wave support
    return error


# ----- errors and auth -------------------------------------------------------------------------------------------


def test_unknown_business_is_not_found_with_null_data(wave: Sandbox) -> None:
    response = wave.gql(BUSINESS, {"b": "QnVzaW5lc3M6bm9wZQ=="})
    body = response.json()
    assert response.status_code == 200
    assert body["data"] == {"business": None}
    error = error_of(body)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"] == "Business 'QnVzaW5lc3M6bm9wZQ==' could not be found."
    assert error["path"] == ["business"]


@pytest.mark.parametrize("field", ["customer", "product", "invoice"])
def test_unknown_record_is_not_found_with_wave_message(wave: Sandbox, field: str) -> None:
    query = f"query($b: ID!, $id: ID!) {{ business(id: $b) {{ {field}(id: $id) {{ id }} }} }}"
    missing = "QnVzaW5lc3M6eDtDdXN0b21lcjox"
    body = wave.gql(query, {"b": DEFAULT_BUSINESS_ID, "id": missing}).json()
    assert body["data"] == {"business": {field: None}}
    error = error_of(body)
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"] == f"{field.capitalize()} '{missing}' could not be found."
    assert error["path"] == ["business", field]


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_missing_or_wrong_token_is_unauthenticated_with_http_200(wave: Sandbox, token: str | None) -> None:
    response = wave.gql(BUSINESS, {"b": DEFAULT_BUSINESS_ID}, token=token)
    assert response.status_code == 200
    assert error_of(response.json())["extensions"]["code"] == "UNAUTHENTICATED"
    assert "data" not in response.json()


def test_auth_failure_status_is_configurable(custom_wave: Callable[..., Sandbox]) -> None:
    sandbox = custom_wave(auth_failure_status=401)
    response = sandbox.gql(BUSINESS, {"b": DEFAULT_BUSINESS_ID}, token=None)
    assert response.status_code == 401
    assert error_of(response.json())["extensions"]["code"] == "UNAUTHENTICATED"


def test_unknown_argument_fails_validation_before_auth(wave: Sandbox) -> None:
    response = wave.gql('query { business(id: "x", name: "y") { id } }', token=None)
    assert response.status_code == 200
    error = error_of(response.json())
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "Unknown argument 'name'" in error["message"]


def test_unknown_field_fails_validation(wave: Sandbox) -> None:
    body = wave.gql("query($b: ID!) { business(id: $b) { customers { edges { node { sku } } } } }").json()
    assert error_of(body)["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"


def test_badly_typed_variable_is_bad_user_input(wave: Sandbox) -> None:
    body = wave.gql(CUSTOMERS, {"b": DEFAULT_BUSINESS_ID, "sort": ["SIZE_ASC"]}, token=None).json()
    assert error_of(body)["extensions"]["code"] == "BAD_USER_INPUT"


def test_syntax_error_is_parse_failure(wave: Sandbox) -> None:
    body = wave.gql("query { business(id: ").json()
    assert error_of(body)["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


def test_validation_status_is_configurable(custom_wave: Callable[..., Sandbox]) -> None:
    response = custom_wave(validation_error_status=400).gql("query { nope }")
    assert response.status_code == 400


def test_introspection_needs_no_token(wave: Sandbox) -> None:
    body = wave.gql("{ __schema { queryType { name } } }", token=None).json()
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


def test_body_without_query_is_http_400(wave: Sandbox) -> None:
    response = wave.http.post("/graphql/public", content=b"<html>", headers={"Authorization": "Bearer x"})
    assert response.status_code == 400


# ----- ids and formats -------------------------------------------------------------------------------------------


def test_ids_are_padded_base64_of_business_and_record(wave: Sandbox) -> None:
    business = wave.data(BUSINESS)["business"]
    assert decode_id(business["id"]) == f"Business:{DEFAULT_BUSINESS_UUID}"
    ids = wave.seed(customers=3, products=2, invoices=2)
    for kind, type_name in (("customers", "Customer"), ("products", "Product"), ("invoices", "Invoice")):
        for global_id in ids[kind]:
            assert len(global_id) % 4 == 0
            match = re.fullmatch(rf"Business:([0-9a-f-]+);{type_name}:(\d+)", decode_id(global_id))
            assert match, decode_id(global_id)
            assert match.group(1) == DEFAULT_BUSINESS_UUID
    invoice_number = int(decode_id(ids["invoices"][0]).rsplit(":", 1)[1])
    assert invoice_number > 10**18  # Wave's invoice ids are 64-bit


def test_values_use_wave_formats(wave: Sandbox) -> None:
    wave.seed(customers=1, products=1, invoices=1, lines=2)
    invoice = wave.snapshot()["invoices"][0]
    assert DATETIME.match(invoice["createdAt"])
    assert DATETIME.match(invoice["modifiedAt"])
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", invoice["invoiceDate"])
    assert isinstance(invoice["items"][0]["unitPrice"], str)
    assert re.fullmatch(r"-?\d+\.\d{2}", invoice["total"]["value"])
    assert invoice["total"]["raw"] == int(invoice["total"]["value"].replace(".", ""))


# ----- lists -----------------------------------------------------------------------------------------------------


def test_pages_are_one_based_with_wave_default_size_45(wave: Sandbox) -> None:
    wave.seed(customers=50)
    first = wave.data(CUSTOMERS, {"sort": ["CREATED_AT_ASC"]})["business"]["customers"]
    assert first["pageInfo"] == {"currentPage": 1, "totalPages": 2, "totalCount": 50}
    assert len(first["edges"]) == 45
    second = wave.data(CUSTOMERS, {"sort": ["CREATED_AT_ASC"], "page": 2})["business"]["customers"]
    assert len(second["edges"]) == 5
    beyond = wave.data(CUSTOMERS, {"sort": ["CREATED_AT_ASC"], "page": 9})["business"]["customers"]
    assert beyond["edges"] == []
    assert beyond["pageInfo"]["currentPage"] == 9


def test_page_size_over_the_cap_is_clamped_or_refused(wave: Sandbox, custom_wave: Callable[..., Sandbox]) -> None:
    wave.seed(customers=205)
    page = wave.data(CUSTOMERS, {"sort": ["CREATED_AT_ASC"], "pageSize": 500})["business"]["customers"]
    assert len(page["edges"]) == 200
    strict = custom_wave(page_size_overflow="error", max_page_size=10)
    body = strict.gql(CUSTOMERS, {"b": DEFAULT_BUSINESS_ID, "sort": ["NAME_ASC"], "pageSize": 11}).json()
    assert error_of(body)["extensions"]["code"] == "BAD_USER_INPUT"


def test_modified_at_sort_breaks_ties_by_id_and_filters_are_strict(wave: Sandbox) -> None:
    a = create_customer(wave, name="A")
    b = create_customer(wave, name="B")  # same millisecond as A
    wave.clock.advance(seconds=1)
    c = create_customer(wave, name="C")
    wave.clock.advance(seconds=1)
    wave.data(PATCH_CUSTOMER, {"input": {"id": a["id"], "name": "A2"}})
    assert a["modifiedAt"] == b["modifiedAt"]

    def names(**variables: Any) -> list[str]:
        page = wave.data(CUSTOMERS, {"sort": ["MODIFIED_AT_ASC"], **variables})["business"]["customers"]
        return [edge["node"]["name"] for edge in page["edges"]]

    assert names() == ["B", "C", "A2"]
    assert names(after=b["modifiedAt"]) == ["C", "A2"]  # strictly after: B itself is excluded
    assert names(before=c["modifiedAt"]) == ["B"]  # strictly before
    assert names(after=b["modifiedAt"], before="2099-01-01T00:00:00Z") == ["C", "A2"]
    assert [
        e["node"]["name"] for e in wave.data(CUSTOMERS, {"sort": ["NAME_DESC"]})["business"]["customers"]["edges"]
    ] == [
        "C",
        "B",
        "A2",
    ]


def test_email_filter_matches_whole_address_ignoring_case(wave: Sandbox) -> None:
    create_customer(wave, name="Ann", email="Ann@Example.com")
    create_customer(wave, name="Annabel", email="annabel@example.com")
    page = wave.data(CUSTOMERS, {"sort": ["NAME_ASC"], "email": "ann@example.COM"})["business"]["customers"]
    assert [e["node"]["name"] for e in page["edges"]] == ["Ann"]


def test_archived_products_are_hidden_unless_asked_for(wave: Sandbox) -> None:
    ids = wave.seed(products=2)
    wave.http.post(f"/_admin/products/{ids['products'][0]}/archive").raise_for_status()

    def archived_flags(**variables: Any) -> list[bool]:
        edges = wave.data(PRODUCTS, variables)["business"]["products"]["edges"]
        return sorted(e["node"]["isArchived"] for e in edges)

    assert archived_flags() == [False]
    assert archived_flags(archived=True) == [True]
    assert archived_flags(archived=None) == [False, True]


def test_invoice_number_filter_matches_substrings_as_wave_documents(wave: Sandbox) -> None:
    wave.seed(customers=1, products=1, invoices=12)
    query = """query($b: ID!, $n: String) { business(id: $b) {
        invoices(invoiceNumber: $n, sort: [INVOICE_NUMBER_ASC]) { edges { node { invoiceNumber } } } } }"""
    edges = wave.data(query, {"n": "1"})["business"]["invoices"]["edges"]
    assert [e["node"]["invoiceNumber"] for e in edges] == ["1", "10", "11", "12"]


# ----- counters --------------------------------------------------------------------------------------------------


def test_counters_name_each_call_by_the_root_fields_it_touches(wave: Sandbox) -> None:
    wave.data(BUSINESS)
    create_customer(wave, name="X")
    wave.data(CUSTOMERS, {"sort": ["NAME_ASC"]})
    wave.data(CUSTOMERS, {"sort": ["NAME_ASC"]})
    assert wave.calls() == {"business": 1, "customerCreate": 1, "business.customers": 2}
