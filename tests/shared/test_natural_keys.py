"""The Wave-key index on a real Redis against the Wave sandbox: what the pollers put in it, how a record's keys
follow its changes, and the freshness guard that lets a create skip its own Wave search."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producers.pollers import Poller
from shared import keys as redis_keys
from shared.natural_keys import LATE_WRITE_S, REFRESH_AHEAD, WaveKeys
from shared.settings import Entity, Settings
from shared.wave.client import Listed
from tests.harness import Sandboxes, System
from tests.workers.conftest import boxes, clean_redis, fresh_system
from wavesync.embedded import EmbeddedRedis

__all__ = ["boxes"]

pytestmark = pytest.mark.integration

FRESHNESS = 0.5
LISTS: dict[Entity, str] = {
    "customers": "business.customers",
    "products": "business.products",
    "orders": "business.invoices",
}


@pytest.fixture
def wave(boxes: Sandboxes, redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[System]:
    """Sandboxes and a link store, no worker: the test plays the worker's part."""
    with fresh_system(boxes, redis_server.url, tmp_path, match_freshness=FRESHNESS, poll_page_size=5) as system:
        yield system


def index(system: System) -> WaveKeys:
    return WaveKeys(system.redis, system.settings)


def listings(system: System, entity: Entity) -> int:
    return system.boxes.counters("wave").get(LISTS[entity], 0)


def poll_wave(system: System, *entities: Entity) -> None:
    for entity in entities:
        Poller(system.ctx, "wave", entity).run()


def wait_past_freshness(keys: WaveKeys, entity: Entity) -> None:
    as_of = keys.complete_as_of(entity)
    assert as_of is not None
    time.sleep(max(0.0, as_of + FRESHNESS + 0.05 - time.time()))


def income_account(system: System) -> str:
    return system.ctx.wave.list_accounts(["INCOME"])[0].id


def test_a_wave_poll_indexes_every_entity_by_its_natural_keys(wave: System) -> None:
    wave.boxes.wave_admin("POST", "seed", {"customers": 7, "products": 6, "invoices": 3, "seed": 5})
    seeded = wave.boxes.snapshot("wave")
    archived = seeded["products"][0]
    wave.boxes.wave_admin("POST", f"products/{archived['id']}/archive")
    before = time.time()
    poll_wave(wave, "customers", "products", "orders")

    keys = index(wave)
    for customer in seeded["customers"]:
        # Case and spacing do not matter; both keys lead to the customer, each on its own.
        assert keys.candidates("customers", {"email": f"  {customer['email'].upper()} "}) == [customer["id"]]
        assert keys.candidates("customers", {"displayId": customer["displayId"].lower()}) == [customer["id"]]
    for product in seeded["products"]:  # the archived one too (read by the poll of archived products)
        assert keys.candidates("products", {"name": product["name"]}) == [product["id"]]
    for invoice in seeded["invoices"]:
        assert keys.candidates("orders", {"invoiceNumber": invoice["invoiceNumber"]}) == [invoice["id"]]
    assert keys.candidates("customers", {"email": "nobody@example.com", "displayId": None}) == []
    for entity in ("customers", "products", "orders"):
        as_of = keys.complete_as_of(entity)
        assert as_of is not None
        assert before <= as_of <= time.time()


def test_a_customer_a_person_creates_after_the_last_poll_is_found_once_the_freshness_window_has_passed(
    wave: System,
) -> None:
    poll_wave(wave, "customers")
    keys = index(wave)
    person = wave.ctx.wave.create_customer({"name": "Walk-in", "email": "walk-in@example.com", "displayId": "W-7"})
    lists = listings(wave, "customers")

    # The honest window: within `match_freshness` of the last complete poll the index is trusted as it is, so a
    # record a person created since is not seen (a worker creating now would duplicate it).
    assert keys.ensure_fresh("customers", wave.ctx.wave, max_age=60) is False
    assert keys.candidates("customers", {"email": "walk-in@example.com"}) == []
    assert listings(wave, "customers") == lists

    # Past the window, a lookup that finds nothing first lists what changed since the poll: one call.
    wait_past_freshness(keys, "customers")
    assert keys.lookup("customers", {"email": "WALK-IN@example.com"}, wave.ctx.wave) == [person.id]
    assert keys.candidates("customers", {"displayId": "w-7"}) == [person.id]
    assert listings(wave, "customers") == lists + 1


