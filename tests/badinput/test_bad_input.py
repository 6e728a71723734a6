"""Bad input from either system ends in a clear dead letter or a documented normalisation, never in a crashed
worker, a poisoned queue or a half-written record.

All cases share one running system: every bad record is made at once (as people would, in both systems), one sync
runs, and each case then checks its own outcome. Good "canary" records made after the bad ones must sync too.

Malformed answers at the HTTP level (HTML error pages, truncated or non-JSON bodies, JSON of the wrong shape) are
classified by the clients and tested there, as tables: tests/shared/customerp/test_client.py (`ERROR_TABLE`) and
tests/shared/wave/test_wave_error_table.py; an edit of a paid invoice is in tests/workers/test_orders_flow.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from producers.reconcile import Reconciler
from shared import keys
from shared.celery_app import app
from shared.messages import ChangeMessage
from shared.store import links as store
from tests.harness import Sandboxes, System
from tests.workers.conftest import clean_redis
from wavesync.embedded import EmbeddedRedis

pytestmark = pytest.mark.integration

UNICODE_NAME = "Ωmega 🚀 شركة e\u0301toile \u200fRTL\u200f Zürich"
LONG = "x" * 10_000


class World:
    """The running system plus helpers that make records as people in each system do."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.boxes = system.boxes
        self.wave = system.ctx.wave
        self.income = self.wave.list_accounts(["INCOME"])[0].id
        self.made: dict[str, tuple[str, str]] = {}  # case id -> (system, record id)
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.dead: list[dict[str, Any]] = []
        self.links: dict[str, list[tuple[str, str]]] = {}
        self.linked_customer = ""  # linked first, then edited badly
        self.crafted: dict[str, str] = {}  # linked orders whose next read is corrupted

    # --- as a person in Customerp ---
    def cp(self, entity: str, body: dict[str, Any]) -> str:
        return str(self.boxes.cp("POST", entity, body)["id"])

    def cp_customer(self, **fields: Any) -> str:
        return self.cp("customers", {"company_name": "Bad input Co", **fields})

    def cp_order(self, customer: str, lines: list[dict[str, Any]], **fields: Any) -> str:
        return self.cp("orders", {"customer_id": customer, "order_date": "2026-01-10", "lines": lines, **fields})

    # --- as a person in Wave ---
    def wave_customer(self, **fields: Any) -> str:
        return self.wave.create_customer({"name": "Wave bad input", **fields}).id

    def wave_product(self, name: str, price: str = "10") -> str:
        return self.wave.create_product({"name": name, "unitPrice": price, "incomeAccountId": self.income}).id

    def wave_invoice(self, customer: str, items: list[dict[str, Any]], **fields: Any) -> str:
        return self.wave.create_invoice({"customerId": customer, "items": items, **fields}).id

    # --- what the sync made ---
    def partner(self, entity: str, system: str, record_id: str) -> str | None:
        for cp_id, wave_id in self.links[entity]:
            if (cp_id if system == "customerp" else wave_id) == record_id:
                return wave_id if system == "customerp" else cp_id
        return None

    def dead_letter(self, entity: str, system: str, record_id: str) -> dict[str, Any] | None:
        found = [
            d for d in self.dead if d["entity"] == entity and d["source"] == system and d["source_id"] == record_id
        ]
        return found[0] if found else None

    def record(self, system: str, entity: str, record_id: str) -> dict[str, Any]:
        snapshot = self.snapshots[system]
        name = {"customerp": entity, "wave": {"orders": "invoices"}.get(entity, entity)}[system]
        return next(r for r in snapshot[name] if r["id"] == record_id)


