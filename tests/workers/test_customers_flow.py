"""Customers sync both ways through a real worker on a real Redis, against both sandboxes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from shared.store import links as store
from tests.harness import System

pytestmark = pytest.mark.integration


def wave_customers(system: System) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot("wave")["customers"])


def cp_customers(system: System) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot("customerp")["customers"])


def by_email(records: list[dict[str, Any]], email: str) -> dict[str, Any]:
    found = [r for r in records if (r.get("email") or "").lower() == email.lower()]
    assert len(found) == 1, f"{len(found)} records with {email}"
    return found[0]


def test_customerp_customers_are_created_in_wave_and_edits_flow_back(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 5, "products": 0, "orders": 0, "seed": 3})
    system.settle()
    cp = cp_customers(system)
    wave = wave_customers(system)
    assert len(wave) == 5
    for customer in cp:
        partner = by_email(wave, customer["email"])
        assert partner["name"] == customer["company_name"]
        assert partner["displayId"] == customer["customer_number"]

    # Edit in Wave, as a person would: the phone reaches Customerp.
    target = by_email(wave, cp[0]["email"])
    system.boxes.wave_admin("PATCH", f"customers/{target['id']}", {"phone": "+1 555 0199"})
    system.settle()
    assert by_email(cp_customers(system), cp[0]["email"])["phone"] == "+1 555 0199"
    assert system.dead_letters() == []


def test_a_settled_sync_makes_no_writes_on_further_polls(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 4, "products": 0, "orders": 0, "seed": 5})
    system.settle()
    before = system.writes()
    for _ in range(3):
        assert system.poll() == 0
        system.wait_idle()
    assert system.writes() == before


def test_onboarding_matches_an_existing_wave_customer_by_email(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 3, "products": 0, "orders": 0, "seed": 9})
    existing = cp_customers(system)[0]
    system.ctx.wave.create_customer({"name": "Pre-existing in Wave", "email": existing["email"].upper()})
    system.settle()
    wave = wave_customers(system)
    assert len(wave) == 3
    match = by_email(wave, existing["email"])
    # Both sides had a name; the newest edit (Wave's, made just now) wins on onboarding.
    assert match["name"] == "Pre-existing in Wave"
    assert by_email(cp_customers(system), existing["email"])["company_name"] == "Pre-existing in Wave"


def test_conflicting_edits_on_different_fields_both_survive(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 2})
    system.settle()
    customer = cp_customers(system)[0]
    partner = by_email(wave_customers(system), customer["email"])
    system.boxes.cp("PATCH", f"customers/{customer['id']}", {"website": "https://cp.example"})
    system.boxes.wave_admin("PATCH", f"customers/{partner['id']}", {"mobile": "+47 400 00 000"})
    system.settle()
    cp_after = cp_customers(system)[0]
    wave_after = by_email(wave_customers(system), customer["email"])
    assert (cp_after["website"], cp_after["mobile"]) == ("https://cp.example", "+47 400 00 000")
    assert (wave_after["website"], wave_after["mobile"]) == ("https://cp.example", "+47 400 00 000")


def test_conflicting_edits_on_the_same_field_newest_wins(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 1, "products": 0, "orders": 0, "seed": 4})
    system.settle()
    customer = cp_customers(system)[0]
    partner = by_email(wave_customers(system), customer["email"])
    system.boxes.cp("PATCH", f"customers/{customer['id']}", {"phone": "111"})
    system.boxes.wave_admin("PATCH", f"customers/{partner['id']}", {"phone": "222"})  # later: wins
    system.settle()
    assert cp_customers(system)[0]["phone"] == "222"
    assert by_email(wave_customers(system), customer["email"])["phone"] == "222"


def test_a_wave_born_customer_appears_in_customerp(system: System) -> None:
    system.ctx.wave.create_customer({"name": "Born in Wave", "email": "born@wave.test", "displayId": "W-1"})
    system.settle()
    created = by_email(cp_customers(system), "born@wave.test")
    assert (created["company_name"], created["customer_number"]) == ("Born in Wave", "W-1")


def test_deleting_in_customerp_deletes_in_wave(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 2, "products": 0, "orders": 0, "seed": 8})
    system.settle()
    doomed = cp_customers(system)[0]
    system.boxes.cp("DELETE", f"customers/{doomed['id']}")
    system.settle()
    assert [c for c in wave_customers(system) if c.get("email") == doomed["email"]] == []
    assert len(wave_customers(system)) == 1


@pytest.fixture
def no_creation_in_customerp(boxes: Any, redis_server: Any, tmp_path: Any) -> Any:
    from tests.harness import System as Running
    from tests.workers.conftest import clean_redis

    boxes.reset()
    clean_redis(redis_server.url)
    running = Running(boxes, redis_server.url, tmp_path, create_in_customerp=frozenset())
    running.start_worker()
    yield running
    running.close()


def test_creation_can_be_switched_off_per_direction(no_creation_in_customerp: System) -> None:
    system = no_creation_in_customerp
    system.ctx.wave.create_customer({"name": "Stays in Wave", "email": "stays@wave.test"})
    system.boxes.cp("POST", "seed", {"customers": 2, "products": 0, "orders": 0, "seed": 12})
    system.settle()
    assert [c for c in cp_customers(system) if c["email"] == "stays@wave.test"] == []
    assert len(wave_customers(system)) == 3  # Customerp → Wave creation is still on
    from producers.reconcile import Reconciler

    [report] = Reconciler(system.ctx, repair=False).run(("customers",))
    assert (report.problems, report.excluded) == (0, 1)


def test_onboarding_matches_by_customer_number_when_there_is_no_email(system: System) -> None:
    system.boxes.cp("POST", "customers", {"company_name": "Numbered Ltd", "customer_number": "C-900"})
    system.ctx.wave.create_customer({"name": "Numbered Limited", "displayId": "C-900"})
    system.settle()
    [wave] = [c for c in wave_customers(system) if c.get("displayId") == "C-900"]
    [cp] = [c for c in cp_customers(system) if c.get("customer_number") == "C-900"]
    assert len(wave_customers(system)) == len(cp_customers(system)) == 1
    assert cp["company_name"] == wave["name"]


def test_a_customer_a_person_made_in_wave_since_the_last_poll_is_matched_not_duplicated(system: System) -> None:
    """The key index (fed by the Wave polls) does not know it yet; the freshness guard lists Wave's recent changes
    before a create believes "no match". Without the guard the index alone would make a second customer."""
    system.poll(("wave",))  # the index is complete as of now
    person = system.ctx.wave.create_customer({"name": "Made by hand", "email": "hand@made.test"})
    made = system.boxes.cp("POST", "customers", {"company_name": "Hand Made AS", "email": "HAND@made.test"})
    assert system.ctx.wave_keys.candidates("customers", {"email": "hand@made.test"}) == []
    time.sleep(system.settings.match_freshness)  # the index is now older than the window it may be trusted for
    system.poll(("customerp",))  # Customerp only: no Wave poll indexes the person's customer
    system.wait_idle()
    matches = [c for c in wave_customers(system) if (c.get("email") or "").lower() == "hand@made.test"]
    assert [c["id"] for c in matches] == [person.id]
    with system.ctx.db.session() as session:
        link = store.find_link(session, "customers", "customerp", str(made["id"]))
    assert link is not None
    assert link.wave_id == person.id
