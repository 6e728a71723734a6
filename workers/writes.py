"""How the sync carries out a plan: make the partner, write the merged record to the sides that lack it, propagate a
delete, and record the pair after each step (workers/recording.py). workers/engine.py decides; this module acts.

A write answers with the whole record, which can hold more than was merged (a person's edit that landed meanwhile,
a default): Wave has no conditional write, and both systems fill in defaults. So after writing, the plan is asked
again with the answers, until both sides hold the merged record.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Literal

from shared import history
from shared.context import Context
from shared.coordination import RecordLock
from shared.errors import ConflictError, MustWaitError, NotFoundError, RateLimitedError, RetryableError
from shared.messages import ChangeMessage, System, other
from shared.store.link_state import Settled, Unsettled
from shared.store.models import Link
from workers import plan as core
from workers import recording
from workers.creates import CREATE_SETTLE_TIMEOUTS, Creates
from workers.flow import Flow, Record
from workers.reading import Reader

log = logging.getLogger(__name__)

Outcome = Literal["created", "updated", "linked", "unchanged", "echo", "stale", "deleted", "skipped", "gone"]
# Rounds of plan → write → compare before giving up on a record that keeps changing under us.
MERGE_ROUNDS = 3


class Writes:
    def __init__(
        self,
        ctx: Context,
        flow: Flow[Any],
        message: ChangeMessage,
        read: Reader,
        creates: Creates,
        policy: core.Policy,
        lock: RecordLock,
    ) -> None:
        """The writes of one sync, under the pair's `lock`."""
        self.ctx, self.flow, self.msg, self.read, self.creates, self.policy = ctx, flow, message, read, creates, policy
        self.lock = lock
        self.source: System = message.source
        self.target: System = other(message.source)

    def echo(self, link: Link, source: core.Side) -> Outcome:
        """The sync's own write came back: its version is recorded, so polls skip it."""
        echo = history.about(self.ctx.settings, "echo", self.msg, link=link)
        self._save(link, {self.source: source}, link.state, decision=echo)
        return "echo"

    def create(self, source: core.Side) -> Outcome:
        # A partner is made from the poll's snapshot as it is: an edit made since the poll comes as the next message
        # (or made the pending marker newer, and this message re-read) and merges onto the new pair. Finishing an
        # earlier attempt's create, the plan had the source read first (ReadSource).
        self.flow.definition.check(self.target, source.fields, self.read.options)
        created, sent = self.creates.make(source.fields)
        self.read.fresh.add(self.target)
        made = self.read.side(self.target, created)
        sides = {self.source: source, self.target: made}
        # Until a merge settles the pair, each side's base is what it held at the create: the defaults the target filled
        # in (a due date, a number) flow back, and the source's edits since an earlier attempt's create flow on.
        state = Unsettled({self.source: sent, self.target: made.fields}, made.fields)
        made_from = history.created(self.ctx.settings, self.msg, self.target, sent)
        first = core.merge(state, source, made, self.policy, self.ctx.clock())
        if isinstance(first, core.Merge) and not first.writes:
            # Both hold one record already (the usual create): the pair is recorded settled, in one transaction.
            self._save(None, sides, Settled(first.merged), decision=made_from)
            return "created"
        # Otherwise the pair is recorded at once, before a write can fail: no other sync can then take either record
        # for another partner, and a retry merges instead of creating again.
        link = self._save(None, sides, state, decision=made_from, resolve=False)
        try:
            self.merge(link, source, made, first)
        except NotFoundError:
            # One of the pair was deleted meanwhile: reconcile sees the linked record gone and propagates it.
            log.info("%s %s was deleted while its partner was made", self.flow.entity, self.msg.key())
            return "gone"
        return "created"

    def merge(
        self, link: Link | None, source: core.Side, partner: core.Side, decision: core.Merge | core.Wait
    ) -> Outcome:
        """Write each side the plan names, and plan again with the answers until both sides hold the merged record."""
        matched = link is None
        sides = {source.system: source, partner.system: partner}
        if link is None:
            # A pair found by natural key is recorded before anything is written, like a created one.
            link = self._save(None, sides, Unsettled({}), resolve=False)
        before = {system: side.fields for system, side in sides.items()}  # for the history
        wrote = False
        for _round in range(MERGE_ROUNDS):
            if isinstance(decision, core.Wait):
                wait = (decision.until - self.ctx.clock()).total_seconds()
                raise MustWaitError(
                    f"{decision.why} ({self.msg.key()}); waiting {wait:.1f}s",
                    system="sync",
                    retry_after=wait,
                    wait_at_most=wait + 1.0,
                )
            if decision.conflicts:
                log.info("conflict on %s: %s", self.msg.key(), ", ".join(decision.conflicts))
            for system, changed in decision.writes.items():
                sides[system] = self._write(link, system, decision, changed)
                wrote = True
            state = core.after_writes(decision, {system: side.fields for system, side in sides.items()})
            if isinstance(state, Settled):
                merged = history.merged(
                    self.ctx.settings, self.msg, before, state.agreed, decision.conflicts, linked=not matched
                )
                self._save(link, sides, state, decision=merged)
                return "updated" if wrote else "linked" if matched else "unchanged"
            decision = core.merge(state, sides[self.source], sides[self.target], self.policy, self.ctx.clock())
        raise ConflictError(f"{self.msg.key()} kept changing while it was written", retry_after=1.0)

    def delete(self, link: Link, decision: core.Delete) -> Outcome:
        try:
            partner: Record | None = self.flow.read(self.ctx, decision.target, decision.target_id)
        except NotFoundError:
            partner = None
        if partner is not None:
            self.flow.delete(self.ctx, decision.target, partner)
        recording.forget(self.ctx, link, self.msg, partner_existed=partner is not None)
        return "deleted"

    def _write(self, link: Link, system: System, decision: core.Merge, changed: frozenset[str]) -> core.Side:
        self.flow.definition.check(system, decision.merged, self.read.options)
        record = self.read.records[system]
        log.info("%s: writing %s to %s %s", self.msg.key(), ", ".join(sorted(changed)), system, record.id)
        try:
            written = self.flow.update(
                self.ctx,
                system,
                record,
                self.read.outbound(system, decision.merged),
                set(changed),
                verify=system not in self.read.fresh,
            )
        except Exception as exc:
            # The write (or an earlier one) may have landed: whatever holds the merged record from now on holds what
            # the sync wrote, not a person's edit. A Wave write that was sent and not refused may land late.
            refused = isinstance(exc, RateLimitedError | ConflictError | MustWaitError)
            may_land = system == "wave" and isinstance(exc, RetryableError) and not refused
            settle = timedelta(seconds=CREATE_SETTLE_TIMEOUTS * self.ctx.settings.http_timeout)
            recording.remember(self.ctx, link, decision, self.ctx.clock() + settle if may_land else None)
            raise
        self.read.fresh.add(system)
        return self.read.side(system, written)

    def _save(
        self,
        link: Link | None,
        sides: dict[System, core.Side],
        state: Settled | Unsettled,
        *,
        resolve: bool = True,
        decision: history.Decision | None = None,
    ) -> Link:
        return recording.save(
            self.ctx, self.flow.entity, link, sides, state, self.lock, resolve=resolve, decision=decision
        )