@dataclass(frozen=True)
class Case:
    """`make` creates the bad record and returns (system, id). `dead` = (error class, reason pattern, field path):
    the record must wait in the dead-letter queue with that reason and have no partner. Without `dead` the record
    must be linked, and `check` may look at what the sync made of it."""

    id: str
    entity: str
    make: Callable[[World], tuple[str, str]]
    dead: tuple[str, str, str | None] | None = None
    check: Callable[[World, str, str], None] | None = None
    phase: int = 1  # 0: made, then synced, before the phase-1 records (to edit a linked record)
    notes: str = field(default="", compare=False)


def _lines(world: World, *quantities_and_prices: tuple[str, str]) -> list[dict[str, Any]]:
    product = world.cp("products", {"name": f"Line product {len(world.made)}", "unit_price": "1", "currency": "USD"})
    return [{"product_id": product, "quantity": q, "unit_price": p} for q, p in quantities_and_prices]


def _wave_items(world: World, *quantities_and_prices: tuple[str, str | None]) -> list[dict[str, Any]]:
    product = world.wave_product(f"Wave line product {len(world.made)}")
    items = []
    for quantity, price in quantities_and_prices:
        item: dict[str, Any] = {"productId": product, "quantity": quantity}
        if price is not None:
            item["unitPrice"] = price
        items.append(item)
    return items


def _wave_invoice_without(world: World, what: str) -> tuple[str, str]:
    """An invoice whose customer or product was deleted in Wave before it was ever synced."""
    customer = world.wave_customer(name=f"Soon gone {what}")
    product = world.wave_product(f"Soon gone product {what}")
    invoice = world.wave_invoice(customer, [{"productId": product, "quantity": "1"}], invoiceNumber=f"GONE-{what}")
    kind, doomed = ("customers", customer) if what == "customer" else ("products", product)
    world.boxes.wave_admin("DELETE", f"{kind}/{doomed}")
    return "wave", invoice


def _crafted(world: World, entity: str, record_id: str, patch: Callable[[dict[str, Any]], None]) -> None:
    """A change message whose snapshot holds what no validating system would send (a corrupted read)."""
    record = dict(world.system.ctx.customerp.get(entity, record_id).model_dump(mode="json"))  # type: ignore[arg-type]
    record["version"] = 10**9
    patch(record)
    message = ChangeMessage(
        entity=entity, source="customerp", source_id=record_id, version=f"{10**9:012d}", snapshot=record
    )  # type: ignore[arg-type]
    app.send_task(keys.SYNC_TASK[entity], args=[message.to_json()], queue=entity)


def _linked_order(world: World, case: str) -> str:
    customer = world.cp_customer(company_name=f"Order owner {case}")
    return world.cp_order(customer, _lines(world, ("1", "5")), order_number=f"CRAFT-{case}")


def _same_on_both_sides(key_cp: str, key_wave: str, expected: Any = None) -> Callable[[World, str, str], None]:
    def check(world: World, cp_id: str, wave_id: str) -> None:
        entity = "customers" if key_cp == "company_name" else "products"
        cp_value = world.record("customerp", entity, cp_id)[key_cp]
        wave_value = world.record("wave", entity, wave_id)[key_wave]
        assert cp_value == wave_value, (cp_value, wave_value)
        if expected is not None:
            assert cp_value == expected

    return check


def _price(cp_expected: str, wave_expected: str) -> Callable[[World, str, str], None]:
    def check(world: World, cp_id: str, wave_id: str) -> None:
        assert Decimal(world.record("customerp", "products", cp_id)["unit_price"]) == Decimal(cp_expected)
        assert Decimal(world.record("wave", "products", wave_id)["unitPrice"]) == Decimal(wave_expected)

    return check


def _quantity(wave_expected: str, cp_expected: str) -> Callable[[World, str, str], None]:
    def check(world: World, cp_id: str, wave_id: str) -> None:
        assert Decimal(world.record("wave", "orders", wave_id)["items"][0]["quantity"]) == Decimal(wave_expected)
        assert Decimal(world.record("customerp", "orders", cp_id)["lines"][0]["quantity"]) == Decimal(cp_expected)

    return check