def test_a_listing_rereads_a_second_before_what_the_last_one_read_not_a_poll_overlap(wave: System) -> None:
    """In a backfill the index is listed every second or two while the workers create records: a listing starting
    `poll_overlap` (5 s) before the last one would read every create several times over."""
    poll_wave(wave, "customers")
    keys = index(wave)
    for n in range(4):
        wave.ctx.wave.create_customer({"name": f"Early {n}", "email": f"early-{n}@example.com"})
    time.sleep(LATE_WRITE_S + 0.05)
    wave.ctx.wave.create_customer({"name": "Marker", "email": "marker@example.com"})
    wait_past_freshness(keys, "customers")
    assert keys.ensure_fresh("customers", wave.ctx.wave) is True  # one page (of 5): the four and the marker

    for n in range(4):
        wave.ctx.wave.create_customer({"name": f"Later {n}", "email": f"later-{n}@example.com"})
    wait_past_freshness(keys, "customers")
    lists = listings(wave, "customers")
    assert keys.lookup("customers", {"email": "later-3@example.com"}, wave.ctx.wave) != []
    # One page: the marker and the four later ones. From a poll overlap before, the early four too: two pages.
    assert listings(wave, "customers") - lists == 1


def late_writes(system: System, count: int) -> list[str]:
    """Emails of `count` customers that appear in Wave now, stamped one second apart before now (the newest last):
    writes Wave stamped before they became visible, as the sandbox's seed makes them."""
    made = system.boxes.wave_admin("POST", "seed", {"customers": count, "products": 0, "invoices": 0, "seed": 9})
    emails = {c["id"]: c["email"] for c in system.boxes.snapshot("wave")["customers"]}
    return [emails[wave_id] for wave_id in made["customers"]]


def test_a_write_stamped_before_what_a_listing_read_but_visible_only_after_is_read_by_the_next_one(
    wave: System,
) -> None:
    poll_wave(wave, "customers")
    keys = index(wave)
    wave.ctx.wave.create_customer({"name": "Marker", "email": "marker@example.com"})
    wait_past_freshness(keys, "customers")
    assert keys.ensure_fresh("customers", wave.ctx.wave) is True
    (late,) = late_writes(wave, 1)  # stamped now - 1 s: before the marker, which the listing read ~0.5 s ago
    wait_past_freshness(keys, "customers")
    assert keys.lookup("customers", {"email": late}, wave.ctx.wave) != []


def test_after_a_listing_of_several_pages_the_next_one_starts_from_its_first_page(wave: System) -> None:
    """A slow listing (rate-limited pages) reads its pages seconds apart, and a late write may hide behind any
    page's newest record, so the next listing starts from the first page's, not the last page's."""
    poll_wave(wave, "customers")
    keys = index(wave)
    first = [
        wave.ctx.wave.create_customer({"name": f"First {n}", "email": f"first-{n}@example.com"})
        for n in range(5)  # a page: the fixture's page size is 5
    ]
    for n in range(7):
        wave.ctx.wave.create_customer({"name": f"Then {n}", "email": f"then-{n}@example.com"})
    wait_past_freshness(keys, "customers")
    lists = listings(wave, "customers")
    assert keys.ensure_fresh("customers", wave.ctx.wave) is True
    assert listings(wave, "customers") - lists == 3
    listed = wave.redis.zscore(redis_keys.wave_index_listed_key(), "customers")
    assert listed == first[-1].modified_at.timestamp()


