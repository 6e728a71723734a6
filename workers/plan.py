"""The pair-sync decision, pure: given a pair's state and both records, what to do. No I/O, clock, Celery or settings.

The shell (workers/engine.py) reads, calls `plan`, carries out the plan and calls `plan` again with the answers,
until the plan is a `Merge` with nothing left to write. Everything that makes the sync converge lives here:

- a message older than what the pair last synced is stale; a settled pair whose source still holds the agreed
  record (by version or by content) has nothing to do (an echo of the sync's own write, or a re-read);
- a record with no partner gets one made, where policy allows;
- otherwise both sides are merged field by field against their bases (shared/merge.py): the agreed record of a
  settled pair, each side's own base while a pair is unsettled (see shared/store/link_state.py), none for a pair
  just matched by natural key (onboarding rules);
- a Wave write whose answer never came may still land, and Wave has no conditional write: no further Wave write
  before `wave_writes_held_until`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from shared.mapping.fields import changed_fields
from shared.merge import Resolver, rebase, three_way_merge
from shared.messages import System, other
from shared.settings import ConflictPolicy
from shared.store.link_state import LinkState, Settled, Unsettled
from shared.versions import is_older

Fields = Mapping[str, Any]


@dataclass(frozen=True)
class Side:
    """One record as the sync sees it: its id, comparable version, modification time and canonical fields."""

    system: System
    id: str
    version: str
    modified_at: str  # normalised UTC (shared/versions.py): the conflict policy's "newest wins"
    fields: Fields


@dataclass(frozen=True)
class Source:
    """The record a message is about: as read (or as its poll saw it), or `record=None` when it is deleted.
    `forced`: a replay or a reconcile repair, merged even when its version or content says nothing changed.
    `fresh`: read from its system by this sync, not the poll's snapshot."""

    system: System
    id: str
    version: str
    record: Side | None
    forced: bool = False
    fresh: bool = False


@dataclass(frozen=True)
class Pair:
    """A link: what the pair remembers, and the version of each side it last synced."""

    state: LinkState
    versions: Mapping[System, str]
    ids: Mapping[System, str]


@dataclass(frozen=True)
class Policy:
    conflict: ConflictPolicy
    resolvers: Mapping[str, Resolver] = field(default_factory=dict)
    # A record with no partner gets one made (creation switched on that way, and wanted: not an archived product).
    create: bool = True
    # An earlier attempt began making this record's partner and its answer never came: the create resends what that
    # attempt sent (shared/coordination.py's create intent).
    finishing: bool = False


class _Unread:
    def __repr__(self) -> str:
        return "UNREAD"


UNREAD: Final = _Unread()  # the partner is not read yet: `plan` asks for it only when it needs it


# --- plans ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """Nothing to write. An `echo` still records the source's version, so polls skip it from now on."""

    why: Literal["stale", "unchanged", "echo", "skipped", "gone"]


@dataclass(frozen=True)
class ReadPartner:
    """Read the partner (through the link, or by natural key) and plan again."""


@dataclass(frozen=True)
class ReadSource:
    """Read the source again and plan again: the poll's snapshot may be older than what the create resends, or than
    what an interrupted sync of the pair wrote."""


@dataclass(frozen=True)
class Create:
    target: System
    fields: Fields


@dataclass(frozen=True)
class Delete:
    target: System
    target_id: str


@dataclass(frozen=True)
class Wait:
    until: datetime
    why: str


@dataclass(frozen=True)
class Merge:
    """The merged record, and the fields to write to each side that differs (the partner's side first). Nothing to
    write: the pair is settled on `merged`. `bases` are what each side was judged against: with what was written
    they are the pair's unsettled state until the answers show both sides agree (`unsettled`)."""

    merged: Fields
    writes: Mapping[System, frozenset[str]]
    conflicts: tuple[str, ...]
    bases: Mapping[System, Fields | None]

    def unsettled(self, *, wave_writes_held_until: datetime | None = None) -> Unsettled:
        return Unsettled(self.bases, self.merged, wave_writes_held_until)


Plan = Skip | ReadPartner | ReadSource | Create | Delete | Wait | Merge


