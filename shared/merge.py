"""The field-level three-way merge of a linked pair against the last synced snapshot. Pure: no I/O, no clock.

Rules, per field:
- both sides equal → that value;
- no snapshot yet (onboarding): a non-empty value beats an empty one; two different non-empty values follow
  the conflict policy;
- only one side differs from the snapshot → that side's value, *including an empty one*: a field that was
  non-empty at the last sync and is empty now was cleared on purpose by a person, so the clear propagates;
- both sides differ from the snapshot and from each other → a non-empty value beats an empty one, otherwise
  the field's own rule decides when it has one (an order's status only moves forward: the later status wins),
  else the conflict policy (newest modification wins by default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


Resolver = Callable[[Any, Any], Any]  # (Customerp value, Wave value) -> the value that wins a conflict


def three_way_merge(
    base: Mapping[str, Any] | None,
    customerp: Mapping[str, Any],
    wave: Mapping[str, Any],
    *,
    policy: ConflictPolicy,
    customerp_is_newer: bool,
    resolvers: Mapping[str, Resolver] | None = None,
    wave_base: Mapping[str, Any] | None = None,
    pending: Mapping[str, Any] | None = None,
) -> MergeResult:
    """Merge field by field (rules in the module docstring).

    `base` is what both sides last agreed on. When the sides last held different things (a partner just created
    with defaults of its own; a write whose outcome is unknown), `wave_base` judges Wave's side against its own
    base, and `pending` (what the sync last wrote) wins a field that neither side changed since.
    """
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    wv_base = wave_base if wave_base is not None else base
    for name in sorted(set(customerp) | set(wave)):
        cp, wv = customerp.get(name), wave.get(name)
        if cp == wv:
            merged[name] = cp
            continue
        if base is not None and name in base and wv_base is not None and name in wv_base:
            cp_changed, wv_changed = cp != base[name], wv != wv_base[name]
            if cp_changed != wv_changed:
                merged[name] = cp if cp_changed else wv
                continue
            if not cp_changed and pending is not None and name in pending:
                merged[name] = pending[name]
                continue
            if cp_changed:
                conflicts.append(name)
        if is_empty(cp) != is_empty(wv):
            merged[name] = wv if is_empty(cp) else cp
        elif resolvers and name in resolvers:
            merged[name] = resolvers[name](cp, wv)
        else:
            merged[name] = _policy_pick(policy, customerp_is_newer, cp, wv)
    return MergeResult(merged, tuple(conflicts))


def rebase(base: Mapping[str, Any], current: Mapping[str, Any], written: Mapping[str, Any]) -> dict[str, Any]:
    """One side's base after the sync wrote `written` to it (or may have): a field that holds what was written
    has not been changed by a person since, so what was written is its base; any other keeps `base`."""
    return {
        name: written[name] if name in written and current.get(name) == written[name] else base.get(name)
        for name in set(base) | set(written)
    }