CASES: list[Case] = [
    # --- from Customerp: what Customerp accepts and Wave refuses or changes ---
    Case(
        "customerp 10,000-character notes",
        "customers",
        lambda w: ("customerp", w.cp_customer(company_name="Long notes", notes=LONG)),
        dead=("InvalidDataError", r"at most 4000 characters", "internalNotes"),
    ),
    Case(
        "customerp 10,000-character product description",
        "products",
        lambda w: ("customerp", w.cp("products", {"name": "Long text", "unit_price": "1", "description": LONG})),
        dead=("InvalidDataError", r"at most 4000 characters", "description"),
    ),
    Case(
        "customerp currency Wave does not know (VES)",
        "customers",
        lambda w: ("customerp", w.cp_customer(company_name="Bolívar", currency="VES")),
        dead=("PermanentError", r"'VES' does not exist in 'CurrencyCode'", None),
    ),
    Case(
        "customerp product priced in another currency",
        "products",
        lambda w: ("customerp", w.cp("products", {"name": "Euro item", "unit_price": "3", "currency": "EUR"})),
        dead=("InvalidDataError", r"priced in EUR", "currency"),
    ),
    Case(
        "customerp cancelled order",
        "orders",
        lambda w: (
            "customerp",
            w.cp_order(w.cp_customer(company_name="Canceller"), _lines(w, ("1", "2")), status="cancelled"),
        ),
        dead=("ForbiddenEditError", r"cancelled", "status"),
    ),
    Case(
        "customerp unicode: emoji, right-to-left, combining marks",
        "customers",
        lambda w: ("customerp", w.cp_customer(company_name=UNICODE_NAME, notes="مرحبا 👋 e\u0301")),
        check=_same_on_both_sides("company_name", "name", UNICODE_NAME),
    ),
    Case(
        "customerp over-precise price: Wave rounds to 5 decimals, Customerp keeps its own",
        "products",
        lambda w: ("customerp", w.cp("products", {"name": "Precise", "unit_price": "1.23456789"})),
        check=_price("1.23456789", "1.23457"),
    ),
    Case(
        "customerp huge price (12 digits, 8 decimals)",
        "products",
        lambda w: ("customerp", w.cp("products", {"name": "Huge", "unit_price": "999999999999.99999999"})),
        check=_price("999999999999.99999999", "1000000000000"),
    ),
    Case(
        "customerp zero price",
        "products",
        lambda w: ("customerp", w.cp("products", {"name": "Free sample", "unit_price": "0"})),
        check=_price("0", "0"),
    ),
    Case(
        "customerp negative line price (a discount) and a tiny quantity",
        "orders",
        lambda w: ("customerp", w.cp_order(w.cp_customer(company_name="Discounted"), _lines(w, ("0.00000001", "-5")))),
        check=_quantity("0.00000001", "0.00000001"),
    ),
    Case(
        "customerp two customers with one email: mirrored, each linked once",
        "customers",
        lambda w: (
            "customerp",
            [
                w.cp_customer(company_name="Twin A", email="twin@example.com"),
                w.cp_customer(company_name="Twin B", email="TWIN@example.com"),
            ][1],
        ),
    ),
    Case(
        "customerp edit to 10,000-character notes of a linked customer",
        "customers",
        lambda w: ("customerp", w.linked_customer),
        dead=("InvalidDataError", r"at most 4000 characters", "internalNotes"),
    ),
    # --- from Wave: what Wave accepts and Customerp refuses or changes ---
    Case(
        "wave NUL byte in a name",
        "customers",
        lambda w: ("wave", w.wave_customer(name="Nul\x00Byte Ltd")),
        dead=("InvalidDataError", r"control characters", "company_name"),
    ),
    Case(
        "wave email Customerp finds invalid",
        "customers",
        lambda w: ("wave", w.wave_customer(name="Accented mail", email="josé@exämple.com")),
        dead=("InvalidDataError", r"email address", "email"),
    ),
    Case(
        "wave phone longer than Customerp holds",
        "customers",
        lambda w: ("wave", w.wave_customer(name="Long phone", phone="+1 " + "5" * 60)),
        dead=("InvalidDataError", r"at most 50 characters", "phone"),
    ),
    Case(
        "wave retired currency (HRK)",
        "customers",
        lambda w: ("wave", w.wave_customer(name="Kuna", currency="HRK")),
        dead=("InvalidDataError", r"ISO 4217", "currency"),
    ),
    Case(
        "wave two customers with one email: mirrored, each linked once",
        "customers",
        lambda w: (
            "wave",
            [
                w.wave_customer(name="Wave twin A", email="wtwin@example.com"),
                w.wave_customer(name="Wave twin B", email="wtwin@example.com"),
            ][1],
        ),
    ),
    Case(
        "wave unicode product name",
        "products",
        lambda w: ("wave", w.wave_product(UNICODE_NAME)),
        check=_same_on_both_sides("name", "name", UNICODE_NAME),
    ),
    Case(
        "wave zero quantity",
        "orders",
        lambda w: (
            "wave",
            w.wave_invoice(w.wave_customer(name="Zero qty"), _wave_items(w, ("0", None)), invoiceNumber="Q-ZERO"),
        ),
        dead=("InvalidDataError", r"greater than 0", "lines.0.quantity"),
    ),
    Case(
        "wave negative quantity",
        "orders",
        lambda w: (
            "wave",
            w.wave_invoice(w.wave_customer(name="Neg qty"), _wave_items(w, ("-2", None)), invoiceNumber="Q-NEG"),
        ),
        dead=("InvalidDataError", r"greater than 0", "lines.0.quantity"),
    ),
    Case(
        "wave huge price",
        "orders",
        lambda w: (
            "wave",
            w.wave_invoice(
                w.wave_customer(name="Huge price"), _wave_items(w, ("1", "12345678901234.5")), invoiceNumber="Q-HUGE"
            ),
        ),
        dead=("InvalidDataError", r"12 digits", "lines.0.unit_price"),
    ),
    Case(
        "wave over-precise quantity: Wave rounds to 8 decimals",
        "orders",
        lambda w: (
            "wave",
            w.wave_invoice(
                w.wave_customer(name="Precise qty"), _wave_items(w, ("1.123456789", None)), invoiceNumber="Q-PRECISE"
            ),
        ),
        check=lambda w, cp_id, wave_id: _quantity("1.12345679", "1.12345679")(w, cp_id, wave_id),
    ),
    Case(
        "wave due date before the invoice date",
        "orders",
        lambda w: (
            "wave",
            w.wave_invoice(
                w.wave_customer(name="Time traveller"),
                _wave_items(w, ("1", None)),
                invoiceNumber="Q-DATES",
                invoiceDate="2026-03-01",
                dueDate="2026-02-01",
            ),
        ),
        dead=("InvalidDataError", r"before order_date", "due_date"),
    ),
    Case(
        "wave invoice whose customer was deleted",
        "orders",
        lambda w: _wave_invoice_without(w, "customer"),
        dead=("PermanentError", r"customer .* has no partner", None),
    ),
    Case(
        "wave invoice whose product was deleted",
        "orders",
        lambda w: _wave_invoice_without(w, "product"),
        dead=("PermanentError", r"product .* has no partner", None),
    ),
    # --- corrupted reads: a change message whose snapshot no validating system would produce ---
    Case(
        "malformed date in a record read",
        "orders",
        lambda w: ("customerp", w.crafted["date"]),
        dead=("InvalidDataError", r"order_date", "order_date"),
    ),
    Case(
        "wrong type in a record read (a quantity that is a list)",
        "orders",
        lambda w: ("customerp", w.crafted["type"]),
        dead=("InvalidDataError", r"quantity", "lines.0.quantity"),
    ),
    Case(
        "missing name in a record read",
        "customers",
        lambda w: ("customerp", w.crafted["name"]),
        dead=("InvalidDataError", r"company_name: Input should be a valid string", "company_name"),
    ),
]


