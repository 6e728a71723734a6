"""The pair-sync algorithm every entity flow runs: load link → guard → read → merge → write → record.

A message only says "this record changed". The worker reads what it needs, merges both sides against the
last synced snapshot and writes whichever side differs, so processing any message any number of times, in
any order, ends in the same state. Entity specifics (how to read, match, write) live in a `Flow`.

What makes that hold through crashes, retries and lost answers:
- one lock per pair, so messages from both sides never interleave their writes;
- a new partner is linked the moment it exists (a provisional link), and a create whose answer was lost is
  found again (Customerp: idempotency key; Wave: after any late landing could have happened, by natural key)
  instead of being made twice; a record that may be the product of another sync's unfinished create waits;
- when a write fails, what it wrote is remembered with each side's base (see BASES), so the next merge tells
  the sync's own writes from a person's edits, and a Wave record whose write went unanswered is not written
  again until that write can no longer land.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from shared import history, keys
from shared.celery_app import app
from shared.context import Context
from shared.coordination import CreateIntent
from shared.errors import (
    ConflictError,
    FieldError,
    ForbiddenEditError,
    InvalidDataError,
    MustWaitError,
    NotFoundError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)
from shared.leases import HEARTBEAT_TTL_S
from shared.mapping.fields import Canonical, FieldMap, FieldValueError, canonical_from, changed_fields, payload
from shared.merge import Resolver, is_empty, rebase, three_way_merge
from shared.messages import ChangeMessage, System, other
from shared.settings import Entity
from shared.store import links as store
from shared.store.models import Link
from shared.versions import is_older, modified_at, record_version

log = logging.getLogger(__name__)

Record = dict[str, Any]
Outcome = Literal["created", "updated", "linked", "unchanged", "echo", "stale", "deleted", "skipped", "gone"]


class Flow(ABC):
    """How one entity is read, matched and written on each side. Subclasses are the worker modules.

    The Customerp side is the same for every entity (one REST resource each); the Wave side differs by
    entity, so subclasses implement the `wave_*` methods and may refine the payload builders.
    """

    entity: Entity
    fields: tuple[FieldMap, ...]
    # Fields whose conflicts have a rule of their own, over the conflict policy (see shared/merge.py).
    resolvers: ClassVar[Mapping[str, Resolver]] = {}
    # Fields that tell a record made by a create from the values sent (see `holds`).
    identity: ClassVar[tuple[str, ...]] = ("name",)

    # --- canonical form and checks -----------------------------------------------------------------------

    def canonical(self, ctx: Context, system: System, record: Record) -> Canonical:
        try:
            return canonical_from(record, self.fields, system)
        except FieldValueError as exc:
            raise InvalidDataError(
                f"{self.entity} {system} value cannot be read: {exc}",
                system=system,
                field_errors=[FieldError(exc.path, str(exc), "unreadable")],
            ) from None

    def check(self, ctx: Context, target: System, canonical: Canonical) -> None:  # noqa: B027 - optional hook
        """Refuse, before any write, what the target would reject or misrepresent. Default: nothing to check."""

    def should_create(self, canonical: Canonical) -> bool:
        """Whether a record with no partner gets one created. Products: archived ones do not."""
        return True

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        """Complete a create that takes several calls (approve an invoice, archive a product) after an attempt
        that died between them. Default: a create is one call."""
        return record

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        return payload(canonical, self.fields, "customerp", changed)

    def wave_input(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = payload(canonical, self.fields, "wave", changed)
        return prune_nulls(body) if changed is None else body

    def record_id(self, system: System, record: Record) -> str:
        return str(record["id"])

    # --- the Wave side, per entity -----------------------------------------------------------------------

    @abstractmethod
    def wave_read(self, ctx: Context, wave_id: str) -> Record: ...

    @abstractmethod
    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> Record | None: ...

    @abstractmethod
    def wave_create(self, ctx: Context, canonical: Canonical) -> Record: ...

    @abstractmethod
    def wave_update(self, ctx: Context, record: Record, canonical: Canonical, changed: set[str]) -> Record: ...

    @abstractmethod
    def wave_delete(self, ctx: Context, record: Record) -> None: ...

    @abstractmethod
    def customerp_match(self, ctx: Context, canonical: Canonical) -> Record | None: ...

    # --- both sides ----------------------------------------------------------------------------------------

    def read(self, ctx: Context, system: System, record_id: str) -> Record:
        if system == "wave":
            return self.wave_read(ctx, record_id)
        return ctx.customerp.get(self.entity, record_id).model_dump(mode="json")

    def match(self, ctx: Context, system: System, canonical: Canonical, since: datetime | None) -> Record | None:
        """Find an existing record on `system` that is the same real thing (natural key). `since` narrows the
        search to records changed after an interrupted create started."""
        if system == "wave":
            return self.wave_match(ctx, canonical, since)
        return self.customerp_match(ctx, canonical)

    def create(self, ctx: Context, system: System, canonical: Canonical, source_id: str) -> Record:
        if system == "wave":
            return self.wave_create(ctx, canonical)
        # A deterministic key: a retry after a lost response returns the record already created.
        key = f"wavesync:{self.entity}:wave:{source_id}"
        body = self.customerp_body(ctx, canonical, None)
        return ctx.customerp.create(self.entity, body, idempotency_key=key).model_dump(mode="json")

    def update(
        self, ctx: Context, system: System, record: Record, canonical: Canonical, changed: set[str], *, verify: bool
    ) -> Record:
        """Write `changed` fields of `canonical` onto `record`, refusing if the record moved on meanwhile.

        Customerp writes are conditional (If-Match). Wave has no conditional write: when `record` was not
        read in this task (a poll snapshot), re-read it and compare modifiedAt first.
        """
        if system == "customerp":
            body = self.customerp_body(ctx, canonical, changed)
            updated = ctx.customerp.update(
                self.entity, self.record_id(system, record), body, version=int(record["version"])
            )
            return updated.model_dump(mode="json")
        if verify:
            current = self.wave_read(ctx, self.record_id(system, record))
            if record_version("wave", current) != record_version("wave", record):
                raise ConflictError(f"Wave {self.entity[:-1]} changed since it was polled", system="wave")
        return self.wave_update(ctx, record, canonical, changed)

    def delete(self, ctx: Context, system: System, record: Record) -> None:
        """Delete `record`; one that is already gone (an earlier attempt whose answer was lost) counts as done."""
        try:
            if system == "wave":
                self.wave_delete(ctx, record)
            else:
                ctx.customerp.delete(self.entity, self.record_id(system, record), version=int(record["version"]))
        except NotFoundError:
            log.info("%s %s:%s was already deleted", self.entity, system, self.record_id(system, record))


def prune_nulls(body: dict[str, Any]) -> dict[str, Any]:
    """Create inputs leave unknown values out rather than sending nulls."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            value = prune_nulls(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _creation_enabled(ctx: Context, entity: Entity, target: System) -> bool:
    allowed = ctx.settings.create_in_wave if target == "wave" else ctx.settings.create_in_customerp
    return entity in allowed


