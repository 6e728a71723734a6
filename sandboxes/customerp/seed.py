"""Deterministic, realistic fake ERP data for the Customerp sandbox (no extra dependency): same seed, same data."""

from __future__ import annotations

import random
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandboxes.customerp.store import Store

_PREFIXES = "Northwind Bluebird Granite Silverline Harbor Evergreen Summit Redwood Lakeside Ironbridge Aurora Meridian"
_CORES = "Trading Logistics Foods Engineering Textiles Analytics Builders Outfitters Pharma Consulting Marine Media"
_SUFFIXES = {"US": "Inc.", "CA": "Ltd.", "GB": "Ltd", "DE": "GmbH", "NO": "AS", "FR": "SARL", "AU": "Pty Ltd"}
_FIRST = "Olivia Liam Emma Noah Ava Lucas Sofia Jonas Ingrid Mateo Chloé Hannah Aiden Nora Élodie Björn Priya Kenji"
_LAST = "Smith Johansen Müller Dubois Brown Tremblay Wilson Nakamura Hansen García Patel O'Brien Schmidt Martin Lee"
_STREETS = (
    "Main Street|King Street|Harbour Road|Station Road|Hauptstraße|Rue de la Paix|Storgata|George Street|Elm Avenue"
)
# country -> (currency, [(subdivision, city, postal code)])
_PLACES: dict[str, tuple[str, list[tuple[str, str, str]]]] = {
    "US": ("USD", [("US-CA", "San Francisco", "94105"), ("US-NY", "New York", "10001"), ("US-TX", "Austin", "73301")]),
    "CA": (
        "CAD",
        [("CA-ON", "Toronto", "M5H 2N2"), ("CA-BC", "Vancouver", "V6B 1A1"), ("CA-QC", "Montréal", "H2Y 1C6")],
    ),
    "GB": ("GBP", [("GB-ENG", "London", "EC1A 1BB"), ("GB-SCT", "Edinburgh", "EH1 1YZ")]),
    "DE": ("EUR", [("DE-BE", "Berlin", "10115"), ("DE-BY", "München", "80331")]),
    "NO": ("NOK", [("NO-03", "Oslo", "0150"), ("NO-46", "Bergen", "5003")]),
    "FR": ("EUR", [("FR-IDF", "Paris", "75001"), ("FR-ARA", "Lyon", "69001")]),
    "AU": ("AUD", [("AU-NSW", "Sydney", "2000"), ("AU-VIC", "Melbourne", "3000")]),
}
_PRODUCTS = [
    ("Consulting hour", "SRV", "Senior consultant, per started hour.", "150"),
    ("Support plan, monthly", "SUB", "Business-hours support with 8 h response time.", "49.9"),
    ("Steel bracket 40 mm", "HW", "Galvanised steel bracket, pack of 10.", "12.5"),
    ("Oak desk", "FUR", "Solid oak desk, 160 x 80 cm.", "899"),
    ("Ergonomic chair", "FUR", "Adjustable office chair with lumbar support.", "349.99"),
    ("Printer paper A4", "OFF", "80 g/m², box of 5 reams.", "24.75"),
    ("Installation fee", "SRV", None, "95"),
    ("USB-C cable 2 m", "HW", "Braided, 100 W.", "9.99"),
    ("Training day", "SRV", "On-site training for up to 8 people.", "1200"),
    ("Coffee beans 1 kg", "FOOD", "Medium roast, whole beans.", "18.4"),
]
_SEEDED_STATUSES = ["draft", "draft", "confirmed", "sent", "sent", "partially_paid", "paid", "cancelled"]


class SeedRequest(BaseModel):
    """Body of POST /_admin/seed; the data are added to what the store already holds."""

    model_config = ConfigDict(extra="forbid")

    customers: int = Field(10, ge=0, le=10_000)
    products: int = Field(10, ge=0, le=10_000)
    orders: int = Field(10, ge=0, le=10_000)
    lines: int = Field(3, ge=0, le=50)
    seed: int = 1


def _slug(text: str) -> str:
    ascii_text = text.encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "", ascii_text)


