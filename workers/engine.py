"""The pair sync every entity runs: lock, load the link, read, resolve references, plan, write, record.

A message only says "this record changed". The decisions are `workers/plan.py`'s (pure); this shell does the I/O
around them, so processing any message any number of times, in any order, ends in the same state:
- one lock per pair, so messages from both sides never interleave their writes;
- a new pair is recorded the moment its partner exists or is found (an unsettled link, shared/store/link_state.py),
  so a retry merges instead of creating again; creating exactly once is `workers/creates.py`'s protocol;
- a write whose answer never came is remembered (what it wrote, each side's base, and for Wave how long it may
  still land), so the next plan tells the sync's own writes from a person's edits.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from shared import history
from shared.context import Context
from shared.entities import Options, creation_enabled
from shared.errors import ConflictError, MustWaitError, NotFoundError, PermanentError, RateLimitedError, RetryableError
from shared.messages import ChangeMessage, System, other
from shared.refs import CreateMissing, LinkLookup, resolve_refs
from shared.store import links as store
from shared.store.link_state import LinkState, Settled, Unsettled
from shared.store.models import Link
from shared.versions import modified_at, record_version
from workers import plan as core
from workers.creates import CREATE_SETTLE_TIMEOUTS, Creates
from workers.flow import Flow, Record

log = logging.getLogger(__name__)

Outcome = Literal["created", "updated", "linked", "unchanged", "echo", "stale", "deleted", "skipped", "gone"]
# Rounds of plan → write → compare before giving up on a record that keeps changing under us.
MERGE_ROUNDS = 3


def sync(
    ctx: Context,
    flow: Flow,
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
        flow: Flow,
        message: ChangeMessage,
        repeat: bool,
        dependency: bool,
        create_missing: CreateMissing | None,
    ) -> None:
        self.ctx, self.flow, self.msg = ctx, flow, message
        self.repeat, self.dependency, self.create_missing = repeat, dependency, create_missing
        self.source: System = message.source
        self.target: System = other(message.source)
        self.options = Options.of(ctx.settings)
        self.links = LinkLookup(ctx.db)
        self.creates = Creates(ctx, flow, self.source, message.source_id, self.canonical, self.outbound)
        self.fresh: set[System] = set()  # sides read in this task: no need to re-check them before a write
        self.records: dict[System, Record] = {}  # the latest of each side, as read or as a write answered
        self._begun = False  # an earlier attempt began creating the partner
        self.policy = core.Policy(ctx.settings.conflict_policy(flow.entity), flow.definition.resolvers)

    def run(self) -> Outcome:
        ctx, msg = self.ctx, self.msg
        # One lock per pair (its Customerp id), so messages from both sides never write one pair at once; a Wave record
        # not linked yet is locked by its own id. The lock is a lease this process renews while it works (a dead
        # worker's lapses within seconds); a busy pair is retried later rather than holding a thread.
        lock_on = (self.source, msg.source_id) if self.source == "customerp" else self._lock_on(self._load_link())
        with ctx.coordinator.record_lock(msg.entity, *lock_on, wait=2):
            newest_seen = ctx.coordinator.take_pending(msg.entity, msg.source, msg.source_id) or ""
            reread = msg.reread or msg.snapshot is None or self.repeat or newest_seen > msg.version
            link = self._load_link()
            if self._lock_on(link) != lock_on:
                raise ConflictError(f"{msg.key()} was linked meanwhile: once more, under the pair's lock")
            try:
                outcome = self._sync(link, reread)
            except ConflictError:
                link = self._load_link()
                if reread or self._lock_on(link) != lock_on:
                    raise
                # The poll's snapshot was overtaken: once more from what both sides hold now.
                self.fresh.clear()
                outcome = self._sync(link, True)
            if outcome in ("skipped", "gone"):
                ctx.coordinator.mark_done(msg.entity, msg.source, msg.source_id, msg.version)
            return outcome

    def _sync(self, link: Link | None, reread: bool) -> Outcome:
        pair = _pair(link)
        if self.msg.deleted:
            source = core.Source(self.source, self.msg.source_id, self.msg.version, None)
        else:
            try:
                source = self._read_source(reread)
            except NotFoundError:
                # Deleted since: Customerp's tombstone or reconcile carries the deletion to a linked partner.
                return self._abandon() if link is None else "gone"
        partner: core.Side | None = None
        decision = core.plan(pair, source, core.UNREAD, self.policy, self.ctx.clock())
        if isinstance(decision, core.ReadPartner) and source.record is not None:
            partner = self._read_partner(link) if link is not None else self._find_partner(source.record)
            decision = core.plan(pair, source, partner, self._creation_policy(source.record), self.ctx.clock())
        match decision:
            case core.Skip(why="echo") if link is not None and source.record is not None:
                echo = history.about(self.ctx.settings, "echo", self.msg, link=link)
                self._save(link, {self.source: source.record}, link.state, decision=echo)  # polls skip its version
                return "echo"
            case core.Skip(why=why):
                return why
            case core.Delete() if link is not None:
                return self._propagate_delete(link, decision)
            case core.Create() if source.record is not None:
                return self._create(source.record, decision)
            case core.Merge() | core.Wait() if source.record is not None and partner is not None:
                return self._merge(link, source.record, partner, decision)
        raise AssertionError(f"unplanned: {decision}")

    # --- reading --------------------------------------------------------------------------------------------------

    def _read_source(self, reread: bool) -> core.Source:
        msg = self.msg
        if reread:
            record = self.flow.read(self.ctx, self.source, msg.source_id)
            self.fresh.add(self.source)
        else:
            assert msg.snapshot is not None
            record = msg.snapshot
        side = self.side(self.source, record)
        return core.Source(self.source, msg.source_id, side.version, side, forced=msg.reread)

    def _read_partner(self, link: Link) -> core.Side:
        try:
            record = self.flow.read(self.ctx, self.target, link.partner_id(self.source))
        except NotFoundError:
            raise PermanentError(
                f"the linked {self.target} {self.flow.entity[:-1]} {link.partner_id(self.source)} no longer exists "
                f"(deleted in {self.target}?); run `wavesync reconcile` to propagate the deletion",
                system="sync",
            ) from None
        self.fresh.add(self.target)
        return self.side(self.target, record)

    def _find_partner(self, source: core.Side) -> core.Side | None:
        """The partner of a record not linked yet: what an earlier attempt began creating, or a record that is the
        same real thing (natural key) and not anyone else's partner."""
        self._begun = self.creates.before_matching(source.fields)
        if self._begun:
            return None  # finish that create (workers/creates.py)
        found = self.flow.match(self.ctx, self.target, dict(source.fields), None)
        if found is None:
            return None
        self.fresh.add(self.target)
        with self.ctx.db.session() as session:
            taken = store.find_link(session, self.flow.entity, self.target, str(found["id"]))
        if taken is not None and taken.own_id(self.source) == self.msg.source_id:
            # Linked to this very record since the link was loaded (the sync that created it finished).
            raise ConflictError(f"{self.msg.key()} was linked meanwhile")
        partner = self.side(self.target, found)
        if taken is not None or self.creates.made_for_another(partner.fields):
            return None
        return partner

    def _creation_policy(self, source: core.Side) -> core.Policy:
        """Whether a record with no partner gets one: switched on that way, and wanted (an archived product is not),
        unless an order needs it or an earlier attempt began the create (it may have landed: finish it)."""
        allowed = creation_enabled(self.ctx.settings, self.flow.entity, self.target) and (
            self.dependency or self.flow.definition.wanted(source.fields) or self._begun
        )
        return core.Policy(self.policy.conflict, self.policy.resolvers, create=allowed)

    def side(self, system: System, record: Record) -> core.Side:
        """`record` as `plan` sees it (the record itself is kept for the writes: they need its version, its status)."""
        self.records[system] = record
        return core.Side(
            system,
            str(record["id"]),
            record_version(system, record),
            modified_at(system, record),
            self.canonical(system, record),
        )

    def canonical(self, system: System, record: Record) -> dict[str, object]:
        """`record` as the sync compares it, references named by Customerp ids."""
        fields = self.flow.definition.canonical(system, record, self.options)
        if system == "customerp":
            return fields
        return resolve_refs(self.links, self.flow.definition, fields, "wave", create_missing=self.create_missing)

    def outbound(self, system: System, fields: core.Fields) -> dict[str, object]:
        """Canonical `fields` with references named by `system`'s ids, to be written there."""
        if system == "customerp":
            return dict(fields)
        return resolve_refs(self.links, self.flow.definition, fields, "customerp", create_missing=self.create_missing)

    # --- carrying out the plan ------------------------------------------------------------------------------------

    def _create(self, source: core.Side, decision: core.Create) -> Outcome:
        if self.source not in self.fresh:
            # A create cannot be taken back: make it from the record as it is now, if it still exists at all.
            try:
                source = self._read_source(True).record or source
            except NotFoundError:
                return self._abandon()
            if not self._creation_policy(source).create:
                return "skipped"
        self.flow.definition.check(self.target, source.fields, self.options)
        created, sent = self.creates.make(source.fields)
        self.fresh.add(self.target)
        made = self.side(self.target, created)
        # Until a merge settles the pair, each side's base is what it held at the create: the defaults the target filled
        # in (a due date, a number) flow back, and the source's edits since an earlier attempt's create flow on.
        state = Unsettled({self.source: sent, self.target: made.fields}, made.fields)
        made_from = history.created(self.ctx.settings, self.msg, self.target, sent)
        first = core.merge(state, source, made, self.policy, self.ctx.clock())
        if isinstance(first, core.Merge) and not first.writes:
            # Both hold one record already (the usual create): the pair is recorded settled, in one transaction.
            self._save(None, {self.source: source, self.target: made}, Settled(first.merged), decision=made_from)
            return "created"
        # Otherwise the pair is recorded at once, before a write can fail: no other sync can then take either record
        # for another partner, and a retry merges instead of creating again.
        link = self._save(None, {self.source: source, self.target: made}, state, decision=made_from, resolve=False)
        try:
            self._merge(link, source, made, first)
        except NotFoundError:
            # One of the pair was deleted meanwhile: reconcile sees the linked record gone and propagates it.
            log.info("%s %s was deleted while its partner was made", self.flow.entity, self.msg.key())
            return "gone"
        return "created"

    def _merge(
        self, link: Link | None, source: core.Side, partner: core.Side, decision: core.Merge | core.Wait
    ) -> Outcome:
        """Write each side that differs, and plan again with the answers until both sides hold the merged record.
        A write answers with the whole record, which can hold more than was merged (a person's edit that landed
        meanwhile, a default): Wave has no conditional write, and both systems fill in defaults."""
        matched = link is None
        if link is None:
            # A pair found by natural key is recorded before anything is written, like a created one.
            link = self._save(None, {source.system: source, partner.system: partner}, Unsettled({}))
        sides = {source.system: source, partner.system: partner}
        before = {system: side.fields for system, side in sides.items()}  # for the history
        wrote = False
        for _round in range(MERGE_ROUNDS):
            if isinstance(decision, core.Wait):
                wait = (decision.until - self.ctx.clock()).total_seconds()
                raise MustWaitError(
                    f"{decision.why} ({self.flow.entity} {self.msg.key()}); waiting {wait:.1f}s",
                    system="sync",
                    retry_after=wait,
                    wait_at_most=wait + 1.0,
                )
            if decision.conflicts:
                log.info("conflict on %s %s: %s", self.flow.entity, self.msg.key(), ", ".join(decision.conflicts))
            for system, changed in decision.writes.items():
                sides[system] = self._write(link, system, sides[system], decision, changed)
                wrote = True
            state = core.after_writes(decision, {system: side.fields for system, side in sides.items()})
            if isinstance(state, Settled):
                result = history.merged(
                    self.ctx.settings, self.msg, before, state.agreed, decision.conflicts, linked=not matched
                )
                self._save(link, sides, state, decision=result)
                return "updated" if wrote else "linked" if matched else "unchanged"
            decision = core.merge(state, sides[self.source], sides[self.target], self.policy, self.ctx.clock())
        raise ConflictError(f"{self.flow.entity} {self.msg.key()} kept changing while it was written", retry_after=1.0)

    def _write(
        self, link: Link, system: System, side: core.Side, decision: core.Merge, changed: frozenset[str]
    ) -> core.Side:
        flow, ctx = self.flow, self.ctx
        flow.definition.check(system, decision.merged, self.options)
        log.info("%s %s: writing %s to %s %s", flow.entity, self.msg.key(), ", ".join(sorted(changed)), system, side.id)
        try:
            written = flow.update(
                ctx,
                system,
                self.records[system],
                self.outbound(system, decision.merged),
                set(changed),
                verify=system not in self.fresh,
            )
        except Exception as exc:
            # The write (or an earlier one) may have landed: whatever holds the merged record from now on holds what
            # the sync wrote, not a person's edit. Remember it for the next attempt.
            self._remember(link, decision, system, exc)
            raise
        self.fresh.add(system)
        return self.side(system, written)

    def _remember(self, link: Link, decision: core.Merge, system: System, exc: Exception) -> None:
        """Best effort: record the pair as unsettled on what was being written. A Wave write that was sent and not
        refused may still land (a request queued behind a slow server): no further Wave write until it cannot."""
        held = link.state.wave_writes_held_until if isinstance(link.state, Unsettled) else None
        refused = isinstance(exc, RateLimitedError | ConflictError | MustWaitError)
        if system == "wave" and isinstance(exc, RetryableError) and not refused:
            settle = timedelta(seconds=CREATE_SETTLE_TIMEOUTS * self.ctx.settings.http_timeout)
            held = max(held or self.ctx.clock(), self.ctx.clock() + settle)
        try:
            with self.ctx.db.session() as session:
                current = session.get(Link, link.id)
                if current is not None:
                    current.state = decision.unsettled(wave_writes_held_until=held)
        except Exception as failure:  # noqa: BLE001 - the caller's error is the one to report
            log.warning("could not record the pending write of %s: %s", self.msg.key(), failure)

    def _propagate_delete(self, link: Link, decision: core.Delete) -> Outcome:
        flow, ctx = self.flow, self.ctx
        try:
            partner: Record | None = flow.read(ctx, decision.target, decision.target_id)
        except NotFoundError:
            partner = None
        if partner is not None:
            flow.delete(ctx, decision.target, partner)
        with ctx.db.session() as session:
            fresh = store.find_link(session, flow.entity, self.source, self.msg.source_id)
            if fresh is not None:
                session.delete(fresh)
            # The pair is gone: so are the reasons either record could not sync.
            ids = {"customerp": link.customerp_id, "wave": link.wave_id}
            store.resolve_dead_letters(session, flow.entity, ids, how="deleted")
            history.record(session, history.deleted(ctx.settings, self.msg, link, partner_existed=bool(partner)))
        return "deleted"

    def _abandon(self) -> Outcome:
        self.creates.abandon()
        return "gone"

    # --- the link -------------------------------------------------------------------------------------------------

    def _lock_on(self, link: Link | None) -> tuple[System, str]:
        return ("customerp", link.customerp_id) if link is not None else (self.source, self.msg.source_id)

    def _load_link(self) -> Link | None:
        with self.ctx.db.session() as session:
            return store.find_link(session, self.flow.entity, self.source, self.msg.source_id)

    def _save(
        self,
        link: Link | None,
        sides: dict[System, core.Side],
        state: LinkState,
        *,
        resolve: bool = True,
        decision: history.Decision | None = None,
    ) -> Link:
        """Record the pair, what it remembers and each side's version, in one transaction after the remote writes."""
        entity = self.flow.entity
        try:
            with self.ctx.db.session() as session:
                current = link
                if current is not None:
                    session.add(current)  # as loaded: its row version fences the UPDATE, no SELECT first
                ids = {
                    s: sides[s].id if s in sides else (current.own_id(s) if current else "")
                    for s in ("customerp", "wave")
                }
                versions = {
                    s: sides[s].version if s in sides else (current.version_of(s) if current else "")
                    for s in ("customerp", "wave")
                }
                saved = store.save_link(
                    session,
                    current,
                    entity=entity,
                    customerp_id=ids["customerp"],
                    wave_id=ids["wave"],
                    state=state,
                    customerp_version=versions["customerp"],
                    wave_version=versions["wave"],
                )
                history.record(session, decision, saved)
                if resolve:
                    store.resolve_dead_letters(session, entity, ids)
        except (IntegrityError, StaleDataError) as exc:
            # Another worker linked or updated this pair meanwhile: start again from the new state.
            raise ConflictError(
                f"link of {entity} changed concurrently ({type(exc).__name__})", retry_after=0.5
            ) from None
        if link is None:
            # Linked: neither record is an unfinished creation any more (whoever created it).
            self.ctx.coordinator.end_creates(entity, {"wave": ids["customerp"], "customerp": ids["wave"]})
        return saved


def _pair(link: Link | None) -> core.Pair | None:
    if link is None:
        return None
    return core.Pair(
        link.state,
        {"customerp": link.customerp_version, "wave": link.wave_version},
        {"customerp": link.customerp_id, "wave": link.wave_id},
    )
