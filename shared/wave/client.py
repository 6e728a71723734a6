"""The typed, synchronous Wave GraphQL client: one request per call, errors classified, no retries.

Thread-safe (one httpx.Client per instance). Retrying is the worker base task's job: a timed-out mutation may have
been applied, so the caller must look the record up before creating it again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx
from pydantic import ValidationError

from shared.errors import AuthError, NotFoundError, PermanentError, RateLimitedError, SyncError
from shared.wave import documents as docs
from shared.wave.auth import StaticToken, TokenSource
from shared.wave.errors import SYSTEM, classify_http, classify_payload, classify_transport, credential_rejected
from shared.wave.models import (
    Page,
    WaveAccount,
    WaveBusiness,
    WaveCustomer,
    WaveInvoice,
    WaveNode,
    WaveProduct,
    WaveRecordKeys,
)

N = TypeVar("N", bound=WaveNode)
Listed = Literal["customers", "products", "invoices"]

# Per kind of record: its keys-only page document, and the filters it always sends (products archived or not).
_KEYS_PAGES: dict[Listed, tuple[str, dict[str, Any]]] = {
    "customers": (docs.CUSTOMER_KEYS_PAGE, {}),
    "products": (docs.PRODUCT_KEYS_PAGE, {"isArchived": None}),
    "invoices": (docs.INVOICE_KEYS_PAGE, {}),
}
OnCall = Callable[[str, float, int], None]

MAX_PAGES = 10_000


def format_datetime(value: datetime) -> str:
    """Wave's DateTime text (`yyyy-MM-ddThh:mm:ss.sssZ`); a naive datetime counts as UTC."""
    utc = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")  # Decimals travel as strings, never floats
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"cannot send a {type(value).__name__} to Wave")


def iterate_pages(fetch: Callable[[int], Page[N]], max_pages: int = MAX_PAGES) -> Iterator[N]:
    """Walk pages 1, 2, ... and yield each record once.

    Stops on an empty page, on the last page (currentPage >= totalPages) and on a page that repeats the previous
    one (a server ignoring `page`). Raises PermanentError when the server answers a different page number than
    asked (page ping-pong) or the walk exceeds `max_pages`.
    """
    seen: set[str] = set()
    previous: tuple[str, ...] | None = None
    page = 1
    while True:
        result = fetch(page)
        ids = tuple(item.id for item in result.items)
        if not ids or ids == previous:
            return
        if result.page != page:
            raise PermanentError(f"pagination ping-pong: asked for page {page}, got page {result.page}", system=SYSTEM)
        for item in result.items:
            if item.id not in seen:  # offset pages shift when records change mid-walk
                seen.add(item.id)
                yield item
        if result.total_pages is not None and page >= result.total_pages:
            return
        previous = ids
        page += 1
        if page > max_pages:
            raise PermanentError(f"pagination did not end after {max_pages} pages", system=SYSTEM)


class _TokenRejected(Exception):
    """Wave refused the Bearer token itself (401 / UNAUTHENTICATED): `execute` refreshes once and asks again."""

    def __init__(self, error: AuthError) -> None:
        super().__init__(error.message)
        self.error = error


def _dig(operation: str, data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping) or key not in data:
            raise PermanentError(f"{operation}: Wave's answer has no `{'.'.join(keys)}`", system=SYSTEM)
        data = data[key]
    return data