def test_products_and_invoices_created_in_wave_after_the_poll_are_found_the_same_way(wave: System) -> None:
    poll_wave(wave, "customers", "products", "orders")
    customer = wave.ctx.wave.create_customer({"name": "Buyer"})
    product = wave.ctx.wave.create_product(
        {"name": "Late Lamp", "unitPrice": "3", "incomeAccountId": income_account(wave)}
    )
    invoice = wave.ctx.wave.create_invoice(
        {"customerId": customer.id, "invoiceNumber": "L-9", "items": [{"productId": product.id, "quantity": "1"}]}
    )
    archived = wave.ctx.wave.archive_product(
        wave.ctx.wave.create_product({"name": "Old Lamp", "unitPrice": "1", "incomeAccountId": income_account(wave)}).id
    )
    keys = index(wave)
    wait_past_freshness(keys, "orders")
    operations: list[str] = []
    wave.ctx.wave._http.event_hooks["request"].append(
        lambda request: operations.append(json.loads(request.content)["query"].split("(")[0].split()[-1])
    )
    assert keys.lookup("products", {"name": "late  lamp"}, wave.ctx.wave) == [product.id]
    assert keys.candidates("products", {"name": "Old Lamp"}) == [archived.id]  # one listing reads both kinds
    assert keys.lookup("orders", {"invoiceNumber": "l-9"}, wave.ctx.wave) == [invoice.id]
    # The listings read each record's id, modifiedAt and keys, not the whole record (an invoice's lines and amounts).
    assert operations == ["ProductKeysPage", "InvoiceKeysPage"]


