"""The three-way merge, as a table: (base, customerp, wave, policy, customerp newer) → merged value."""

from __future__ import annotations

from typing import Any

import pytest

from shared.merge import rebase, three_way_merge
from shared.settings import ConflictPolicy

NEWEST, CP, WAVE = ConflictPolicy.NEWEST_WINS, ConflictPolicy.CUSTOMERP_WINS, ConflictPolicy.WAVE_WINS
MISSING = object()

CASES: list[tuple[str, Any, Any, Any, ConflictPolicy, bool, Any, bool]] = [
    # name, base, customerp, wave, policy, customerp newer, merged, conflict
    ("equal sides", "a", "a", "a", NEWEST, True, "a", False),
    ("edited in customerp only", "a", "b", "a", NEWEST, False, "b", False),
    ("edited in wave only", "a", "a", "c", NEWEST, True, "c", False),
    ("cleared on purpose in customerp", "a", None, "a", NEWEST, False, None, False),
    ("cleared on purpose in wave", "a", "a", None, NEWEST, True, None, False),
    ("both edited, customerp newer", "a", "b", "c", NEWEST, True, "b", True),
    ("both edited, wave newer", "a", "b", "c", NEWEST, False, "c", True),
    ("both edited, customerp wins", "a", "b", "c", CP, False, "b", True),
    ("both edited, wave wins", "a", "b", "c", WAVE, True, "c", True),
    ("both edited, one cleared: non-empty wins", "a", None, "c", CP, True, "c", True),
    ("both edited to the same value", "a", "z", "z", NEWEST, True, "z", False),
    ("onboarding: empty never beats a value", MISSING, "", "c", CP, True, "c", False),
    ("onboarding: value beats empty", MISSING, "b", None, WAVE, False, "b", False),
    ("onboarding: two values follow the policy", MISSING, "b", "c", NEWEST, True, "b", False),
]


@pytest.mark.parametrize(
    ("name", "base", "cp", "wave", "policy", "cp_newer", "merged", "conflict"), CASES, ids=[c[0] for c in CASES]
)
def test_merge_rule(
    name: str, base: Any, cp: Any, wave: Any, policy: ConflictPolicy, cp_newer: bool, merged: Any, conflict: bool
) -> None:
    result = three_way_merge(
        None if base is MISSING else {"f": base}, {"f": cp}, {"f": wave}, policy=policy, customerp_is_newer=cp_newer
    )
    assert result.merged == {"f": merged}
    assert ("f" in result.conflicts) is conflict


def test_fields_merge_independently() -> None:
    base = {"name": "Acme", "email": "a@x.io", "phone": "1"}
    result = three_way_merge(
        base, {**base, "name": "Acme AS"}, {**base, "phone": "2"}, policy=NEWEST, customerp_is_newer=False
    )
    assert result.merged == {"name": "Acme AS", "email": "a@x.io", "phone": "2"}
    assert result.conflicts == ()


def test_a_field_rule_decides_a_conflict_both_sides_made_over_the_policy() -> None:
    """An order marked sent in Customerp while its invoice was paid in Wave: the later stage wins, whoever is newer."""
    rank = {"confirmed": 1, "sent": 2, "paid": 4}
    result = three_way_merge(
        {"status": "confirmed"},
        {"status": "sent"},
        {"status": "paid"},
        policy=ConflictPolicy.NEWEST_WINS,
        customerp_is_newer=True,
        resolvers={"status": lambda cp, wave: max(cp, wave, key=rank.__getitem__)},
    )
    assert result.merged == {"status": "paid"}
    assert result.conflicts == ("status",)


def test_a_default_the_new_partner_filled_in_flows_back_to_the_origin() -> None:
    """An order created in Wave without a due date gets Wave's default, which flows back to Customerp."""
    sent, created = {"due": None, "memo": "m"}, {"due": "2026-12-25", "memo": "m"}
    result = three_way_merge(
        sent,
        sent,
        created,
        policy=ConflictPolicy.NEWEST_WINS,
        customerp_is_newer=True,
        wave_base=created,
        pending=created,
    )
    assert result.merged == created


def test_an_edit_of_the_origin_made_while_its_partner_was_created_wins_over_a_filled_in_default() -> None:
    sent, created = {"due": None}, {"due": "2026-12-25"}
    result = three_way_merge(
        sent,
        {"due": "2027-01-16"},
        created,
        policy=ConflictPolicy.NEWEST_WINS,
        customerp_is_newer=False,
        wave_base=created,
        pending=created,
    )
    assert result.merged["due"] == "2027-01-16"
    assert result.conflicts == ()


def test_a_write_whose_answer_was_lost_does_not_count_as_a_change_against_a_later_edit() -> None:
    """The sync wrote P2 to Wave (answer lost: the link still says P1); a person then set P3 in Customerp."""
    last, written = {"price": "1"}, {"price": "2"}
    cp, wave = {"price": "3"}, {"price": "2"}
    result = three_way_merge(
        rebase(last, cp, written),
        cp,
        wave,
        policy=ConflictPolicy.NEWEST_WINS,
        customerp_is_newer=False,  # Wave's timestamp is the sync's own write: it must not decide
        wave_base=rebase(last, wave, written),
        pending=written,
    )
    assert result.merged == {"price": "3"}
    assert result.conflicts == ()


def test_what_the_sync_wrote_to_one_side_only_reaches_the_other() -> None:
    last, written = {"price": "1"}, {"price": "2"}
    cp, wave = {"price": "2"}, {"price": "1"}  # the Customerp write landed, the Wave one did not
    result = three_way_merge(
        rebase(last, cp, written),
        cp,
        wave,
        policy=ConflictPolicy.NEWEST_WINS,
        customerp_is_newer=False,
        wave_base=rebase(last, wave, written),
        pending=written,
    )
    assert result.merged == {"price": "2"}
