"""Deterministic, realistic fake Wave data for the sandbox's `/_admin/seed` (no extra dependencies)."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal

from sandboxes.wave.store import Business, Customer, Invoice, Product, WaveStore

_FIRST = ["Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Sofia", "Ethan", "Mia", "Amir"]
_FIRST += ["Ingrid", "Hiro", "Chloé", "Mateo", "Aisha", "Jonas", "Priya", "Owen", "Zoë", "Rafael"]
_LAST = ["Smith", "Tremblay", "Nguyen", "Johansen", "García", "Okafor", "Martin", "Roy", "Kowalski", "Chen"]
_LAST += ["Olsen", "Dubois", "Patel", "Murphy", "Rossi", "Schmidt", "Haddad", "Silva", "O'Brien", "Kim"]
_COMPANY = ["Northwind", "Maple Leaf", "Blue Harbour", "Fjord", "Granite", "Lakeside", "Summit", "Cedar", "Aurora"]
_SUFFIX = ["Ltd", "Inc.", "& Co", "Group", "LLC", "AS", "Partners"]
_CITIES = [
    ("Toronto", "CA-ON", "CA", "M5V 2T6"),
    ("Vancouver", "CA-BC", "CA", "V6B 1A1"),
    ("Montréal", "CA-QC", "CA", "H2Y 1C6"),
    ("New York", "US-NY", "US", "10001"),
    ("Austin", "US-TX", "US", "73301"),
    ("Oslo", "NO-03", "NO", "0150"),
    ("London", "GB-ENG", "GB", "EC1A 1BB"),
]
_STREETS = ["King St W", "Main Street", "Karl Johans gate", "Queen St", "Elm Avenue", "Rue Saint-Paul", "High St"]
_ADJECTIVES = ["Premium", "Standard", "Compact", "Organic", "Deluxe", "Eco", "Heavy-duty", "Wireless"]
_NOUNS = ["Widget", "Coffee Beans 1kg", "Desk Lamp", "Notebook", "Cable 2m", "Chair", "Backpack", "Water Bottle"]
_SERVICES = ["Consulting (hour)", "Installation", "Support plan (month)", "Design work (hour)", "Delivery"]


def seed_business(
    store: WaveStore,
    business: Business,
    *,
    customers: int = 0,
    products: int = 0,
    invoices: int = 0,
    lines: int = 3,
    seed: int = 1,
) -> dict[str, list[str]]:
    """Create records through the same rules as the API; timestamps are spread over the past, oldest first."""
    rng = random.Random(seed)
    created: dict[str, list[str]] = {"customers": [], "products": [], "invoices": []}
    fresh: list[Customer | Product | Invoice] = []
    bid = business.global_id
    for n in range(customers):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        city, province, country, postal = rng.choice(_CITIES)
        is_company = rng.random() < 0.5
        name = f"{rng.choice(_COMPANY)} {last} {rng.choice(_SUFFIX)}" if is_company else f"{first} {last}"
        data = {
            "businessId": bid,
            "name": name,
            "firstName": first,
            "lastName": last,
            "email": f"{first}.{last}.{n + 1}@example.com".lower().replace(" ", "").replace("'", ""),
            "phone": f"+1 416 555 {rng.randint(1000, 9999)}",
            "displayId": f"C-{n + 1:05d}",
            "currency": business.currency,
            "address": {
                "addressLine1": f"{rng.randint(1, 999)} {rng.choice(_STREETS)}",
                "city": city,
                "provinceCode": province,
                "countryCode": country,
                "postalCode": postal,
            },
        }
        _b, customer = store.create_customer(data)
        created["customers"].append(business.gid("Customer", customer.number))
        fresh.append(customer)
    income = business.gid("Account", business.default_income_account)
    for n in range(products):
        is_service = rng.random() < 0.3
        name = rng.choice(_SERVICES) if is_service else f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        price = Decimal(rng.randint(250, 50_000)) / 100
        _b, product = store.create_product(
            {
                "businessId": bid,
                "name": f"{name} #{n + 1}",
                "unitPrice": str(price),
                "description": f"{name}, item {n + 1}",
                "incomeAccountId": income,
            }
        )
        created["products"].append(business.gid("Product", product.number))
        fresh.append(product)
    live_products = created["products"] or [
        business.gid("Product", p.number) for p in business.products.values() if not p.is_archived and not p.deleted
    ]
    live_customers = created["customers"] or [
        business.gid("Customer", c.number) for c in business.customers.values() if not c.deleted
    ]
    if invoices and (not live_products or not live_customers):
        raise ValueError("seeding invoices needs at least one customer and one product")
    for _n in range(invoices):
        items = [
            {"productId": rng.choice(live_products), "quantity": str(rng.randint(1, 10))} for _ in range(max(lines, 0))
        ]
        status = "SAVED" if rng.random() < 0.5 else "DRAFT"
        _b, invoice = store.create_invoice(
            {"businessId": bid, "customerId": rng.choice(live_customers), "status": status, "items": items}
        )
        created["invoices"].append(business.gid("Invoice", invoice.number))
        fresh.append(invoice)
    # Spread the new records' timestamps one second apart, ending now, so modifiedAt filters have something to cut.
    now = store.now()
    for age, record in enumerate(reversed(fresh), start=1):
        record.created_at = record.modified_at = now - timedelta(seconds=age)
    return created