def test_a_listing_longer_than_a_page_misses_nothing_while_a_person_edits_a_record_it_read(
    wave: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    poll_wave(wave, "customers")
    made = [wave.ctx.wave.create_customer({"name": f"C{n}", "email": f"c{n}@example.com"}).id for n in range(13)]
    keys = index(wave)
    wait_past_freshness(keys, "customers")
    read = wave.ctx.wave.list_keys_page
    pages: list[int] = []

    def a_person_edits_after_the_first_page(kind: Listed, page: int, **filters: Any) -> Any:
        result = read(kind, page, **filters)
        if not pages:
            # The edited record moves to the end of the listing: offset pages would skip the one shifted forward.
            wave.boxes.wave_admin("PATCH", f"customers/{result.items[0].id}", {"phone": "+1 555 0100"})
        pages.append(page)
        return result

    monkeypatch.setattr(wave.ctx.wave, "list_keys_page", a_person_edits_after_the_first_page)
    assert keys.ensure_fresh("customers", wave.ctx.wave) is True
    assert len(pages) > 1
    assert [keys.candidates("customers", {"email": f"c{n}@example.com"}) for n in range(13)] == [[i] for i in made]


def test_many_lookups_within_the_freshness_window_cost_one_listing(wave: System) -> None:
    poll_wave(wave, "customers")
    wait_past_freshness(index(wave), "customers")
    lists = listings(wave, "customers")

    # Eight "processes" (each its own Redis connection) find the index stale at the same moment: one lists.
    start = threading.Barrier(8)
    listed: list[bool] = []

    def one_process() -> None:
        client = redis.Redis.from_url(wave.settings.redis_url.unicode_string())  # type: ignore[union-attr]
        keys = WaveKeys(client, wave.settings)
        start.wait()
        listed.append(keys.ensure_fresh("customers", wave.ctx.wave))
        client.close()

    threads = [threading.Thread(target=one_process) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(listed) == [False] * 7 + [True]
    assert listings(wave, "customers") == lists + 1

    # A backfill: every record about to be created looks up a key nobody has. About one listing per window.
    keys = index(wave)
    lists = listings(wave, "customers")
    began, lookups = time.monotonic(), 0
    while time.monotonic() - began < 3 * FRESHNESS:
        assert keys.lookup("customers", {"email": f"new-{lookups}@example.com"}, wave.ctx.wave) == []
        lookups += 1
    assert lookups >= 50
    # A listing every REFRESH_AHEAD of a window (the creates list ahead of time), and one may straddle an edge.
    assert listings(wave, "customers") - lists <= math.ceil(3 / REFRESH_AHEAD) + 1


def test_a_create_late_in_the_window_lists_ahead_of_time_unless_another_process_already_is(wave: System) -> None:
    """So that no create waits for a listing while creates keep coming (at 250 ms a call, a worker's threads all
    waiting on one listing left one of Wave's two slots idle a quarter second in every two)."""
    window = 10.0  # long, so that a loaded machine cannot carry the index past it between two steps
    keys = WaveKeys(wave.redis, wave.settings.model_copy(update={"match_freshness": window}))
    poll_wave(wave, "customers")
    late = wave.ctx.wave.create_customer({"name": "Late Ann", "email": "late@example.com"})  # by a person
    lists = listings(wave, "customers")

    def index_complete_seconds_ago(age: float) -> None:
        wave.redis.zadd(redis_keys.wave_index_complete_key(), {"customers": time.time() - age})

    # Another process is listing: a create still inside the window neither waits for it nor lists too.
    lock = redis_keys.wave_index_lock_key("customers")
    wave.redis.set(lock, "another-process", px=60_000)
    index_complete_seconds_ago(0.9 * window)
    assert keys.lookup("customers", {"email": "late@example.com"}, wave.ctx.wave) == []
    assert listings(wave, "customers") == lists
    wave.redis.delete(lock)

    # Nobody is: this create lists before the window closes, and finds what the person made since the poll.
    index_complete_seconds_ago(0.9 * window)
    assert keys.lookup("customers", {"email": "late@example.com"}, wave.ctx.wave) == [late.id]
    assert listings(wave, "customers") == lists + 1
    as_of = keys.complete_as_of("customers")
    assert as_of is not None
    assert as_of > time.time() - 0.5 * window

    # Early in the window a create trusts the index as it is.
    index_complete_seconds_ago(0.1 * window)
    assert keys.lookup("customers", {"email": "nobody@example.com"}, wave.ctx.wave) == []
    assert listings(wave, "customers") == lists + 1


def test_two_wave_customers_sharing_an_email_are_both_candidates_the_one_whose_display_id_matches_first(
    wave: System,
) -> None:
    first = wave.ctx.wave.create_customer({"name": "Ann A", "email": "shared@example.com", "displayId": "A-1"})
    second = wave.ctx.wave.create_customer({"name": "Ann B", "email": "Shared@Example.com", "displayId": "A-2"})
    poll_wave(wave, "customers")
    keys = index(wave)
    assert sorted(keys.candidates("customers", {"email": "shared@example.com"})) == sorted([first.id, second.id])
    assert keys.candidates("customers", {"email": "shared@example.com", "displayId": "a-2"})[0] == second.id
    assert keys.candidates("customers", {"email": "shared@example.com", "displayId": "a-1"})[0] == first.id


def test_a_record_s_keys_follow_its_changes_and_a_late_older_read_changes_nothing(redis_server: EmbeddedRedis) -> None:
    clean_redis(redis_server.url)
    client = redis.Redis.from_url(redis_server.url)
    keys = WaveKeys(client, Settings(redis_url=redis_server.url))
    old = {"id": "A", "modifiedAt": "2026-01-01T00:00:01Z", "email": "a@x.test", "displayId": "1"}
    new = {**old, "modifiedAt": "2026-01-01T00:00:02.5Z", "email": "b@x.test", "displayId": None}
    keys.put_record("customers", old)
    keys.put_records("customers", [new, old])  # a poll page read before the worker's update arrives after it
    assert keys.candidates("customers", {"email": "a@x.test"}) == []
    assert keys.candidates("customers", {"displayId": "1"}) == []
    assert keys.candidates("customers", {"email": "b@x.test"}) == ["A"]

    keys.forget_record("customers", "A")  # deleted by a worker
    keys.put_record("customers", new)  # ... and read by a poll just before
    assert keys.candidates("customers", {"email": "b@x.test"}) == []
    with pytest.raises(ValueError, match="not indexed by 'email'"):
        keys.candidates("products", {"email": "b@x.test"})
    client.close()


def test_a_lister_killed_mid_listing_holds_the_others_up_only_briefly(wave: System) -> None:
    """Its lock would stand for two HTTP timeouts (a minute in production): the others list themselves after
    LISTING_WAIT_S instead, so a worker killed mid-listing cannot stall every create of the entity."""
    from shared.natural_keys import LISTING_WAIT_S

    poll_wave(wave, "customers")
    keys = index(wave)
    wait_past_freshness(keys, "customers")
    wave.redis.set(redis_keys.wave_index_lock_key("customers"), "a-dead-process", px=600_000)
    lists = listings(wave, "customers")
    began = time.monotonic()
    assert keys.ensure_fresh("customers", wave.ctx.wave) is True
    assert LISTING_WAIT_S <= time.monotonic() - began < LISTING_WAIT_S + 2
    assert listings(wave, "customers") == lists + 1
