"""Randomised two-sided histories: a seeded generator of what people do in both systems, played against a running
system (worker + beat) with faults on, and the oracles that judge the end state once the faults are off.

The generator's choices come from one `random.Random(seed)`, so a seed names a history; which records exist at a
given step also depends on how fast the worker synced, so a replay is the same history, not the same interleaving.
Every name, email and number it makes is unique, which is what lets the oracles count duplicates and lost updates
without knowing the interleaving:

- duplicates: two live records with one generated name (or invoice number) in one system;
- lost updates: a field edited on one side only whose final value (on both sides) is not its last edit;
- drift and orphans: the convergence checker (`Reconciler(repair=False)`) must report no problem;
- dead letters: each must carry a reason the history explains (a customer deleted in Wave that still has orders in
  Customerp, an edit of a paid invoice, ...); anything else (retries exhausted, an unexpected exception) fails.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

import httpx

from shared.errors import RetryableError, SyncError
from shared.mapping import customers as customer_map
from shared.mapping import orders as order_map
from shared.mapping import products as product_map
from shared.mapping.fields import FieldMap, set_path
from shared.store import links as store
from shared.wave.client import WaveClient
from tests.harness import WAVE_TOKEN, System

# Faults while the history runs. hang_s exceeds the clients' 1 s timeout, so a hung write lands after the caller
# gave up on it: the nastiest form of "applied but the answer was lost".
FAULTS: dict[str, Any] = {
    "latency_ms": 2,
    "jitter_ms": 10,
    "error_rate": 0.04,
    "rate_limit_rate": 0.04,
    "retry_after_s": 0.2,
    "hang_rate": 0.01,
    "hang_s": 1.5,
    "drop_rate": 0.01,
    "lost_response_rate": 0.04,
}
# What a system under test is configured with: short timeouts and backoffs so faults cost seconds, not minutes.
SYSTEM_SETTINGS: dict[str, Any] = {
    "http_timeout": 1.0,
    "retry_backoff_base": 0.1,
    "retry_backoff_max": 1.5,
    "max_retries": 12,
    "task_time_limit": 30.0,
    "poll_interval": 1.0,
    "poll_overlap": 2.0,
}

# Dead-letter reasons a history can legitimately produce: (error class, pattern in the reason).
EXPLAINED_DEAD_LETTERS: tuple[tuple[str, str], ...] = (
    ("ForbiddenEditError", r"has_orders|in_use|order_locked|payments|cannot be edited|cannot be deleted|paid"),
    # A Wave invoice still names a product (or customer) since deleted in Customerp: not created there again.
    ("ForbiddenEditError", r"by an earlier sync, since deleted there"),
    ("InvalidDataError", r"archived|could not be found|not_found|no such"),
    ("PermanentError", r"has no partner|no longer exists"),
)

TABLES: dict[str, tuple[FieldMap, ...]] = {
    "customers": customer_map.FIELDS,
    "products": product_map.FIELDS,
    "orders": order_map.FIELDS,
}
EDITABLE: dict[str, tuple[str, ...]] = {
    "customers": ("name", "first_name", "last_name", "phone", "mobile", "website", "notes", "billing_city"),
    "products": ("name", "description", "unit_price"),
    "orders": ("notes", "po_number", "due_date"),
}
# Wave list names in the snapshot, per entity.
WAVE_LIST = {"customers": "customers", "products": "products", "orders": "invoices"}


def field_map(entity: str, name: str) -> FieldMap:
    return next(f for f in TABLES[entity] if f.name == name)


@dataclass(frozen=True)
class Edit:
    """A person's edit of one synced field, as the canonical value it should end up as."""

    step: int
    side: str
    entity: str
    record_id: str
    field: str
    value: Any


