"""The convergence checker (`Reconciler(repair=False)`, `wavesync reconcile --check`) and reconcile's repairs."""

from __future__ import annotations

from typing import Any

import pytest

from producers.reconcile import EntityReport, Reconciler
from tests.harness import System
from tests.workers.conftest import boxes, system

__all__ = ["boxes", "system"]


def report(system: System, entity: str) -> EntityReport:
    return next(r for r in system.check() if r.entity == entity)


def wave_customers(system: System) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot("wave")["customers"])


@pytest.mark.integration
def test_the_checker_finds_drift_orphans_and_deletions_and_the_repair_clears_them(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 4, "products": 0, "orders": 0, "seed": 41})
    system.settle()
    assert report(system, "customers").problems == 0
    assert report(system, "customers").in_sync == 4

    cp = system.boxes.snapshot("customerp")["customers"]
    wave = wave_customers(system)
    system.boxes.wave_admin("PATCH", f"customers/{wave[0]['id']}", {"phone": "+1 555 0100"})  # no poll: drift
    system.boxes.wave_admin("DELETE", f"customers/{wave[1]['id']}")  # polls never see this
    system.ctx.wave.create_customer({"name": "Only in Wave"})
    system.boxes.cp("POST", "customers", {"company_name": "Only in Customerp"})
    found = report(system, "customers")
    assert len(found.drift) == 1
    assert len(found.missing_in_customerp) == 1
    assert len(found.missing_in_wave) == 1
    assert found.deleted_in_wave == [c["id"] for c in cp if c["email"] == wave[1]["email"]]
    assert found.problems == 4

    assert system.converge() >= 1  # polls carry the edits and creations; only the Wave deletion needs a repair
    after = report(system, "customers")
    assert after.problems == 0
    assert len(system.boxes.snapshot("customerp")["customers"]) == len(wave_customers(system)) == 5


@pytest.mark.integration
def test_a_deletion_the_other_system_refuses_waits_as_a_dead_letter_not_as_drift(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 1, "orders": 0, "seed": 43})
    cp = system.boxes.snapshot("customerp")
    system.boxes.cp("PATCH", f"products/{cp['products'][0]['id']}", {"currency": "USD"})
    system.boxes.cp(
        "POST",
        "orders",
        {
            "customer_id": cp["customers"][0]["id"],
            "order_date": "2026-11-01",
            "lines": [{"product_id": cp["products"][0]["id"], "quantity": "1", "unit_price": "5"}],
        },
    )
    system.settle()
    system.boxes.wave_admin("DELETE", f"customers/{wave_customers(system)[0]['id']}")
    system.converge()
    [entry] = system.dead_letters()
    assert (entry["entity"], entry["error_class"]) == ("customers", "ForbiddenEditError")
    assert "has orders" in entry["reason"]
    customers = report(system, "customers")
    assert customers.problems == 0
    assert customers.dead_lettered == 1


@pytest.mark.integration
def test_the_mass_delete_breaker_refuses_to_propagate_a_wave_wipe(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 12, "products": 0, "orders": 0, "seed": 47})
    system.settle()
    for customer in wave_customers(system):
        system.boxes.wave_admin("DELETE", f"customers/{customer['id']}")
    [customers] = Reconciler(system.ctx, repair=True).run(("customers",))
    assert customers.breaker_tripped
    assert customers.repaired == 0
    system.wait_idle()
    assert len(system.boxes.snapshot("customerp")["customers"]) == 12


def duplicates(cp: list[dict[str, Any]], wave: list[dict[str, Any]], unpaired: set[tuple[str, str]]) -> list[str]:
    found = EntityReport("customers")
    Reconciler.__new__(Reconciler)._find_duplicates(
        "customers",
        {r["id"]: r for r in cp},
        {r["id"]: r for r in wave},
        found,
        unpaired,
    )
    return found.duplicates


def test_a_second_record_for_one_partner_is_a_duplicate() -> None:
    cp = [{"id": "c1", "email": "a@x.test"}]
    wave = [{"id": "w1", "email": "a@x.test"}, {"id": "w2", "email": "A@x.test "}]
    assert duplicates(cp, wave, set()) == ["wave:email=a@x.test (2 records, 1 in customerp)"]


def test_two_customers_sharing_an_email_in_both_systems_are_the_users_data_not_a_duplicate() -> None:
    cp = [{"id": "c1", "email": "a@x.test"}, {"id": "c2", "email": "a@x.test"}]
    wave = [{"id": "w1", "email": "a@x.test"}, {"id": "w2", "email": "a@x.test"}]
    assert duplicates(cp, wave, set()) == []


def test_records_parked_in_a_dead_letter_queue_or_excluded_do_not_count_as_duplicates() -> None:
    cp = [{"id": "c1", "email": "a@x.test"}]
    wave = [{"id": "w1", "email": "a@x.test"}, {"id": "w2", "email": "a@x.test"}]
    assert duplicates(cp, wave, {("wave", "w2")}) == []
