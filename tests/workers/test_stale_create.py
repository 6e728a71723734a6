"""A partner made from the poll's snapshot (no second read of the source before a create), and what that must not do:
finish an earlier attempt's create from a snapshot older than what that attempt sent (issue #15).

An interleaving that loses an order's notes edit that way (what randomised history seed 29 most likely hit: its log
was not kept), step by step, driven in this process against the real sandboxes (no worker: each step is one `sync`
call, so the order of events is the test's):

1. an order is polled at version 1 (notes "n1"): a message carrying that snapshot waits in the queue;
2. a person edits the notes to "n2" (version 2);
3. another delivery of the order (a retry reads it again) begins the invoice from version 2; Wave makes the invoice
   but its answer is lost, so the create intent (what was sent: "n2") stays for the next attempt to finish;
4. the waiting message of version 1 is taken (no pending marker newer than it: the retry took that) and, the order
   having no link yet, nothing calls it stale: it finishes the earlier attempt's create (finds the invoice made
   from "n2", once a late landing can no longer happen);
5. judged against what was sent, its snapshot's "n1" looked like a person's edit since: the sync wrote "n1" to the
   new invoice, and when that write's answer was lost, the pair was left unsettled with "n1" as the sync's pending
   value and "n2" as the order's base;
6. the next sync saw both sides holding "their base or the pending value" and wrote "n1" to the order as well: the
   person's "n2" was gone from both systems.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.errors import SyncError
from shared.messages import ChangeMessage
from shared.store.link_state import Settled, Unsettled
from shared.store.links import find_link
from shared.versions import customerp_version, record_version
from tests.harness import Sandboxes, System
from tests.workers.conftest import fresh_system
from wavesync.embedded import EmbeddedRedis
from workers import customers, orders, products
from workers.engine import sync

pytestmark = pytest.mark.integration

HTTP_TIMEOUT = 0.5  # a lost answer's settle time and a held Wave write are multiples of it


@pytest.fixture
def in_process(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    """Sandboxes, Redis and a link store, and no worker: the test calls `sync` itself, one step at a time."""
    with fresh_system(boxes, redis_server.url, tmp_path, http_timeout=HTTP_TIMEOUT, retry_backoff_max=0.2) as system:
        yield system
        for side in ("customerp", "wave"):
            boxes.clear_faults(side)


def order_sync(system: System, message: ChangeMessage) -> str:
    return sync(system.ctx, orders.FLOW, message, create_missing=orders.sync_dependency(system.ctx))


def polled(system: System, order_id: str) -> ChangeMessage:
    """The message Customerp's poller makes of the order as its change feed shows it now."""
    page = system.ctx.customerp.changes("orders", updated_since=None, cursor=None, limit=100)
    record: dict[str, Any] = next(i.model_dump(mode="json") for i in page.items if i.id == order_id)
    version = customerp_version(record["version"])
    return ChangeMessage(entity="orders", source="customerp", source_id=order_id, version=version, snapshot=record)


def notes(system: System, order_id: str) -> tuple[str, list[str]]:
    """The order's notes, and the memo of every invoice in Wave."""
    order = next(o for o in system.boxes.snapshot("customerp")["orders"] if o["id"] == order_id)
    return order["notes"], [i["memo"] for i in system.boxes.snapshot("wave")["invoices"]]


def test_a_snapshot_older_than_an_unfinished_create_never_undoes_an_edit(in_process: System) -> None:
    system = in_process
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 1, "orders": 0, "seed": 29})
    cp = system.boxes.snapshot("customerp")
    customer, product = cp["customers"][0], cp["products"][0]
    # The order's customer and product have partners already: only the order's own create is under test.
    for flow, record in ((customers.FLOW, customer), (products.FLOW, product)):
        assert sync(system.ctx, flow, ChangeMessage(entity=flow.entity, source="customerp", source_id=record["id"]))
    order = system.boxes.cp(
        "POST",
        "orders",
        {
            "customer_id": customer["id"],
            "order_number": "SO-29",
            "order_date": "2026-11-20",
            "notes": "n1",
            "lines": [{"product_id": product["id"], "quantity": "1", "unit_price": "10"}],
        },
    )
    waiting = polled(system, order["id"])  # 1. polled at version 1; its message waits
    system.boxes.cp("PATCH", f"orders/{order['id']}", {"notes": "n2"})  # 2. a person's edit
    # 3. A delivery that reads the order begins its invoice; Wave makes it, the answer is lost.
    system.boxes.faults("wave", lost_response_rate=1.0)
    again = ChangeMessage(entity="orders", source="customerp", source_id=order["id"], reread=True)
    with pytest.raises(SyncError):
        order_sync(system, again)
    assert notes(system, order["id"]) == ("n2", ["n2"])
    # 4. The older message finishes that create once a late landing of it can no longer happen; 5. Wave answers
    # nothing still (the sync's writes land, their answers are lost).
    time.sleep(2 * HTTP_TIMEOUT + 0.2)
    with contextlib.suppress(SyncError):  # a write whose answer was lost: the next sync finishes the pair
        order_sync(system, waiting)
    assert notes(system, order["id"])[1] == ["n2"], "an older snapshot's notes were written over the invoice"
    # 6. Wave answers again; the pair is synced until it settles.
    system.boxes.clear_faults("wave")
    time.sleep(2 * HTTP_TIMEOUT + 0.2)  # an unanswered Wave write holds further writes this long
    outcomes = [order_sync(system, again) for _ in range(2)]
    assert outcomes[-1] == "unchanged", outcomes
    assert notes(system, order["id"]) == ("n2", ["n2"]), "the person's edit of the notes was lost"