@dataclass
class Figures:
    seed: int
    operations: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)  # user actions a system refused (a 409, a 422)
    faults: Counter[str] = field(default_factory=Counter)
    api_calls: Counter[str] = field(default_factory=Counter)
    repairs: int = 0
    problems: list[str] = field(default_factory=list)  # checker findings (drift, orphans, deletions)
    duplicates: list[str] = field(default_factory=list)
    lost_updates: list[str] = field(default_factory=list)
    dead_letters: list[str] = field(default_factory=list)
    unexplained_dead_letters: list[str] = field(default_factory=list)
    records: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.problems or self.duplicates or self.lost_updates or self.unexplained_dead_letters)

    def render(self) -> str:
        lines = [
            f"seed {self.seed}: {sum(self.operations.values())} operations "
            f"({sum(self.refused.values())} refused by the systems), {sum(self.faults.values())} faults injected "
            f"{dict(self.faults)} in {dict(self.api_calls)} API calls, {self.repairs} reconcile repairs, "
            f"{self.seconds:.1f}s",
            f"  records at the end: {self.records}",
            f"  operations: {dict(sorted(self.operations.items()))}",
            f"  duplicates {len(self.duplicates)}, lost updates {len(self.lost_updates)}, "
            f"checker problems {len(self.problems)}, dead letters {len(self.dead_letters)} "
            f"({len(self.unexplained_dead_letters)} unexplained)",
        ]
        lines += [f"  refused: {reason} ×{n}" for reason, n in self.refused.most_common(5)]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"  duplicate: {d}" for d in self.duplicates]
        lines += [f"  lost update: {u}" for u in self.lost_updates]
        lines += [f"  dead letter: {d}" for d in self.dead_letters]
        return "\n".join(lines)


class Refused(Exception):
    """A system refused what the simulated person tried (a customer with orders cannot be deleted...)."""


