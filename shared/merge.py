"""The field-level three-way merge of a linked pair against the last synced snapshot. Pure: no I/O, no clock.

Rules, per field:
- both sides equal → that value;
- no snapshot yet (onboarding): a non-empty value beats an empty one; two different non-empty values follow
  the conflict policy;
- only one side differs from the snapshot → that side's value, *including an empty one*: a field that was
  non-empty at the last sync and is empty now was cleared on purpose by a person, so the clear propagates;
- both sides differ from the snapshot and from each other → a non-empty value beats an empty one, otherwise
  the conflict policy decides (newest modification wins by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.settings import ConflictPolicy


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


@dataclass(frozen=True)
class MergeResult:
    merged: dict[str, Any]
    conflicts: tuple[str, ...] = field(default_factory=tuple)


def _policy_pick(policy: ConflictPolicy, customerp_is_newer: bool, cp: Any, wave: Any) -> Any:
    if policy is ConflictPolicy.CUSTOMERP_WINS:
        return cp
    if policy is ConflictPolicy.WAVE_WINS:
        return wave
    return cp if customerp_is_newer else wave


def three_way_merge(
    base: Mapping[str, Any] | None,
    customerp: Mapping[str, Any],
    wave: Mapping[str, Any],
    *,
    policy: ConflictPolicy,
    customerp_is_newer: bool,
) -> MergeResult:
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in sorted(set(customerp) | set(wave)):
        cp, wv = customerp.get(name), wave.get(name)
        if cp == wv:
            merged[name] = cp
            continue
        if base is not None and name in base:
            old = base[name]
            if wv == old:
                merged[name] = cp
                continue
            if cp == old:
                merged[name] = wv
                continue
            conflicts.append(name)
        if is_empty(cp) != is_empty(wv):
            merged[name] = wv if is_empty(cp) else cp
        else:
            merged[name] = _policy_pick(policy, customerp_is_newer, cp, wv)
    return MergeResult(merged, tuple(conflicts))