def holds(record: Canonical, sent: Canonical, identity: tuple[str, ...]) -> bool:
    """Whether `record` may be what a create of `sent` made: it has each identifying value `sent` has (other
    fields may have been filled in or moved on since)."""
    return all(record.get(name) == sent[name] for name in identity if not is_empty(sent.get(name)))


# A write whose answer never came may still be applied later (a request queued behind a slow server). Wave has no
# idempotency keys and no conditional writes: before an interrupted create is looked for and retried, and before
# a record whose update went unanswered is written again, wait this many HTTP timeouts.
CREATE_SETTLE_TIMEOUTS = 2.0
# A record that may be the product of another sync's unfinished create looks again at least this often.
CREATED_LINK_RECHECK_S = 5.0
# How long an unfinished create keeps a matching record on its target side from being created back.
CREATE_IN_FLIGHT_S = 900.0
# Rounds of merge → write → compare before giving up on a record that keeps changing under us.
MERGE_ROUNDS = 3
# A link's snapshot is normally the record both sides agreed on. While they have not agreed (a partner just
# created with defaults of its own; a write whose outcome is unknown) it is {BASES: {system: base}, PENDING: what
# the sync wrote last}: each side is judged against its own base, and a side that holds the pending value holds
# what the sync wrote, not a person's edit.
BASES = "__bases__"
PENDING = "__pending__"


