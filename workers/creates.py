"""Creating a record's partner exactly once, through crashes, retries and answers that never came.

A create cannot be taken back, and Wave has no idempotency key. So before sending one, the sync records an intent
with the coordinator (what it sends, when, from which process); the link is recorded the moment the partner exists,
and the intent ends with it. An attempt that finds an earlier intent finishes that create instead of making another:
Customerp's idempotency key returns the record already made; for Wave it waits until a request of the earlier
attempt can no longer land, then looks among the records changed since. Meanwhile the record it may have made
must not be taken for something else: not created back as a new record, not claimed by another record's match.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from shared.context import Context
from shared.coordination import CreateIntent
from shared.enqueue import enqueue
from shared.errors import ForbiddenEditError, MustWaitError, PermanentError, RateLimitedError
from shared.leases import HEARTBEAT_TTL_S
from shared.messages import ChangeMessage, System, other
from shared.store import links as store
from workers.flow import Flow, Record

log = logging.getLogger(__name__)

Fields = Mapping[str, Any]
Canonicalise = Callable[[System, Record], Fields]  # a record of a system → canonical fields (Customerp's ids)
Outbound = Callable[[System, Fields], dict[str, Any]]  # canonical fields → the same with `system`'s ids

# A write whose answer never came may still be applied later (a request queued behind a slow server): wait this
# many HTTP timeouts of a live sender before looking for what it made (a dead one's: one timeout).
CREATE_SETTLE_TIMEOUTS = 2.0
# A record that may be the product of another sync's unfinished create looks again at least this often.
CREATED_LINK_RECHECK_S = 5.0
# How long an unfinished create keeps a matching record on its target side from being created back.
CREATE_IN_FLIGHT_S = 900.0


class Creates:
    """The create protocol of one record (`source`:`source_id`) whose partner goes to the other system."""

    def __init__(
        self, ctx: Context, flow: Flow[Any], source: System, source_id: str, canonical: Canonicalise, outbound: Outbound
    ) -> None:
        self.ctx, self.flow = ctx, flow
        self.source, self.target, self.source_id = source, other(source), source_id
        self.canonical, self.outbound = canonical, outbound

    def before_matching(self, fields: Fields) -> bool:
        """Whether an earlier attempt began creating the partner (then that create is finished, rather than taking
        whatever a natural key finds: the half-made partner itself, merged as if both had always existed).

        Waits (MustWaitError) while the source record may itself be the product of an unfinished create from the other
        side, its link not recorded yet: creating a partner for it would duplicate the record that create started from.
        """
        ctx, entity = self.ctx, self.flow.entity
        into_source, own = ctx.coordinator.creations_around(
            entity, self.source, self.source_id, max_age_s=CREATE_IN_FLIGHT_S, now=ctx.clock()
        )
        for intent in into_source:
            if intent.sent and self.flow.definition.holds(fields, intent.sent):
                if (ctx.clock() - intent.attempted).total_seconds() > self._settle_time(intent):
                    # The create has had time to land and its sync has not recorded the link: that sync may never
                    # come back to it (an order that needed the record was dead-lettered). Ask for it to finish.
                    enqueue(ChangeMessage(entity=entity, source=self.target, source_id=intent.source_id, reread=True))
                raise MustWaitError(
                    f"{self.source}:{self.source_id} may be the {entity[:-1]} that an unfinished sync of "
                    f"{self.target}:{intent.source_id} created; waiting for that sync to record its link",
                    system="sync",
                    retry_after=1.0,
                    # That sync records the link within seconds of its create landing: look again at least this
                    # often rather than backing off for minutes after the pair is already made.
                    wait_at_most=CREATED_LINK_RECHECK_S,
                )
        return own is not None

    def made_for_another(self, match: Fields) -> bool:
        """Whether a record found by natural key is what an unfinished sync of another record just created (its link
        not recorded yet): two Wave customers sharing an email must not both claim the one made for the first."""
        intents = self.ctx.coordinator.creations_in_flight(
            self.flow.entity, self.target, max_age_s=CREATE_IN_FLIGHT_S, now=self.ctx.clock()
        )
        return any(
            i.sent and i.source_id != self.source_id and self.flow.definition.holds(match, i.sent) for i in intents
        )

    def make(self, fields: Fields) -> tuple[Record, Fields]:
        """The partner, created from `fields` (or found, made by an earlier attempt), and what it was made from."""
        ctx, flow, entity, target = self.ctx, self.flow, self.flow.entity, self.target
        previous = ctx.coordinator.begin_create(entity, target, self.source_id, ctx.clock().isoformat(), dict(fields))
        sent = fields if previous is None or previous.sent is None else previous.sent
        try:
            if previous is not None:
                found = self._recover(previous, sent)
                if found is not None:
                    return found, sent
            # References first (an order's customer may be synced inline, or be busy in another sync): nothing is
            # sent until they are resolved, so a stop here leaves an earlier attempt's intent as it was.
            body = self.outbound(target, sent)
            if previous is not None:
                ctx.coordinator.touch_create(entity, target, self.source_id, ctx.clock().isoformat())
            created = flow.create(ctx, target, body, self.source_id)
        except (RateLimitedError, PermanentError, MustWaitError) as exc:
            # Refused, or stopped before anything was sent (a busy reference, a paused connection, an earlier create
            # that may still land), so this attempt made nothing; an earlier one may have, and its intent must stay.
            # Left behind, this attempt's own intent would have the next attempt wait out a create never sent.
            if previous is None:
                ctx.coordinator.end_create(entity, target, self.source_id)
            if target == "customerp" and "idempotency_key" in str(exc):
                raise ForbiddenEditError(
                    f"Customerp already saw a {entity[:-1]} created for {self.source}:{self.source_id} by an earlier "
                    "sync, since deleted there or made from other values: it is not created twice. Delete or "
                    f"restore it in Customerp, then replay ({exc})",
                    system="sync",
                ) from None
            raise
        log.info("%s %s:%s has its partner %s:%s", entity, self.source, self.source_id, target, created.id)
        return created, sent

    def abandon(self) -> None:
        """The source is gone. An earlier attempt may have created its partner before it went: delete that too, or
        it would come back to the source's system as a new record."""
        ctx, flow, target = self.ctx, self.flow, self.target
        intent = ctx.coordinator.create_intent(flow.entity, target, self.source_id)
        if intent is None:
            return
        created: Record | None = None
        if intent.sent is not None:
            if target == "wave":
                created = self._recover(intent, intent.sent)
            else:
                created = flow.match(ctx, target, dict(intent.sent), None)
                if created is not None and not flow.definition.holds(self.canonical(target, created), intent.sent):
                    created = None
        if created is not None and not self._linked(created):
            log.info(
                "%s %s:%s is gone: deleting %s:%s, made for it by an interrupted sync",
                flow.entity,
                self.source,
                self.source_id,
                target,
                created.id,
            )
            flow.delete(ctx, target, created)
        ctx.coordinator.end_create(flow.entity, target, self.source_id)

    def end(self) -> None:
        """Stop waiting (used when a create turns out not to be needed after all)."""
        self.ctx.coordinator.end_create(self.flow.entity, self.target, self.source_id)

    # --- finding what an earlier attempt made ---------------------------------------------------------------------

    def _recover(self, previous: CreateIntent, sent: Fields) -> Record | None:
        """Customerp creates carry an idempotency key, so resending `sent` returns the record an earlier attempt
        made. Wave has none: wait until a request of the earlier attempt can no longer land, then look among the
        records changed since."""
        ctx, flow, target = self.ctx, self.flow, self.target
        if target == "customerp":
            return None
        settle = self._settle_time(previous)
        waited = (ctx.clock() - previous.attempted).total_seconds()
        if waited < settle:
            raise MustWaitError(
                f"an earlier attempt to create the Wave partner of {self.source}:{self.source_id} may still land; "
                "looking for it shortly",
                system="sync",
                retry_after=min(settle - waited, HEARTBEAT_TTL_S) + 0.1,
                # Look again when the wait ends, or sooner: a sender that dies meanwhile shortens the wait to one
                # timeout once its heartbeat lapses, and a record must not sit out the longer one it was given.
                wait_at_most=min(settle - waited, HEARTBEAT_TTL_S) + 1.0,
            )
        # Natural keys and the fields a create finishes (a status, an archived flag) are no references.
        created = flow.match(ctx, target, dict(sent), previous.started - timedelta(minutes=5))
        if created is None or self._linked(created):
            return None
        return flow.finish_create(ctx, target, created, dict(sent))

    def _linked(self, record: Record) -> bool:
        with self.ctx.db.session() as session:
            return store.find_link(session, self.flow.entity, self.target, record.id) is not None

    def _settle_time(self, intent: CreateIntent) -> float:
        """How long after its last send a create may still land. A live sender may still be waiting on it (and an
        answer lost to a timeout may land later), so twice its HTTP timeout; a sender that died (SIGKILL, OOM) sends
        nothing more and stopped waiting when it died, so one timeout for the request it left at the server."""
        timeouts = CREATE_SETTLE_TIMEOUTS if self.ctx.coordinator.owner_alive(intent) else 1.0
        return timeouts * self.ctx.settings.http_timeout
