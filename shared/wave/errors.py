"""Wave failures classified once, as tables: HTTP status, then top-level `errors[]`, then `didSucceed: false`.

Decisions (Wave documents only the bodies; see the team's Wave API notes, §2-§3):

* HTTP status first. 429 -> RateLimitedError (Retry-After in seconds or as an HTTP-date, read by
  shared/ratelimit.py like every Retry-After); 408/425/5xx -> RetryableError; 401/403 -> AuthError; 3xx ->
  AuthError (the URL points at the wrong place); any other 4xx -> classified by the body's error codes when it
  has any (Apollo-style servers answer validation errors with 400), else PermanentError.
* Top-level `errors[]` by `extensions.code` (GRAPHQL_CODES below). NOT_FOUND on the `business` field means the
  configured business id is wrong: AuthError (a configuration stop, not a missing record). An unknown or missing
  code is RetryableError: Wave has reported transient "Node could not be found" errors, and a task that keeps
  failing dead-letters after its retries anyway. With several errors the most severe class wins.
* Mutation payload `didSucceed: false` -> InvalidDataError with one FieldError per inputError (path without the
  leading "input"); code INVALID_STATE or a "cannot be edited/deleted" message -> ForbiddenEditError; NOT_FOUND on
  the mutation's own id (`input.id` / `input.invoiceId`) -> NotFoundError.
* Malformed answers: a body that is not JSON (an HTML error page, a truncated transfer) or a JSON object without
  `data` is RetryableError (a proxy or a broken connection, not our request). A well-formed 200 whose `data` does
  not fit our models (missing keys, wrong types) is PermanentError: Wave changed its schema or our documents are
  wrong, and retrying will not help.
* Transport: timeouts, connection/read/write errors and protocol errors are RetryableError (a write may or may not
  have been applied: the caller must reconcile before re-creating). A malformed URL or an unsupported scheme is
  AuthError (configuration).
Messages never contain the token: they are built from the operation name, the status and Wave's own messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from shared.errors import (
    AuthError,
    FieldError,
    ForbiddenEditError,
    InvalidDataError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
    SyncError,
)
from shared.ratelimit import retry_after_seconds

SYSTEM = "wave"

# HTTP statuses decided before the body is read (the rest of 4xx: see `classify_http`).
HTTP_STATUS: dict[int, type[SyncError]] = {
    401: AuthError,
    403: AuthError,
    408: RetryableError,
    425: RetryableError,
    429: RateLimitedError,
}

# Top-level errors[].extensions.code -> class.
GRAPHQL_CODES: dict[str, type[SyncError]] = {
    "UNAUTHENTICATED": AuthError,
    "FORBIDDEN": AuthError,
    "NOT_FOUND": NotFoundError,
    "GRAPHQL_PARSE_FAILED": PermanentError,
    "GRAPHQL_VALIDATION_FAILED": PermanentError,
    "BAD_USER_INPUT": PermanentError,
    "VARIABLE_VALUE": PermanentError,
    "BAD_REQUEST": PermanentError,
    "INTERNAL_SERVER_ERROR": RetryableError,
    "THROTTLED": RateLimitedError,
}
UNKNOWN_GRAPHQL_CODE: type[SyncError] = RetryableError

# inputErrors[].code -> class (anything else is InvalidDataError).
INPUT_ERROR_CODES: dict[str, type[PermanentError]] = {"INVALID_STATE": ForbiddenEditError}
FORBIDDEN_MESSAGE = re.compile(
    r"\b(cannot|can't|can not|not allowed to) be (edited|changed|modified|deleted|updated)\b"
)
TARGET_ID_FIELDS = frozenset({"id", "invoiceId"})

# Transport failures, most specific first.
TRANSPORT_ERRORS: tuple[tuple[type[Exception], type[SyncError]], ...] = (
    (httpx.TimeoutException, RetryableError),
    (httpx.UnsupportedProtocol, AuthError),
    (httpx.InvalidURL, AuthError),
    (httpx.NetworkError, RetryableError),
    (httpx.RemoteProtocolError, RetryableError),
    (httpx.ProxyError, RetryableError),
    (httpx.DecodingError, RetryableError),
    (httpx.HTTPError, RetryableError),
)

# When one response carries several errors, the first class in this list that occurs wins.
SEVERITY: tuple[type[SyncError], ...] = (AuthError, PermanentError, NotFoundError, RateLimitedError, RetryableError)

_MAX_MESSAGE = 300


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _make(cls: type[SyncError], message: str, retry_after: float | None = None) -> SyncError:
    if issubclass(cls, RetryableError):
        return cls(_short(message), system=SYSTEM, retry_after=retry_after)
    return cls(_short(message), system=SYSTEM)


def classify_transport(operation: str, exc: Exception) -> SyncError:
    for exc_type, cls in TRANSPORT_ERRORS:
        if isinstance(exc, exc_type):
            return _make(cls, f"{operation}: {type(exc).__name__} talking to Wave")
    return _make(RetryableError, f"{operation}: {type(exc).__name__} talking to Wave")


def _error_class(error: Any) -> tuple[type[SyncError], str]:
    if not isinstance(error, Mapping):
        return UNKNOWN_GRAPHQL_CODE, str(error)
    extensions = error.get("extensions")
    code = extensions.get("code") if isinstance(extensions, Mapping) else None
    message = str(error.get("message") or "")
    cls = GRAPHQL_CODES.get(code, UNKNOWN_GRAPHQL_CODE) if isinstance(code, str) else UNKNOWN_GRAPHQL_CODE
    if cls is NotFoundError and list(error.get("path") or []) == ["business"]:
        cls = AuthError  # the configured business id does not exist for this token
    return cls, f"{code or 'no code'}: {message}"


def classify_graphql_errors(operation: str, errors: Sequence[Any], retry_after: float | None = None) -> SyncError:
    """One exception for a non-empty top-level `errors` list, the most severe class winning."""
    classified = [_error_class(e) for e in errors] or [(UNKNOWN_GRAPHQL_CODE, "empty errors list")]
    for cls in SEVERITY:
        messages = [m for c, m in classified if issubclass(c, cls)]
        if messages:
            winner = next(c for c, _m in classified if issubclass(c, cls))
            return _make(winner, f"{operation}: " + "; ".join(messages), retry_after)
    raise AssertionError("SEVERITY covers every SyncError subclass the tables use")  # pragma: no cover


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def classify_http(operation: str, status: int, headers: Mapping[str, str], content: bytes) -> dict[str, Any]:
    """The `data` object of a successful GraphQL response, or the classified exception raised."""
    retry_after = retry_after_seconds(headers)
    body = _json(content)
    errors = body.get("errors") if isinstance(body, dict) else None
    has_errors = isinstance(errors, list) and bool(errors)
    if status in HTTP_STATUS:
        raise _make(HTTP_STATUS[status], f"{operation}: HTTP {status}", retry_after)
    if status >= 500:
        raise _make(RetryableError, f"{operation}: HTTP {status} from Wave", retry_after)
    if 300 <= status < 400:
        raise _make(AuthError, f"{operation}: HTTP {status} redirect; check the Wave URL")
    if status >= 400 or status < 200:
        if has_errors:
            assert isinstance(errors, list)
            raise classify_graphql_errors(operation, errors, retry_after)
        raise _make(PermanentError, f"{operation}: HTTP {status} from Wave")
    if not isinstance(body, dict):
        kind = "an empty body" if not content.strip() else "a body that is not JSON (HTML page or truncated)"
        raise _make(RetryableError, f"{operation}: Wave answered HTTP {status} with {kind}")
    if has_errors:
        assert isinstance(errors, list)
        raise classify_graphql_errors(operation, errors, retry_after)
    data = body.get("data")
    if not isinstance(data, dict):
        raise _make(RetryableError, f"{operation}: Wave answered without `data`")
    return data


def credential_rejected(status: int, content: bytes) -> bool:
    """Whether an AuthError answer refused the token itself (HTTP 401, or an `UNAUTHENTICATED` error in any status):
    the case where an OAuth client refreshes once and asks again. 403/FORBIDDEN and a wrong business are not."""
    if status == 401:
        return True
    body = _json(content)
    errors = body.get("errors") if isinstance(body, dict) else None
    return isinstance(errors, list) and any(_error_class(e)[1].startswith("UNAUTHENTICATED:") for e in errors)


def _field_error(raw: Any) -> FieldError:
    if not isinstance(raw, Mapping):
        return FieldError((), str(raw), "")
    path = tuple(str(p) for p in (raw.get("path") or []))
    if path[:1] == ("input",):
        path = path[1:]
    return FieldError(path, str(raw.get("message") or ""), str(raw.get("code") or ""))


def classify_payload(operation: str, payload: Any) -> None:
    """Raise for a mutation payload that did not succeed; return when `didSucceed` is true."""
    if not isinstance(payload, Mapping):
        raise _make(PermanentError, f"{operation}: Wave returned no mutation payload")
    if payload.get("didSucceed") is True:
        return
    raw_errors = payload.get("inputErrors")
    field_errors = [_field_error(e) for e in raw_errors] if isinstance(raw_errors, list) else []
    if not field_errors:
        message = f"{operation}: Wave refused the change without saying why (an id from another business?)"
        raise InvalidDataError(message, system=SYSTEM)
    for error in field_errors:
        if error.code == "NOT_FOUND" and error.path and error.path[0] in TARGET_ID_FIELDS and len(error.path) == 1:
            raise NotFoundError(_short(f"{operation}: {error.message}"), system=SYSTEM)
    forbidden = any(
        INPUT_ERROR_CODES.get(e.code) is ForbiddenEditError or FORBIDDEN_MESSAGE.search(e.message.lower())
        for e in field_errors
    )
    cls = ForbiddenEditError if forbidden else InvalidDataError
    raise cls(f"{operation}: Wave refused the input", system=SYSTEM, field_errors=field_errors)
