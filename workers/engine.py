"""The pair-sync algorithm every entity flow runs: load link → guard → read → merge → write → record.

A message only says "this record changed". The worker reads what it needs, merges both sides against the
last synced snapshot and writes whichever side differs, so processing any message any number of times, in
any order, ends in the same state. Entity specifics (how to read, match, write) live in a `Flow`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from shared.context import Context
from shared.errors import ConflictError, InvalidDataError, NotFoundError, PermanentError
from shared.mapping.fields import Canonical, FieldMap, FieldValueError, canonical_from, changed_fields, payload
from shared.merge import three_way_merge
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

    # --- canonical form and checks -----------------------------------------------------------------------

    def canonical(self, ctx: Context, system: System, record: Record) -> Canonical:
        try:
            return canonical_from(record, self.fields, system)
        except FieldValueError as exc:
            raise InvalidDataError(f"{self.entity} {system} value cannot be read: {exc}", system=system) from None

    def check(self, ctx: Context, target: System, canonical: Canonical) -> None:  # noqa: B027 - optional hook
        """Refuse, before any write, what the target would reject or misrepresent. Default: nothing to check."""

    def should_create(self, canonical: Canonical) -> bool:
        """Whether a record with no partner gets one created. Products: archived ones do not."""
        return True

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
        if system == "wave":
            self.wave_delete(ctx, record)
        else:
            ctx.customerp.delete(self.entity, self.record_id(system, record), version=int(record["version"]))


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


class PairSync:
    """One run of the algorithm for one message. Kept as an object so each step is a small named method."""

    def __init__(self, ctx: Context, flow: Flow, message: ChangeMessage) -> None:
        self.ctx = ctx
        self.flow = flow
        self.msg = message
        self.source: System = message.source
        self.target: System = other(message.source)
        self.fresh: set[System] = set()  # sides read in this task: no need to re-check them before a write

    def run(self) -> Outcome:
        ctx, msg = self.ctx, self.msg
        lock_ttl = ctx.settings.task_time_limit + 30
        with ctx.coordinator.record_lock(msg.entity, msg.source, msg.source_id, ttl=lock_ttl, wait=10):
            newest_seen = ctx.coordinator.take_pending(msg.entity, msg.source, msg.source_id) or ""
            reread = msg.reread or msg.snapshot is None or is_older(msg.version, newest_seen)
            link = self._load_link()
            if link and not msg.reread and is_older(msg.version, link.version_of(self.source)):
                return "stale"
            if msg.deleted:
                return self._propagate_delete(link)
            outcome = self._sync(link, reread)
            if outcome in ("skipped", "gone"):
                ctx.coordinator.mark_done(msg.entity, msg.source, msg.source_id, msg.version)
            return outcome

    # --- steps -------------------------------------------------------------------------------------------

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
                return "gone"  # deleted since: Customerp's tombstone or reconcile carries the deletion
        else:
            assert self.msg.snapshot is not None
            src = self.msg.snapshot
        src_version = record_version(self.source, src)
        if link and not self.msg.reread and src_version == link.version_of(self.source):
            return "unchanged"
        src_canonical = flow.canonical(ctx, self.source, src)
        if link and src_canonical == link.snapshot and not self.msg.reread:
            self._save(link, {self.source: src}, link.snapshot)  # remember the version: later polls skip it
            return "echo"

        partner = self._partner(link, src_canonical)
        if partner is None:
            return self._create_partner(src, src_canonical)
        return self._merge_and_write(link, src, src_canonical, partner, base=link.snapshot if link else None)

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
        return None if taken else match

    def _create_partner(self, src: Record, src_canonical: Canonical) -> Outcome:
        flow, ctx, target = self.flow, self.ctx, self.target
        if not _creation_enabled(ctx, flow.entity, target) or not flow.should_create(src_canonical):
            return "skipped"
        flow.check(ctx, target, src_canonical)
        started = ctx.clock()
        previous = ctx.coordinator.begin_create(flow.entity, target, self.msg.source_id, started.isoformat())
        created: Record | None = None
        if previous is not None:
            # An earlier attempt may have created the partner and died before recording the link.
            since = datetime.fromisoformat(previous) - timedelta(minutes=5)
            created = flow.match(ctx, target, src_canonical, since)
        if created is None:
            created = flow.create(ctx, target, src_canonical, self.msg.source_id)
        self.fresh.add(target)
        # What we sent is the base: defaults the target filled in (a due date, a number) flow back.
        self._merge_and_write(None, src, src_canonical, created, base=src_canonical)
        ctx.coordinator.end_create(flow.entity, target, self.msg.source_id)
        return "created"

    def _merge_and_write(
        self, link: Link | None, src: Record, src_canonical: Canonical, partner: Record, *, base: Canonical | None
    ) -> Outcome:
        flow, ctx = self.flow, self.ctx
        partner_canonical = flow.canonical(ctx, self.target, partner)
        records = {self.source: src, self.target: partner}
        canon = {self.source: src_canonical, self.target: partner_canonical}
        result = three_way_merge(
            base,
            canon["customerp"],
            canon["wave"],
            policy=ctx.settings.conflict_policy(flow.entity),
            customerp_is_newer=modified_at("customerp", records["customerp"]) >= modified_at("wave", records["wave"]),
        )
        merged = result.merged
        if result.conflicts:
            log.info("conflict on %s %s: %s", flow.entity, self.msg.source_id, ", ".join(result.conflicts))
        wrote = False
        for system in (self.target, self.source):
            changed = changed_fields(canon[system], merged)
            if changed:
                flow.check(ctx, system, merged)
                records[system] = flow.update(
                    ctx, system, records[system], merged, changed, verify=system not in self.fresh
                )
                wrote = True
        self._save(link, records, merged)
        if not wrote:
            return "linked" if link is None else "unchanged"
        return "updated"

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
        return "deleted"

    def _save(self, link: Link | None, records: dict[System, Record], snapshot: Canonical) -> None:
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
                store.save_link(
                    session,
                    current,
                    entity=flow.entity,
                    customerp_id=ids["customerp"],
                    wave_id=ids["wave"],
                    snapshot=snapshot,
                    customerp_version=versions["customerp"],
                    wave_version=versions["wave"],
                )
                store.resolve_dead_letters(session, flow.entity, {"customerp": ids["customerp"], "wave": ids["wave"]})
        except (IntegrityError, StaleDataError) as exc:
            # Another worker linked or updated this pair meanwhile: start again from the new state.
            raise ConflictError(
                f"link of {flow.entity} changed concurrently ({type(exc).__name__})", retry_after=0.5
            ) from None


def sync_message(ctx: Context, flow: Flow, message: ChangeMessage) -> Outcome:
    return PairSync(ctx, flow, message).run()