@dataclass
class Outcome:
    world: World
    worker_alive: bool
    canaries_synced: bool
    problems: int


@pytest.fixture(scope="module")
def outcome(
    boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Outcome]:
    boxes.reset()
    clean_redis(redis_server.url)
    system = System(boxes, redis_server.url, tmp_path_factory.mktemp("badinput"), http_timeout=2.0, max_retries=3)
    system.start_worker()
    try:
        yield _run(system)
    finally:
        system.close()


def _run(system: System) -> Outcome:
    world = World(system)
    # Phase 0: records that must be linked before their bad edit or their corrupted read.
    world.linked_customer = world.cp_customer(company_name="Linked, then edited")
    world.crafted = {
        "date": _linked_order(world, "date"),
        "type": _linked_order(world, "type"),
        "name": world.cp_customer(company_name="Named, then not"),
    }
    system.settle()
    world.boxes.cp("PATCH", f"customers/{world.linked_customer}", {"notes": LONG})
    _crafted(world, "orders", world.crafted["date"], lambda r: r.update(order_date="2024-13-45"))
    _crafted(world, "orders", world.crafted["type"], lambda r: r["lines"][0].update(quantity=[1, 2]))
    _crafted(world, "customers", world.crafted["name"], lambda r: r.update(company_name=None))
    # Phase 1: every bad record at once, then good ones that must not be held up by them.
    for case in CASES:
        world.made[case.id] = case.make(world)
    system.settle()
    canaries = [world.cp_customer(company_name="Canary CP"), world.wave_customer(name="Canary Wave")]
    system.settle()
    world.snapshots = {"customerp": system.boxes.snapshot("customerp"), "wave": system.boxes.snapshot("wave")}
    world.dead = system.dead_letters()
    with system.ctx.db.session() as session:
        world.links = {
            e: [(link.customerp_id, link.wave_id) for link in store.all_links(session, e)]
            for e in ("customers", "products", "orders")
        }
    synced = world.partner("customers", "customerp", canaries[0]) is not None
    synced = synced and world.partner("customers", "wave", canaries[1]) is not None
    problems = sum(r.problems for r in Reconciler(system.ctx, repair=False).run())
    alive = system.worker is not None and system.worker.poll() is None
    return Outcome(world, alive, synced, problems)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_ends_in_a_dead_letter_with_its_reason_or_a_documented_normalisation(
    outcome: Outcome, case: Case
) -> None:
    world = outcome.world
    system, record_id = world.made[case.id]
    entry = world.dead_letter(case.entity, system, record_id)
    partner = world.partner(case.entity, system, record_id)
    if case.dead is None:
        assert entry is None, f"dead-lettered: {entry and entry['reason']}"
        assert partner is not None, "not synced"
        if case.check is not None:
            cp_id, wave_id = (record_id, partner) if system == "customerp" else (partner, record_id)
            case.check(world, cp_id, wave_id)
        return
    error_class, pattern, path = case.dead
    assert entry is not None, f"no dead letter (partner: {partner})"
    assert entry["error_class"] == error_class, entry["reason"]
    assert re.search(pattern, entry["reason"]), entry["reason"]
    if path is not None:
        assert path in entry["field_paths"], entry["field_paths"]
    assert entry["attempts"] <= 2, "retried a permanent failure"
    if not entry["customerp_id"] or not entry["wave_id"]:
        assert partner is None, "a half-written pair: a partner was created for a dead-lettered record"


def test_the_worker_survives_and_good_records_still_sync(outcome: Outcome) -> None:
    assert outcome.worker_alive
    assert outcome.canaries_synced
    # Every bad record is either synced or waits in a dead-letter queue: the checker sees nothing else.
    assert outcome.problems == 0