def test_an_invoice_snapshot_older_than_an_unfinished_create_leaves_the_new_order_alone(in_process: System) -> None:
    """The other direction: the order an earlier attempt made (Customerp's idempotency key returns it) holds the
    invoice's newer memo; an older snapshot finishing that create must not write its memo over it."""
    system = in_process
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 1, "orders": 0, "seed": 29})
    cp = system.boxes.snapshot("customerp")
    for flow, record in ((customers.FLOW, cp["customers"][0]), (products.FLOW, cp["products"][0])):
        assert sync(system.ctx, flow, ChangeMessage(entity=flow.entity, source="customerp", source_id=record["id"]))
    wave = system.boxes.snapshot("wave")
    invoice = system.ctx.wave.create_invoice(
        {
            "customerId": wave["customers"][0]["id"],
            "invoiceNumber": "W-29",
            "invoiceDate": "2026-11-20",
            "memo": "n1",
            "items": [{"productId": wave["products"][0]["id"], "quantity": "1"}],
        }
    )
    page = system.ctx.wave.list_invoices_page(1)
    record: dict[str, Any] = next(
        i.model_dump(mode="json", by_alias=True) for i in page.items if i.id == invoice.id
    )  # 1. polled with memo "n1"
    waiting = ChangeMessage(
        entity="orders",
        source="wave",
        source_id=invoice.id,
        version=record_version("wave", record),
        snapshot=record,
    )
    system.boxes.wave_admin("PATCH", f"invoices/{invoice.id}", {"memo": "n2"})  # 2. a person's edit
    # 3. A delivery that reads the invoice begins its order; Customerp makes it, the answer is lost.
    system.boxes.faults("customerp", lost_response_rate=1.0)
    again = ChangeMessage(entity="orders", source="wave", source_id=invoice.id, reread=True)
    try:
        with pytest.raises(SyncError):
            order_sync(system, again)
    finally:
        system.boxes.clear_faults("customerp")
    made = system.boxes.snapshot("customerp")["orders"]
    assert [o["notes"] for o in made] == ["n2"]
    # 4. The older message finishes that create (the same idempotency key returns the order made).
    order_sync(system, waiting)
    assert [o["notes"] for o in system.boxes.snapshot("customerp")["orders"]] == ["n2"], (
        "an older snapshot's memo was written over the order made from the newer one"
    )
    assert order_sync(system, again) in ("unchanged", "echo")


@pytest.mark.parametrize("target", ["wave", "customerp"])
def test_a_person_s_edit_of_a_record_whose_create_answer_was_lost_survives_the_create_s_recovery(
    in_process: System, target: str
) -> None:
    """A customer's partner is made but the answer is lost; before the next attempt finds that partner (once a late
    landing can no longer happen), a person edits it. The edit is a change since the create, not part of what was
    created: it must reach the source, not be undone by it."""
    system = in_process
    source = "customerp" if target == "wave" else "wave"
    if source == "customerp":
        system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 17})
        record_id = system.boxes.snapshot("customerp")["customers"][0]["id"]
    else:
        record_id = system.ctx.wave.create_customer({"name": "Lost Answer", "phone": "+47 43407209"}).id
    message = ChangeMessage(entity="customers", source=source, source_id=record_id, reread=True)
    system.boxes.faults(target, lost_response_rate=1.0)
    try:
        with pytest.raises(SyncError):
            sync(system.ctx, customers.FLOW, message)  # the partner is made; its answer is lost
    finally:
        system.boxes.clear_faults(target)
    assert system.ctx.coordinator.create_intent("customers", target, record_id) is not None  # left to finish
    [made] = [c for c in system.boxes.snapshot(target)["customers"] if c["id"] != record_id]
    if target == "wave":
        system.boxes.wave_admin("PATCH", f"customers/{made['id']}", {"phone": "+1 555 0016"})  # a person's edit
    else:
        system.boxes.cp("PATCH", f"customers/{made['id']}", {"phone": "+1 555 0016"})
    time.sleep(2 * HTTP_TIMEOUT + 0.2)  # the next attempt looks for what the first made once it can no longer land
    outcomes = [sync(system.ctx, customers.FLOW, message) for _ in range(2)]
    assert outcomes[-1] in ("unchanged", "echo"), outcomes
    snapshot = {side: system.boxes.snapshot(side)["customers"] for side in ("customerp", "wave")}
    assert [c["phone"] for c in snapshot["customerp"]] == ["+1 555 0016"], "the person's edit was undone"
    assert [c["phone"] for c in snapshot["wave"]] == ["+1 555 0016"]


