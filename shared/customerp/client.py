"""The typed Customerp REST client: one httpx.Client, typed records, and failures classified once, by table.

The client never retries; it tells the caller what kind of failure happened (shared/errors.py) and lets the
task layer decide. Paths, headers and semantics follow sandboxes/customerp/openapi.yaml.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from shared.customerp.models import (
    MODEL_BY_RESOURCE,
    ChangePage,
    Customer,
    Order,
    Product,
    Record,
    Resource,
    Tombstone,
)
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
from shared.ratelimit import retry_after_seconds

SYSTEM = "customerp"
API_PREFIX = "api/v1"
MAX_PAGE_SIZE = 500
# Filters GET /{resource} accepts (exact match; email, company_name and name case-insensitively).
FILTERS: dict[Resource, frozenset[str]] = {
    "customers": frozenset({"email", "customer_number", "company_name"}),
    "products": frozenset({"sku", "name"}),
    "orders": frozenset({"order_number", "customer_id"}),
}

# --- The error policy: HTTP status -> what the caller should do. ------------------------------------------
# Not listed: 2xx is success, other 3xx/4xx/5xx fall back by class (see `error_class_for_status`).
STATUS_ERRORS: dict[int, type[SyncError]] = {
    401: AuthError,  # key missing or wrong
    403: AuthError,  # key may not do this (read-only key)
    404: NotFoundError,  # never existed or deleted
    408: RetryableError,  # server gave up waiting for our request
    409: ForbiddenEditError,  # the record's state forbids it: has orders, in use, order locked
    410: NotFoundError,
    412: ConflictError,  # If-Match lost: re-read and apply again
    422: InvalidDataError,  # our values were refused; field paths in `errors`
    425: RetryableError,
    428: PermanentError,  # we did not send If-Match: a bug on our side
    429: RateLimitedError,  # back off for Retry-After
}


def error_class_for_status(status: int) -> type[SyncError]:
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return RetryableError  # includes HTML error pages from proxies
    if 300 <= status < 400:
        return AuthError  # a redirect means the base URL points at a login page or the wrong place
    return PermanentError


# Transport failures, most specific first: exception class -> what the caller should do.
TRANSPORT_ERRORS: tuple[tuple[type[Exception], type[SyncError]], ...] = (
    (httpx.UnsupportedProtocol, AuthError),  # base URL without http(s)://: configuration
    (httpx.LocalProtocolError, PermanentError),  # we built an invalid request
    (httpx.TransportError, RetryableError),  # timeouts, refused/reset connections, truncated responses, proxies
    (httpx.DecodingError, RetryableError),  # a body that cannot be decoded (broken compression)
    (httpx.HTTPError, RetryableError),
)
# Malformed bodies on 2xx answers: not JSON at all (an HTML page, a truncated document) is treated as a transient
# fault of something in between -> RetryableError; JSON of the wrong shape is a contract break that retrying
# will not fix -> PermanentError.


def _field_errors(body: Any) -> tuple[FieldError, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ()
    result = []
    for item in body["errors"]:
        if not isinstance(item, dict):
            continue
        path = item.get("path")
        parts = tuple(str(p) for p in path) if isinstance(path, list) else ()
        result.append(FieldError(parts, str(item.get("message", "")), str(item.get("code", ""))))
    return tuple(result)


def error_from_response(response: httpx.Response, operation: str, *, secret: str = "") -> SyncError:
    """Classify a non-2xx answer. Never raises; the message never contains `secret`."""
    status = response.status_code
    error_class = error_class_for_status(status)
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        reason = " ".join(str(body[k]) for k in ("code", "detail") if isinstance(body.get(k), str | int)) or "-"
        if isinstance(body.get("current_version"), int):
            reason += f" (current version {body['current_version']})"
    else:
        reason = f"non-JSON body ({response.headers.get('content-type', 'no content type')})"
    message = _redact(f"{operation}: HTTP {status}: {reason}"[:500], secret)
    if issubclass(error_class, RetryableError):
        retry_after = retry_after_seconds(response.headers)
        return error_class(message, system=SYSTEM, retry_after=retry_after)
    if issubclass(error_class, PermanentError):
        field_errors = tuple(FieldError(e.path, _redact(e.message, secret), e.code) for e in _field_errors(body))
        return error_class(message, system=SYSTEM, field_errors=field_errors)
    return error_class(message, system=SYSTEM)


def error_from_exception(exc: Exception, operation: str, *, secret: str = "") -> SyncError:
    """Classify a transport failure (no usable HTTP answer)."""
    error_class: type[SyncError] = RetryableError
    for exception_class, mapped in TRANSPORT_ERRORS:
        if isinstance(exc, exception_class):
            error_class = mapped
            break
    message = _redact(f"{operation}: {type(exc).__name__}: {exc}"[:500], secret)
    return error_class(message, system=SYSTEM)


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("updated_since must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


ModelT = TypeVar("ModelT", bound=BaseModel)


class CustomerpClient:
    """Thin typed client for one Customerp ERP. `base_url` is the server root (the API lives under /api/v1).

    `on_call(operation, seconds, status)` is called after every HTTP call (status 0 when no answer came), with
    operation names like "customers.get", the same names the sandbox counts.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        on_call: Callable[[str, float, int], None] | None = None,
    ) -> None:
        self._api_key = api_key
        self._on_call = on_call
        self._http = httpx.Client(
            base_url=base_url,
            headers={"X-API-Key": api_key, "Accept": "application/json", "User-Agent": "wavesync-customerp/1"},
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CustomerpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- change feed ----------------------------------------------------------------------------------

    @overload
    def changes(
        self,
        resource: Literal["customers"],
        *,
        updated_since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ChangePage[Customer]: ...
    @overload
    def changes(
        self,
        resource: Literal["products"],
        *,
        updated_since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ChangePage[Product]: ...
    @overload
    def changes(
        self,
        resource: Literal["orders"],
        *,
        updated_since: datetime | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> ChangePage[Order]: ...
    @overload
    def changes(
        self, resource: Resource, *, updated_since: datetime | None = None, cursor: str | None = None, limit: int = 100
    ) -> ChangePage[Any]: ...
    def changes(
        self, resource: Resource, *, updated_since: datetime | None = None, cursor: str | None = None, limit: int = 100
    ) -> ChangePage[Any]:
        """One page of changes after `cursor`, or from `updated_since` inclusive (the cursor wins if both)."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be 1..{MAX_PAGE_SIZE}")
        operation = f"{resource}.changes"
        params: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        elif updated_since is not None:
            params["updated_since"] = rfc3339(updated_since)
        body = self._json(self._request(operation, "GET", resource + "/changes", params=params), operation)
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            raise PermanentError(f"{operation}: response has no items list", system=SYSTEM)
        model = MODEL_BY_RESOURCE[resource]
        items: list[Record | Tombstone] = []
        for raw in body["items"]:
            if isinstance(raw, dict) and raw.get("deleted") is True:
                items.append(self._model(Tombstone, raw, operation))
            else:
                items.append(self._model(model, raw, operation))
        try:
            return ChangePage[Any](items=items, next_cursor=body.get("next_cursor"), has_more=body.get("has_more"))
        except ValidationError as exc:
            raise _contract_error(operation, exc) from exc

    @overload
    def iter_changes(
        self,
        resource: Literal["customers"],
        updated_since: datetime | None = None,
        cursor: str | None = None,
        *,
        limit: int = 100,
    ) -> Iterator[ChangePage[Customer]]: ...
    @overload
    def iter_changes(
        self,
        resource: Literal["products"],
        updated_since: datetime | None = None,
        cursor: str | None = None,
        *,
        limit: int = 100,
    ) -> Iterator[ChangePage[Product]]: ...
    @overload
    def iter_changes(
        self,
        resource: Literal["orders"],
        updated_since: datetime | None = None,
        cursor: str | None = None,
        *,
        limit: int = 100,
    ) -> Iterator[ChangePage[Order]]: ...
    @overload
    def iter_changes(
        self, resource: Resource, updated_since: datetime | None = None, cursor: str | None = None, *, limit: int = 100
    ) -> Iterator[ChangePage[Any]]: ...
    def iter_changes(
        self, resource: Resource, updated_since: datetime | None = None, cursor: str | None = None, *, limit: int = 100
    ) -> Iterator[ChangePage[Any]]:
        """Pages until `has_more` is false. Commit each page's `next_cursor` only after handling its items.

        Refuses to loop: a cursor the server already gave (or no cursor with has_more) is a PermanentError.
        """
        seen: set[str] = {cursor} if cursor is not None else set()
        while True:
            page = self.changes(resource, updated_since=updated_since, cursor=cursor, limit=limit)
            yield page
            if not page.has_more:
                return
            if page.next_cursor is None or page.next_cursor in seen:
                raise PermanentError(f"{resource}.changes: the feed repeated a cursor; stopping", system=SYSTEM)
            seen.add(page.next_cursor)
            cursor = page.next_cursor

    # --- reads ------------------------------------------------------------------------------------------

    @overload
    def get(self, resource: Literal["customers"], record_id: str) -> Customer: ...
    @overload
    def get(self, resource: Literal["products"], record_id: str) -> Product: ...
    @overload
    def get(self, resource: Literal["orders"], record_id: str) -> Order: ...
    @overload
    def get(self, resource: Resource, record_id: str) -> Record: ...
    def get(self, resource: Resource, record_id: str) -> Record:
        operation = f"{resource}.get"
        response = self._request(operation, "GET", _record_path(resource, record_id))
        return self._model(MODEL_BY_RESOURCE[resource], self._json(response, operation), operation)

    @overload
    def find(self, resource: Literal["customers"], **filters: str) -> list[Customer]: ...
    @overload
    def find(self, resource: Literal["products"], **filters: str) -> list[Product]: ...
    @overload
    def find(self, resource: Literal["orders"], **filters: str) -> list[Order]: ...
    @overload
    def find(self, resource: Resource, **filters: str) -> list[Record]: ...
    def find(self, resource: Resource, **filters: str) -> list[Any]:
        """Live records whose fields equal all `filters` (see FILTERS), following pages to the end."""
        unknown = set(filters) - FILTERS[resource]
        if unknown:
            raise ValueError(f"{resource} cannot be filtered by {', '.join(sorted(unknown))}")
        operation = f"{resource}.list"
        model = MODEL_BY_RESOURCE[resource]
        found: list[Record] = []
        page = 1
        while True:
            params: dict[str, str | int] = {**filters, "page": page, "limit": MAX_PAGE_SIZE}
            body = self._json(self._request(operation, "GET", resource, params=params), operation)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise PermanentError(f"{operation}: response has no items list", system=SYSTEM)
            found.extend(self._model(model, raw, operation) for raw in body["items"])
            if body.get("has_more") is not True:
                return found
            if not body["items"]:
                raise PermanentError(f"{operation}: empty page claims more pages; stopping", system=SYSTEM)
            page += 1

    # --- writes -----------------------------------------------------------------------------------------

    @overload
    def create(self, resource: Literal["customers"], body: Mapping[str, Any], *, idempotency_key: str) -> Customer: ...
    @overload
    def create(self, resource: Literal["products"], body: Mapping[str, Any], *, idempotency_key: str) -> Product: ...
    @overload
    def create(self, resource: Literal["orders"], body: Mapping[str, Any], *, idempotency_key: str) -> Order: ...
    @overload
    def create(self, resource: Resource, body: Mapping[str, Any], *, idempotency_key: str) -> Record: ...
    def create(self, resource: Resource, body: Mapping[str, Any], *, idempotency_key: str) -> Record:
        """Create once: repeating the call with the same key and body returns the same record, never a twin."""
        if not 1 <= len(idempotency_key) <= 255:
            raise ValueError("idempotency_key must be 1..255 characters")
        operation = f"{resource}.create"
        headers = {"Idempotency-Key": idempotency_key, "Content-Type": "application/json"}
        response = self._request(operation, "POST", resource, content=_dumps(body), headers=headers)
        return self._model(MODEL_BY_RESOURCE[resource], self._json(response, operation), operation)

    @overload
    def update(
        self, resource: Literal["customers"], record_id: str, body: Mapping[str, Any], *, version: int
    ) -> Customer: ...
    @overload
    def update(
        self, resource: Literal["products"], record_id: str, body: Mapping[str, Any], *, version: int
    ) -> Product: ...
    @overload
    def update(
        self, resource: Literal["orders"], record_id: str, body: Mapping[str, Any], *, version: int
    ) -> Order: ...
    @overload
    def update(self, resource: Resource, record_id: str, body: Mapping[str, Any], *, version: int) -> Record: ...
    def update(self, resource: Resource, record_id: str, body: Mapping[str, Any], *, version: int) -> Record:
        """Merge-patch the fields in `body` if the record is still at `version` (else ConflictError)."""
        operation = f"{resource}.update"
        headers = {"If-Match": f'"{version}"', "Content-Type": "application/merge-patch+json"}
        response = self._request(
            operation, "PATCH", _record_path(resource, record_id), content=_dumps(body), headers=headers
        )
        return self._model(MODEL_BY_RESOURCE[resource], self._json(response, operation), operation)

    def delete(self, resource: Resource, record_id: str, *, version: int | None = None) -> None:
        """Delete; with `version`, only if the record is still at that version. A missing record: NotFoundError."""
        headers = {"If-Match": f'"{version}"'} if version is not None else {}
        self._request(f"{resource}.delete", "DELETE", _record_path(resource, record_id), headers=headers)

    # --- plumbing ---------------------------------------------------------------------------------------

    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        started = time.monotonic()
        status = 0
        try:
            response = self._http.request(
                method, f"{API_PREFIX}/{path}", params=params, content=content, headers=headers
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            raise error_from_exception(exc, operation, secret=self._api_key) from None
        finally:
            if self._on_call is not None:
                self._on_call(operation, time.monotonic() - started, status)
        if not response.is_success:
            raise error_from_response(response, operation, secret=self._api_key)
        return response

    def _json(self, response: httpx.Response, operation: str) -> Any:
        try:
            return response.json()
        except ValueError:
            content_type = response.headers.get("content-type", "no content type")
            raise RetryableError(
                f"{operation}: HTTP {response.status_code} with a body that is not JSON ({content_type})",
                system=SYSTEM,
            ) from None

    def _model(self, model: type[ModelT], data: Any, operation: str) -> ModelT:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise _contract_error(operation, exc) from None


def _contract_error(operation: str, exc: ValidationError) -> PermanentError:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(body)"
    return PermanentError(
        f"{operation}: response breaks the contract ({exc.error_count()} errors; {where}: {first['msg']})",
        system=SYSTEM,
    )


def _record_path(resource: Resource, record_id: str) -> str:
    if not record_id:
        raise ValueError("record_id must not be empty")
    return f"{resource}/{quote(record_id, safe='')}"


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(body), default=_json_default, ensure_ascii=False).encode()
