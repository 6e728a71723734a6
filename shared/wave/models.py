"""Pydantic models of what wavesync reads from Wave: frozen, unknown fields ignored, Decimals and dates parsed.

Field names are snake_case with Wave's camelCase as aliases. Nested references are flattened to the names Wave's
inputs use, so `model_dump(by_alias=True)` reads like an input: `currency {code}` -> `currency`, `customer {id}`
-> `customerId`, `product {id}` -> `productId`, `incomeAccount {id}` -> `incomeAccountId`, `province {code name}`
-> `provinceCode`/`provinceName`, Money `{value}` -> a Decimal.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


def _code(value: Any) -> Any:
    return value.get("code") if isinstance(value, dict) else value


def _money(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) else value


def _ref_id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


CurrencyCode = Annotated[str, BeforeValidator(_code)]
Amount = Annotated[Decimal, BeforeValidator(_money)]


class WaveModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True)


class WaveNode(WaveModel):
    id: str


def _flatten(data: Any, refs: dict[str, str]) -> Any:
    """Rename `{"customer": {"id": x}}` to `{"customerId": x}` for each (nested key -> flat key) in refs."""
    if not isinstance(data, dict):
        return data
    result = dict(data)
    for nested, flat in refs.items():
        if nested in result and flat not in result:
            result[flat] = _ref_id(result.pop(nested))
    return result


class WaveAddress(WaveModel):
    address_line1: str | None = Field(None, alias="addressLine1")
    address_line2: str | None = Field(None, alias="addressLine2")
    city: str | None = None
    province_code: str | None = None
    province_name: str | None = None
    country_code: str | None = None
    country_name: str | None = None
    postal_code: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_places(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        result = dict(data)
        for key in ("province", "country"):
            place = result.pop(key, None)
            if isinstance(place, dict):
                result.setdefault(f"{key}Code", place.get("code"))
                result.setdefault(f"{key}Name", place.get("name"))
        return result


class WaveShippingDetails(WaveModel):
    name: str | None = None
    phone: str | None = None
    instructions: str | None = None
    address: WaveAddress | None = None


# Wave answers "" for a customer's unset optional strings (captured bodies) where the schema allows null; the
# models read both as None so nothing downstream has to tell them apart.
_BLANKABLE = frozenset(
    {"firstName", "lastName", "displayId", "email", "mobile", "phone", "fax", "tollFree", "website", "internalNotes"}
)


def _blank_is_unset(data: Any, keys: frozenset[str]) -> Any:
    if not isinstance(data, dict):
        return data
    return {k: (None if k in keys and v == "" else v) for k, v in data.items()}


class WaveCustomer(WaveNode):
    name: str
    first_name: str | None = None
    last_name: str | None = None
    display_id: str | None = None
    email: str | None = None
    mobile: str | None = None
    phone: str | None = None
    fax: str | None = None
    toll_free: str | None = None
    website: str | None = None
    internal_notes: str | None = None
    currency: CurrencyCode | None = None
    address: WaveAddress | None = None
    shipping_details: WaveShippingDetails | None = None
    created_at: datetime
    modified_at: datetime
    is_archived: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _blank_strings(cls, data: Any) -> Any:
        return _blank_is_unset(data, _BLANKABLE)


class WaveProduct(WaveNode):
    name: str
    description: str | None = None
    unit_price: Decimal
    is_sold: bool
    is_bought: bool
    is_archived: bool
    created_at: datetime
    modified_at: datetime
    income_account_id: str | None = None
    expense_account_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_accounts(cls, data: Any) -> Any:
        return _flatten(data, {"incomeAccount": "incomeAccountId", "expenseAccount": "expenseAccountId"})


class WaveInvoiceItem(WaveModel):
    product_id: str
    description: str | None = None
    quantity: Decimal
    unit_price: Decimal
    subtotal: Amount
    total: Amount

    @model_validator(mode="before")
    @classmethod
    def _flatten_product(cls, data: Any) -> Any:
        return _flatten(data, {"product": "productId"})


class WaveInvoice(WaveNode):
    customer_id: str
    status: str
    title: str | None = None
    subhead: str | None = None
    invoice_number: str
    po_number: str | None = None
    invoice_date: date
    due_date: date
    memo: str | None = None
    footer: str | None = None
    currency: CurrencyCode
    exchange_rate: Decimal | None = None
    items: tuple[WaveInvoiceItem, ...] = ()
    total: Amount
    amount_due: Amount
    amount_paid: Amount
    tax_total: Amount
    created_at: datetime
    modified_at: datetime
    last_sent_at: datetime | None = None
    last_sent_via: str | None = None
    view_url: str | None = None
    pdf_url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _flatten_refs(cls, data: Any) -> Any:
        data = _flatten(data, {"customer": "customerId"})
        if isinstance(data, dict) and data.get("items") is None:
            data["items"] = ()  # Invoice.items is nullable in Wave's schema
        return data


class WaveRecordKeys(WaveNode):
    """A Wave customer, product or invoice as the key index lists it: when it changed and its natural keys (the
    documents' *_KEYS_PAGE); the fields its entity does not have stay None."""

    modified_at: datetime
    email: str | None = None
    display_id: str | None = None
    name: str | None = None
    invoice_number: str | None = None


class WaveBusiness(WaveNode):
    name: str
    currency: CurrencyCode
    timezone: str | None = None
    is_archived: bool = False
    is_classic_invoicing: bool = False


class WaveAccount(WaveNode):
    name: str
    description: str | None = None
    is_archived: bool = False
    type: str = Field(validation_alias=AliasChoices("type", "typeValue"))
    subtype: str = Field(validation_alias=AliasChoices("subtype", "subtypeValue"))

    @model_validator(mode="before")
    @classmethod
    def _flatten_types(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {k: (v.get("value") if k in ("type", "subtype") and isinstance(v, dict) else v) for k, v in data.items()}


T = TypeVar("T", bound=WaveNode)


class Page(BaseModel, Generic[T]):
    """One page of a Wave list: its records and Wave's OffsetPageInfo."""

    model_config = ConfigDict(frozen=True)

    items: tuple[T, ...]
    page: int
    total_pages: int | None = None
    total_count: int | None = None
