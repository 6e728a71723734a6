"""The history's pure parts and its store: a merge's field diff with directions and conflicts, compact values,
keyset reading of a record's stream, and pruning by age and by count."""

from __future__ import annotations

from datetime import timedelta

from shared import history
from shared.messages import ChangeMessage
from shared.settings import Settings
from shared.store import links as store
from shared.store.db import Database, upgrade
from shared.store.link_state import Settled
from shared.store.models import HistoryEntry
from shared.versions import utcnow

SETTINGS = Settings()
MESSAGE = ChangeMessage(entity="customers", source="customerp", source_id="7")


def test_a_merge_records_each_moved_field_with_its_direction_and_conflicts_with_the_policy() -> None:
    before = {
        "customerp": {"name": "New Name", "phone": "1", "email": "a@x"},
        "wave": {"name": "Old Name", "phone": "2", "email": "a@x"},
    }
    merged = {"name": "New Name", "phone": "1", "email": "a@x"}
    decision = history.merged(SETTINGS, MESSAGE, before, merged, ("phone",), linked=True)
    assert decision is not None
    assert decision.kind == "merged"
    assert decision.direction == "customerp->wave"
    assert decision.diff == {
        "name": {"from": "Old Name", "to": "New Name", "side": "wave"},
        "phone": {
            "from": "2",
            "to": "1",
            "side": "wave",
            "conflict": {"customerp": "1", "wave": "2", "policy": "newest_wins"},
        },
    }
    assert decision.reason == "conflict on phone resolved by newest_wins"


def test_fields_moving_both_ways_say_both_and_a_quiet_merge_is_not_recorded() -> None:
    before = {"customerp": {"name": "A", "phone": "1"}, "wave": {"name": "B", "phone": "2"}}
    decision = history.merged(SETTINGS, MESSAGE, before, {"name": "A", "phone": "2"}, (), linked=True)
    assert decision is not None
    assert decision.direction == "both"
    assert decision.diff == {
        "name": {"from": "B", "to": "A", "side": "wave"},
        "phone": {"from": "1", "to": "2", "side": "customerp"},
    }
    same = {"customerp": {"name": "A"}, "wave": {"name": "A"}}
    assert history.merged(SETTINGS, MESSAGE, same, {"name": "A"}, (), linked=True) is None
    linked = history.merged(SETTINGS, MESSAGE, same, {"name": "A"}, (), linked=False)
    assert linked is not None
    assert linked.kind == "linked"


def test_switched_off_history_records_nothing() -> None:
    off = Settings(history_enabled=False)
    before = {"customerp": {"name": "A"}, "wave": {"name": "B"}}
    assert history.merged(off, MESSAGE, before, {"name": "A"}, (), linked=True) is None
    assert history.about(off, "echo", MESSAGE) is None


def test_long_values_are_kept_short() -> None:
    assert history.compact("x" * 10) == "x" * 10
    long = history.compact("y" * 5000)
    assert isinstance(long, str)
    assert len(long) < 300
    assert long.endswith("(5000 chars)")
    lines = history.compact([{"sku": f"S{i}", "qty": i} for i in range(100)])
    assert isinstance(lines, str)
    assert lines.endswith("(100 items)")


def test_a_records_stream_reads_newest_first_by_keyset_and_prunes_by_age_and_count(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    now = utcnow()
    with db.session() as session:
        for n in range(30):
            decision = history.about(SETTINGS, "echo", MESSAGE)
            assert decision is not None
            row = history.row(decision) | {"at": now - timedelta(days=30 - n), "wave_id": "W7" if n % 2 else None}
            session.add(HistoryEntry(**row))
        other = history.about(SETTINGS, "echo", MESSAGE.model_copy(update={"source_id": "8"}))
        assert other is not None
        session.add(HistoryEntry(**history.row(other)))  # another record: never in this one's stream
    with db.session() as session:
        first = history.for_record(session, "customers", "7", "W7", limit=10)
        ids = [e.id for e in first]
        assert ids == sorted(ids, reverse=True)
        assert len(ids) == 10
        second = history.for_record(session, "customers", "7", "W7", before_id=ids[-1], limit=100)
        assert len(second) == 20
        assert max(e.id for e in second) < ids[-1]
        # Found by the Wave id alone, too (rows from before the pair was linked name one side only).
        assert len(history.for_record(session, "customers", None, "W7", limit=100)) == 15
    assert history.prune(db, retention_days=10.5, max_rows=0, now=now) == 20
    assert history.prune(db, retention_days=0, max_rows=5, now=now) == 6
    with db.session() as session:
        assert len(history.recent(session, limit=100)) == 5


def test_the_row_bound_keeps_max_rows_across_id_gaps_and_deletes_in_chunks(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    with db.session() as session:
        for _ in range(30):
            decision = history.about(SETTINGS, "echo", MESSAGE)
            assert decision is not None
            session.add(HistoryEntry(**history.row(decision)))
    with db.session() as session:  # a gap in the ids: rows 11-20 are gone
        all_ids = [e.id for e in history.recent(session, limit=100)]
        gap = sorted(all_ids)[10:20]
        session.query(HistoryEntry).filter(HistoryEntry.id.in_(gap)).delete()
    assert history.prune(db, retention_days=0, max_rows=15, now=utcnow(), chunk=2) == 5
    with db.session() as session:
        kept = [e.id for e in history.recent(session, limit=100)]
        assert kept == sorted(set(all_ids) - set(gap), reverse=True)[:15]


def _linked(db: Database, customerp_id: str, name: str) -> None:
    with db.session() as session:
        store.save_link(
            session,
            None,
            entity="customers",
            customerp_id=customerp_id,
            wave_id=f"W-{customerp_id}",
            state=Settled({"name": name, "email": f"{customerp_id}@example.com"}),
            customerp_version="1",
            wave_version="a",
        )


def test_name_search_finds_non_ascii_names_and_takes_wildcards_literally(database_url: str) -> None:
    upgrade(database_url)
    db = Database(database_url)
    _linked(db, "1", "Müller GmbH")
    _linked(db, "2", 'Ørsted & "Sons"')
    _linked(db, "3", "under_score Ltd")
    _linked(db, "4", "underXscore Ltd")
    _linked(db, "5", "100% Cotton")
    with db.session() as session:

        def ids(query: str) -> list[str | None]:
            return sorted(f.customerp_id for f in history.find(session, query))

        assert ids("Müller") == ["1"]
        assert ids("müller gmbh") == ["1"]
        assert ids("Ørsted") == ["2"]
        assert ids('"Sons"') == ["2"]
        assert ids("under_score") == ["3"]
        assert ids("0%") == ["5"]
        assert ids("%") == ["5"]
        assert ids("Mxller") == []
