"""The Wave error policy as a table: HTTP status, top-level errors[], didSucceed=false, transport failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.errors import (
    AuthError,
    ForbiddenEditError,
    InvalidDataError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
)
from shared.wave.client import WaveClient

TOKEN = "tok-SECRET-123"
NOW_CUSTOMER = {
    "id": "Q3VzdG9tZXI6MQ==",
    "name": "Ann",
    "createdAt": "2024-01-01T00:00:00.000Z",
    "modifiedAt": "2024-01-01T00:00:00.000Z",
}


def reply(
    status: int = 200, body: Any = None, *, text: str | None = None, headers: dict[str, str] | None = None
) -> Any:
    content = text.encode() if text is not None else json.dumps(body).encode()
    return lambda _request: httpx.Response(status, content=content, headers=headers or {})


def gql_error(code: str | None, message: str = "boom", path: list[str] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if code is not None:
        error["extensions"] = {"code": code, "id": "e486c5f4"}
    if path is not None:
        error["path"] = path
    return error


def raising(exc: Exception) -> Any:
    def handler(_request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


def payload(**fields: Any) -> dict[str, Any]:
    return {"data": {"customerCreate": {"customer": None, **fields}}}


GET = "get"  # client.get_customer(...)
CREATE = "create"  # client.create_customer(...)


@dataclass(frozen=True)
class Case:
    name: str
    handler: Callable[[httpx.Request], httpx.Response]
    expected: type[SyncError]
    call: str = GET
    retry_after: float | None = None
    field_paths: tuple[tuple[str, ...], ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def rfc_date_in(seconds: float) -> str:
    """An HTTP date `seconds` from now, made when the test runs (not at import, which may be long before)."""
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds), usegmt=True)


CASES = [
    # --- HTTP status first
    Case("429 with seconds", reply(429, {}, headers={"Retry-After": "12"}), RateLimitedError, retry_after=12),
    Case("429 without Retry-After", reply(429, text=""), RateLimitedError),
    Case("429 on a write", reply(429, {}, headers={"Retry-After": "3"}), RateLimitedError, CREATE, retry_after=3),
    Case("500", reply(500, text="oops"), RetryableError),
    Case("502 html", reply(502, text="<html>Bad gateway</html>"), RetryableError),
    Case("503 retry-after", reply(503, text="", headers={"Retry-After": "5"}), RetryableError, retry_after=5),
    Case("504", reply(504, text=""), RetryableError),
    Case("408", reply(408, text=""), RetryableError),
    Case("401", reply(401, {"errors": [gql_error("UNAUTHENTICATED")]}), AuthError),
    Case("403", reply(403, text="Forbidden"), AuthError),
    Case("301 redirect", reply(301, text="", headers={"Location": "https://elsewhere"}), AuthError),
    Case("400 validation body", reply(400, {"errors": [gql_error("GRAPHQL_VALIDATION_FAILED")]}), PermanentError),
    Case("400 unauthenticated body", reply(400, {"errors": [gql_error("UNAUTHENTICATED")]}), AuthError),
    Case("400 no body", reply(400, text=""), PermanentError),
    Case("404 html", reply(404, text="<html>Not Found</html>"), PermanentError),
    Case("413", reply(413, text="too large"), PermanentError),
    # --- top-level errors[] by extensions.code
    Case("UNAUTHENTICATED", reply(200, {"errors": [gql_error("UNAUTHENTICATED")]}), AuthError),
    Case("FORBIDDEN", reply(200, {"errors": [gql_error("FORBIDDEN")]}), AuthError),
    Case(
        "NOT_FOUND record",
        reply(
            200,
            {
                "data": {"business": {"customer": None}},
                "errors": [gql_error("NOT_FOUND", "x", ["business", "customer"])],
            },
        ),
        NotFoundError,
    ),
    Case(
        "NOT_FOUND business = wrong configuration",
        reply(200, {"data": {"business": None}, "errors": [gql_error("NOT_FOUND", "x", ["business"])]}),
        AuthError,
    ),
    Case("GRAPHQL_VALIDATION_FAILED", reply(200, {"errors": [gql_error("GRAPHQL_VALIDATION_FAILED")]}), PermanentError),
    Case("GRAPHQL_PARSE_FAILED", reply(200, {"errors": [gql_error("GRAPHQL_PARSE_FAILED")]}), PermanentError),
    Case("BAD_USER_INPUT", reply(200, {"errors": [gql_error("BAD_USER_INPUT")]}), PermanentError),
    Case("INTERNAL_SERVER_ERROR", reply(200, {"errors": [gql_error("INTERNAL_SERVER_ERROR")]}), RetryableError),
    Case("THROTTLED", reply(200, {"errors": [gql_error("THROTTLED")]}), RateLimitedError),
    Case("unknown code", reply(200, {"errors": [gql_error("SOMETHING_NEW")]}), RetryableError),
    Case("no extensions", reply(200, {"errors": [gql_error(None, "Node could not be found")]}), RetryableError),
    Case("error not an object", reply(200, {"errors": ["weird"]}), RetryableError),
    Case(
        "most severe wins",
        reply(200, {"errors": [gql_error("INTERNAL_SERVER_ERROR"), gql_error("UNAUTHENTICATED")]}),
        AuthError,
    ),
    # --- malformed answers
    Case("200 html page", reply(200, text="<html><body>maintenance</body></html>"), RetryableError),
    Case("200 truncated json", reply(200, text='{"data": {"business": {'), RetryableError),
    Case("200 empty body", reply(200, text=""), RetryableError),
    Case("200 json list", reply(200, [1, 2]), RetryableError),
    Case("200 missing data", reply(200, {"extensions": {}}), RetryableError),
    Case("200 null data", reply(200, {"data": None}), RetryableError),
    Case("200 data missing business", reply(200, {"data": {}}), PermanentError),
    Case("200 business null without error", reply(200, {"data": {"business": None}}), PermanentError),
    Case(
        "200 wrong types",
        reply(200, {"data": {"business": {"customer": {**NOW_CUSTOMER, "name": 5, "createdAt": "not a date"}}}}),
        PermanentError,
    ),
    Case("200 record null without error", reply(200, {"data": {"business": {"customer": None}}}), NotFoundError),
    # --- mutation payloads
    Case(
        "didSucceed false",
        reply(
            200,
            payload(
                didSucceed=False, inputErrors=[{"path": ["input", "name"], "message": "Required", "code": "REQUIRED"}]
            ),
        ),
        InvalidDataError,
        CREATE,
        field_paths=(("name",),),
    ),
    Case(
        "didSucceed false nested path",
        reply(
            200,
            payload(
                didSucceed=False,
                inputErrors=[{"path": ["input", "address", "provinceCode"], "message": "bad", "code": "INVALID"}],
            ),
        ),
        InvalidDataError,
        CREATE,
        field_paths=(("address", "provinceCode"),),
    ),
    Case(
        "INVALID_STATE",
        reply(
            200,
            payload(
                didSucceed=False, inputErrors=[{"path": ["input", "id"], "message": "paid", "code": "INVALID_STATE"}]
            ),
        ),
        ForbiddenEditError,
        CREATE,
        field_paths=(("id",),),
    ),
    Case(
        "forbidden by message",
        reply(
            200, payload(didSucceed=False, inputErrors=[{"path": None, "message": "This invoice cannot be edited."}])
        ),
        ForbiddenEditError,
        CREATE,
    ),
    Case(
        "didSucceed false, no reasons",
        reply(200, payload(didSucceed=False, inputErrors=None)),
        InvalidDataError,
        CREATE,
    ),
    Case(
        "NOT_FOUND on own id",
        reply(
            200,
            payload(didSucceed=False, inputErrors=[{"path": ["input", "id"], "message": "gone", "code": "NOT_FOUND"}]),
        ),
        NotFoundError,
        CREATE,
    ),
    Case(
        "NOT_FOUND on a reference",
        reply(
            200,
            payload(
                didSucceed=False, inputErrors=[{"path": ["input", "customerId"], "message": "x", "code": "NOT_FOUND"}]
            ),
        ),
        InvalidDataError,
        CREATE,
        field_paths=(("customerId",),),
    ),
    Case("payload null", reply(200, {"data": {"customerCreate": None}}), PermanentError, CREATE),
    Case("succeeded without entity", reply(200, payload(didSucceed=True)), PermanentError, CREATE),
    Case(
        "succeeded, entity key missing",
        reply(200, {"data": {"customerCreate": {"didSucceed": True}}}),
        PermanentError,
        CREATE,
    ),
    # --- transport
    Case("read timeout", raising(httpx.ReadTimeout("slow")), RetryableError),
    Case("connect timeout", raising(httpx.ConnectTimeout("slow")), RetryableError),
    Case("connect error", raising(httpx.ConnectError("refused")), RetryableError),
    Case("remote protocol error", raising(httpx.RemoteProtocolError("cut")), RetryableError),
    Case("read error", raising(httpx.ReadError("reset")), RetryableError, CREATE),
    Case("write error", raising(httpx.WriteError("pipe")), RetryableError),
    Case("unsupported protocol", raising(httpx.UnsupportedProtocol("ftp")), AuthError),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_wave_error_table(case: Case) -> None:
    client = WaveClient(
        "https://wave.test/graphql/public", TOKEN, "QnVzaW5lc3M6MQ==", transport=httpx.MockTransport(case.handler)
    )
    call: Callable[[], object] = (
        (lambda: client.get_customer("Q3VzdG9tZXI6MQ=="))
        if case.call == GET
        else (lambda: client.create_customer({"name": "Ann"}))
    )
    with client, pytest.raises(SyncError) as caught:
        call()
    error = caught.value
    assert type(error) is case.expected, repr(error)
    assert error.system == "wave"
    assert TOKEN not in str(error)
    if isinstance(error, RetryableError):
        assert error.retry_after == case.retry_after
    if case.field_paths is not None:
        assert isinstance(error, PermanentError)
        assert tuple(e.path for e in error.field_errors) == case.field_paths


def test_retry_after_as_http_date_is_seconds_from_now() -> None:
    client = WaveClient(
        "https://wave.test/graphql/public",
        TOKEN,
        "QnVzaW5lc3M6MQ==",
        transport=httpx.MockTransport(reply(429, {}, headers={"Retry-After": rfc_date_in(30)})),
    )
    with client, pytest.raises(RateLimitedError) as caught:
        client.get_business()
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 31


def test_a_token_echoed_by_the_server_is_scrubbed() -> None:
    handler = reply(200, {"errors": [gql_error("UNAUTHENTICATED", f"token {TOKEN} expired")]})
    client = WaveClient(
        "https://wave.test/graphql/public", TOKEN, "QnVzaW5lc3M6MQ==", transport=httpx.MockTransport(handler)
    )
    with client, pytest.raises(AuthError) as caught:
        client.get_business()
    assert TOKEN not in str(caught.value)
    assert TOKEN not in repr(caught.value)


@pytest.mark.parametrize(
    ("answer", "cooled"),
    [
        (reply(200, {"errors": [gql_error("THROTTLED")]}), [1.0]),
        (reply(429, {"errors": []}, headers={"Retry-After": "3"}), []),  # the transport has seen this one
        (reply(503, text="busy"), []),
    ],
    ids=["THROTTLED in a 200", "HTTP 429", "HTTP 503"],
)
def test_throttling_the_transport_cannot_see_slows_the_fleet(answer: Any, cooled: list[float]) -> None:
    seen: list[float] = []
    client = WaveClient(
        "https://wave.test/graphql/public",
        TOKEN,
        "biz",
        transport=httpx.MockTransport(answer),
        on_throttled=seen.append,
    )
    with pytest.raises(RetryableError):
        client.get_customer("Q3VzdG9tZXI6MQ==")
    assert seen == cooled
