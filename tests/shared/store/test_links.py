"""Writing a link: its row version fences concurrent updates, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.orm.exc import StaleDataError

from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled, Unsettled
from shared.store.models import Link


def save(db: Database, link: Link | None, state: Settled | Unsettled, version: str) -> Link:
    with db.session() as session:
        return store.save_link(
            session,
            link,
            entity="customers",
            customerp_id="c1",
            wave_id="w1",
            state=state,
            customerp_version=version,
            wave_version="a",
        )


def load(db: Database) -> Link:
    with db.session() as session:
        link = store.find_link(session, "customers", "customerp", "c1")
    assert link is not None
    return link


def test_an_update_from_a_link_loaded_before_another_update_is_refused(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    save(db, None, Settled({"name": "old"}), "1")
    mine, theirs = load(db), load(db)

    save(db, theirs, Settled({"name": "theirs"}), "2")
    with pytest.raises(StaleDataError):
        save(db, mine, Settled({"name": "mine"}), "3")

    stored = load(db)
    assert (stored.state, stored.customerp_version, stored.row_version) == (Settled({"name": "theirs"}), "2", 2)


def test_a_saved_link_is_what_was_stored_and_can_be_saved_again(database_url: str) -> None:
    """What save_link returns stands for the row as stored: its next update is fenced by the new row version, and
    the update before it did not leave it looking changed (nothing is written twice)."""
    upgrade(database_url)
    db = Database(database_url)
    created = save(db, None, Unsettled({"customerp": {"name": "a"}, "wave": None}), "1")
    before = load(db)
    assert (created.id, created.row_version) == (before.id, 1)

    updated = save(db, created, Settled({"name": "a"}), "2")
    assert updated.row_version == 2
    again = save(db, updated, Settled({"name": "b"}), "3")
    stored = load(db)
    assert (again.row_version, stored.row_version, stored.state, stored.customerp_version) == (
        3,
        3,
        Settled({"name": "b"}),
        "3",
    )
    with pytest.raises(StaleDataError):
        save(db, before, Settled({"name": "stale"}), "4")