class WaveClient:
    """Wave's public GraphQL API for one business: customers, products, invoices."""

    def __init__(
        self,
        url: str,
        token: str | TokenSource,
        business_id: str,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        page_size: int = 100,
        on_call: OnCall | None = None,
        on_throttled: Callable[[float], object] | None = None,
    ) -> None:
        self.url = url
        # Wave may refuse a call as THROTTLED inside an HTTP 200, which the rate-limited transport cannot see:
        # this hook (the fleet limiter's cool_down) slows the whole fleet down for it as for an HTTP 429.
        self._on_throttled = on_throttled
        self.business_id = business_id
        self.page_size = page_size
        self._on_call = on_call
        # The one auth point: a static token, or OAuth tokens refreshed fleet-wide (shared/wave/auth.py).
        self.auth: TokenSource = StaticToken(token) if isinstance(token, str) else token
        self._http = httpx.Client(timeout=timeout, transport=transport, headers={"Content-Type": "application/json"})

    def __repr__(self) -> str:
        return f"WaveClient(url={self.url!r}, business_id={self.business_id!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> WaveClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ----- plumbing ----------------------------------------------------------------------------------------------

    def execute(self, operation: str, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """POST one document; return its `data` or raise a classified SyncError. `operation` names the call.

        A refused token (401, or 200 + UNAUTHENTICATED) is refreshed once and the call made again."""
        used: list[str] = []
        try:
            used.append(self.auth.token())
            try:
                return self._execute(operation, document, variables, used[-1])
            except _TokenRejected as rejected:
                fresh = self.auth.refresh(used[-1])
                if fresh is None or fresh == used[-1]:
                    raise rejected.error from None
                used.append(fresh)
            try:
                return self._execute(operation, document, variables, fresh)
            except _TokenRejected as again:
                raise again.error from None
        except SyncError as exc:
            for token in used:
                if token and token in exc.message:  # never let a secret reach logs or dead letters
                    exc.message = exc.message.replace(token, "***")
                    exc.args = (exc.message,)
            raise

    def _execute(self, operation: str, document: str, variables: Mapping[str, Any], token: str) -> dict[str, Any]:
        try:
            body = json.dumps({"query": document, "variables": dict(variables)}, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise PermanentError(f"{operation}: cannot encode the variables: {exc}", system=SYSTEM) from None
        started = time.monotonic()
        status = 0
        try:
            response = self._http.post(self.url, content=body, headers={"Authorization": f"Bearer {token}"})
            status = response.status_code
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise classify_transport(operation, exc) from None
        finally:
            if self._on_call is not None:
                self._on_call(operation, time.monotonic() - started, status)
        try:
            return classify_http(operation, status, response.headers, response.content)
        except AuthError as exc:
            if credential_rejected(status, response.content):
                raise _TokenRejected(exc) from None
            raise
        except RateLimitedError as exc:
            if status != 429 and self._on_throttled is not None:  # a 429 was already seen by the transport
                self._on_throttled(exc.retry_after or 1.0)
            raise

    def _mutate(self, operation: str, document: str, input: Mapping[str, Any], entity: str | None) -> Any:
        data = self.execute(operation, document, {"input": dict(input)})
        payload = data.get(operation)
        classify_payload(operation, payload)
        return _dig(operation, payload, entity) if entity else None

    @staticmethod
    def _model(operation: str, model: type[N], value: Any) -> N:
        if value is None:
            raise PermanentError(f"{operation}: Wave returned no record", system=SYSTEM)
        try:
            return model.model_validate(value)
        except ValidationError as exc:
            raise PermanentError(f"{operation}: unexpected record shape: {exc.errors()[:3]}", system=SYSTEM) from None

    def _page(self, operation: str, model: type[N], connection: Any) -> Page[N]:
        info = _dig(operation, connection, "pageInfo")
        edges = _dig(operation, connection, "edges")
        if not isinstance(edges, list) or not isinstance(info, Mapping):
            raise PermanentError(f"{operation}: malformed connection", system=SYSTEM)
        items = tuple(
            self._model(operation, model, edge.get("node"))
            for edge in edges
            if isinstance(edge, Mapping) and edge.get("node") is not None
        )
        try:
            return Page[model](  # type: ignore[valid-type]
                items=items,
                page=info.get("currentPage"),
                total_pages=info.get("totalPages"),
                total_count=info.get("totalCount"),
            )
        except ValidationError as exc:
            raise PermanentError(f"{operation}: malformed pageInfo: {exc.errors()[:3]}", system=SYSTEM) from None

    def _list_page(
        self, field: str, document: str, model: type[N], sort: str, page: int, filters: Mapping[str, Any]
    ) -> Page[N]:
        operation = f"business.{field}"
        variables: dict[str, Any] = {
            "businessId": self.business_id,
            "page": page,
            "pageSize": self.page_size,
            "sort": [sort],
            **filters,
        }
        data = self.execute(operation, document, variables)
        return self._page(operation, model, _dig(operation, data, "business", field))

    def _get(self, field: str, document: str, model: type[N], record_id: str) -> N:
        operation = f"business.{field}"
        data = self.execute(operation, document, {"businessId": self.business_id, "id": record_id})
        value = _dig(operation, data, "business", field)
        if value is None:
            raise NotFoundError(f"{operation}: {field} '{record_id}' could not be found", system=SYSTEM)
        return self._model(operation, model, value)

    @staticmethod
    def _modified(after: datetime | None, before: datetime | None) -> dict[str, Any]:
        # Filters left out of `variables` are "not provided": Wave then applies no filter.
        filters: dict[str, Any] = {}
        if after is not None:
            filters["modifiedAtAfter"] = format_datetime(after)
        if before is not None:
            filters["modifiedAtBefore"] = format_datetime(before)
        return filters

    # ----- business ----------------------------------------------------------------------------------------------

    def get_business(self) -> WaveBusiness:
        """The configured business; AuthError when the token cannot see it (a configuration check)."""
        data = self.execute("business", docs.BUSINESS, {"businessId": self.business_id})
        return self._model("business", WaveBusiness, _dig("business", data, "business"))

    def list_accounts(self, types: list[str] | None = None) -> list[WaveAccount]:
        """Chart of accounts (e.g. `types=["INCOME"]` for a product's incomeAccountId)."""
        filters = {"types": types} if types else {}

        def fetch(page: int) -> Page[WaveAccount]:
            variables = {"businessId": self.business_id, "page": page, "pageSize": self.page_size, **filters}
            data = self.execute("business.accounts", docs.ACCOUNTS_PAGE, variables)
            return self._page("business.accounts", WaveAccount, _dig("business.accounts", data, "business", "accounts"))

        return list(iterate_pages(fetch))

    # ----- customers ---------------------------------------------------------------------------------------------

    def list_customers_page(
        self, page: int, modified_after: datetime | None = None, modified_before: datetime | None = None
    ) -> Page[WaveCustomer]:
        filters = self._modified(modified_after, modified_before)
        return self._list_page("customers", docs.CUSTOMERS_PAGE, WaveCustomer, "MODIFIED_AT_ASC", page, filters)

    def iter_customers(
        self, modified_after: datetime | None = None, modified_before: datetime | None = None
    ) -> Iterator[WaveCustomer]:
        """Customers modified after `modified_after` (strictly), oldest change first."""
        return iterate_pages(lambda page: self.list_customers_page(page, modified_after, modified_before))

    def get_customer(self, customer_id: str) -> WaveCustomer:
        return self._get("customer", docs.CUSTOMER_GET, WaveCustomer, customer_id)

    def find_customers(self, email: str | None = None) -> list[WaveCustomer]:
        """Customers whose email matches (Wave compares whole addresses); all customers when `email` is None."""
        filters = {"email": email} if email is not None else {}
        return list(
            iterate_pages(
                lambda page: self._list_page(
                    "customers", docs.CUSTOMERS_PAGE, WaveCustomer, "CREATED_AT_ASC", page, filters
                )
            )
        )

    def create_customer(self, input: Mapping[str, Any]) -> WaveCustomer:
        value = self._mutate(
            "customerCreate", docs.CUSTOMER_CREATE, {**input, "businessId": self.business_id}, "customer"
        )
        return self._model("customerCreate", WaveCustomer, value)

    def patch_customer(self, customer_id: str, input: Mapping[str, Any]) -> WaveCustomer:
        value = self._mutate("customerPatch", docs.CUSTOMER_PATCH, {**input, "id": customer_id}, "customer")
        return self._model("customerPatch", WaveCustomer, value)

    def delete_customer(self, customer_id: str) -> None:
        self._mutate("customerDelete", docs.CUSTOMER_DELETE, {"id": customer_id}, None)

    # ----- products ----------------------------------------------------------------------------------------------

    def list_products_page(
        self,
        page: int,
        modified_after: datetime | None = None,
        archived: bool | None = False,
        modified_before: datetime | None = None,
    ) -> Page[WaveProduct]:
        """`archived`: False = active only (Wave's default), True = archived only, None = both (explicit null)."""
        filters = {**self._modified(modified_after, modified_before), "isArchived": archived}
        return self._list_page("products", docs.PRODUCTS_PAGE, WaveProduct, "MODIFIED_AT_ASC", page, filters)

    def iter_products(
        self,
        modified_after: datetime | None = None,
        archived: bool | None = False,
        modified_before: datetime | None = None,
    ) -> Iterator[WaveProduct]:
        return iterate_pages(lambda page: self.list_products_page(page, modified_after, archived, modified_before))

    def get_product(self, product_id: str) -> WaveProduct:
        return self._get("product", docs.PRODUCT_GET, WaveProduct, product_id)

    def create_product(self, input: Mapping[str, Any]) -> WaveProduct:
        value = self._mutate("productCreate", docs.PRODUCT_CREATE, {**input, "businessId": self.business_id}, "product")
        return self._model("productCreate", WaveProduct, value)

    def patch_product(self, product_id: str, input: Mapping[str, Any]) -> WaveProduct:
        value = self._mutate("productPatch", docs.PRODUCT_PATCH, {**input, "id": product_id}, "product")
        return self._model("productPatch", WaveProduct, value)

    def archive_product(self, product_id: str) -> WaveProduct:
        value = self._mutate("productArchive", docs.PRODUCT_ARCHIVE, {"id": product_id}, "product")
        return self._model("productArchive", WaveProduct, value)

    # ----- invoices ----------------------------------------------------------------------------------------------

    def list_invoices_page(
        self,
        page: int,
        modified_after: datetime | None = None,
        modified_before: datetime | None = None,
        *,
        customer_id: str | None = None,
    ) -> Page[WaveInvoice]:
        filters = self._modified(modified_after, modified_before)
        if customer_id is not None:
            filters["customerId"] = customer_id
        return self._list_page("invoices", docs.INVOICES_PAGE, WaveInvoice, "MODIFIED_AT_ASC", page, filters)

    def iter_invoices(
        self, modified_after: datetime | None = None, modified_before: datetime | None = None
    ) -> Iterator[WaveInvoice]:
        return iterate_pages(lambda page: self.list_invoices_page(page, modified_after, modified_before))

    def list_keys_page(self, kind: Listed, page: int, modified_after: datetime | None = None) -> Page[WaveRecordKeys]:
        """One page of `kind`'s records modified after `modified_after` (strictly), oldest change first, each as its
        id, modifiedAt and natural keys only (products archived or not): what the key index lists."""
        document, filters = _KEYS_PAGES[kind]
        filters = {**self._modified(modified_after, None), **filters}
        return self._list_page(kind, document, WaveRecordKeys, "MODIFIED_AT_ASC", page, filters)

    def get_invoice(self, invoice_id: str) -> WaveInvoice:
        return self._get("invoice", docs.INVOICE_GET, WaveInvoice, invoice_id)

    def find_invoices(self, invoice_number: str) -> list[WaveInvoice]:
        """Invoices numbered exactly `invoice_number` (Wave's filter matches substrings; this keeps exact ones)."""
        filters = {"invoiceNumber": invoice_number}
        found = iterate_pages(
            lambda page: self._list_page("invoices", docs.INVOICES_PAGE, WaveInvoice, "CREATED_AT_ASC", page, filters)
        )
        return [invoice for invoice in found if invoice.invoice_number == invoice_number]

    def create_invoice(self, input: Mapping[str, Any]) -> WaveInvoice:
        value = self._mutate("invoiceCreate", docs.INVOICE_CREATE, {**input, "businessId": self.business_id}, "invoice")
        return self._model("invoiceCreate", WaveInvoice, value)

    def patch_invoice(self, invoice_id: str, input: Mapping[str, Any]) -> WaveInvoice:
        """Omitted fields stay; `items`, when given, replaces every line."""
        value = self._mutate("invoicePatch", docs.INVOICE_PATCH, {**input, "id": invoice_id}, "invoice")
        return self._model("invoicePatch", WaveInvoice, value)

    def delete_invoice(self, invoice_id: str) -> None:
        self._mutate("invoiceDelete", docs.INVOICE_DELETE, {"invoiceId": invoice_id}, None)

    def approve_invoice(self, invoice_id: str) -> WaveInvoice:
        value = self._mutate("invoiceApprove", docs.INVOICE_APPROVE, {"invoiceId": invoice_id}, "invoice")
        return self._model("invoiceApprove", WaveInvoice, value)

    def mark_invoice_sent(
        self, invoice_id: str, method: str = "MARKED_SENT", sent_at: datetime | None = None
    ) -> WaveInvoice:
        input: dict[str, Any] = {"invoiceId": invoice_id, "sendMethod": method}
        if sent_at is not None:
            input["sentAt"] = sent_at
        value = self._mutate("invoiceMarkSent", docs.INVOICE_MARK_SENT, input, "invoice")
        return self._model("invoiceMarkSent", WaveInvoice, value)


__all__ = ["MAX_PAGES", "OnCall", "WaveClient", "format_datetime", "iterate_pages"]
