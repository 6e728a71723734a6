"""At-least-once delivery: duplicates and stale messages change nothing; Wave deletions arrive via reconcile."""

from __future__ import annotations

from typing import Any

import pytest

from producers.reconcile import Reconciler
from shared import keys
from shared.celery_app import app
from shared.messages import ChangeMessage
from tests.harness import System

pytestmark = pytest.mark.integration


def send(message: ChangeMessage) -> None:
    app.send_task(keys.SYNC_TASK[message.entity], args=[message.to_json()], queue=message.entity)


def cp_customer(system: System) -> dict[str, Any]:
    customers: list[dict[str, Any]] = system.boxes.snapshot("customerp")["customers"]
    return customers[0]


def test_a_duplicate_message_makes_no_second_write(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 41})
    system.settle()
    record = cp_customer(system)
    system.boxes.cp("PATCH", f"customers/{record['id']}", {"phone": "+1 202 555 0100"})
    fresh = cp_customer(system)
    message = ChangeMessage(
        entity="customers",
        source="customerp",
        source_id=fresh["id"],
        version=f"{fresh['version']:012d}",
        snapshot=fresh,
    )
    before = system.writes()
    for _ in range(3):
        send(message)
    system.wait_idle()
    assert system.writes()["wave"] == before["wave"] + 1
    [wave] = system.boxes.snapshot("wave")["customers"]
    assert wave["phone"] == "+1 202 555 0100"


def test_a_stale_message_after_a_newer_one_is_dropped(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 42})
    system.settle()
    record = cp_customer(system)
    system.boxes.cp("PATCH", f"customers/{record['id']}", {"website": "https://old.example"})
    old = cp_customer(system)
    system.boxes.cp("PATCH", f"customers/{record['id']}", {"website": "https://new.example"})
    system.settle()
    before = system.writes()
    # The old snapshot arrives late (a retry, a redelivery): it must not roll the record back.
    send(
        ChangeMessage(
            entity="customers", source="customerp", source_id=old["id"], version=f"{old['version']:012d}", snapshot=old
        )
    )
    system.wait_idle()
    assert system.writes() == before
    [wave] = system.boxes.snapshot("wave")["customers"]
    assert wave["website"] == "https://new.example"


def test_a_customer_deleted_in_wave_is_deleted_in_customerp_by_reconcile(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 3, "products": 0, "orders": 0, "seed": 43})
    system.settle()
    wave = system.boxes.snapshot("wave")["customers"]
    doomed = wave[0]
    system.boxes.wave_admin("DELETE", f"customers/{doomed['id']}")
    assert system.poll() == 0  # polling cannot see a Wave deletion
    [report, *_] = Reconciler(system.ctx, repair=False).run(("customers",))
    assert report.deleted_in_wave
    assert report.problems == 1
    Reconciler(system.ctx, repair=True).run(("customers",))
    system.wait_idle()
    emails = {c["email"] for c in system.boxes.snapshot("customerp")["customers"]}
    assert doomed["email"] not in emails
    assert len(emails) == 2
    [after] = Reconciler(system.ctx, repair=False).run(("customers",))
    assert after.problems == 0


def test_reconcile_refuses_a_mass_deletion(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 12, "products": 0, "orders": 0, "seed": 44})
    system.settle()
    for customer in system.boxes.snapshot("wave")["customers"][:11]:
        system.boxes.wave_admin("DELETE", f"customers/{customer['id']}")
    [report] = Reconciler(system.ctx, repair=True).run(("customers",))
    system.wait_idle()
    assert report.breaker_tripped
    assert len(system.boxes.snapshot("customerp")["customers"]) == 12
