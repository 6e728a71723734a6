"""Products sync both ways; archiving maps to Wave's productArchive, which cannot be undone."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.harness import System

pytestmark = pytest.mark.integration


def products(system: System, side: str) -> list[dict[str, Any]]:
    return list(system.boxes.snapshot(side)["products"])


def named(records: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [r for r in records if r["name"] == name]
    assert len(found) == 1, f"{len(found)} products named {name!r}"
    return found[0]


def test_products_are_created_both_ways_and_prices_round_like_wave(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 0, "products": 3, "orders": 0, "seed": 1})
    widget = system.boxes.cp(
        "POST", "products", {"name": "Precise widget", "unit_price": "1.234567", "currency": "USD"}
    )
    system.ctx.wave.create_product({"name": "Wave service", "unitPrice": "80", "description": "Hourly"})
    system.settle()
    wave = products(system, "wave")
    assert len(wave) == 5
    assert str(named(wave, "Precise widget")["unitPrice"]).startswith("1.23457")
    cp_service = named(products(system, "customerp"), "Wave service")
    assert (cp_service["description"], cp_service["currency"]) == ("Hourly", "USD")
    # Customerp keeps its own precision: equal after Wave's rounding is not a change.
    assert named(products(system, "customerp"), "Precise widget")["unit_price"] == widget["unit_price"]
    assert system.dead_letters() == []


def test_a_worker_s_threads_creating_products_at_once_look_the_income_account_up_once(system: System) -> None:
    system.boxes.cp("POST", "seed", {"customers": 0, "products": 8, "orders": 0, "seed": 3})
    system.boxes.faults("wave", latency_ms=150)  # so that the four threads' first creates overlap
    system.settle()
    assert len(products(system, "wave")) == 8
    assert system.boxes.counters("wave").get("business.accounts") == 1


def test_archiving_in_customerp_archives_in_wave_and_unarchiving_is_a_dead_letter(system: System) -> None:
    created = system.boxes.cp("POST", "products", {"name": "Old model", "unit_price": "10", "currency": "USD"})
    system.settle()
    system.boxes.cp("PATCH", f"products/{created['id']}", {"archived": True})
    system.settle()
    archived = [p for p in products(system, "wave") if p["name"] == "Old model"]
    assert [p["isArchived"] for p in archived] == [True]

    system.boxes.cp("PATCH", f"products/{created['id']}", {"archived": False})
    system.settle()
    [entry] = system.dead_letters()
    assert entry["entity"] == "products"
    assert entry["error_class"] == "ForbiddenEditError"
    assert "un-archive" in entry["reason"]


def test_a_product_priced_in_another_currency_is_dead_lettered_with_its_field(system: System) -> None:
    system.boxes.cp("POST", "products", {"name": "Euro thing", "unit_price": "5", "currency": "EUR"})
    system.settle()
    [entry] = system.dead_letters()
    assert entry["field_paths"] == ["currency"]
    assert "EUR" in entry["reason"]
    assert [p for p in products(system, "wave") if p["name"] == "Euro thing"] == []


def test_deleting_a_product_in_customerp_archives_it_in_wave(system: System) -> None:
    created = system.boxes.cp("POST", "products", {"name": "Discontinued", "unit_price": "3", "currency": "USD"})
    system.settle()
    system.boxes.cp("DELETE", f"products/{created['id']}")
    system.settle()
    assert named(products(system, "wave"), "Discontinued")["isArchived"] is True
    # The archived Wave product does not come back to Customerp.
    assert [p for p in products(system, "customerp") if p["name"] == "Discontinued"] == []


def test_onboarding_matches_an_existing_wave_product_by_name(system: System) -> None:
    system.boxes.cp("POST", "products", {"name": "Oak desk", "unit_price": "450", "currency": "USD"})
    system.ctx.wave.create_product({"name": "Oak Desk", "unitPrice": "440", "description": "Solid oak"})
    system.settle()
    [wave] = products(system, "wave")
    [cp] = products(system, "customerp")
    # Matched (names compare without case), not duplicated; Customerp's older price meets Wave's newer one.
    assert (wave["description"], cp["description"]) == ("Solid oak", "Solid oak")
    assert Decimal(str(wave["unitPrice"])) == Decimal(str(cp["unit_price"]))
    assert system.dead_letters() == []


def test_a_create_whose_sync_never_came_back_is_finished_not_duplicated_or_stuck(system: System) -> None:
    """An order's sync began creating its archived product in Wave, the create landed, and the order was then
    dead-lettered: nothing would ever finish that create. The Wave product's own sync, which waits for it, asks
    the product's sync to finish it, and the two records are linked."""
    from datetime import timedelta

    from shared.entities import PRODUCTS, Options
    from shared.versions import customerp_version

    made = system.boxes.cp(
        "POST", "products", {"name": "Orphan widget", "unit_price": "5", "currency": "USD", "archived": True}
    )
    record = system.ctx.customerp.get("products", made["id"]).model_dump(mode="json")
    sent = PRODUCTS.canonical("customerp", record, Options.of(system.ctx.settings))
    long_ago = (system.ctx.clock() - timedelta(minutes=1)).isoformat()
    system.ctx.coordinator.begin_create("products", "wave", made["id"], long_ago, sent)
    landed = system.ctx.wave.create_product({"name": "Orphan widget", "unitPrice": "5"})
    # Its own poll message was handled long ago (skipped: archived), so only the waiting side can revive it.
    system.ctx.coordinator.mark_done("products", "customerp", made["id"], customerp_version(made["version"]))
    system.settle()
    with system.ctx.db.session() as session:
        from shared.store import links as store

        link = store.find_link(session, "products", "customerp", made["id"])
    assert link is not None
    assert link.wave_id == landed.id
    assert len(products(system, "wave")) == 1
    assert system.dead_letters() == []
    assert system.ctx.coordinator.create_intent("products", "wave", made["id"]) is None