def test_a_snapshot_older_than_an_interrupted_sync_s_write_never_undoes_that_write(in_process: System) -> None:
    """Randomised history 11, step by step: a person edits a customer's website in Customerp (the poll reads it, its
    message waits) and the phone number of its Wave partner. The Wave record's sync writes the phone to Customerp,
    then fails on a later write of its second round: the pair is left unsettled on what it wrote. The waiting
    message's snapshot, read before that write but newer than the version the link recorded, must not pass its old
    phone for a person's edit: the number stays on both sides."""
    system = in_process
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 11})
    customer = system.boxes.snapshot("customerp")["customers"][0]
    assert sync(
        system.ctx, customers.FLOW, ChangeMessage(entity="customers", source="customerp", source_id=customer["id"])
    )
    with system.ctx.db.session() as session:
        link = find_link(session, "customers", "customerp", customer["id"])
        assert link is not None
        assert isinstance(link.state, Settled)
        wave_id, agreed = link.wave_id, dict(link.state.agreed)
    system.boxes.cp("PATCH", f"customers/{customer['id']}", {"website": "https://cp.example"})  # a person's edit
    page = system.ctx.customerp.changes("customers", updated_since=None, cursor=None, limit=100)
    snapshot = next(i.model_dump(mode="json") for i in page.items if i.id == customer["id"])
    waiting = ChangeMessage(
        entity="customers",
        source="customerp",
        source_id=customer["id"],
        version=customerp_version(snapshot["version"]),
        snapshot=snapshot,
    )
    # The Wave record's sync, interrupted: the person's phone reached Customerp, the second round's write did not
    # land, and the pair is left as `recording.remember` leaves it after such a round.
    system.boxes.wave_admin("PATCH", f"customers/{wave_id}", {"phone": "+1 555 0039"})
    system.boxes.cp("PATCH", f"customers/{customer['id']}", {"phone": "+1 555 0039"})
    written = agreed | {"phone": "+1 555 0039", "website": "https://cp.example"}
    with system.ctx.db.session() as session:
        link = find_link(session, "customers", "customerp", customer["id"])
        assert link is not None
        link.state = Unsettled({"customerp": written, "wave": written}, written)

    again = ChangeMessage(entity="customers", source="customerp", source_id=customer["id"], reread=True)
    outcomes = [sync(system.ctx, customers.FLOW, message) for message in (waiting, again)]
    assert outcomes[-1] in ("unchanged", "echo"), outcomes
    phones = [c["phone"] for side in ("customerp", "wave") for c in system.boxes.snapshot(side)["customers"]]
    assert phones == ["+1 555 0039", "+1 555 0039"], "the phone a person set in Wave was undone by an older snapshot"


def test_an_intent_left_by_a_sync_killed_before_its_release_ends_with_the_pair_s_next_sync(in_process: System) -> None:
    """A sync ends its create intent with its lock's release; one killed between recording the link and that
    release leaves the intent behind, and it would hold back records sharing the pair's keys. Any later sync of the
    linked pair ends it."""
    system = in_process
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 3})
    customer_id = system.boxes.snapshot("customerp")["customers"][0]["id"]
    message = ChangeMessage(entity="customers", source="customerp", source_id=customer_id, reread=True)
    assert sync(system.ctx, customers.FLOW, message) == "created"
    system.ctx.coordinator.begin_create("customers", "wave", customer_id, "2026-11-30T10:00:00+00:00", {"name": "x"})
    assert sync(system.ctx, customers.FLOW, message) in ("unchanged", "echo")
    assert system.ctx.coordinator.create_intent("customers", "wave", customer_id) is None