def plan(pair: Pair | None, source: Source, partner: Side | _Unread | None, policy: Policy, now: datetime) -> Plan:
    """What to do about `source`. `partner`: UNREAD, the partner as read, or None when it has none (no link, and
    none found by natural key)."""
    if pair is not None and not source.forced and is_older(source.version, pair.versions[source.system]):
        return Skip("stale")
    target = other(source.system)
    if source.record is None:
        return Delete(target, pair.ids[target]) if pair is not None else Skip("gone")
    if pair is not None and isinstance(pair.state, Settled) and not source.forced:
        if source.version == pair.versions[source.system]:
            return Skip("unchanged")
        if source.record.fields == pair.state.agreed:
            return Skip("echo")
    if isinstance(partner, _Unread):
        return ReadPartner()
    if partner is None:
        assert pair is None, "a linked partner that is gone is the shell's to report"
        if not policy.create:
            return Skip("skipped")
        if policy.finishing and not source.fresh:
            # The earlier attempt may have read the record after this message's poll (it was a retry), so what it sent
            # can be newer than this snapshot; and until the pair settles the source is judged against what was sent,
            # so the snapshot's older values would pass for edits made since and overwrite the newer ones on both
            # sides (the seed-29 lost update). A snapshot is safe to create from only when nothing was sent before.
            return ReadSource()
        return Create(target, source.record.fields)
    if pair is not None and isinstance(pair.state, Unsettled) and not source.fresh:
        # An unsettled pair is judged against what a sync wrote (its pending record, and bases that moved to it once a
        # write landed). The poll may have read this snapshot before that write landed on this very record, at a
        # version newer than the link recorded (a sync that fails half way records no versions): its older values
        # would pass for a person's edits since and be written over both sides (randomised history 11's cleared
        # phone number). Only the record as it is now tells a person's edit from the sync's own write.
        return ReadSource()
    decision = merge(pair.state if pair is not None else None, source.record, partner, policy, now)
    if isinstance(decision, Merge) and decision.conflicts and not source.fresh:
        # A conflict is decided between what the two sides hold, and a snapshot may be older than what its side
        # holds now (a later edit, or a sync's write that a worker killed before recording it left unrecorded):
        # under a "Customerp wins" policy the snapshot's older value would be written over a newer one.
        return ReadSource()
    return decision


def merge(state: LinkState | None, source: Side, partner: Side, policy: Policy, now: datetime) -> Merge | Wait:
    """Merge both sides against their bases; write each side that differs from the result."""
    sides = {source.system: source, partner.system: partner}
    cp, wave = sides["customerp"], sides["wave"]
    bases, pending = judged_against(state, {system: side.fields for system, side in sides.items()})
    result = three_way_merge(
        bases["customerp"],
        cp.fields,
        wave.fields,
        policy=policy.conflict,
        customerp_is_newer=cp.modified_at >= wave.modified_at,
        resolvers=policy.resolvers,
        wave_base=bases["wave"],
        pending=pending,
    )
    writes = {
        system: frozenset(changed)
        for system in (partner.system, source.system)
        if (changed := changed_fields(sides[system].fields, result.merged))
    }
    held = state.wave_writes_held_until if isinstance(state, Unsettled) else None
    if "wave" in writes and held is not None and now < held:
        return Wait(held, "an unanswered write to this Wave record may still land")
    return Merge(result.merged, writes, result.conflicts, bases)


def judged_against(
    state: LinkState | None, current: Mapping[System, Fields]
) -> tuple[dict[System, Fields | None], Fields | None]:
    """Each side's merge base and the pending write: the agreed record of a settled pair; while unsettled, each
    side's own base, where a field still holding what the sync wrote counts as unchanged since; none for a pair
    not linked yet."""
    if state is None:
        return {"customerp": None, "wave": None}, None
    if isinstance(state, Settled):
        return {"customerp": state.agreed, "wave": state.agreed}, None
    pending = state.pending
    bases: dict[System, Fields | None] = {}
    for system in ("customerp", "wave"):
        base = state.bases.get(system)
        bases[system] = rebase(base or {}, current[system], pending) if pending is not None else base
    return bases, pending


def after_writes(done: Merge, answers: Mapping[System, Fields]) -> Unsettled | Settled:
    """The pair's state once the writes of `done` were answered with `answers` (every side's record now): settled
    when both hold the merged record, else unsettled with what was written as the base where a side still holds it."""
    if all(answers[system] == done.merged for system in ("customerp", "wave")):
        return Settled(done.merged)
    bases: dict[System, Fields | None] = {
        system: rebase(base or {}, answers[system], done.merged) for system, base in done.bases.items()
    }
    return Unsettled(bases, done.merged)
