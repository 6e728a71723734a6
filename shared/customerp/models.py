"""Pydantic models of the Customerp REST contract (sandboxes/customerp/openapi.yaml is the source of truth).

These are what the API returns. Request bodies are plain dicts of the writable fields (a create sends the
required ones; an update is a JSON merge patch: only the fields sent change, null clears). Extra fields a real
ERP may add are ignored.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

Resource = Literal["customers", "products", "orders"]
RESOURCES: tuple[Resource, ...] = ("customers", "products", "orders")
OrderStatus = Literal["draft", "confirmed", "sent", "partially_paid", "paid", "cancelled"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Address(_Model):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postal_code: str | None = None
    # ISO 3166-1 alpha-2 and ISO 3166-2 ("US", "US-CA").
    country_code: str | None = None
    subdivision_code: str | None = None


class Customer(_Model):
    id: str
    customer_number: str | None = None
    company_name: str
    contact_first_name: str | None = None
    contact_last_name: str | None = None
    email: str | None = None
    phone: str | None = None
    mobile: str | None = None
    website: str | None = None
    billing_address: Address | None = None
    shipping_address: Address | None = None
    currency: str | None = None  # ISO 4217
    vat_number: str | None = None
    notes: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class Product(_Model):
    id: str
    sku: str | None = None
    name: str
    description: str | None = None
    unit_price: Decimal  # excluding VAT, major currency units
    currency: str | None = None
    archived: bool = False
    version: int
    created_at: datetime
    updated_at: datetime


class OrderLine(_Model):
    product_id: str | None = None
    description: str | None = None
    quantity: Decimal
    unit_price: Decimal


class Order(_Model):
    id: str
    order_number: str | None = None
    customer_id: str
    order_date: date
    due_date: date | None = None
    currency: str | None = None
    po_number: str | None = None
    notes: str | None = None
    status: OrderStatus = "draft"
    lines: list[OrderLine] = Field(default_factory=list)
    version: int
    created_at: datetime
    updated_at: datetime


class Tombstone(_Model):
    """A deleted record as the change feed shows it."""

    id: str
    deleted: Literal[True] = True
    version: int
    updated_at: datetime


Record = Customer | Product | Order
RecordT = TypeVar("RecordT", Customer, Product, Order)

MODEL_BY_RESOURCE: dict[Resource, type[Record]] = {"customers": Customer, "products": Product, "orders": Order}


class ChangePage(_Model, Generic[RecordT]):
    """One page of a change feed: records and tombstones ordered by (updated_at, id).

    `next_cursor` is where the next read starts; store it only after the page's items are safely handed on.
    """

    items: list[RecordT | Tombstone]
    next_cursor: str | None = None
    has_more: bool = False
