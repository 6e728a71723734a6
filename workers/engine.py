"""The pair sync every entity runs: lock, load the link, read, plan, carry out the plan. Read top to bottom, it is the
algorithm; the decisions are `workers/plan.py`'s (pure), the reading `workers/reading.py`'s, the writing and
recording `workers/writes.py`'s, and creating exactly once `workers/creates.py`'s.

A message only says "this record changed". Whatever it carries, the plan starts from what both sides hold now and
the pair's state, so processing any message any number of times, in any order, ends in the same state:
- one lock per pair, so messages from both sides never interleave their writes;
- a new pair is recorded the moment its partner exists or is found (unsettled, shared/store/link_state.py), so a
  retry merges instead of creating again;
- a write whose answer never came is remembered (what it wrote, each side's base, and for Wave how long it may still
  land), so the next plan tells the sync's own writes from a person's edits.
"""

from __future__ import annotations

from typing import Any

from shared.context import Context
from shared.entities import creation_enabled
from shared.errors import ConflictError, NotFoundError
from shared.messages import ChangeMessage, System, other
from shared.refs import CreateMissing
from shared.store.models import Link
from shared.versions import is_older
from workers import plan as core
from workers import recording
from workers.creates import Creates
from workers.flow import Flow
from workers.reading import Reader
from workers.writes import Outcome, Writes


def sync(
    ctx: Context,
    flow: Flow[Any],
    message: ChangeMessage,
    *,
    repeat: bool = False,
    dependency: bool = False,
    create_missing: CreateMissing | None = None,
) -> Outcome:
    """Sync the pair of `message`'s record. `repeat`: delivered before (a retry, a redelivery after a crash), so its
    snapshot is older than what an earlier attempt wrote. `dependency`: an order needs this record, so it gets a
    partner where it otherwise would not (an archived product). `create_missing` syncs a referenced record first."""
    return PairSync(ctx, flow, message, repeat, dependency, create_missing).run()


