"""The Alembic migrations create exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.exc import IntegrityError

from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from shared.store.models import Base, Watermark


def test_migrations_match_the_models(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_twice_is_harmless(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)


def test_a_record_has_at_most_one_link_per_side(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as s:
        store.save_link(
            s,
            None,
            entity="customers",
            customerp_id="c1",
            wave_id="w1",
            state=Settled({}),
            customerp_version="1",
            wave_version="a",
        )
    with pytest.raises(IntegrityError), db.session() as s:
        store.save_link(
            s,
            None,
            entity="customers",
            customerp_id="c1",
            wave_id="w2",
            state=Settled({}),
            customerp_version="1",
            wave_version="a",
        )
    with pytest.raises(IntegrityError), db.session() as s:
        store.save_link(
            s,
            None,
            entity="customers",
            customerp_id="c2",
            wave_id="w1",
            state=Settled({}),
            customerp_version="1",
            wave_version="a",
        )
    with db.session() as s:  # the same ids in another entity are fine
        store.save_link(
            s,
            None,
            entity="products",
            customerp_id="c1",
            wave_id="w1",
            state=Settled({}),
            customerp_version="1",
            wave_version="a",
        )


def test_dead_letters_of_one_record_collapse_into_one_entry(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    for reason in ("first", "second"):
        with db.session() as s:
            store.record_dead_letter(
                s,
                entity="orders",
                source="customerp",
                source_id="o1",
                customerp_id="o1",
                wave_id=None,
                message={"x": 1},
                version="000000000001",
                error_class="InvalidDataError",
                reason=reason,
                field_paths=["lines.0.product_id"],
            )
    with db.session() as s:
        from sqlalchemy import select

        from shared.store.models import DeadLetter

        rows = s.scalars(select(DeadLetter)).all()
        assert [(r.attempts, r.reason) for r in rows] == [(2, "second")]
        assert store.resolve_dead_letters(s, "orders", {"customerp": "o1"}) == 1


def test_a_watermark_created_concurrently_is_read_not_duplicated(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as second:
        # `second` looked before the row existed; `first` creates it meanwhile.
        assert second.get(Watermark, ("wave", "customers")) is None
        with db.session() as first:
            store.get_watermark(first, "wave", "customers").position = "a"
        second.expire_all()
        second.get = lambda *a, **k: None if not k else type(second).get(second, *a, **k)  # type: ignore[method-assign]
        mark = store.get_watermark(second, "wave", "customers")
        assert (mark.system, mark.entity, mark.position) == ("wave", "customers", "a")


def test_downgrade_below_history_drops_resolved_dead_letters_rather_than_reopen_them(database_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from shared.store.db import alembic_config

    upgrade(database_url)
    db = Database(database_url)
    with db.session() as s:
        for source_id in ("open-1", "done-1"):
            store.record_dead_letter(
                s,
                entity="customers",
                source="customerp",
                source_id=source_id,
                customerp_id=source_id,
                wave_id=None,
                message={"x": 1},
                version="1",
                error_class="InvalidDataError",
                reason="bad",
                field_paths=[],
            )
        assert store.resolve_dead_letters(s, "customers", {"customerp": "done-1"}) == 1
    db.engine.dispose()
    command.downgrade(alembic_config(database_url), "0002")
    with Database(database_url).engine.connect() as conn:
        assert conn.execute(text("SELECT source_id FROM dead_letters")).scalars().all() == ["open-1"]


def test_links_of_the_old_snapshot_format_become_typed_states_and_back(database_url: str) -> None:
    """0004: a snapshot (a record, or one marked by __bases__/__pending__ keys) becomes a typed state; the downgrade
    gives the old snapshot back."""
    import json

    from alembic import command
    from sqlalchemy import text

    from shared.store.db import alembic_config
    from shared.store.link_state import Unsettled

    upgrade(database_url, "0003")
    agreed = {"name": "Ada", "email": "ada@example.com"}
    pending = {"name": "Ada L", "email": "ada@example.com"}
    unsettled = {"__bases__": {"customerp": agreed, "wave": {"name": "Ada"}}, "__pending__": pending}
    db = Database(database_url)
    with db.engine.begin() as conn:
        for n, snapshot in enumerate((agreed, unsettled)):
            conn.execute(
                text(
                    "INSERT INTO links (entity, customerp_id, wave_id, snapshot, customerp_version, wave_version, "
                    "created_at, synced_at, row_version) VALUES ('customers', :cp, :w, :s, '1', 'a', :t, :t, 1)"
                ),
                {"cp": f"c{n}", "w": f"w{n}", "s": json.dumps(snapshot), "t": "2026-11-29 12:00:00+00:00"},
            )
    upgrade(database_url)
    with db.session() as s:
        settled_link = store.find_link(s, "customers", "customerp", "c0")
        unsettled_link = store.find_link(s, "customers", "customerp", "c1")
        assert settled_link is not None
        assert unsettled_link is not None
        assert settled_link.state == Settled(agreed)
        assert unsettled_link.state == Unsettled({"customerp": agreed, "wave": {"name": "Ada"}}, pending)
    command.downgrade(alembic_config(database_url), "0003")
    with db.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT customerp_id, snapshot FROM links")).all())
    decoded = {k: json.loads(v) if isinstance(v, str) else v for k, v in rows.items()}
    assert decoded == {"c0": agreed, "c1": unsettled}
