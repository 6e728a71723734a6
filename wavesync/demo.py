"""`wavesync demo`: the main job on embedded defaults, start to finish, with a summary.

It starts an embedded Valkey and both sandboxes, seeds data on both sides (some records exist in both, to show
onboarding matches), runs a real worker and beat, edits records in each system as a person would, waits for
each edit to reach the other side, shows that a settled sync makes no further writes, and ends with the drift
check. Exit status 0 means every step held.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
import redis

from producers.reconcile import EntityReport, Reconciler
from shared.context import Context
from shared.deadletters import DeadLetters, Filter
from shared.settings import Settings
from shared.store.db import upgrade
from wavesync.embedded import EmbeddedRedis
from wavesync.ops import queue_depths, render_dead_letters, render_reconcile
from wavesync.services import Fleet, running_sandboxes

POLL_INTERVAL_S = 1.0


def say(text: str) -> None:
    print(text, flush=True)


class Demo:
    def __init__(self, settings: Settings, env: dict[str, str], cp_url: str, wave_url: str) -> None:
        self.settings = settings
        self.env = env
        self.cp_admin = cp_url + "/_admin"
        self.wave_admin = wave_url.rsplit("/graphql", 1)[0] + "/_admin"
        self.http = httpx.Client(timeout=30)
        self.ctx = Context.from_settings(settings)
        self.redis = redis.Redis.from_url(str(settings.redis_url))
        self.checks: list[tuple[str, bool]] = []

    def close(self) -> None:
        self.http.close()
        self.ctx.close()
        self.redis.close()

    # --- helpers ---

    def admin(self, base: str, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{base}/{path}", json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def idle(self) -> bool:
        depths = queue_depths(self.redis)
        return all(d["waiting"] == 0 and d["unacked"] == 0 for d in depths.values())

    def check(self) -> list[EntityReport]:
        return Reconciler(self.ctx, repair=False).run()

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 120) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    self.checks.append((what, True))
                    return True
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.5)
        self.checks.append((what, False))
        say(f"  ✗ {what}: not seen within {timeout:.0f}s")
        return False

    def converged(self) -> bool:
        return self.idle() and not any(r.problems for r in self.check())

    def wave_writes(self) -> int:
        calls = self.admin(self.wave_admin, "GET", "counters")["calls"]
        return sum(
            v
            for k, v in calls.items()
            if any(w in k for w in ("Create", "Patch", "Delete", "Archive", "Approve", "MarkSent"))
        )

    def cp_writes(self) -> int:
        calls = self.admin(self.cp_admin, "GET", "counters")["calls"]
        return sum(v for k, v in calls.items() if k.endswith((".create", ".update", ".delete")))

    def snapshot(self, base: str) -> dict[str, Any]:
        data: dict[str, Any] = self.admin(base, "GET", "snapshot")
        if base == self.wave_admin:
            business: dict[str, Any] = data["businesses"][0]
            return business
        return data

    # --- the story ---

    def seed(self) -> None:
        say("1. Seeding: Customerp has customers, products and orders; Wave already has some of its own.")
        self.admin(self.cp_admin, "POST", "seed", {"customers": 12, "products": 6, "orders": 8, "lines": 3, "seed": 7})
        self.admin(self.wave_admin, "POST", "seed", {"customers": 4, "products": 2, "invoices": 0, "seed": 11})
        # Seeded ERP data is deliberately messy; tidy what would dead-letter, keep one bad record to show.
        cp = self.snapshot(self.cp_admin)
        for product in cp["products"]:
            if product.get("currency") not in (None, "USD") or product.get("archived"):
                self.admin(self.cp_admin, "PATCH", f"products/{product['id']}", {"currency": "USD", "archived": False})
        for order in cp["orders"]:
            if order.get("status") in ("paid", "partially_paid", "cancelled"):
                self.admin(self.cp_admin, "PATCH", f"orders/{order['id']}", {"status": "sent"})
        self.admin(
            self.cp_admin,
            "POST",
            "products",
            {"name": "Imported espresso machine", "unit_price": "899", "currency": "EUR"},
        )
        # Free-text order lines (no product) go to a Wave product kept for them (WAVESYNC_FALLBACK_PRODUCT_ID).
        fallback = self.ctx.wave.create_product({"name": "Freight and services", "unitPrice": "0"})
        self.use_fallback_product(fallback.id)
        # One customer exists on both sides already (same email): it must be matched, not duplicated.
        cp_customer = self.snapshot(self.cp_admin)["customers"][0]
        self.ctx.wave.create_customer({"name": cp_customer["company_name"], "email": cp_customer["email"]})
        self.onboarded_email = cp_customer["email"]

    def use_fallback_product(self, product_id: str) -> None:
        self.env["WAVESYNC_FALLBACK_PRODUCT_ID"] = product_id
        self.settings = self.settings.model_copy(update={"fallback_product_id": product_id})
        self.ctx.close()
        self.ctx = Context.from_settings(self.settings)
        say(f"   Wave product {product_id} takes order lines without a product (WAVESYNC_FALLBACK_PRODUCT_ID)")

    def dead_letter_report(self) -> None:
        entries = DeadLetters(self.ctx.db).list(Filter())
        say(f"6. Dead letters ({len(entries)}), each with a reason a person can act on (`wavesync dlq list`):")
        say(render_dead_letters(entries))

    def first_sync(self) -> None:
        say("2. Starting a worker and beat; waiting for the first full sync…")
        started = time.monotonic()
        if self.wait_for("initial sync converges", self.converged, timeout=180):
            say(f"   converged in {time.monotonic() - started:.1f}s")
        wave = self.snapshot(self.wave_admin)
        matches = [c for c in wave["customers"] if (c.get("email") or "").lower() == self.onboarded_email.lower()]
        self.checks.append(
            ("customer present on both sides before the sync was matched, not duplicated", len(matches) == 1)
        )

    def edits(self) -> None:
        say("3. Editing in both systems, as people would:")
        cp = self.snapshot(self.cp_admin)
        wave = self.snapshot(self.wave_admin)
        customer = cp["customers"][1]
        product = cp["products"][0]
        order = next(
            o
            for o in cp["orders"]
            if o["lines"] and o["status"] in ("draft", "confirmed") and all(line["product_id"] for line in o["lines"])
        )
        wave_customer = next(c for c in wave["customers"] if c["name"] != customer["company_name"])
        fallback = self.settings.fallback_product_id
        wave_product = next(p for p in reversed(wave["products"]) if p["id"] != fallback)
        other_invoice = next(i for i in wave["invoices"] if i["invoiceNumber"] != order["order_number"])

        new_email = f"billing+{int(time.time())}@example.org"
        self.admin(self.cp_admin, "PATCH", f"customers/{customer['id']}", {"email": new_email})
        say(f"   Customerp: customer {customer['company_name']!r} gets email {new_email}")
        self.admin(self.wave_admin, "PATCH", f"customers/{wave_customer['id']}", {"phone": "+47 555 0100"})
        say(f"   Wave:      customer {wave_customer['name']!r} gets phone +47 555 0100")
        self.admin(self.cp_admin, "PATCH", f"products/{product['id']}", {"unit_price": "99.5"})
        say(f"   Customerp: product {product['name']!r} now costs 99.5")
        self.admin(self.wave_admin, "PATCH", f"products/{wave_product['id']}", {"description": "Edited in Wave"})
        say(f"   Wave:      product {wave_product['name']!r} gets a new description")
        lines = [{**line, "quantity": "7"} if i == 0 else line for i, line in enumerate(order["lines"])]
        self.admin(self.cp_admin, "PATCH", f"orders/{order['id']}", {"lines": lines, "notes": "Rush delivery"})
        say(f"   Customerp: order {order['order_number']} line 1 quantity → 7, notes 'Rush delivery'")
        self.admin(self.wave_admin, "PATCH", f"invoices/{other_invoice['id']}", {"poNumber": "PO-WAVE-42"})
        say(f"   Wave:      invoice {other_invoice['invoiceNumber']} gets PO number PO-WAVE-42")
        new_customer = self.ctx.wave.create_customer({"name": "Born In Wave Ltd", "email": "hello@born-in-wave.test"})
        say("   Wave:      a new customer 'Born In Wave Ltd' is created")
        self.ctx.wave.create_invoice(
            {
                "customerId": new_customer.id,
                "invoiceNumber": "W-2001",
                "items": [{"productId": wave_product["id"], "quantity": "3", "description": "Made in Wave"}],
            }
        )
        say("   Wave:      a new invoice W-2001 for that customer is created")

        def cp_has(pred: Callable[[dict[str, Any]], bool], kind: str) -> bool:
            return any(pred(r) for r in self.snapshot(self.cp_admin)[kind])

        def wave_has(pred: Callable[[dict[str, Any]], bool], kind: str) -> bool:
            return any(pred(r) for r in self.snapshot(self.wave_admin)[kind])

        self.wait_for(
            "customer email reached Wave", lambda: wave_has(lambda c: c.get("email") == new_email, "customers")
        )
        self.wait_for(
            "customer phone reached Customerp", lambda: cp_has(lambda c: c.get("phone") == "+47 555 0100", "customers")
        )
        self.wait_for(
            "product price reached Wave",
            lambda: wave_has(
                lambda p: p["name"] == product["name"] and str(p.get("unitPrice")).rstrip("0").rstrip(".") == "99.5",
                "products",
            ),
        )
        self.wait_for(
            "product description reached Customerp",
            lambda: cp_has(lambda p: p.get("description") == "Edited in Wave", "products"),
        )
        self.wait_for(
            "order edit reached the Wave invoice",
            lambda: wave_has(
                lambda i: i.get("invoiceNumber") == order["order_number"] and i.get("memo") == "Rush delivery",
                "invoices",
            ),
        )
        self.wait_for(
            "invoice edit reached the Customerp order",
            lambda: cp_has(
                lambda o: (o.get("order_number"), o.get("po_number")) == (other_invoice["invoiceNumber"], "PO-WAVE-42"),
                "orders",
            ),
        )
        self.wait_for(
            "Wave-born customer created in Customerp",
            lambda: cp_has(lambda c: c.get("email") == "hello@born-in-wave.test", "customers"),
        )
        self.wait_for(
            "Wave-born invoice created in Customerp as an order",
            lambda: cp_has(lambda o: o.get("order_number") == "W-2001", "orders"),
        )

    def echo_check(self) -> None:
        say("4. Letting it settle, then watching three more poll cycles for writes…")
        self.wait_for("sync settles", self.converged, timeout=120)
        before = (self.wave_writes(), self.cp_writes())
        time.sleep(POLL_INTERVAL_S * 3 + 1)
        after = (self.wave_writes(), self.cp_writes())
        self.checks.append(("no writes after settling (no echoes)", before == after and self.idle()))
        say(f"   writes during those cycles: Wave {after[0] - before[0]}, Customerp {after[1] - before[1]}")


def run_demo(settings: Settings, *, keep: bool) -> int:
    data_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    with ExitStack() as stack:
        valkey = stack.enter_context(EmbeddedRedis(data_dir / "redis"))
        boxes = stack.enter_context(running_sandboxes(settings))
        values = {
            **settings.model_dump(),
            "redis_url": valkey.url,
            "database_url": f"sqlite:///{data_dir / 'wavesync.db'}",
            "data_dir": data_dir,
            "customerp_url": boxes.customerp_url,
            "wave_url": boxes.wave_url,
            "poll_interval": POLL_INTERVAL_S,
            "poll_overlap": 2.0,
        }
        demo_settings = Settings(**values)
        upgrade(demo_settings.database_url)
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")} | {
            "WAVESYNC_REDIS_URL": valkey.url,
            "WAVESYNC_DATABASE_URL": demo_settings.database_url,
            "WAVESYNC_DATA_DIR": str(data_dir),
            "WAVESYNC_CUSTOMERP_URL": boxes.customerp_url,
            "WAVESYNC_WAVE_URL": boxes.wave_url,
            "WAVESYNC_CUSTOMERP_API_KEY": settings.customerp_api_key.get_secret_value(),
            "WAVESYNC_WAVE_TOKEN": settings.wave_token.get_secret_value(),
            "WAVESYNC_WAVE_BUSINESS_ID": settings.wave_business_id,
            "WAVESYNC_POLL_INTERVAL": str(POLL_INTERVAL_S),
            "WAVESYNC_POLL_OVERLAP": "2",
            "WAVESYNC_LOG_LEVEL": "WARNING",
            "WAVESYNC_LOG_FORMAT": "text",
        }
        demo = Demo(demo_settings, env, boxes.customerp_url, boxes.wave_url)
        stack.callback(demo.close)
        demo.seed()
        fleet = Fleet(env, log=data_dir / "services.log")
        stack.callback(fleet.stop)
        fleet.start(["worker", "--loglevel", "WARNING"], ["beat", "--loglevel", "WARNING"])
        say(f"   worker and beat logs: {data_dir / 'services.log'}")
        demo.first_sync()
        demo.edits()
        demo.echo_check()
        say("5. Drift check (`wavesync reconcile --check`):")
        reports = demo.check()
        say(render_reconcile(reports, check=True))
        demo.checks.append(("reconcile --check finds no drift", not any(r.problems for r in reports)))
        demo.dead_letter_report()
        fleet.stop()
    if not keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    say("\nSummary")
    for what, ok in demo.checks:
        say(f"  {'✓' if ok else '✗'} {what}")
    failed = [what for what, ok in demo.checks if not ok]
    say("demo finished: all flows synced both ways" if not failed else f"demo FAILED: {len(failed)} check(s)")
    return 1 if failed else 0