@dataclass(frozen=True)
class Bases:
    """The merge base of each side, and what the sync last wrote (see shared.merge.three_way_merge)."""

    sides: dict[System, Canonical | None]
    pending: Canonical | None

    def snapshot(self) -> Canonical:
        """These bases as a link snapshot (see BASES)."""
        return {BASES: {s: dict(b or {}) for s, b in self.sides.items()}, PENDING: self.pending}


class PairSync:
    """One run of the algorithm for one message. Kept as an object so each step is a small named method.

    `repeat`: the message was delivered before (a retry, a redelivery after a crash); its snapshot is then
    older than whatever the earlier attempt wrote, so the source is read afresh. `dependency`: an order needs
    this record, so it gets a partner even where it otherwise would not (an archived product).
    """

    def __init__(
        self, ctx: Context, flow: Flow, message: ChangeMessage, *, repeat: bool = False, dependency: bool = False
    ) -> None:
        self.ctx = ctx
        self.flow = flow
        self.msg = message
        self.repeat = repeat
        self.dependency = dependency
        self.source: System = message.source
        self.target: System = other(message.source)
        self.fresh: set[System] = set()  # sides read in this task: no need to re-check them before a write

    def run(self) -> Outcome:
        ctx, msg = self.ctx, self.msg
        # One lock per pair (its Customerp id), so that messages from both sides never write one pair at once;
        # a Wave record not linked yet is locked by its own id. The lock is a lease this process renews while it
        # works (a dead worker's lapses within seconds); a busy pair is retried later rather than holding a thread.
        # A Customerp record is its pair's lock whether linked or not; only a Wave record needs its link to find it.
        lock_on = (self.source, msg.source_id) if self.source == "customerp" else self._lock_on(self._load_link())
        with ctx.coordinator.record_lock(msg.entity, *lock_on, wait=2):
            newest_seen = ctx.coordinator.take_pending(msg.entity, msg.source, msg.source_id) or ""
            reread = msg.reread or msg.snapshot is None or self.repeat or is_older(msg.version, newest_seen)
            link = self._load_link()
            if self._lock_on(link) != lock_on:
                raise ConflictError(f"{msg.key()} was linked meanwhile: once more, under the pair's lock")
            if link and not msg.reread and is_older(msg.version, link.version_of(self.source)):
                return "stale"
            if msg.deleted:
                return self._propagate_delete(link)
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

    # --- steps -------------------------------------------------------------------------------------------

    def _lock_on(self, link: Link | None) -> tuple[System, str]:
        return ("customerp", link.customerp_id) if link is not None else (self.source, self.msg.source_id)

    def _bases(self, link: Link | None, canon: dict[System, Canonical]) -> Bases:
        """What each side is judged against: the pair's last agreed record, or, while a just-made pair has not
        been merged or a write's outcome is unknown, each side's own base and what the sync last wrote. A pair
        matched by natural key has no base yet (onboarding rules)."""
        if link is None:
            return Bases({"customerp": None, "wave": None}, None)
        snapshot = link.snapshot
        if BASES not in snapshot:
            return Bases({"customerp": snapshot, "wave": snapshot}, None)
        pending: Canonical | None = snapshot.get(PENDING)
        sides: dict[System, Canonical | None] = {
            s: rebase(snapshot[BASES][s], canon[s], pending) if pending is not None else snapshot[BASES][s]
            for s in ("customerp", "wave")
        }
        return Bases(sides, pending)

    def _load_link(self) -> Link | None:
        with self.ctx.db.session() as session:
            return store.find_link(session, self.flow.entity, self.source, self.msg.source_id)

    def _sync(self, link: Link | None, reread: bool) -> Outcome:
        flow, ctx = self.flow, self.ctx
        if reread:
            try:
                src = flow.read(ctx, self.source, self.msg.source_id)
                self.fresh.add(self.source)
            except NotFoundError:
                # Deleted since: Customerp's tombstone or reconcile carries the deletion to a linked partner.
                return self._abandon_create() if link is None else "gone"
        else:
            assert self.msg.snapshot is not None
            src = self.msg.snapshot
        src_version = record_version(self.source, src)
        # A pair whose sides never agreed (BASES) is merged whatever the versions say.
        settled = link is not None and BASES not in link.snapshot
        if link and settled and not self.msg.reread and src_version == link.version_of(self.source):
            return "unchanged"
        src_canonical = flow.canonical(ctx, self.source, src)
        if link and src_canonical == link.snapshot and not self.msg.reread:  # never an unsettled snapshot
            echo = history.about(ctx.settings, "echo", self.msg, link=link)
            self._save(link, {self.source: src}, link.snapshot, decision=echo)  # remember the version: polls skip it
            return "echo"

        if link is None:
            self._wait_for_creations_into_source(src_canonical)
            if ctx.coordinator.create_intent(flow.entity, self.target, self.msg.source_id) is not None:
                # An earlier attempt started creating the partner: finish that, rather than take whatever a
                # natural key finds (the half-made partner itself, merged as if both had always existed).
                return self._create_partner(src, src_canonical)
        partner = self._partner(link, src_canonical)
        if partner is None:
            return self._create_partner(src, src_canonical)
        try:
            return self._merge_and_write(link, src, src_canonical, partner)
        except NotFoundError:
            if link is None:
                raise
            # One of the pair was deleted while it was written: reconcile sees it gone and propagates the deletion.
            log.info("%s %s: one of the pair was deleted while it was synced", flow.entity, self.msg.key())
            return "gone"

    def _partner(self, link: Link | None, src_canonical: Canonical) -> Record | None:
        flow, ctx = self.flow, self.ctx
        if link is not None:
            try:
                partner = flow.read(ctx, self.target, link.partner_id(self.source))
                self.fresh.add(self.target)
                return partner
            except NotFoundError:
                raise PermanentError(
                    f"the linked {self.target} {flow.entity[:-1]} {link.partner_id(self.source)} no longer exists "
                    f"(deleted in {self.target}?); run `wavesync reconcile` to propagate the deletion",
                    system="sync",
                ) from None
        match = flow.match(ctx, self.target, src_canonical, None)
        if match is None:
            return None
        self.fresh.add(self.target)
        with ctx.db.session() as session:
            taken = store.find_link(session, flow.entity, self.target, flow.record_id(self.target, match))
        if taken is not None and taken.own_id(self.source) == self.msg.source_id:
            # Linked to this very record since the link was loaded (the sync that created it finished).
            raise ConflictError(f"{flow.entity} {self.source}:{self.msg.source_id} was linked meanwhile")
        if taken is not None or self._being_created_for_another(match):
            return None
        return match

    def _being_created_for_another(self, match: Record) -> bool:
        """Whether `match` is what an unfinished sync of another record just created (its link not recorded yet):
        two Wave customers sharing an email must not both claim the Customerp customer made for the first."""
        ctx, flow = self.ctx, self.flow
        intents = ctx.coordinator.creations_in_flight(
            flow.entity, self.target, max_age_s=CREATE_IN_FLIGHT_S, now=ctx.clock()
        )
        others = [i for i in intents if i.sent and i.source_id != self.msg.source_id]
        if not others:
            return False
        canonical = flow.canonical(ctx, self.target, match)
        return any(holds(canonical, intent.sent, flow.identity) for intent in others if intent.sent)

    def _create_partner(self, src: Record, src_canonical: Canonical) -> Outcome:
        flow, ctx, target = self.flow, self.ctx, self.target
        if not _creation_enabled(ctx, flow.entity, target):
            return "skipped"
        if self.source not in self.fresh:
            # A create cannot be taken back: make it from the record as it is now, if it still exists at all. (Making
            # it from the poll's snapshot saves this read, but a randomised history then lost an edit: see README.)
            try:
                src = flow.read(ctx, self.source, self.msg.source_id)
            except NotFoundError:
                return self._abandon_create()
            self.fresh.add(self.source)
            src_canonical = flow.canonical(ctx, self.source, src)
        # Not wanted by policy (an archived product), unless an earlier sync that needed it (an order) began creating
        # it: that create may have landed, so it is finished rather than left half done.
        unwanted = not self.dependency and not flow.should_create(src_canonical)
        if unwanted and ctx.coordinator.create_intent(flow.entity, target, self.msg.source_id) is None:
            return "skipped"
        flow.check(ctx, target, src_canonical)
        started = ctx.clock()
        previous = ctx.coordinator.begin_create(
            flow.entity, target, self.msg.source_id, started.isoformat(), src_canonical
        )
        sent = src_canonical
        created: Record | None = None
        if previous is not None:
            sent = previous.sent if previous.sent is not None else src_canonical
            created = self._recover_create(previous, sent)
        if created is None:
            if previous is not None:
                ctx.coordinator.touch_create(flow.entity, target, self.msg.source_id, ctx.clock().isoformat())
            try:
                created = flow.create(ctx, target, sent, self.msg.source_id)
            except (RateLimitedError, PermanentError, MustWaitError) as exc:
                # Refused, or stopped before anything was sent (an order's customer busy in another sync, a paused
                # connection), so this attempt made nothing; an earlier one may have, and its intent must stay.
                # Left behind, this attempt's intent would have the next attempt wait out a create never sent.
                if previous is None:
                    ctx.coordinator.end_create(flow.entity, target, self.msg.source_id)
                if target == "customerp" and "idempotency_key" in str(exc):
                    raise ForbiddenEditError(
                        f"Customerp already saw a {flow.entity[:-1]} created for {self.source}:{self.msg.source_id} "
                        "by an earlier sync, since deleted there or made from other values: it is not created "
                        f"twice. Delete or restore it in Customerp, then replay ({exc})",
                        system="sync",
                    ) from None
                raise
        self.fresh.add(target)
        log.info(
            "%s %s:%s has its partner %s:%s",
            flow.entity,
            self.source,
            self.msg.source_id,
            target,
            flow.record_id(target, created),
        )
        # Record the pair at once, before a later step can fail: no other sync can then take either record for
        # another partner. Until the merge below settles it, each side's base is what it held at the create:
        # the defaults the target filled in (a due date, a number) flow back, and the source's edits since the
        # first attempt flow on; a retry finishes that merge.
        # The source held what was sent, the new partner what it was created as (defaults included).
        made = flow.canonical(ctx, target, created)
        provisional = Bases({self.source: sent, target: made}, made).snapshot()
        # Its dead letters are resolved by the save that settles the pair, not this one.
        made_from = history.created(ctx.settings, self.msg, target, sent)
        link = self._save(None, {self.source: src, target: created}, provisional, resolve=False, decision=made_from)
        try:
            self._merge_and_write(link, src, src_canonical, created)
        except NotFoundError:
            # One of the pair was deleted meanwhile: reconcile sees the linked record gone and propagates it.
            log.info("%s %s:%s was deleted while its partner was made", flow.entity, self.source, self.msg.source_id)
            return "gone"
        return "created"

    def _abandon_create(self) -> Outcome:
        """The source is gone. An earlier attempt may have created its partner before it went: delete that too,
        or it would come back to the source's system as a new record."""
        flow, ctx, target = self.flow, self.ctx, self.target
        intent = ctx.coordinator.create_intent(flow.entity, target, self.msg.source_id)
        if intent is None:
            return "gone"
        created: Record | None = None
        if intent.sent is not None:
            if target == "wave":
                created = self._recover_create(intent, intent.sent)
            else:
                created = flow.match(ctx, target, intent.sent, None)
                if created is not None and not holds(flow.canonical(ctx, target, created), intent.sent, flow.identity):
                    created = None
        if created is not None:
            with ctx.db.session() as session:
                linked = store.find_link(session, flow.entity, target, flow.record_id(target, created))
            if linked is None:
                log.info(
                    "%s %s:%s is gone: deleting %s:%s, made for it by an interrupted sync",
                    flow.entity,
                    self.source,
                    self.msg.source_id,
                    target,
                    flow.record_id(target, created),
                )
                flow.delete(ctx, target, created)
        ctx.coordinator.end_create(flow.entity, target, self.msg.source_id)
        return "gone"

    def _recover_create(self, previous: CreateIntent, sent: Canonical) -> Record | None:
        """An earlier attempt may have created the partner and died before recording the link: find it.

        Customerp creates carry an idempotency key, so resending `sent` returns that record. Wave has none: wait
        until a request of the earlier attempt can no longer land, then look among records changed since.
        """
        flow, ctx, target = self.flow, self.ctx, self.target
        if target == "customerp":
            return None
        settle = self._settle_time(previous)
        waited = (ctx.clock() - previous.attempted).total_seconds()
        if waited < settle:
            raise MustWaitError(
                f"an earlier attempt to create the Wave partner of {self.source}:{self.msg.source_id} may still "
                "land; looking for it shortly",
                system="sync",
                retry_after=min(settle - waited, HEARTBEAT_TTL_S) + 0.1,
                # Look again when the wait ends, or sooner: a sender that dies meanwhile shortens the wait to one
                # timeout once its heartbeat lapses, and a record must not sit out the longer one it was given.
                wait_at_most=min(settle - waited, HEARTBEAT_TTL_S) + 1.0,
            )
        created = flow.match(ctx, target, sent, previous.started - timedelta(minutes=5))
        if created is None:
            return None
        with ctx.db.session() as session:
            if store.find_link(session, flow.entity, target, flow.record_id(target, created)) is not None:
                return None
        return flow.finish_create(ctx, target, created, sent)

    def _settle_time(self, intent: CreateIntent) -> float:
        """How long after its last send a create may still land. A live sender may still be waiting on it (and an
        answer lost to a timeout may land later), so twice its HTTP timeout; a sender that died (SIGKILL, OOM) sends
        nothing more and stopped waiting when it died, so one timeout for the request it left at the server."""
        timeouts = CREATE_SETTLE_TIMEOUTS if self.ctx.coordinator.owner_alive(intent) else 1.0
        return timeouts * self.ctx.settings.http_timeout

    def _wait_for_creations_into_source(self, src_canonical: Canonical) -> None:
        """The source record may itself be the product of an unfinished create from the other side (its link not
        recorded yet): creating a partner for it would duplicate the record that create started from."""
        ctx, flow = self.ctx, self.flow
        for intent in ctx.coordinator.creations_in_flight(
            flow.entity, self.source, max_age_s=CREATE_IN_FLIGHT_S, now=ctx.clock()
        ):
            if intent.sent and holds(src_canonical, intent.sent, flow.identity):
                if (ctx.clock() - intent.attempted).total_seconds() > self._settle_time(intent):
                    # The create has had time to land and its sync has not recorded the link: that sync may never
                    # come back to it (an order that needed the record was dead-lettered). Ask for it to finish.
                    owner = ChangeMessage(
                        entity=flow.entity, source=self.target, source_id=intent.source_id, reread=True
                    )
                    app.send_task(keys.SYNC_TASK[flow.entity], args=[owner.to_json()], queue=flow.entity)
                raise MustWaitError(
                    f"{self.source}:{self.msg.source_id} may be the {flow.entity[:-1]} that an unfinished sync of "
                    f"{self.target}:{intent.source_id} created; waiting for that sync to record its link",
                    system="sync",
                    retry_after=1.0,
                    # That sync records the link within seconds of its create landing: look again at least this
                    # often rather than backing off for minutes after the pair is already made.
                    wait_at_most=CREATED_LINK_RECHECK_S,
                )

    def _merge_and_write(self, link: Link | None, src: Record, src_canonical: Canonical, partner: Record) -> Outcome:
        """Merge both sides against their bases, write each side that differs, and record the pair.

        A write answers with the whole record. Wave has no conditional write, and both systems may fill in
        defaults, so an answer can hold more than was merged (a person's edit that landed meanwhile, a default
        description): merge again with the answers until both sides hold the merged record.
        """
        flow, ctx = self.flow, self.ctx
        records = {self.source: src, self.target: partner}
        canon = {self.source: src_canonical, self.target: flow.canonical(ctx, self.target, partner)}
        bases = self._bases(link, canon)
        before = dict(canon)  # for the history: what each side held before this sync wrote
        wrote = False
        for _round in range(MERGE_ROUNDS):
            result = three_way_merge(
                bases.sides["customerp"],
                canon["customerp"],
                canon["wave"],
                policy=ctx.settings.conflict_policy(flow.entity),
                customerp_is_newer=modified_at("customerp", records["customerp"])
                >= modified_at("wave", records["wave"]),
                resolvers=flow.resolvers,
                wave_base=bases.sides["wave"],
                pending=bases.pending,
            )
            merged = result.merged
            if result.conflicts:
                log.info("conflict on %s %s: %s", flow.entity, self.msg.source_id, ", ".join(result.conflicts))
            settled = True
            for system in (self.target, self.source):
                changed = changed_fields(canon[system], merged)
                if not changed:
                    continue
                flow.check(ctx, system, merged)
                log.info(
                    "%s %s:%s: writing %s to %s %s",
                    flow.entity,
                    self.source,
                    self.msg.source_id,
                    ", ".join(sorted(changed)),
                    system,
                    flow.record_id(system, records[system]),
                )
                try:
                    records[system] = self._write(system, records[system], merged, changed)
                except Exception:
                    # The write (or an earlier one) may have landed: whatever holds `merged` from now on holds what
                    # the sync wrote, not a person's edit. Remember it for the next attempt's merge.
                    self._remember_pending(link, Bases(bases.sides, merged))
                    raise
                self.fresh.add(system)
                canon[system] = flow.canonical(ctx, system, records[system])
                wrote = True
                settled = settled and canon[system] == merged
            if settled:
                decided = history.merged(ctx.settings, self.msg, before, merged, result.conflicts, linked=bool(link))
                self._save(link, records, merged, decision=decided)
                if not wrote:
                    return "linked" if link is None else "unchanged"
                return "updated"
            # Another round: what this one wrote is each side's base where the side still holds it.
            bases = Bases({s: rebase(b or {}, canon[s], merged) for s, b in bases.sides.items()}, merged)
        raise ConflictError(
            f"{flow.entity} {self.source}:{self.msg.source_id} kept changing while it was written", retry_after=1.0
        )

    def _remember_pending(self, link: Link | None, bases: Bases) -> None:
        """Best effort: record, as the pair's snapshot, each side's base and what was being written (see BASES)."""
        if link is None:
            return
        try:
            with self.ctx.db.session() as session:
                current = session.get(Link, link.id)
                if current is not None:
                    current.snapshot = bases.snapshot()
        except Exception as exc:  # noqa: BLE001 - the caller's error is the one to report
            log.warning("could not record the pending write of %s: %s", self.msg.key(), exc)

    def _write(self, system: System, record: Record, merged: Canonical, changed: set[str]) -> Record:
        """One update. Wave writes are unconditional: one whose answer never came may land later, so hold the
        record's writes until it can no longer land, lest it overwrite a newer value."""
        flow, ctx = self.flow, self.ctx
        record_id = flow.record_id(system, record)
        if system == "wave":
            held = ctx.coordinator.writes_held(flow.entity, system, record_id)
            if held:
                raise MustWaitError(
                    f"an unanswered write to wave {flow.entity[:-1]} {record_id} may still land; waiting {held:.1f}s",
                    system="sync",
                    retry_after=held,
                    wait_at_most=held + 1.0,
                )
        try:
            return flow.update(ctx, system, record, merged, changed, verify=system not in self.fresh)
        except RetryableError as exc:
            # A refusal (429, a conflict) or a wait raised before anything was sent (a paused connection) cannot land.
            if system == "wave" and not isinstance(exc, RateLimitedError | ConflictError | MustWaitError):
                settle = CREATE_SETTLE_TIMEOUTS * ctx.settings.http_timeout
                ctx.coordinator.hold_writes(flow.entity, system, record_id, settle)
            raise

    def _propagate_delete(self, link: Link | None) -> Outcome:
        flow, ctx = self.flow, self.ctx
        if link is None:
            return "gone"
        try:
            partner = flow.read(ctx, self.target, link.partner_id(self.source))
        except NotFoundError:
            partner = None
        if partner is not None:
            flow.delete(ctx, self.target, partner)
        with ctx.db.session() as session:
            fresh = store.find_link(session, flow.entity, self.source, self.msg.source_id)
            if fresh is not None:
                session.delete(fresh)
            # The pair is gone: so are the reasons either record could not sync.
            ids = {"customerp": link.customerp_id, "wave": link.wave_id}
            store.resolve_dead_letters(session, flow.entity, ids, how="deleted")
            history.record(session, history.deleted(ctx.settings, self.msg, link, partner_existed=bool(partner)))
        return "deleted"

    def _save(
        self,
        link: Link | None,
        records: dict[System, Record],
        snapshot: Canonical,
        *,
        resolve: bool = True,
        decision: history.Decision | None = None,
    ) -> Link:
        """Record the pair and what both sides now hold, in one transaction, after the remote writes."""
        flow, ctx = self.flow, self.ctx
        try:
            with ctx.db.session() as session:
                current = session.merge(link) if link is not None else None
                ids = {
                    system: flow.record_id(system, records[system])
                    if system in records
                    else (current.own_id(system) if current else "")
                    for system in ("customerp", "wave")
                }
                versions = {
                    system: record_version(system, records[system])
                    if system in records
                    else (current.version_of(system) if current else "")
                    for system in ("customerp", "wave")
                }
                saved = store.save_link(
                    session,
                    current,
                    entity=flow.entity,
                    customerp_id=ids["customerp"],
                    wave_id=ids["wave"],
                    snapshot=snapshot,
                    customerp_version=versions["customerp"],
                    wave_version=versions["wave"],
                )
                history.record(session, decision, saved)
                if resolve:
                    store.resolve_dead_letters(
                        session, flow.entity, {"customerp": ids["customerp"], "wave": ids["wave"]}
                    )
        except (IntegrityError, StaleDataError) as exc:
            # Another worker linked or updated this pair meanwhile: start again from the new state.
            raise ConflictError(
                f"link of {flow.entity} changed concurrently ({type(exc).__name__})", retry_after=0.5
            ) from None
        if link is None:
            # Linked: neither record is an unfinished creation any more (whoever created it).
            ctx.coordinator.end_creates(flow.entity, {"wave": ids["customerp"], "customerp": ids["wave"]})
        return saved


def sync_message(
    ctx: Context, flow: Flow, message: ChangeMessage, *, repeat: bool = False, dependency: bool = False
) -> Outcome:
    return PairSync(ctx, flow, message, repeat=repeat, dependency=dependency).run()


def is_repeat(request: Any) -> bool:
    """Whether a task's message was delivered before: a retry, or a redelivery after a worker died."""
    delivery = getattr(request, "delivery_info", None) or {}
    return bool(getattr(request, "retries", 0)) or bool(delivery.get("redelivered"))
