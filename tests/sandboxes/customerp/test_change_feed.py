"""The Customerp change feed: (updated_at, id) order, exact cursors under equal timestamps, tombstones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from shared.customerp.client import CustomerpClient
from shared.customerp.models import Product, Tombstone
from tests.sandboxes.customerp.conftest import PRODUCT, Clock


def _product(client: CustomerpClient, n: int) -> Product:
    return client.create("products", {**PRODUCT, "sku": f"S-{n}", "name": f"P{n}"}, idempotency_key=f"p-{n}")


def test_equal_timestamps_page_exactly_by_id(client: CustomerpClient, clock: Clock) -> None:
    clock.freeze()
    created = [_product(client, n) for n in range(5)]
    assert len({p.updated_at for p in created}) == 1

    pages = list(client.iter_changes("products", limit=2))

    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [item.id for page in pages for item in page.items] == [p.id for p in created]
    assert [p.has_more for p in pages] == [True, True, False]


def test_records_written_after_a_cursor_at_the_same_instant_are_not_missed(
    client: CustomerpClient, clock: Clock
) -> None:
    clock.freeze()
    first, second = _product(client, 1), _product(client, 2)
    page = client.changes("products", limit=10)
    assert [i.id for i in page.items] == [first.id, second.id]

    third = _product(client, 3)  # same frozen instant, higher id
    updated = client.update("products", first.id, {"name": "Renamed"}, version=1)  # stamp moves 1 µs on
    after = client.changes("products", cursor=page.next_cursor)

    assert [i.id for i in after.items] == [third.id, first.id]
    assert updated.updated_at == first.updated_at + timedelta(microseconds=1)
    assert client.changes("products", cursor=after.next_cursor).items == []


def test_a_record_shows_once_in_its_latest_state(client: CustomerpClient, clock: Clock) -> None:
    clock.freeze()
    product = _product(client, 1)
    other = _product(client, 2)
    clock.advance(seconds=1)
    client.update("products", product.id, {"name": "v2"}, version=1)

    items = client.changes("products").items

    assert [(i.id, i.version) for i in items] == [(other.id, 1), (product.id, 2)]


def test_updated_since_is_inclusive(client: CustomerpClient, clock: Clock) -> None:
    start = clock.freeze()
    _product(client, 1)
    clock.advance(seconds=10)
    later = _product(client, 2)

    at = client.changes("products", updated_since=start + timedelta(seconds=10))
    before = client.changes("products", updated_since=start - timedelta(hours=1))
    after = client.changes("products", updated_since=start + timedelta(seconds=10, microseconds=1))

    assert [i.id for i in at.items] == [later.id]
    assert len(before.items) == 2
    assert (after.items, after.next_cursor, after.has_more) == ([], None, False)


def test_cursor_wins_over_updated_since(client: CustomerpClient, clock: Clock) -> None:
    clock.freeze()
    first, second = _product(client, 1), _product(client, 2)
    cursor = client.changes("products", limit=1).next_cursor

    page = client.changes("products", cursor=cursor, updated_since=datetime(2000, 1, 1, tzinfo=UTC))

    assert [i.id for i in page.items] == [second.id]
    assert first.id != second.id


def test_deletion_shows_as_a_tombstone_with_next_version(client: CustomerpClient, clock: Clock) -> None:
    clock.freeze()
    product = _product(client, 1)
    cursor = client.changes("products").next_cursor
    clock.advance(seconds=1)
    client.delete("products", product.id)

    items = client.changes("products", cursor=cursor).items

    assert items == [Tombstone(id=product.id, version=2, updated_at=clock())]


def test_empty_page_keeps_the_cursor_so_polling_can_continue(client: CustomerpClient) -> None:
    _product(client, 1)
    cursor = client.changes("products").next_cursor

    page = client.changes("products", cursor=cursor)

    assert (page.items, page.next_cursor, page.has_more) == ([], cursor, False)


def test_feed_stamps_never_go_backwards_when_the_clock_does(client: CustomerpClient, clock: Clock) -> None:
    start = clock.freeze()
    first = _product(client, 1)
    clock.freeze(start - timedelta(hours=1))
    second = _product(client, 2)

    assert second.updated_at == first.updated_at
    assert [i.id for i in client.changes("products").items] == [first.id, second.id]


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": "not-a-cursor"},
        {"updated_since": "yesterday"},
        {"updated_since": "2024-05-01T12:00:00"},  # no offset
        {"limit": "0"},
        {"limit": "501"},
    ],
)
def test_bad_feed_parameters_are_400(admin: httpx.Client, params: dict[str, str]) -> None:
    response = admin.get("/api/v1/orders/changes", params=params)

    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