def _customer(rng: random.Random, index: int) -> dict[str, Any]:
    country = rng.choice(sorted(_PLACES))
    currency, places = _PLACES[country]
    subdivision, city, postal = rng.choice(places)
    company = f"{rng.choice(_PREFIXES.split())} {rng.choice(_CORES.split())} {_SUFFIXES[country]}"
    first, last = rng.choice(_FIRST.split()), rng.choice(_LAST.split())
    domain = _slug(company.rsplit(" ", 1)[0]) + ".example"
    address = {
        "line1": f"{rng.randint(1, 250)} {rng.choice(_STREETS.split('|'))}",
        "line2": rng.choice([None, None, f"Suite {rng.randint(100, 900)}"]),
        "city": city,
        "postal_code": postal,
        "country_code": country,
        "subdivision_code": subdivision,
    }
    return {
        "company_name": company,
        "contact_first_name": first,
        "contact_last_name": last,
        # The index keeps emails unique even when names repeat.
        "email": f"{_slug(first)}.{_slug(last)}{index}@{domain}",
        "phone": f"+{rng.randint(1, 49)} {rng.randint(200, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
        "mobile": rng.choice([None, f"+{rng.randint(1, 49)} {rng.randint(400, 499)} {rng.randint(100000, 999999)}"]),
        "website": f"https://www.{domain}",
        "billing_address": address,
        "shipping_address": rng.choice([None, address]),
        "currency": currency,
        "vat_number": rng.choice([None, f"{country}{rng.randint(100000000, 999999999)}"]),
        "notes": rng.choice([None, "Prefers invoices by email.", "Net 30 agreed by phone."]),
    }


def _product(rng: random.Random, index: int) -> dict[str, Any]:
    name, category, description, price = _PRODUCTS[index % len(_PRODUCTS)]
    series = index // len(_PRODUCTS)
    return {
        "sku": f"{category}-{index + 1:05d}",
        "name": name if series == 0 else f"{name} (series {series + 1})",
        "description": description,
        "unit_price": str(Decimal(price) + series),
        "currency": rng.choice(["USD", "USD", "EUR", None]),
        "archived": rng.random() < 0.05,
    }


def seed_store(store: Store, request: SeedRequest) -> dict[str, list[str]]:
    """Create the requested records through the store's normal validation; return their ids per resource."""
    rng = random.Random(request.seed)
    start = len(store.tables["customers"])
    customer_ids = [store.create("customers", _customer(rng, start + i))[0].id for i in range(request.customers)]
    start = len(store.tables["products"])
    product_entries = [store.create("products", _product(rng, start + i))[0] for i in range(request.products)]
    pool = [c.id for c in store.live("customers")]
    order_ids: list[str] = []
    today = store.clock().date()
    for _ in range(request.orders if pool else 0):
        customer = store.get("customers", rng.choice(pool))
        order_date = today - timedelta(days=rng.randint(0, 90))
        lines = []
        for _ in range(request.lines):
            if product_entries and rng.random() < 0.9:
                product = rng.choice(product_entries)
                lines.append(
                    {
                        "product_id": product.id,
                        "description": product.data["name"],
                        "quantity": str(rng.choice([1, 1, 2, 3, 5, 10, Decimal("0.5"), Decimal("2.25")])),
                        "unit_price": product.data["unit_price"],
                    }
                )
            else:
                lines.append({"product_id": None, "description": "Freight", "quantity": "1", "unit_price": "25"})
        body = {
            "customer_id": customer.id,
            "order_date": order_date.isoformat(),
            "due_date": (order_date + timedelta(days=rng.choice([14, 30]))).isoformat(),
            "currency": customer.data["currency"],
            "po_number": rng.choice([None, f"PO-{rng.randint(1000, 99999)}"]),
            "notes": None,
            "status": rng.choice(_SEEDED_STATUSES),
            "lines": lines,
        }
        order_ids.append(store.create("orders", body)[0].id)
    return {"customers": customer_ids, "products": [p.id for p in product_entries], "orders": order_ids}