class PairSync:
    def __init__(
        self,
        ctx: Context,
        flow: Flow[Any],
        message: ChangeMessage,
        repeat: bool,
        dependency: bool,
        create_missing: CreateMissing | None,
    ) -> None:
        self.ctx, self.flow, self.msg, self.repeat, self.dependency = ctx, flow, message, repeat, dependency
        self.source: System = message.source
        self.target: System = other(message.source)
        self.read = Reader(ctx, flow, message, create_missing)
        self.creates = Creates(ctx, flow, self.source, message.source_id, self.read.canonical, self.read.outbound)
        self.policy = core.Policy(ctx.settings.conflict_policy(flow.entity), flow.definition.resolvers)
        self.begun = False  # an earlier attempt began creating the partner

    def run(self) -> Outcome:
        ctx, msg = self.ctx, self.msg
        # One lock per pair (its Customerp id), so messages from both sides never write one pair at once; a Wave record
        # not linked yet is locked by its own id. The lock is a lease this process renews while it works (a dead
        # worker's lapses within seconds); a busy pair is retried later rather than holding a thread.
        lock_on = (self.source, msg.source_id) if self.source == "customerp" else self._lock_on(self._load())
        pending_of = (msg.source, msg.source_id)  # its marker: the newest version a poll saw while it waited
        with ctx.coordinator.record_lock(msg.entity, *lock_on, wait=2, pending_of=pending_of) as lock:
            reread = msg.reread or msg.snapshot is None or self.repeat or is_older(msg.version, lock.newest_seen or "")
            link = self._load()
            if self._lock_on(link) != lock_on:
                raise ConflictError(f"{msg.key()} was linked meanwhile: once more, under the pair's lock")
            if link is not None:
                # A linked pair is never created again. An intent a sync killed before its release left behind
                # would hold back records sharing the pair's keys: it ends with this release, in the same script.
                lock.end_creates_at_release(msg.entity, {"wave": link.customerp_id, "customerp": link.wave_id})
            write = Writes(ctx, self.flow, msg, self.read, self.creates, self.policy, lock)
            try:
                outcome = self._sync(link, reread, write)
            except ConflictError:
                link = self._load()
                if reread or self._lock_on(link) != lock_on:
                    raise
                # The poll's snapshot was overtaken: once more from what both sides hold now.
                self.read.fresh.clear()
                outcome = self._sync(link, True, write)
            if outcome in ("skipped", "gone"):
                ctx.coordinator.mark_done(msg.entity, msg.source, msg.source_id, msg.version)
            return outcome

    def _sync(self, link: Link | None, reread: bool, write: Writes) -> Outcome:
        pair = recording.pair_of(link)
        if self.msg.deleted:
            source = core.Source(self.source, self.msg.source_id, self.msg.version, None)
        else:
            try:
                source = self.read.source(reread)
            except NotFoundError:
                # Deleted since: Customerp's tombstone or reconcile carries the deletion to a linked partner.
                return self._abandon() if link is None else "gone"
        # The partner is read only when the plan needs it: an echo or a stale message costs one read at most.
        partner: core.Side | None = None
        decision = core.plan(pair, source, core.UNREAD, self.policy, self.ctx.clock())
        if isinstance(decision, core.ReadPartner) and source.record is not None:
            partner = self.read.partner(link) if link is not None else self._find_partner(source.record)
            decision = core.plan(pair, source, partner, self._creation_policy(source.record), self.ctx.clock())
            if isinstance(decision, core.ReadSource):
                try:
                    source = self.read.source(True)
                except NotFoundError:
                    return self._abandon() if link is None else "gone"
                decision = core.plan(pair, source, partner, self._creation_policy(source.record), self.ctx.clock())
        match decision:
            case core.Skip(why="echo") if link is not None and source.record is not None:
                return write.echo(link, source.record)
            case core.Skip(why=why):
                return why
            case core.Delete() if link is not None:
                return write.delete(link, decision)
            case core.Create() if source.record is not None:
                return write.create(source.record)
            case core.Merge() | core.Wait() if source.record is not None and partner is not None:
                return write.merge(link, source.record, partner, decision)
        raise AssertionError(f"unplanned: {decision}")

    def _find_partner(self, source: core.Side) -> core.Side | None:
        """The partner of a record not linked yet: what an earlier attempt began creating, or a record that is the
        same real thing (natural key) and not anyone else's partner."""
        self.begun = self.creates.before_matching(source.fields)
        if self.begun:
            return None  # finish that create
        found = self.flow.match(self.ctx, self.target, dict(source.fields), None)
        if found is None:
            return None
        self.read.fresh.add(self.target)
        taken = recording.load(self.ctx, self.flow.entity, self.target, found.id)
        if taken is not None and taken.own_id(self.source) == self.msg.source_id:
            # Linked to this very record since the link was loaded (the sync that created it finished).
            raise ConflictError(f"{self.msg.key()} was linked meanwhile")
        partner = self.read.side(self.target, found)
        if taken is not None or self.creates.made_for_another(partner.fields):
            return None
        return partner

    def _creation_policy(self, source: core.Side | None) -> core.Policy:
        """Whether a record with no partner gets one: switched on that way, and wanted (an archived product is not),
        unless an order needs it or an earlier attempt began the create (it may have landed: finish it)."""
        wanted = source is not None and self.flow.definition.wanted(source.fields)
        allowed = creation_enabled(self.ctx.settings, self.flow.entity, self.target) and (
            self.dependency or wanted or self.begun
        )
        return core.Policy(self.policy.conflict, self.policy.resolvers, create=allowed, finishing=self.begun)

    def _abandon(self) -> Outcome:
        self.creates.abandon()
        return "gone"

    # --- the link -------------------------------------------------------------------------------------------------

    def _lock_on(self, link: Link | None) -> tuple[System, str]:
        return ("customerp", link.customerp_id) if link is not None else (self.source, self.msg.source_id)

    def _load(self) -> Link | None:
        return recording.load(self.ctx, self.flow.entity, self.source, self.msg.source_id)