class History:
    """Plays `operations` seeded random user actions on both systems, then judges the converged end state."""

    def __init__(self, system: System, seed: int) -> None:
        self.system = system
        self.boxes = system.boxes
        self.seed = seed
        self.rng = Random(seed)
        self.figures = Figures(seed)
        self.edits: list[Edit] = []
        self.step = 0
        self.counter = 0
        self.today = datetime.now(UTC).date()
        settings = system.settings
        # A person in Wave uses the API with their own session (no fleet rate limiter), through the same faults.
        self.wave_user = WaveClient(f"{self.boxes.wave.url}/graphql/public", WAVE_TOKEN, settings.wave_business_id)
        self.income_account = ""
        self.actions: list[tuple[str, int, Callable[[], None]]] = [
            ("cp_customer_create", 6, self.cp_customer_create),
            ("wave_customer_create", 4, self.wave_customer_create),
            ("cp_customer_edit", 8, lambda: self.customer_edit("customerp")),
            ("wave_customer_edit", 8, lambda: self.customer_edit("wave")),
            ("both_sides_customer_edit", 4, self.both_sides_customer_edit),
            ("cp_customer_delete", 2, self.cp_customer_delete),
            ("wave_customer_delete", 1, self.wave_customer_delete),
            ("cp_product_create", 4, self.cp_product_create),
            ("wave_product_create", 3, self.wave_product_create),
            ("cp_product_edit", 5, lambda: self.product_edit("customerp")),
            ("wave_product_edit", 5, lambda: self.product_edit("wave")),
            ("cp_product_archive", 1, self.cp_product_archive),
            ("wave_product_archive", 1, self.wave_product_archive),
            ("cp_product_delete", 1, self.cp_product_delete),
            ("cp_order_create", 5, self.cp_order_create),
            ("wave_invoice_create", 3, self.wave_invoice_create),
            ("cp_order_edit", 5, lambda: self.order_edit("customerp")),
            ("wave_invoice_edit", 5, lambda: self.order_edit("wave")),
            ("cp_order_lines", 2, self.cp_order_lines),
            ("wave_invoice_items", 2, self.wave_invoice_items),
            ("cp_order_customer", 2, self.cp_order_customer),
            ("wave_invoice_customer", 1, self.wave_invoice_customer),
            ("cp_order_status", 2, self.cp_order_status),
            ("wave_invoice_payment", 1, self.wave_invoice_payment),
            ("cp_order_delete", 1, self.cp_order_delete),
            ("wave_invoice_delete", 1, self.wave_invoice_delete),
        ]

    # --- playing -----------------------------------------------------------------------------------------------

    def play(self, operations: int, *, faults: dict[str, Any] | None = None, pause: float = 0.2) -> Figures:
        started = time.monotonic()
        print(f"\nhistory seed={self.seed} operations={operations}")
        (self.system.workdir / "seed").write_text(f"{self.seed}\n")
        faults = FAULTS if faults is None else faults
        # The sandboxes' counters run for the whole session (a soak plays several histories): count from here.
        calls_before = {side: sum(self.boxes.counters(side).values()) for side in ("customerp", "wave")}
        faults_before = {side: Counter(self.boxes.faults_injected(side)) for side in ("customerp", "wave")}
        for side in ("customerp", "wave"):
            self.boxes.faults(side, **faults, seed=self.seed)
        self.income_account = self._wave_user(lambda: self.wave_user.list_accounts(["INCOME"])[0].id)
        self.system.start_beat()
        self.system.wait_for_polls()
        try:
            # A starting population, so that edits and orders have something to work on.
            for action in ("cp_customer_create",) * 3 + ("wave_customer_create",) * 2:
                self._do(action)
            for action in ("cp_product_create",) * 3 + ("wave_product_create",) * 2:
                self._do(action)
            names = [name for name, _, _ in self.actions]
            weights = [weight for _, weight, _ in self.actions]
            for _ in range(operations):
                self._do(self.rng.choices(names, weights)[0])
                time.sleep(self.rng.uniform(0, pause))
        finally:
            self.system.stop_beat()
            for side in ("customerp", "wave"):
                self.boxes.clear_faults(side)
                self.figures.api_calls[side] = sum(self.boxes.counters(side).values()) - calls_before[side]
                injected = Counter(self.boxes.faults_injected(side)) - faults_before[side]
                self.figures.faults.update({f"{side}:{k}": n for k, n in injected.items()})
            self.wave_user.close()
        self.figures.repairs = self.system.converge()
        self.judge()
        self.figures.seconds = time.monotonic() - started
        return self.figures

    def _do(self, name: str) -> None:
        self.step += 1
        action = {n: a for n, _, a in self.actions}[name]
        try:
            action()
        except Refused as exc:
            self.figures.refused[f"{name}: {exc}"[:80]] += 1
            return
        self.figures.operations[name] += 1

    def token(self) -> str:
        self.counter += 1
        return f"s{self.seed}n{self.counter}"

    # --- the two systems, as a person uses them ----------------------------------------------------------------

    def _cp(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self.boxes.cp(method, path, body)
        except httpx.HTTPStatusError as exc:
            detail = exc.response.json() if exc.response.content else {}
            raise Refused(f"customerp {exc.response.status_code} {detail.get('code', '')}") from None

    def _wave_admin(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return self.boxes.wave_admin(method, path, body)
        except httpx.HTTPStatusError as exc:
            raise Refused(f"wave {exc.response.status_code}") from None

    def _wave_user(self, call: Callable[[], Any], exists: Callable[[], Any] | None = None) -> Any:
        """A person's API call through the faults: on a failure, look whether it happened, else try again."""
        last: Exception | None = None
        for _ in range(50):
            try:
                return call()
            except RetryableError as exc:
                last = exc
                if "Timeout" in str(exc):
                    time.sleep(FAULTS["hang_s"] + 0.3)  # a hung request lands late: look only after it could
                found = exists() if exists is not None else None
                if found is not None:
                    return found
                time.sleep(0.05)
            except SyncError as exc:
                raise Refused(f"wave {type(exc).__name__}") from None
        raise AssertionError(f"the Wave sandbox kept failing a user's call: {last}")

    def cp_live(self, entity: str) -> list[dict[str, Any]]:
        return sorted(self.boxes.snapshot("customerp")[entity], key=lambda r: r["id"])

    def wave_live(self, entity: str) -> list[dict[str, Any]]:
        return sorted(self.boxes.snapshot("wave")[WAVE_LIST[entity]], key=lambda r: r["id"])

    def pick(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        if not records:
            raise Refused("nothing to act on yet")
        return records[self.rng.randrange(len(records))]

    def remember(self, side: str, entity: str, record_id: str, name: str, raw: Any) -> None:
        self.edits.append(Edit(self.step, side, entity, record_id, name, field_map(entity, name).normalise(raw)))

    def price(self) -> str:
        cents = self.rng.randint(100, 99_999)
        return f"{cents / 100:.2f}" if self.rng.random() < 0.8 else f"{cents / 100:.2f}{self.rng.randint(1, 99):02d}"

    # --- customers ---------------------------------------------------------------------------------------------

    def cp_customer_create(self) -> None:
        tok = self.token()
        body: dict[str, Any] = {"company_name": f"CP Customer {tok}"}
        if self.rng.random() < 0.8:
            body["email"] = f"{tok}@cp.example"
        if self.rng.random() < 0.5:
            body["contact_first_name"] = self.rng.choice(["Åse", "Łukasz", "Zoë", "محمد", "美咲"])
            body["phone"] = f"+47 {self.rng.randint(10_000_000, 99_999_999)}"
        if self.rng.random() < 0.4:
            body["billing_address"] = {
                "line1": f"{self.rng.randint(1, 200)} Storgata",
                "city": "Oslo",
                "postal_code": "0150",
                "country_code": "NO",
                "subdivision_code": "NO-03",
            }
        self._cp("POST", "customers", body)

    def wave_customer_create(self) -> None:
        tok = self.token()
        name = f"Wave Customer {tok}"
        body: dict[str, Any] = {"name": name}
        if self.rng.random() < 0.6:
            body["email"] = f"{tok}@wave.example"
        if self.rng.random() < 0.4:
            body["address"] = {"addressLine1": "1 Main Street", "city": "Austin", "countryCode": "US"}
        self._wave_user(
            lambda: self.wave_user.create_customer(body), lambda: self._wave_named("customers", "name", name)
        )

    def _wave_named(self, entity: str, key: str, value: str) -> dict[str, Any] | None:
        found = [r for r in self.wave_live(entity) if r.get(key) == value]
        return found[0] if found else None

    def _customer_value(self, name: str, tok: str) -> str:
        return {
            "name": f"Renamed {tok}",
            "first_name": f"Ana {tok}",
            "last_name": f"Øvrebø {tok}",
            "phone": f"+1 555 {self.counter:04d}",
            "mobile": f"+47 4{self.counter:07d}",
            "website": f"https://{tok}.example",
            "notes": f"note {tok}: שלום, e\u0301, 🚀",
            "billing_city": f"City {tok}",
        }[name]

    def customer_edit(self, side: str, record: dict[str, Any] | None = None, name: str | None = None) -> None:
        entity = "customers"
        record = record or self.pick(self.cp_live(entity) if side == "customerp" else self.wave_live(entity))
        name = name or self.rng.choice(EDITABLE[entity])
        value = self._customer_value(name, self.token())
        fmap = field_map(entity, name)
        body: dict[str, Any] = {}
        if side == "customerp":
            set_path(body, fmap.customerp, value)
            self._cp("PATCH", f"customers/{record['id']}", body)
        else:
            if fmap.group:  # Wave replaces the address as a whole: send the current one with one part changed
                body["address"] = {**_wave_address_input(record.get("address")), "city": value}
            else:
                assert fmap.wave_write is not None
                set_path(body, fmap.wave_write, value)
            self._wave_admin("PATCH", f"customers/{record['id']}", body)
        self.remember(side, entity, record["id"], name, value)

    def both_sides_customer_edit(self) -> None:
        """One linked customer edited in both systems at nearly the same time: same field or different fields."""
        with self.system.ctx.db.session() as session:
            links = [(link.customerp_id, link.wave_id) for link in store.all_links(session, "customers")]
        if not links:
            raise Refused("no linked customer yet")
        cp_id, wave_id = links[self.rng.randrange(len(links))]
        cp = next((r for r in self.cp_live("customers") if r["id"] == cp_id), None)
        wave = next((r for r in self.wave_live("customers") if r["id"] == wave_id), None)
        if cp is None or wave is None:
            raise Refused("the pair is being deleted")
        first = self.rng.choice(EDITABLE["customers"])
        second = first if self.rng.random() < 0.5 else self.rng.choice(EDITABLE["customers"])
        self.customer_edit("customerp", cp, first)
        self.customer_edit("wave", wave, second)

    def cp_customer_delete(self) -> None:
        record = self.pick(self.cp_live("customers"))
        self._cp("DELETE", f"customers/{record['id']}")

    def wave_customer_delete(self) -> None:
        record = self.pick(self.wave_live("customers"))
        self._wave_admin("DELETE", f"customers/{record['id']}")

    # --- products ----------------------------------------------------------------------------------------------

    def cp_product_create(self) -> None:
        tok = self.token()
        body: dict[str, Any] = {"name": f"CP Product {tok}", "unit_price": self.price(), "currency": "USD"}
        if self.rng.random() < 0.5:
            body["description"] = f"Made in Kraków {tok} — ½ price ✓"
        self._cp("POST", "products", body)

    def wave_product_create(self) -> None:
        tok = self.token()
        name = f"Wave Product {tok}"
        body: dict[str, Any] = {"name": name, "unitPrice": self.price(), "incomeAccountId": self.income_account}
        if self.rng.random() < 0.5:
            body["description"] = f"From Wave {tok}"
        self._wave_user(lambda: self.wave_user.create_product(body), lambda: self._wave_named("products", "name", name))

    def product_edit(self, side: str) -> None:
        entity = "products"
        live = self.cp_live(entity) if side == "customerp" else self.wave_live(entity)
        record = self.pick([r for r in live if not r.get("archived") and not r.get("isArchived")])
        name = self.rng.choice(EDITABLE[entity])
        tok = self.token()
        value = {"name": f"Renamed product {tok}", "description": f"Described {tok}", "unit_price": self.price()}[name]
        fmap = field_map(entity, name)
        body: dict[str, Any] = {}
        if side == "customerp":
            set_path(body, fmap.customerp, value)
            self._cp("PATCH", f"products/{record['id']}", body)
        else:
            assert fmap.wave_write is not None
            set_path(body, fmap.wave_write, value)
            self._wave_admin("PATCH", f"products/{record['id']}", body)
        self.remember(side, entity, record["id"], name, value)

    def cp_product_archive(self) -> None:
        record = self.pick([r for r in self.cp_live("products") if not r["archived"]])
        self._cp("PATCH", f"products/{record['id']}", {"archived": True})
        self.remember("customerp", "products", record["id"], "archived", True)

    def wave_product_archive(self) -> None:
        record = self.pick([r for r in self.wave_live("products") if not r["isArchived"]])
        self._wave_admin("POST", f"products/{record['id']}/archive")
        self.remember("wave", "products", record["id"], "archived", True)

    def cp_product_delete(self) -> None:
        record = self.pick(self.cp_live("products"))
        self._cp("DELETE", f"products/{record['id']}")

    # --- orders ------------------------------------------------------------------------------------------------

    def _cp_lines(self) -> list[dict[str, Any]]:
        products = [p for p in self.cp_live("products") if not p["archived"]]
        if not products:
            raise Refused("no product to sell")
        chosen = self.rng.sample(products, min(len(products), self.rng.randint(1, 3)))
        return [
            {
                "product_id": p["id"],
                "quantity": self.rng.choice(["1", "2", "3", "1.5", "10"]),
                "unit_price": p["unit_price"],
            }
            for p in chosen
        ]

    def cp_order_create(self) -> None:
        customer = self.pick(self.cp_live("customers"))
        body: dict[str, Any] = {
            "customer_id": customer["id"],
            "order_date": self.today.isoformat(),
            "lines": self._cp_lines(),
        }
        if self.rng.random() < 0.5:
            body["due_date"] = (self.today + timedelta(days=self.rng.randint(1, 60))).isoformat()
        if self.rng.random() < 0.3:
            body["po_number"] = f"PO-{self.token()}"
        if self.rng.random() < 0.2:
            body["status"] = "confirmed"
        self._cp("POST", "orders", body)

    def wave_invoice_create(self) -> None:
        customer = self.pick(self.wave_live("customers"))
        products = [p for p in self.wave_live("products") if not p["isArchived"]]
        if not products:
            raise Refused("no Wave product to sell")
        chosen = self.rng.sample(products, min(len(products), self.rng.randint(1, 2)))
        number = f"W-{self.token()}"
        body: dict[str, Any] = {
            "customerId": customer["id"],
            "invoiceNumber": number,
            "invoiceDate": self.today.isoformat(),
            "items": [{"productId": p["id"], "quantity": self.rng.choice(["1", "2", "4"])} for p in chosen],
        }
        if self.rng.random() < 0.3:
            body["status"] = "SAVED"
        self._wave_user(
            lambda: self.wave_user.create_invoice(body), lambda: self._wave_named("orders", "invoiceNumber", number)
        )

    def order_edit(self, side: str) -> None:
        entity = "orders"
        record = self.pick(self.cp_live(entity) if side == "customerp" else self.wave_live(entity))
        name = self.rng.choice(EDITABLE[entity])
        tok = self.token()
        value = {
            "notes": f"Memo {tok} — 🧾",
            "po_number": f"PO {tok}",
            "due_date": (self.today + timedelta(days=self.rng.randint(1, 90))).isoformat(),
        }[name]
        fmap = field_map(entity, name)
        body: dict[str, Any] = {}
        if side == "customerp":
            set_path(body, fmap.customerp, value)
            self._cp("PATCH", f"orders/{record['id']}", body)
        else:
            assert fmap.wave_write is not None
            set_path(body, fmap.wave_write, value)
            self._wave_admin("PATCH", f"invoices/{record['id']}", body)
        self.remember(side, entity, record["id"], name, value)

    def cp_order_lines(self) -> None:
        order = self.pick(self.cp_live("orders"))
        lines = [dict(line) for line in order["lines"]]
        if lines and self.rng.random() < 0.7:
            lines[self.rng.randrange(len(lines))]["quantity"] = self.rng.choice(["2", "5", "7.25"])
        else:
            lines += self._cp_lines()[:1]
        self._cp("PATCH", f"orders/{order['id']}", {"lines": lines})

    def wave_invoice_items(self) -> None:
        invoice = self.pick(self.wave_live("orders"))
        items = [
            {
                "productId": item["product"]["id"],
                "description": item["description"],
                "quantity": item["quantity"],
                "unitPrice": item["unitPrice"],
            }
            for item in invoice["items"]
        ]
        if not items:
            raise Refused("an invoice without items")
        items[self.rng.randrange(len(items))]["quantity"] = self.rng.choice(["3", "6", "0.5"])
        self._wave_admin("PATCH", f"invoices/{invoice['id']}", {"items": items})

    def cp_order_customer(self) -> None:
        """A dependency change: the order now belongs to another customer."""
        order = self.pick(self.cp_live("orders"))
        customer = self.pick([c for c in self.cp_live("customers") if c["id"] != order["customer_id"]])
        self._cp("PATCH", f"orders/{order['id']}", {"customer_id": customer["id"]})

    def wave_invoice_customer(self) -> None:
        invoice = self.pick(self.wave_live("orders"))
        customer = self.pick([c for c in self.wave_live("customers") if c["id"] != invoice["customer"]["id"]])
        self._wave_admin("PATCH", f"invoices/{invoice['id']}", {"customerId": customer["id"]})

    def cp_order_status(self) -> None:
        order = self.pick([o for o in self.cp_live("orders") if o["status"] in ("draft", "confirmed")])
        status = "sent" if order["status"] == "confirmed" or self.rng.random() < 0.3 else "confirmed"
        self._cp("PATCH", f"orders/{order['id']}", {"status": status})
        self.remember("customerp", "orders", order["id"], "status", status)

    def wave_invoice_payment(self) -> None:
        invoice = self.pick(
            [i for i in self.wave_live("orders") if i["status"] != "DRAFT" and float(i["amountDue"]["value"]) > 0]
        )
        self._wave_admin("POST", "payments", {"invoiceId": invoice["id"], "amount": invoice["amountDue"]["value"]})
        self.remember("wave", "orders", invoice["id"], "status", "paid")

    def cp_order_delete(self) -> None:
        order = self.pick(self.cp_live("orders"))
        self._cp("DELETE", f"orders/{order['id']}")

    def wave_invoice_delete(self) -> None:
        invoice = self.pick(self.wave_live("orders"))
        self._wave_admin("DELETE", f"invoices/{invoice['id']}")

    # --- judging the end state ---------------------------------------------------------------------------------

    def judge(self) -> None:
        figures, system = self.figures, self.system
        for report in system.check():
            figures.problems += [
                f"{report.entity} {kind}: {ids}"
                for kind in (
                    "drift",
                    "missing_in_wave",
                    "missing_in_customerp",
                    "deleted_in_customerp",
                    "deleted_in_wave",
                    "duplicates",
                )
                if (ids := getattr(report, kind))
            ]
        cp, wave = self.boxes.snapshot("customerp"), self.boxes.snapshot("wave")
        figures.records = {
            f"{side}.{entity}": len(records[entity if side == "customerp" else WAVE_LIST[entity]])
            for side, records in (("customerp", cp), ("wave", wave))
            for entity in ("customers", "products", "orders")
        }
        for side, records, keys in (
            ("customerp", cp, {"customers": "company_name", "products": "name", "orders": "order_number"}),
            ("wave", wave, {"customers": "name", "products": "name", "orders": "invoiceNumber"}),
        ):
            for entity, key in keys.items():
                rows = records[entity if side == "customerp" else WAVE_LIST[entity]]
                counts = Counter(r[key] for r in rows)
                figures.duplicates += [
                    f"{side} {entity} {key}={v!r} ×{n}: {[r['id'] for r in rows if r[key] == v]}"
                    for v, n in counts.items()
                    if n > 1
                ]
        dead = system.dead_letters()
        dead_ids = {(d["entity"], i) for d in dead for i in (d["customerp_id"], d["wave_id"], d["source_id"]) if i}
        for entry in dead:
            text = f"{entry['entity']} {entry['source']}:{entry['source_id']} {entry['error_class']}: {entry['reason']}"
            figures.dead_letters.append(text[:300])
            explained = any(
                entry["error_class"] == cls and re.search(pattern, entry["reason"], re.IGNORECASE)
                for cls, pattern in EXPLAINED_DEAD_LETTERS
            )
            if not explained:
                figures.unexplained_dead_letters.append(text[:300])
        self._judge_lost_updates(cp, wave, dead_ids)

    def _judge_lost_updates(self, cp: dict[str, Any], wave: dict[str, Any], dead: set[tuple[str, str]]) -> None:
        """A field edited in one system only must end as its last edit, in both systems."""
        ctx = self.system.ctx
        with ctx.db.session() as session:
            links = {e: list(store.all_links(session, e)) for e in ("customers", "products", "orders")}
        pair_of: dict[tuple[str, str, str], tuple[str, str]] = {}
        for entity, rows in links.items():
            for link in rows:
                pair = (link.customerp_id, link.wave_id)
                pair_of[(entity, "customerp", link.customerp_id)] = pair
                pair_of[(entity, "wave", link.wave_id)] = pair
        by_field: dict[tuple[str, tuple[str, str], str], list[Edit]] = {}
        for edit in self.edits:
            pair = pair_of.get((edit.entity, edit.side, edit.record_id))
            if pair is None:
                continue  # deleted since, or never linked: the checker judges those
            by_field.setdefault((edit.entity, pair, edit.field), []).append(edit)
        cp_records = {e: {r["id"]: r for r in cp[e]} for e in ("customers", "products", "orders")}
        for (entity, (cp_id, wave_id), name), edits in sorted(by_field.items(), key=lambda item: str(item[0])):
            if len({e.side for e in edits}) > 1 or (entity, cp_id) in dead or (entity, wave_id) in dead:
                continue  # edited on both sides: a conflict, decided by policy; or parked in a dead-letter queue
            if name == "status":
                continue  # statuses move through payments too; the checker compares them
            record = cp_records[entity].get(cp_id)
            if record is None:
                continue
            canonical = ctx_canonical(entity, record)
            expected = edits[-1].value
            if canonical.get(name) != expected:
                self.figures.lost_updates.append(
                    f"{entity} {cp_id}/{wave_id} {name}: expected {expected!r} (edited in {edits[-1].side} at step "
                    f"{edits[-1].step}), found {canonical.get(name)!r}"
                )


def ctx_canonical(entity: str, record: dict[str, Any]) -> dict[str, Any]:
    """The canonical scalar fields of a Customerp record (no reference translation needed for the oracle)."""
    out: dict[str, Any] = {}
    for fmap in TABLES[entity]:
        node: Any = record
        for key in fmap.customerp:
            node = node.get(key) if isinstance(node, dict) else None
        try:
            out[fmap.name] = fmap.normalise(node)
        except (TypeError, ValueError):
            out[fmap.name] = node
    return out


def _wave_address_input(address: dict[str, Any] | None) -> dict[str, Any]:
    """The Wave address of a snapshot (GraphQL output shape) as an AddressInput."""
    if not address:
        return {}
    out = {k: address.get(k) for k in ("addressLine1", "addressLine2", "city", "postalCode")}
    if address.get("country"):
        out["countryCode"] = address["country"]["code"]
    if address.get("province"):
        out["provinceCode"] = address["province"]["code"]
    return {k: v for k, v in out.items() if v is not None}
