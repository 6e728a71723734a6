"""CustomerpClient at the transport: the error policy as a table, malformed answers, paging and requests sent."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.customerp.client import CustomerpClient
from shared.customerp.models import Customer, Order, Tombstone
from shared.errors import (
    AuthError,
    ConflictError,
    FieldError,
    ForbiddenEditError,
    InvalidDataError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
)

SECRET = "sk-live-secret-123"
NOW = "2024-05-01T12:00:00.000000Z"
CUSTOMER = {"id": "cus_1", "company_name": "Acme", "version": 3, "created_at": NOW, "updated_at": NOW}
ORDER = {
    "id": "ord_1",
    "customer_id": "cus_1",
    "order_date": "2024-05-01",
    "lines": [{"product_id": None, "description": "x", "quantity": "1.5", "unit_price": "10"}],
    "version": 1,
    "created_at": NOW,
    "updated_at": NOW,
}
Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs: Any) -> CustomerpClient:
    return CustomerpClient("http://erp.test", SECRET, transport=httpx.MockTransport(handler), **kwargs)


def answer(status: int, body: Any = None, *, headers: dict[str, str] | None = None, text: str | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if text is not None:
            return httpx.Response(status, text=text, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def raises(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def problem(code: str, **extra: Any) -> dict[str, Any]:
    return {"title": "x", "status": 0, "code": code, "detail": "it failed", **extra}


# (case, handler, expected class, checks on the exception)
ERROR_TABLE: list[tuple[str, Handler, type[SyncError]]] = [
    ("401 wrong key", answer(401, problem("unauthenticated")), AuthError),
    ("403 read-only key", answer(403, problem("forbidden")), AuthError),
    ("404 unknown record", answer(404, problem("not_found")), NotFoundError),
    ("408 request timeout", answer(408, None), RetryableError),
    ("409 state forbids edit", answer(409, problem("order_locked")), ForbiddenEditError),
    ("410 gone", answer(410, problem("gone")), NotFoundError),
    ("412 version moved", answer(412, problem("version_mismatch", current_version=4)), ConflictError),
    ("422 invalid values", answer(422, problem("validation_failed")), InvalidDataError),
    ("428 forgot If-Match", answer(428, problem("precondition_required")), PermanentError),
    ("429 throttled", answer(429, {"errors": []}, headers={"Retry-After": "3"}), RateLimitedError),
    ("400 bad request", answer(400, problem("malformed_json")), PermanentError),
    ("413 too large", answer(413, problem("body_too_large")), PermanentError),
    ("500 server error", answer(500, problem("boom")), RetryableError),
    ("502 HTML from a proxy", answer(502, text="<html>Bad gateway</html>"), RetryableError),
    ("503 unavailable", answer(503, text="<h1>503</h1>", headers={"Retry-After": "10"}), RetryableError),
    ("301 redirect to a login page", answer(301, None, headers={"Location": "/login"}), AuthError),
    ("connect refused", raises(httpx.ConnectError("refused")), RetryableError),
    ("connect timeout", raises(httpx.ConnectTimeout("slow")), RetryableError),
    ("read timeout", raises(httpx.ReadTimeout("slow")), RetryableError),
    ("truncated response", raises(httpx.RemoteProtocolError("peer closed connection")), RetryableError),
    ("reset connection", raises(httpx.ReadError("reset by peer")), RetryableError),
    ("broken compression", raises(httpx.DecodingError("bad gzip")), RetryableError),
    ("bad base URL scheme", raises(httpx.UnsupportedProtocol("ftp")), AuthError),
    ("200 HTML page", answer(200, text="<html>Maintenance</html>"), RetryableError),
    ("200 truncated JSON", answer(200, text='{"id": "cus_1", "comp'), RetryableError),
    ("200 wrong types", answer(200, {**CUSTOMER, "version": "three"}), PermanentError),
    ("200 missing required field", answer(200, {"id": "cus_1"}), PermanentError),
    ("200 JSON array", answer(200, [1, 2]), PermanentError),
]


@pytest.mark.parametrize(("case", "handler", "expected"), ERROR_TABLE, ids=[row[0] for row in ERROR_TABLE])
def test_error_policy_table(case: str, handler: Handler, expected: type[SyncError]) -> None:
    with make_client(handler) as client, pytest.raises(SyncError) as caught:
        client.get("customers", "cus_1")

    assert type(caught.value) is expected, case
    assert caught.value.system == "customerp"
    assert SECRET not in str(caught.value)


def test_every_operation_classifies_the_same_way() -> None:
    with make_client(answer(503, text="down")) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.changes("orders"),
            lambda: client.get("orders", "ord_1"),
            lambda: client.find("orders", order_number="SO-1"),
            lambda: client.create("orders", {}, idempotency_key="k"),
            lambda: client.update("orders", "ord_1", {}, version=1),
            lambda: client.delete("orders", "ord_1"),
        ]
        for call in calls:
            with pytest.raises(RetryableError):
                call()


def test_429_retry_after_seconds_and_http_date() -> None:
    server_now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    later = format_datetime(server_now + timedelta(seconds=90), usegmt=True)
    headers = {"Retry-After": later, "Date": format_datetime(server_now, usegmt=True)}
    with make_client(answer(429, {}, headers=headers)) as client, pytest.raises(RateLimitedError) as caught:
        client.changes("customers")
    assert caught.value.retry_after == 90

    with make_client(answer(429, {}, headers={"Retry-After": "1.5"})) as client, pytest.raises(RateLimitedError) as c2:
        client.changes("customers")
    assert c2.value.retry_after == 1.5


def test_422_field_paths_become_field_errors() -> None:
    body = problem(
        "validation_failed",
        errors=[
            {"path": ["billing_address", "country_code"], "message": "bad country", "code": "invalid"},
            {"path": ["lines", 0, "quantity"], "message": "must be > 0", "code": "out_of_range"},
            "garbage",
        ],
    )
    with make_client(answer(422, body)) as client, pytest.raises(InvalidDataError) as caught:
        client.create("orders", {}, idempotency_key="k")

    assert caught.value.field_errors == (
        FieldError(("billing_address", "country_code"), "bad country", "invalid"),
        FieldError(("lines", "0", "quantity"), "must be > 0", "out_of_range"),
    )


def test_412_message_names_the_current_version() -> None:
    client = make_client(answer(412, problem("version_mismatch", current_version=9)))
    with client, pytest.raises(ConflictError, match="current version 9"):
        client.update("customers", "cus_1", {"phone": "1"}, version=3)


def test_the_api_key_never_reaches_a_message_even_when_echoed() -> None:
    with (
        make_client(
            answer(422, problem("x", detail=f"key {SECRET} is odd", errors=[{"path": [], "message": SECRET}]))
        ) as c,
        pytest.raises(InvalidDataError) as caught,
    ):
        c.create("customers", {}, idempotency_key="k")
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value.field_errors)


def test_change_page_parses_records_and_tombstones() -> None:
    body = {
        "items": [ORDER, {"id": "ord_2", "deleted": True, "version": 2, "updated_at": NOW}],
        "next_cursor": "abc",
        "has_more": False,
    }
    with make_client(answer(200, body)) as client:
        page = client.changes("orders")

    assert isinstance(page.items[0], Order)
    assert page.items[0].lines[0].quantity == Decimal("1.5")
    assert page.items[1] == Tombstone(id="ord_2", version=2, updated_at=datetime(2024, 5, 1, 12, tzinfo=UTC))
    assert (page.next_cursor, page.has_more) == ("abc", False)


@pytest.mark.parametrize(
    "body",
    [
        {"next_cursor": None, "has_more": False},
        {"items": [{"id": "ord_1"}], "next_cursor": None, "has_more": False},
        {"items": [], "next_cursor": 5, "has_more": "maybe"},
    ],
)
def test_malformed_change_pages_are_permanent(body: dict[str, Any]) -> None:
    with make_client(answer(200, body)) as client, pytest.raises(PermanentError):
        client.changes("orders")


def test_changes_sends_cursor_over_updated_since_and_formats_time() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"items": [], "next_cursor": None, "has_more": False})

    since = datetime(2024, 5, 1, 14, 0, tzinfo=UTC).astimezone()
    with make_client(handler) as client:
        client.changes("customers", updated_since=since, limit=50)
        client.changes("customers", updated_since=since, cursor="c1")
        with pytest.raises(ValueError, match="timezone"):
            client.changes("customers", updated_since=datetime(2024, 5, 1))

    assert seen[0].path == "/api/v1/customers/changes"
    assert dict(seen[0].params) == {"limit": "50", "updated_since": "2024-05-01T14:00:00.000000Z"}
    assert dict(seen[1].params) == {"limit": "100", "cursor": "c1"}


def test_iter_changes_follows_cursors_until_has_more_is_false() -> None:
    pages = {None: ("c1", True), "c1": ("c2", True), "c2": ("c2", False)}

    def handler(request: httpx.Request) -> httpx.Response:
        next_cursor, has_more = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": [CUSTOMER], "next_cursor": next_cursor, "has_more": has_more})

    with make_client(handler) as client:
        got = [page.next_cursor for page in client.iter_changes("customers")]

    assert got == ["c1", "c2", "c2"]


def test_iter_changes_refuses_a_repeated_cursor() -> None:
    loop = answer(200, {"items": [CUSTOMER], "next_cursor": "same", "has_more": True})
    with make_client(loop) as client:
        pages = client.iter_changes("customers")
        next(pages)
        next(pages)
        with pytest.raises(PermanentError, match="repeated a cursor"):
            next(pages)


def test_iter_changes_refuses_has_more_without_cursor() -> None:
    client = make_client(answer(200, {"items": [], "next_cursor": None, "has_more": True}))
    with client, pytest.raises(PermanentError):
        list(client.iter_changes("customers"))


def test_create_sends_idempotency_key_and_json_safe_values() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=ORDER)

    body = {"customer_id": "cus_1", "order_date": datetime(2024, 5, 1).date(), "lines": [{"quantity": Decimal("1.50")}]}
    with make_client(handler) as client:
        order = client.create("orders", body, idempotency_key="wave:order:9")

    assert isinstance(order, Order)
    request = seen[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/orders")
    assert request.headers["idempotency-key"] == "wave:order:9"
    assert request.headers["x-api-key"] == SECRET
    assert json.loads(request.content) == {
        "customer_id": "cus_1",
        "order_date": "2024-05-01",
        "lines": [{"quantity": "1.50"}],
    }


def test_update_sends_if_match_and_merge_patch() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=CUSTOMER)

    with make_client(handler) as client:
        customer = client.update("customers", "cus/1", {"email": None}, version=3)

    assert isinstance(customer, Customer)
    assert seen[0].headers["if-match"] == '"3"'
    assert seen[0].headers["content-type"] == "application/merge-patch+json"
    assert seen[0].url.raw_path == b"/api/v1/customers/cus%2F1"
    assert json.loads(seen[0].content) == {"email": None}


def test_delete_sends_if_match_only_with_a_version() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    with make_client(handler) as client:
        client.delete("products", "prd_1", version=2)
        client.delete("products", "prd_1")

    assert seen[0].headers["if-match"] == '"2"'
    assert "if-match" not in seen[1].headers


def test_find_pages_and_validates_filter_names() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        assert request.url.params["email"] == "a@b.example"
        return httpx.Response(
            200, json={"items": [{**CUSTOMER, "id": f"cus_{page}"}], "page": page, "has_more": page < 3}
        )

    with make_client(handler) as client:
        found = client.find("customers", email="a@b.example")
        with pytest.raises(ValueError, match="sku"):
            client.find("customers", sku="x")

    assert [c.id for c in found] == ["cus_1", "cus_2", "cus_3"]


def test_find_refuses_an_empty_page_that_claims_more() -> None:
    client = make_client(answer(200, {"items": [], "page": 1, "has_more": True}))
    with client, pytest.raises(PermanentError):
        client.find("products", sku="x")


def test_on_call_reports_operation_duration_and_status() -> None:
    calls: list[tuple[str, float, int]] = []
    client = make_client(answer(404, problem("not_found")), on_call=lambda *c: calls.append(c))
    with client, pytest.raises(NotFoundError):
        client.get("products", "prd_1")
    client = make_client(raises(httpx.ConnectError("x")), on_call=lambda *c: calls.append(c))
    with client, pytest.raises(RetryableError):
        client.get("products", "prd_1")

    assert [(op, status) for op, _, status in calls] == [("products.get", 404), ("products.get", 0)]
    assert all(seconds >= 0 for _, seconds, _ in calls)


def test_client_does_not_retry() -> None:
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        count += 1
        return httpx.Response(503)

    with make_client(handler) as client, pytest.raises(RetryableError):
        client.get("customers", "cus_1")
    assert count == 1


def test_base_url_may_carry_a_path_prefix() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json=CUSTOMER)

    with CustomerpClient("http://erp.test/erp/", SECRET, transport=httpx.MockTransport(handler)) as client:
        client.get("customers", "cus_1")

    assert seen == ["/erp/api/v1/customers/cus_1"]
