"""Recording a pair after a failed write (workers/recording.remember), on a real link store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.settings import ConflictPolicy
from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled, Unsettled
from shared.store.models import Link
from workers import plan as core
from workers import recording

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@dataclass
class Store:
    """What `remember` needs of a context: the link store."""

    db: Database


@pytest.fixture
def db(tmp_path: Path) -> Database:
    url = f"sqlite:///{tmp_path / 'links.db'}"
    upgrade(url)
    return Database(url)


def linked(db: Database, state: Settled | Unsettled) -> Link:
    with db.session() as session:
        return store.save_link(
            session,
            None,
            entity="customers",
            customerp_id="c1",
            wave_id="w1",
            state=state,
            customerp_version="1",
            wave_version="a",
        )


def failed_write(agreed: dict[str, str]) -> core.Merge:
    cp = core.Side("customerp", "c1", "2", "2026-11-29T12:00:00.000000Z", {**agreed, "name": "new"})
    wave = core.Side("wave", "w1", "a", "2026-11-29T11:00:00.000000Z", agreed)
    decision = core.merge(Settled(agreed), cp, wave, core.Policy(ConflictPolicy.NEWEST_WINS), NOW)
    assert isinstance(decision, core.Merge)
    return decision


def test_a_failed_write_leaves_the_pair_unsettled_on_what_it_wrote(db: Database) -> None:
    agreed = {"name": "old", "email": "a@b.c"}
    link = linked(db, Settled(agreed))
    held = NOW + timedelta(seconds=60)
    recording.remember(Store(db), link, failed_write(agreed), held)  # type: ignore[arg-type]
    with db.session() as session:
        state = store.find_link(session, "customers", "customerp", "c1").state  # type: ignore[union-attr]
    assert state == Unsettled({"customerp": agreed, "wave": agreed}, {**agreed, "name": "new"}, held)


def test_a_pair_recorded_by_another_sync_since_keeps_its_state_and_gains_only_the_hold(db: Database) -> None:
    agreed = {"name": "old", "email": "a@b.c"}
    loaded = linked(db, Settled(agreed))
    newer = {"name": "newer", "email": "a@b.c"}
    with db.session() as session:  # another sync (holding the pair's other lock) settled it meanwhile
        current = store.find_link(session, "customers", "customerp", "c1")
        assert current is not None
        current.state = Settled(newer)
    recording.remember(Store(db), loaded, failed_write(agreed), None)  # type: ignore[arg-type]
    with db.session() as session:
        assert store.find_link(session, "customers", "customerp", "c1").state == Settled(newer)  # type: ignore[union-attr]
    held = NOW + timedelta(seconds=60)
    recording.remember(Store(db), loaded, failed_write(agreed), held)  # type: ignore[arg-type]
    with db.session() as session:
        state = store.find_link(session, "customers", "customerp", "c1").state  # type: ignore[union-attr]
    assert state == Unsettled({"customerp": newer, "wave": newer}, None, held)
