"""The Wave sandbox's in-memory records and the business rules its mutations and admin edits apply.

Mutation inputs arrive as plain JSON-like dicts keyed by Wave's input field names; rule violations raise
`InputErrors` (-> `didSucceed: false` + `inputErrors`), unknown ids raise `UnknownRecord` (-> NOT_FOUND).
inputErrors codes used: REQUIRED, INVALID, MAX_LENGTH, NOT_FOUND, DUPLICATE, INVALID_STATE.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sandboxes.wave import ids
from sandboxes.wave.config import BusinessConfig, WaveSandboxConfig
from sandboxes.wave.values import (
    INVOICE_ITEM_PLACES,
    PRODUCT_PRICE_PLACES,
    currency_exponent,
    parse_date,
    parse_datetime,
    parse_decimal,
    province_country,
    round_places,
    truncate_to_ms,
)

Path = tuple[str, ...]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Maximum lengths (UNVERIFIED upstream; Django-style limits of a typical Wave form).
CUSTOMER_LIMITS = {
    "name": 255,
    "firstName": 255,
    "lastName": 255,
    "displayId": 255,
    "email": 254,
    "mobile": 64,
    "phone": 64,
    "fax": 64,
    "tollFree": 64,
    "website": 255,
    "internalNotes": 4000,
}
ADDRESS_LIMITS = {"addressLine1": 255, "addressLine2": 255, "city": 255, "postalCode": 32}
SHIPPING_LIMITS = {"name": 255, "phone": 64, "instructions": 1000}
PRODUCT_LIMITS = {"name": 255, "description": 4000}
INVOICE_TEXT_LIMITS = {
    "title": 255,
    "subhead": 255,
    "poNumber": 255,
    "memo": 4000,
    "footer": 4000,
    "itemTitle": 255,
    "unitTitle": 255,
    "priceTitle": 255,
    "amountTitle": 255,
}
INVOICE_FLAGS = (
    "disableAmexPayments",
    "disableCreditCardPayments",
    "disableBankPayments",
    "hideName",
    "hideDescription",
    "hideUnit",
    "hidePrice",
    "hideAmount",
    "requireTermsOfServiceAgreement",
)
INVOICE_DEFAULT_TEXT = {"itemTitle": "Items", "unitTitle": "Quantity", "priceTitle": "Price", "amountTitle": "Amount"}


@dataclass(frozen=True)
class InputError:
    path: Path
    message: str
    code: str

    def as_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "message": self.message, "code": self.code}


class InputErrors(Exception):
    """The mutation is refused: `didSucceed: false` with these inputErrors."""

    def __init__(self, errors: Sequence[InputError]) -> None:
        super().__init__("; ".join(f"{'.'.join(e.path)}: {e.message}" for e in errors))
        self.errors = list(errors)


class QueryError(Exception):
    """A top-level GraphQL error with an `extensions.code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def extensions(self) -> dict[str, Any]:
        # graphql-core copies an original error's `extensions` onto the GraphQLError it reports.
        return {"code": self.code}


class UnknownRecord(QueryError):
    def __init__(self, type_name: str, global_id: str) -> None:
        super().__init__("NOT_FOUND", f"{type_name} '{global_id}' could not be found.")
        self.type_name = type_name
        self.global_id = global_id


@dataclass
class Account:
    number: int
    name: str
    type_value: str  # AccountTypeValue
    subtype_value: str  # AccountSubtypeValue
    description: str | None = None
    is_archived: bool = False


@dataclass
class Customer:
    number: int
    fields: dict[str, Any]  # CustomerCreateInput names; address/shippingDetails as normalised dicts
    created_at: datetime
    modified_at: datetime
    is_archived: bool = False
    deleted: bool = False

    @property
    def name(self) -> str:
        return str(self.fields.get("name") or "")


@dataclass
class Product:
    number: int
    name: str
    unit_price: Decimal
    created_at: datetime
    modified_at: datetime
    description: str | None = None
    income_account: int | None = None
    expense_account: int | None = None
    is_archived: bool = False
    deleted: bool = False


@dataclass
class InvoiceItem:
    product: int
    description: str | None
    quantity: Decimal
    unit_price: Decimal


@dataclass
class Payment:
    amount: Decimal
    payment_date: date
    created_at: datetime


@dataclass
class Invoice:
    number: int
    customer: int
    base_status: str  # DRAFT, SAVED, SENT or VIEWED; payments and dates derive the rest
    invoice_number: str
    invoice_date: date
    due_date: date
    currency: str
    exchange_rate: Decimal
    created_at: datetime
    modified_at: datetime
    items: list[InvoiceItem] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)
    text: dict[str, str | None] = field(default_factory=dict)  # title, subhead, poNumber, memo, footer, *Title
    flags: dict[str, bool] = field(default_factory=dict)
    last_sent_at: datetime | None = None
    last_sent_via: str | None = None
    last_viewed_at: datetime | None = None


@dataclass
class Totals:
    subtotals: list[Decimal]
    total: Decimal
    paid: Decimal

    @property
    def due(self) -> Decimal:
        return self.total - self.paid


class Business:
    """One Wave business and its records, keyed by the integer part of their global ids."""

    def __init__(self, config: BusinessConfig, created_at: datetime) -> None:
        self.uuid = config.uuid
        self.name = config.name
        self.currency = config.currency
        self.timezone = config.timezone
        self.is_archived = config.is_archived
        self.is_classic_invoicing = config.is_classic_invoicing
        self.global_id = ids.business_id(config.uuid)
        self.created_at = created_at
        self.customers: dict[int, Customer] = {}
        self.products: dict[int, Product] = {}
        self.invoices: dict[int, Invoice] = {}
        self.accounts: dict[int, Account] = {}
        self._next = {"Customer": 48_926_600, "Product": 69_511_100, "Invoice": 1_305_163_873_514_479_900}
        for number, (name, type_value, subtype_value) in enumerate(
            [
                ("Sales", "INCOME", "INCOME"),
                ("Consulting Income", "INCOME", "INCOME"),
                ("Cost of Goods Sold", "EXPENSE", "COST_OF_GOODS_SOLD"),
                ("Office Supplies", "EXPENSE", "EXPENSE"),
            ],
            start=402_117_001,
        ):
            self.accounts[number] = Account(number, name, type_value, subtype_value)

    def next_number(self, type_name: str) -> int:
        self._next[type_name] += 1
        return self._next[type_name]

    def gid(self, type_name: str, number: int) -> str:
        return ids.record_id(self.uuid, type_name, number)

    @property
    def default_income_account(self) -> int:
        return next(n for n, a in self.accounts.items() if a.type_value == "INCOME")


R = TypeVar("R")


def paginate(
    records: Sequence[R], page: int, page_size: int, *, empty_pages: int = 1
) -> tuple[list[R], dict[str, int]]:
    """One 1-based page and Wave's OffsetPageInfo; a page past the end is empty.

    An empty list reports `totalPages: 1` as captured from Wave (`empty_pages=0` gives the earlier form).
    """
    total = len(records)
    start = (page - 1) * page_size
    info = {"currentPage": page, "totalPages": math.ceil(total / page_size) or empty_pages, "totalCount": total}
    return list(records[start : start + page_size]), info


def sort_records(
    records: Iterable[R], sort: Sequence[str], keys: dict[str, Callable[[R], Any]], number: Callable[[R], int]
) -> list[R]:
    """Sort by Wave sort enum values (`NAME_ASC`, ...) in priority order; ties go to the lower id."""
    result = sorted(records, key=number)
    for option in reversed(sort):
        name, _, direction = option.rpartition("_")
        result.sort(key=keys[name], reverse=direction == "DESC")  # stable, also when reversed
    return result


class _Errors:
    """Collects inputErrors while a mutation's input is checked."""

    def __init__(self) -> None:
        self.items: list[InputError] = []

    def add(self, path: Path, message: str, code: str) -> None:
        self.items.append(InputError(path, message, code))

    def raise_if_any(self) -> None:
        if self.items:
            raise InputErrors(self.items)

    def text(self, value: Any, path: Path, limit: int, *, required: bool = False) -> str | None:
        if value is None:
            if required:
                self.add(path, "This field is required.", "REQUIRED")
            return None
        if not isinstance(value, str):
            self.add(path, "Enter a valid value.", "INVALID")
            return None
        if required and not value.strip():
            self.add(path, "This field is required.", "REQUIRED")
        elif len(value) > limit:
            self.add(path, f"Ensure this value has at most {limit} characters (it has {len(value)}).", "MAX_LENGTH")
        return value

    def decimal(self, value: Any, path: Path, places: int) -> Decimal | None:
        parsed = parse_decimal(value)
        if parsed is None:
            self.add(path, "Enter a number.", "INVALID")
            return None
        return round_places(parsed, places)

    def date(self, value: Any, path: Path) -> date | None:
        parsed = parse_date(value)
        if parsed is None:
            self.add(path, "Enter a valid date (YYYY-MM-DD).", "INVALID")
        return parsed


class WaveStore:
    """All businesses of one sandbox, plus the rules. Single-threaded: the ASGI loop serialises access."""

    def __init__(
        self, config: WaveSandboxConfig, currency_codes: frozenset[str], country_codes: frozenset[str]
    ) -> None:
        self.config = config
        self.currency_codes = currency_codes
        self.country_codes = country_codes
        self.businesses: dict[str, Business] = {}
        self.reset()

    # ----- clock, reset, lookups -------------------------------------------------------------------------------

    def now(self) -> datetime:
        return truncate_to_ms(self.config.clock())

    def today(self) -> date:
        return self.now().date()

    def reset(self) -> None:
        now = self.now()
        self.businesses = {b.uuid: Business(b, now) for b in self.config.businesses}

    def business(self, global_id: str) -> Business:
        uuid = ids.parse_business_id(global_id)
        if uuid is None or uuid not in self.businesses:
            raise UnknownRecord("Business", global_id)
        return self.businesses[uuid]

    def _ref(self, global_id: str, type_name: str, business: Business | None = None) -> tuple[Business, int]:
        ref = ids.parse_record_id(global_id)
        if ref is None or ref.type_name != type_name or ref.business_uuid not in self.businesses:
            raise UnknownRecord(type_name, global_id)
        owner = self.businesses[ref.business_uuid]
        if business is not None and owner is not business:
            raise UnknownRecord(type_name, global_id)
        return owner, ref.number

    def customer(self, global_id: str, business: Business | None = None) -> tuple[Business, Customer]:
        owner, number = self._ref(global_id, "Customer", business)
        found = owner.customers.get(number)
        if found is None or found.deleted:
            raise UnknownRecord("Customer", global_id)
        return owner, found

    def product(self, global_id: str, business: Business | None = None) -> tuple[Business, Product]:
        owner, number = self._ref(global_id, "Product", business)
        found = owner.products.get(number)
        if found is None or found.deleted:
            raise UnknownRecord("Product", global_id)
        return owner, found

    def invoice(self, global_id: str, business: Business | None = None) -> tuple[Business, Invoice]:
        owner, number = self._ref(global_id, "Invoice", business)
        found = owner.invoices.get(number)
        if found is None:
            raise UnknownRecord("Invoice", global_id)
        return owner, found

    def account(self, global_id: str, business: Business) -> Account:
        _owner, number = self._ref(global_id, "Account", business)
        found = business.accounts.get(number)
        if found is None:
            raise UnknownRecord("Account", global_id)
        return found

    def _target(self, lookup: Callable[[str], tuple[Business, R]], global_id: str, path: Path) -> tuple[Business, R]:
        """The record a mutation acts on; an unknown id is NOT_FOUND, top-level or as an inputError (config)."""
        try:
            return lookup(global_id)
        except UnknownRecord as exc:
            if self.config.unknown_target_id == "input_error":
                raise InputErrors([InputError(path, exc.message, "NOT_FOUND")]) from exc
            raise

    def page_size(self, requested: int) -> int:
        cap = self.config.max_page_size
        if requested > cap and self.config.page_size_overflow == "error":
            raise QueryError("BAD_USER_INPUT", f"pageSize must be at most {cap}.")
        return max(1, min(requested, cap))

    # ----- derived invoice values ------------------------------------------------------------------------------

    def totals(self, invoice: Invoice) -> Totals:
        places = currency_exponent(invoice.currency)
        subtotals = [round_places(i.quantity * i.unit_price, places) for i in invoice.items]
        paid = sum((p.amount for p in invoice.payments), Decimal(0))
        return Totals(subtotals, sum(subtotals, Decimal(0)), paid)

    def status(self, invoice: Invoice) -> str:
        if invoice.base_status == "DRAFT":
            return "DRAFT"
        totals = self.totals(invoice)
        if totals.paid > 0:
            if totals.paid > totals.total:
                return "OVERPAID"
            return "PAID" if totals.paid == totals.total else "PARTIAL"
        if totals.due > 0 and invoice.due_date < self.today():
            return "OVERDUE"
        return invoice.base_status

    # ----- lists -----------------------------------------------------------------------------------------------

    @staticmethod
    def _modified_between(modified_at: datetime, after: datetime | None, before: datetime | None) -> bool:
        return (after is None or modified_at > after) and (before is None or modified_at < before)

    def list_customers(
        self,
        business: Business,
        sort: Sequence[str],
        email: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> list[Customer]:
        wanted = email.strip().casefold() if email is not None else None
        found = [
            c
            for c in business.customers.values()
            if not c.deleted
            and self._modified_between(c.modified_at, after, before)
            and (wanted is None or str(c.fields.get("email") or "").strip().casefold() == wanted)
        ]
        keys: dict[str, Callable[[Customer], Any]] = {
            "CREATED_AT": lambda c: c.created_at,
            "MODIFIED_AT": lambda c: c.modified_at,
            "NAME": lambda c: c.name.casefold(),
        }
        return sort_records(found, sort, keys, lambda c: c.number)

    def list_products(
        self,
        business: Business,
        sort: Sequence[str],
        is_sold: bool | None = None,
        is_bought: bool | None = None,
        is_archived: bool | None = False,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> list[Product]:
        found = [
            p
            for p in business.products.values()
            if not p.deleted
            and (is_archived is None or p.is_archived == is_archived)
            and (is_sold is None or (p.income_account is not None) == is_sold)
            and (is_bought is None or (p.expense_account is not None) == is_bought)
            and self._modified_between(p.modified_at, after, before)
        ]
        keys: dict[str, Callable[[Product], Any]] = {
            "CREATED_AT": lambda p: p.created_at,
            "MODIFIED_AT": lambda p: p.modified_at,
            "NAME": lambda p: p.name.casefold(),
        }
        return sort_records(found, sort, keys, lambda p: p.number)

    def list_invoices(
        self,
        business: Business,
        sort: Sequence[str],
        *,
        status: str | None = None,
        customer_id: str | None = None,
        currency: str | None = None,
        source_id: str | None = None,
        date_start: date | None = None,
        date_end: date | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
        invoice_number: str | None = None,
    ) -> list[Invoice]:
        customer_number: int | None = None
        if customer_id is not None:
            ref = ids.parse_record_id(customer_id)
            customer_number = ref.number if ref and ref.business_uuid == business.uuid else -1

        def matches(i: Invoice) -> bool:
            current = self.status(i)
            if status == "UNPAID":
                if current not in ("SAVED", "SENT", "VIEWED", "OVERDUE", "PARTIAL"):
                    return False
            elif status is not None and current != status:
                return False
            return (
                source_id is None  # the sandbox has no estimates or recurring invoices
                and (customer_number is None or i.customer == customer_number)
                and (currency is None or i.currency == currency)
                and (date_start is None or i.invoice_date >= date_start)
                and (date_end is None or i.invoice_date <= date_end)
                and (invoice_number is None or invoice_number in i.invoice_number)
                and self._modified_between(i.modified_at, after, before)
            )

        def number_key(i: Invoice) -> tuple[int, int, str]:
            text = i.invoice_number
            return (0, int(text), "") if text.isdigit() else (1, 0, text)

        keys: dict[str, Callable[[Invoice], Any]] = {
            "AMOUNT_DUE": lambda i: self.totals(i).due,
            "AMOUNT_PAID": lambda i: self.totals(i).paid,
            "CREATED_AT": lambda i: i.created_at,
            "CUSTOMER_NAME": lambda i: business.customers[i.customer].name.casefold(),
            "DUE_AT": lambda i: i.due_date,
            "INVOICE_DATE": lambda i: i.invoice_date,
            "INVOICE_NUMBER": number_key,
            "MODIFIED_AT": lambda i: i.modified_at,
            "STATUS": self.status,
            "TOTAL": lambda i: self.totals(i).total,
        }
        return sort_records([i for i in business.invoices.values() if matches(i)], sort, keys, lambda i: i.number)

    # ----- customers -------------------------------------------------------------------------------------------

    def _address(self, value: Any, path: Path, errors: _Errors) -> dict[str, str | None] | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            errors.add(path, "Enter a valid address.", "INVALID")
            return None
        result: dict[str, str | None] = {}
        for key, limit in ADDRESS_LIMITS.items():
            result[key] = errors.text(value.get(key), (*path, key), limit)
        country = value.get("countryCode")
        if country is not None and country not in self.country_codes:
            errors.add((*path, "countryCode"), f"'{country}' is not a valid country code.", "INVALID")
        province = value.get("provinceCode")
        if province is not None:
            province_cc = province_country(province) if isinstance(province, str) else None
            if province_cc is None or province_cc not in self.country_codes:
                errors.add((*path, "provinceCode"), "Enter a valid ISO 3166-2 province code.", "INVALID")
            elif country is None:
                country = province_cc  # the province code names its country
            elif province_cc != country:
                errors.add((*path, "provinceCode"), f"Province '{province}' is not in country '{country}'.", "INVALID")
        result["provinceCode"] = province
        result["countryCode"] = country
        return result

    def _customer_changes(self, data: dict[str, Any], errors: _Errors, *, creating: bool) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if creating or "name" in data:
            changes["name"] = errors.text(data.get("name"), ("input", "name"), CUSTOMER_LIMITS["name"], required=True)
        for key, limit in CUSTOMER_LIMITS.items():
            if key != "name" and key in data:
                changes[key] = errors.text(data[key], ("input", key), limit)
        email = changes.get("email")
        if email and not _EMAIL.match(email.strip()):
            errors.add(("input", "email"), "Enter a valid email address.", "INVALID")
        if "currency" in data:
            currency = data["currency"]
            if currency is not None and currency not in self.currency_codes:
                errors.add(("input", "currency"), f"'{currency}' is not a valid currency code.", "INVALID")
            changes["currency"] = currency
        if "address" in data:
            changes["address"] = self._address(data["address"], ("input", "address"), errors)
        if "shippingDetails" in data:
            shipping = data["shippingDetails"]
            if shipping is None:
                changes["shippingDetails"] = None
            elif not isinstance(shipping, dict):
                errors.add(("input", "shippingDetails"), "Enter valid shipping details.", "INVALID")
            else:
                details: dict[str, Any] = {
                    key: errors.text(shipping.get(key), ("input", "shippingDetails", key), limit)
                    for key, limit in SHIPPING_LIMITS.items()
                }
                details["address"] = self._address(
                    shipping.get("address"), ("input", "shippingDetails", "address"), errors
                )
                changes["shippingDetails"] = details
        return changes

    def create_customer(self, data: dict[str, Any]) -> tuple[Business, Customer]:
        business = self.business(str(data.get("businessId")))
        errors = _Errors()
        changes = self._customer_changes(data, errors, creating=True)
        errors.raise_if_any()
        now = self.now()
        customer = Customer(business.next_number("Customer"), changes, now, now)
        business.customers[customer.number] = customer
        return business, customer

    def patch_customer(self, data: dict[str, Any]) -> tuple[Business, Customer]:
        business, customer = self._target(self.customer, str(data.get("id")), ("input", "id"))
        errors = _Errors()
        changes = self._customer_changes(data, errors, creating=False)
        errors.raise_if_any()
        customer.fields.update(changes)
        customer.modified_at = self.now()
        return business, customer

    def delete_customer(self, global_id: str) -> None:
        _business, customer = self._target(self.customer, global_id, ("input", "id"))
        customer.deleted = True  # kept as a tombstone so existing invoices still name their customer
        customer.modified_at = self.now()

    # ----- products --------------------------------------------------------------------------------------------

    def _product_changes(
        self, business: Business, data: dict[str, Any], errors: _Errors, *, creating: bool
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if creating or "name" in data:
            changes["name"] = errors.text(data.get("name"), ("input", "name"), PRODUCT_LIMITS["name"], required=True)
        if "description" in data:
            changes["description"] = errors.text(
                data["description"], ("input", "description"), PRODUCT_LIMITS["description"]
            )
        if creating or "unitPrice" in data:
            path = ("input", "unitPrice")
            if data.get("unitPrice") is None:
                errors.add(path, "This field is required.", "REQUIRED")
            else:
                price = errors.decimal(data["unitPrice"], path, PRODUCT_PRICE_PLACES)
                if price is not None and price < 0 and not self.config.allow_negative_product_price:
                    errors.add(path, "Ensure this value is greater than or equal to 0.", "INVALID")
                changes["unit_price"] = price
        for key, wanted in (("incomeAccountId", "INCOME"), ("expenseAccountId", "EXPENSE")):
            if key not in data:
                continue
            if data[key] is None:
                changes[key] = None
                continue
            try:
                account = self.account(str(data[key]), business)
            except UnknownRecord as exc:
                errors.add(("input", key), exc.message, "NOT_FOUND")
                continue
            if account.type_value != wanted:
                errors.add(("input", key), f"The account must be of type {wanted}.", "INVALID")
            changes[key] = account.number
        for index, tax_id in enumerate(data.get("defaultSalesTaxIds") or []):
            errors.add(
                ("input", "defaultSalesTaxIds", str(index)), f"SalesTax '{tax_id}' could not be found.", "NOT_FOUND"
            )
        return changes

    @staticmethod
    def _apply_product(product: Product, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key == "incomeAccountId":
                product.income_account = value
            elif key == "expenseAccountId":
                product.expense_account = value
            else:
                setattr(product, key, value)

    def create_product(self, data: dict[str, Any]) -> tuple[Business, Product]:
        business = self.business(str(data.get("businessId")))
        errors = _Errors()
        changes = self._product_changes(business, data, errors, creating=True)
        errors.raise_if_any()
        now = self.now()
        product = Product(business.next_number("Product"), changes["name"], changes["unit_price"], now, now)
        self._apply_product(product, changes)
        business.products[product.number] = product
        return business, product

    def patch_product(self, data: dict[str, Any]) -> tuple[Business, Product]:
        business, product = self._target(self.product, str(data.get("id")), ("input", "id"))
        errors = _Errors()
        changes = self._product_changes(business, data, errors, creating=False)
        errors.raise_if_any()
        self._apply_product(product, changes)
        product.modified_at = self.now()
        return business, product

    def archive_product(self, global_id: str) -> tuple[Business, Product]:
        business, product = self._target(self.product, global_id, ("input", "id"))
        if not product.is_archived:  # there is no un-archive; archiving twice changes nothing
            product.is_archived = True
            product.modified_at = self.now()
        return business, product

    def delete_product(self, global_id: str) -> None:
        """Web-UI only (the API has no productDelete); invoices keep showing the product."""
        _business, product = self.product(global_id)
        product.deleted = True
        product.modified_at = self.now()

    # ----- invoices --------------------------------------------------------------------------------------------

    def _items(self, business: Business, value: Any, errors: _Errors) -> list[InvoiceItem]:
        items: list[InvoiceItem] = []
        for index, raw in enumerate(value or []):
            path: Path = ("input", "items", str(index))
            if not isinstance(raw, dict):
                errors.add(path, "Enter a valid item.", "INVALID")
                continue
            try:
                _owner, product = self.product(str(raw.get("productId")), business)
            except UnknownRecord as exc:
                errors.add((*path, "productId"), exc.message, "NOT_FOUND")
                continue
            if product.is_archived:
                errors.add((*path, "productId"), f"Product '{raw.get('productId')}' is archived.", "INVALID")
            quantity = Decimal(1)
            if raw.get("quantity") is not None:
                quantity = errors.decimal(raw["quantity"], (*path, "quantity"), INVOICE_ITEM_PLACES) or Decimal(0)
            unit_price = round_places(product.unit_price, INVOICE_ITEM_PLACES)
            if raw.get("unitPrice") is not None:
                unit_price = errors.decimal(raw["unitPrice"], (*path, "unitPrice"), INVOICE_ITEM_PLACES) or Decimal(0)
            description = product.description
            if "description" in raw:
                description = errors.text(raw["description"], (*path, "description"), 4000)
            for tax_index, tax in enumerate(raw.get("taxes") or []):
                tax_id = tax.get("salesTaxId") if isinstance(tax, dict) else tax
                errors.add(
                    (*path, "taxes", str(tax_index), "salesTaxId"),
                    f"SalesTax '{tax_id}' could not be found.",
                    "NOT_FOUND",
                )
            items.append(InvoiceItem(product.number, description, quantity, unit_price))
        return items

    def _next_invoice_number(self, business: Business) -> str:
        numbers = [int(i.invoice_number) for i in business.invoices.values() if i.invoice_number.isdigit()]
        return str(max(numbers, default=0) + 1)

    def _invoice_changes(
        self, business: Business, data: dict[str, Any], errors: _Errors, current: Invoice | None
    ) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if "customerId" in data or current is None:
            try:
                _owner, customer = self.customer(str(data.get("customerId")), business)
                changes["customer"] = customer.number
            except UnknownRecord as exc:
                errors.add(("input", "customerId"), exc.message, "NOT_FOUND")
        if data.get("status") is not None:
            status = data["status"]
            if status not in ("DRAFT", "SAVED"):
                errors.add(("input", "status"), f"'{status}' is not a valid status.", "INVALID")
            elif current is not None and status == "DRAFT" and current.base_status != "DRAFT":
                errors.add(("input", "status"), "An approved invoice cannot return to draft.", "INVALID_STATE")
            else:
                changes["base_status"] = status
        if data.get("currency") is not None:
            if data["currency"] not in self.currency_codes:
                errors.add(("input", "currency"), f"'{data['currency']}' is not a valid currency code.", "INVALID")
            changes["currency"] = data["currency"]
        if data.get("exchangeRate") is not None:
            rate = errors.decimal(data["exchangeRate"], ("input", "exchangeRate"), 8)
            if rate is not None and rate <= 0:
                errors.add(("input", "exchangeRate"), "Ensure this value is greater than 0.", "INVALID")
            changes["exchange_rate"] = rate
        for key in ("invoiceDate", "dueDate"):
            if data.get(key) is not None:
                changes[key] = errors.date(data[key], ("input", key))
        if data.get("invoiceNumber") is not None:
            number = errors.text(data["invoiceNumber"], ("input", "invoiceNumber"), 255, required=True)
            if number is not None and self.config.invoice_rules.unique_invoice_numbers:
                taken = any(i.invoice_number == number.strip() and i is not current for i in business.invoices.values())
                if taken:
                    errors.add(("input", "invoiceNumber"), f"Invoice number '{number}' is already used.", "DUPLICATE")
            changes["invoice_number"] = (number or "").strip()
        for key, limit in INVOICE_TEXT_LIMITS.items():
            if key in data:
                changes[key] = errors.text(data[key], ("input", key), limit)
        for key in INVOICE_FLAGS:
            if data.get(key) is not None:
                changes[key] = bool(data[key])
        if "items" in data or current is None:
            changes["items"] = self._items(business, data.get("items"), errors)
        return changes

    def _apply_invoice(self, invoice: Invoice, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key in INVOICE_TEXT_LIMITS:
                invoice.text[key] = value
            elif key in INVOICE_FLAGS:
                invoice.flags[key] = value
            elif key == "invoiceDate":
                invoice.invoice_date = value
            elif key == "dueDate":
                invoice.due_date = value
            else:
                setattr(invoice, key, value)

    def create_invoice(self, data: dict[str, Any]) -> tuple[Business, Invoice]:
        business = self.business(str(data.get("businessId")))
        errors = _Errors()
        changes = self._invoice_changes(business, data, errors, None)
        errors.raise_if_any()
        rules = self.config.invoice_rules
        invoice_date = changes.get("invoiceDate") or self.today()
        now = self.now()
        invoice = Invoice(
            number=business.next_number("Invoice"),
            customer=changes["customer"],
            base_status=changes.get("base_status", "DRAFT"),
            invoice_number=changes.get("invoice_number") or self._next_invoice_number(business),
            invoice_date=invoice_date,
            due_date=changes.get("dueDate") or invoice_date + timedelta(days=rules.payment_terms_days),
            currency=changes.get("currency") or business.currency,
            exchange_rate=changes.get("exchange_rate") or Decimal(1),
            created_at=now,
            modified_at=now,
            text={"title": rules.default_title, **INVOICE_DEFAULT_TEXT},
            flags=dict.fromkeys(INVOICE_FLAGS, False),
        )
        self._apply_invoice(invoice, changes)
        if not invoice.text.get("title"):
            invoice.text["title"] = rules.default_title
        business.invoices[invoice.number] = invoice
        return business, invoice

    def _check_state(self, invoice: Invoice, path: Path, *, deleting: bool) -> None:
        rules = self.config.invoice_rules
        status = self.status(invoice)
        has_payments = bool(invoice.payments)
        if deleting and rules.forbid_delete_when_paid and has_payments:
            message = "This invoice has payments recorded against it and cannot be deleted. Remove the payments first."
        elif not deleting and rules.forbid_patch_when_paid and self.totals(invoice).paid > 0:
            message = "This invoice has payments recorded against it and cannot be edited."
        elif status in (rules.forbid_delete_statuses if deleting else rules.forbid_patch_statuses):
            message = f"An invoice with status {status} cannot be {'deleted' if deleting else 'edited'}."
        else:
            return
        raise InputErrors([InputError(path, message, "INVALID_STATE")])

    def patch_invoice(self, data: dict[str, Any], *, enforce_state: bool = True) -> tuple[Business, Invoice]:
        business, invoice = self._target(self.invoice, str(data.get("id")), ("input", "id"))
        if enforce_state:
            self._check_state(invoice, ("input", "id"), deleting=False)
        errors = _Errors()
        changes = self._invoice_changes(business, data, errors, invoice)
        errors.raise_if_any()
        self._apply_invoice(invoice, changes)
        invoice.modified_at = self.now()
        return business, invoice

    def delete_invoice(self, global_id: str, *, enforce_state: bool = True) -> None:
        business, invoice = self._target(self.invoice, global_id, ("input", "invoiceId"))
        if enforce_state:
            self._check_state(invoice, ("input", "invoiceId"), deleting=True)
        del business.invoices[invoice.number]

    def approve_invoice(self, global_id: str) -> tuple[Business, Invoice]:
        business, invoice = self._target(self.invoice, global_id, ("input", "invoiceId"))
        if invoice.base_status == "DRAFT":  # approving an approved invoice is a no-op success (UNVERIFIED)
            invoice.base_status = "SAVED"
            invoice.modified_at = self.now()
        return business, invoice

    def mark_sent(self, global_id: str, method: str, sent_at: Any = None) -> tuple[Business, Invoice]:
        business, invoice = self._target(self.invoice, global_id, ("input", "invoiceId"))
        errors = _Errors()
        when = self.now()
        if sent_at is not None:
            parsed = parse_datetime(sent_at)
            if parsed is None:
                errors.add(("input", "sentAt"), "Enter a valid date and time.", "INVALID")
            else:
                when = truncate_to_ms(parsed)
        if invoice.base_status == "DRAFT":
            errors.add(
                ("input", "invoiceId"), "A draft invoice must be approved before it can be sent.", "INVALID_STATE"
            )
        errors.raise_if_any()
        if invoice.base_status == "SAVED":
            invoice.base_status = "SENT"
        invoice.last_sent_at = when
        invoice.last_sent_via = method
        invoice.modified_at = self.now()
        return business, invoice

    def send_invoice(self, data: dict[str, Any]) -> tuple[Business, Invoice]:
        errors = _Errors()
        recipients = data.get("to") or []
        if not recipients:
            errors.add(("input", "to"), "This field is required.", "REQUIRED")
        for index, address in enumerate(recipients):
            if not isinstance(address, str) or not _EMAIL.match(address.strip()):
                errors.add(("input", "to", str(index)), "Enter a valid email address.", "INVALID")
        errors.raise_if_any()
        return self.mark_sent(str(data.get("invoiceId")), "WAVE")

    def record_payment(self, global_id: str, amount: Any, payment_date: Any = None) -> tuple[Business, Invoice]:
        """A manual payment as a person records it in the web UI (the sync never does this)."""
        business, invoice = self.invoice(global_id)
        errors = _Errors()
        value = errors.decimal(amount, ("amount",), 2)
        when = errors.date(payment_date, ("paymentDate",)) if payment_date is not None else self.today()
        if value is not None and value <= 0:
            errors.add(("amount",), "Ensure this value is greater than 0.", "INVALID")
        if invoice.base_status == "DRAFT":
            errors.add(("invoiceId",), "Approve the invoice before recording a payment.", "INVALID_STATE")
        errors.raise_if_any()
        assert value is not None
        assert when is not None
        invoice.payments.append(Payment(value, when, self.now()))
        invoice.modified_at = self.now()
        return business, invoice
