"""Bench data: seeding the Customerp sandbox in chunks, and making every seeded record one that syncs cleanly.

The seed is realistic on purpose (a quarter of the products priced in EUR, some archived, some paid or
cancelled orders): most of that ends in the dead-letter queue, which is the engine doing its job but not what
a throughput figure should count. So the bench normalises it: products in the business currency and not
archived, orders in a status that Wave can represent and that Customerp still lets the engine write.
Free-text lines go to a fallback product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.stack import Stack

SEED_CHUNK = 10_000  # the sandbox's per-request maximum


@dataclass(frozen=True)
class Sizes:
    customers: int
    products: int
    orders: int
    lines: int

    @property
    def records(self) -> int:
        return self.customers + self.products + self.orders

    def scaled(self, factor: float, minimum: int = 1) -> Sizes:
        def scale(n: int) -> int:
            return max(minimum, round(n * factor)) if n else 0

        return Sizes(scale(self.customers), scale(self.products), scale(self.orders), self.lines)

    def as_dict(self) -> dict[str, int]:
        return {"customers": self.customers, "products": self.products, "orders": self.orders, "lines": self.lines}


def create_fallback_product(running: Stack) -> str:
    """A Wave product for order lines without one (WAVESYNC_FALLBACK_PRODUCT_ID), made straight in the store."""
    business = running.wave_business
    income = business.gid("Account", business.default_income_account)
    _b, product = running.wave_store.create_product(
        {"businessId": business.global_id, "name": "Freight", "unitPrice": "25", "incomeAccountId": income}
    )
    gid: str = business.gid("Product", product.number)
    return gid


def seed_customerp(running: Stack, sizes: Sizes, seed: int = 1) -> None:
    """Seed in chunks of at most 10,000 of each kind; orders use the products of their own chunk."""
    chunks = max(1, -(-max(sizes.customers, sizes.products, sizes.orders) // SEED_CHUNK))
    for index in range(chunks):

        def part(total: int, index: int = index) -> int:
            return total // chunks + (1 if index < total % chunks else 0)

        body = {
            "customers": part(sizes.customers),
            "products": part(sizes.products),
            "orders": part(sizes.orders),
            "lines": sizes.lines,
            "seed": seed + index,
        }
        running.http.post(f"{running.cp_server.url}/_admin/seed", json=body).raise_for_status()
    normalise(running)


def normalise(running: Stack) -> dict[str, int]:
    """Bring seeded records into what syncs without a dead letter (see the module doc). Before any sync."""
    store: Any = running.cp_store
    currency = running.settings.wave_currency
    changed = {"products": 0, "orders": 0}
    for entry in store.live("products"):
        # Archived products are never created in Wave, so every order line using one would dead-letter.
        if entry.data.get("currency") not in (None, currency) or entry.data.get("archived"):
            entry.data["currency"] = currency
            entry.data["archived"] = False
            changed["products"] += 1
    for entry in store.live("orders"):
        if entry.data.get("status") in ("paid", "partially_paid", "cancelled"):
            entry.data["status"] = "sent"
            changed["orders"] += 1
    return changed
