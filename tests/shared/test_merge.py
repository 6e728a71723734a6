"""The three-way merge, as a table: (base, customerp, wave, policy, customerp newer) → merged value."""

from __future__ import annotations

from typing import Any

import pytest

from shared.merge import three_way_merge
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
