"""Reconcile: compare both systems with the links, report drift, and repair it through the normal queues.

Polling cannot see Wave deletions, and a missed change would otherwise stay missed; a full comparison finds
both. Deletions are verified by a lookup before they propagate, and a mass-delete circuit breaker stops the
run (with an alert) rather than delete more than `mass_delete_max_share` of an entity at once. `--check` is the
convergence checker: it only reports, and the caller exits non-zero when anything is out of sync.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_

from shared import history, keys
from shared.celery_app import app
from shared.context import Context, get_context
from shared.enqueue import enqueue
from shared.entities import DEFINITIONS, EntityDef, Options, creation_enabled
from shared.errors import NotFoundError, PausedError, SyncError
from shared.messages import ChangeMessage, System, other
from shared.natural_keys import normalise_key
from shared.refs import LinkLookup, resolve_refs
from shared.settings import ENTITIES, Entity, load_settings
from shared.store import links as store
from shared.store.models import PURGED, DeadLetter

log = logging.getLogger(__name__)


@dataclass
class EntityReport:
    entity: Entity
    customerp_records: int = 0
    wave_records: int = 0
    links: int = 0
    in_sync: int = 0
    drift: list[str] = field(default_factory=list)  # link ids whose sides differ
    missing_in_wave: list[str] = field(default_factory=list)  # Customerp ids with no partner
    missing_in_customerp: list[str] = field(default_factory=list)  # Wave ids with no partner
    deleted_in_customerp: list[str] = field(default_factory=list)  # Wave ids whose partner is gone
    deleted_in_wave: list[str] = field(default_factory=list)  # Customerp ids whose partner is gone
    duplicates: list[str] = field(default_factory=list)  # natural keys held by two records of one system
    dead_lettered: int = 0
    excluded: int = 0  # by policy: creation switched off, archived products without partner
    breaker_tripped: bool = False
    repaired: int = 0

    @property
    def problems(self) -> int:
        return (
            len(self.drift)
            + len(self.missing_in_wave)
            + len(self.missing_in_customerp)
            + len(self.deleted_in_customerp)
            + len(self.deleted_in_wave)
            + len(self.duplicates)
        )

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.__dict__)
        out["problems"] = self.problems
        return out


def _all_customerp(ctx: Context, entity: Entity) -> dict[str, dict[str, Any]]:
    live: dict[str, dict[str, Any]] = {}
    for page in ctx.customerp.iter_changes(entity, limit=500):
        for item in page.items:
            record = item.model_dump(mode="json")
            if record.get("deleted"):
                live.pop(str(record["id"]), None)
            else:
                live[str(record["id"])] = record
    return live


def _all_wave(ctx: Context, entity: Entity) -> dict[str, dict[str, Any]]:
    if entity == "customers":
        items: Any = ctx.wave.iter_customers()
    elif entity == "products":
        items = [*ctx.wave.iter_products(archived=False), *ctx.wave.iter_products(archived=True)]
    else:
        items = ctx.wave.iter_invoices()
    return {str(r.id): r.model_dump(mode="json", by_alias=True) for r in items}


def read(ctx: Context, entity: Entity, system: System, record_id: str) -> dict[str, Any]:
    """One record, as the sync reads it (NotFoundError when it is gone)."""
    if system == "customerp":
        return ctx.customerp.get(entity, record_id).model_dump(mode="json")
    get = {"customers": ctx.wave.get_customer, "products": ctx.wave.get_product, "orders": ctx.wave.get_invoice}
    return get[entity](record_id).model_dump(mode="json", by_alias=True)


def canonical(
    ctx: Context, lookup: LinkLookup, definition: EntityDef, system: System, record: dict[str, Any]
) -> dict[str, Any]:
    """`record` as the sync compares it; a reference that is not linked is an error here, never a sync."""
    fields = definition.canonical(system, record, Options.of(ctx.settings))
    if system == "customerp":
        return fields
    return resolve_refs(lookup, definition, fields, system, create_missing=None)


class Reconciler:
    def __init__(self, ctx: Context, *, repair: bool, progress: Callable[[str], None] | None = None) -> None:
        self.ctx = ctx
        self.repair = repair
        self.progress = progress or (lambda _msg: None)
        self.links = LinkLookup(ctx.db)

    def run(self, entities: tuple[Entity, ...] = ENTITIES) -> list[EntityReport]:
        with self.ctx.coordinator.try_lock(keys.reconcile_lock_key(), ttl=3600) as acquired:
            if not acquired:
                raise SyncError("another reconcile is running", system="sync")
            reports = [self._entity(entity) for entity in entities]
        history.save_reconcile_report(self.ctx.redis, [r.as_dict() for r in reports], repair=self.repair)
        return reports

    def _entity(self, entity: Entity) -> EntityReport:
        ctx, definition = self.ctx, DEFINITIONS[entity]
        report = EntityReport(entity)
        self.progress(f"{entity}: reading Customerp")
        cp = _all_customerp(ctx, entity)
        self.progress(f"{entity}: reading Wave")
        wave = _all_wave(ctx, entity)
        with ctx.db.session() as session:
            links = list(store.all_links(session, entity))
            entries = list(
                session.query(DeadLetter).filter(
                    DeadLetter.entity == entity,
                    or_(DeadLetter.resolved_at.is_(None), DeadLetter.resolution == PURGED),
                )
            )
            # Open entries, and those an operator purged (gave up on): neither is drift to repair. A purged record
            # that synced after an edit has its entry resolved as synced, and counts again.
            dead = {(d.source, d.source_id) for d in entries}
            dead_deletions = {(d.source, d.source_id) for d in entries if (d.message or {}).get("deleted")}
        report.customerp_records, report.wave_records, report.links = len(cp), len(wave), len(links)
        report.dead_lettered = sum(1 for d in entries if d.resolved_at is None)
        linked_cp = {link.customerp_id for link in links}
        linked_wave = {link.wave_id for link in links}

        for link in links:
            self._compare(definition, link, cp, wave, report, dead, dead_deletions)

        unpaired: set[tuple[str, str]] = set()  # dead-lettered or excluded: left out of the duplicate count
        for system, records, linked, missing in (
            ("customerp", cp, linked_cp, report.missing_in_wave),
            ("wave", wave, linked_wave, report.missing_in_customerp),
        ):
            for record_id, record in records.items():
                if (system, record_id) in dead:
                    unpaired.add((system, record_id))
                    continue
                if record_id in linked:
                    continue
                if self._excluded(definition, system, record):  # type: ignore[arg-type]
                    report.excluded += 1
                    unpaired.add((system, record_id))
                else:
                    missing.append(record_id)
        self._find_duplicates(entity, cp, wave, report, unpaired)
        if self.repair:
            self._repair(entity, report, total=max(len(links), 1))
        return report

    def _compare(
        self,
        definition: EntityDef,
        link: Any,
        cp: dict[str, Any],
        wave: dict[str, Any],
        report: EntityReport,
        dead: set[tuple[str, str]],
        dead_deletions: set[tuple[str, str]],
    ) -> None:
        cp_record, wave_record = cp.get(link.customerp_id), wave.get(link.wave_id)
        if cp_record is None and wave_record is None:
            return  # both gone: the link row is stale history, nothing to propagate
        # A deletion that could not be propagated (a customer that still has orders) waits in the dead-letter
        # queue of the side it was deleted in, with its reason: reported there, not as drift.
        if cp_record is None:
            if ("customerp", link.customerp_id) not in dead_deletions:
                report.deleted_in_customerp.append(link.wave_id)
            return
        if wave_record is None:
            if ("wave", link.wave_id) not in dead_deletions:
                report.deleted_in_wave.append(link.customerp_id)
            return
        if ("customerp", link.customerp_id) in dead or ("wave", link.wave_id) in dead:
            return
        try:
            same = canonical(self.ctx, self.links, definition, "customerp", cp_record) == canonical(
                self.ctx, self.links, definition, "wave", wave_record
            )
        except SyncError:
            same = False
        if same:
            report.in_sync += 1
        else:
            report.drift.append(link.customerp_id)

    def _excluded(self, definition: EntityDef, system: System, record: dict[str, Any]) -> bool:
        """Left without a partner by the creation policy the workers follow (shared/entities.py)."""
        if not creation_enabled(self.ctx.settings, definition.name, other(system)):
            return True
        try:
            fields = definition.canonical(system, record, Options.of(self.ctx.settings))
        except SyncError:
            return False  # unreadable: reported as missing, and dead-lettered by the sync
        return not definition.wanted(fields)

    def _find_duplicates(
        self,
        entity: Entity,
        cp: dict[str, Any],
        wave: dict[str, Any],
        report: EntityReport,
        unpaired: set[tuple[str, str]],
    ) -> None:
        """A natural key held by more records in one system than in the other: the sync made a second record for
        one partner. (Two customers that share an email in both systems are the users' data, mirrored.)"""
        cp_key, wave_key = DEFINITIONS[entity].natural_key["customerp"], DEFINITIONS[entity].natural_key["wave"]
        counts: dict[str, Counter[str]] = {}
        for system, records, key in (("customerp", cp, cp_key), ("wave", wave, wave_key)):
            counts[system] = Counter(
                normalise_key(str(r.get(key)))
                for record_id, r in records.items()
                if r.get(key) and (system, record_id) not in unpaired
            )
        for system, key, mine, other_system in (
            ("customerp", cp_key, counts["customerp"], "wave"),
            ("wave", wave_key, counts["wave"], "customerp"),
        ):
            theirs = counts[other_system]
            report.duplicates += [
                f"{system}:{key}={value} ({n} records, {theirs[value]} in {other_system})"
                for value, n in sorted(mine.items())
                if n > 1 and n > theirs[value]
            ]

    def _repair(self, entity: Entity, report: EntityReport, total: int) -> None:
        settings = self.ctx.settings
        deletions = len(report.deleted_in_customerp) + len(report.deleted_in_wave)
        limit = max(settings.mass_delete_min_count, int(settings.mass_delete_max_share * total))
        messages: list[ChangeMessage] = []
        if deletions > limit:
            report.breaker_tripped = True
            log.error(
                "ALERT: reconcile of %s found %d deletions (limit %d); refusing to propagate them. Check "
                "both systems; raise WAVESYNC_MASS_DELETE_MAX_SHARE to allow it.",
                entity,
                deletions,
                limit,
            )
        else:
            verified = [self._verified_delete(entity, "customerp", wave_id) for wave_id in report.deleted_in_customerp]
            verified += [self._verified_delete(entity, "wave", cp_id) for cp_id in report.deleted_in_wave]
            messages += [m for m in verified if m is not None]
        messages += [
            ChangeMessage(entity=entity, source="customerp", source_id=i, reread=True)
            for i in [*report.drift, *report.missing_in_wave]
        ]
        messages += [
            ChangeMessage(entity=entity, source="wave", source_id=i, reread=True) for i in report.missing_in_customerp
        ]
        sent = [m for m in messages if m.source_id]
        with self.ctx.db.session() as session:  # recorded before they are sent: a fast worker's rows come after
            history.record_many(session, (history.about(settings, "repair", m, reason=_why(m)) for m in sent))
        for message in sent:
            enqueue(message)
            report.repaired += 1

    def _verified_delete(self, entity: Entity, gone_in: System, survivor_id: str) -> ChangeMessage | None:
        """The survivor's partner vanished from a full listing; confirm by lookup before deleting anything."""
        ctx = self.ctx
        with ctx.db.session() as session:
            survivor_system: System = "wave" if gone_in == "customerp" else "customerp"
            link = store.find_link(session, entity, survivor_system, survivor_id)
        if link is None:
            return None  # unlinked meanwhile: nothing to propagate
        gone_id = link.own_id(gone_in)
        try:
            read(ctx, entity, gone_in, gone_id)
        except NotFoundError:
            return ChangeMessage(entity=entity, source=gone_in, source_id=gone_id, deleted=True)
        # Still there (a listing glitch): resync instead of deleting.
        return ChangeMessage(entity=entity, source=gone_in, source_id=gone_id, reread=True)


def _why(message: ChangeMessage) -> str:
    return "reconcile: the partner is gone, deleting" if message.deleted else "reconcile: drift or missing partner"


def paused(ctx: Context) -> str | None:
    """Why reconcile cannot run now (the Wave connection waits for a person), or None. Reconcile reads all of Wave,
    so, like the pollers, it skips with one line instead of failing with a traceback."""
    return ctx.wave.auth.paused()


def run_scheduled(ctx: Context) -> list[dict[str, Any]]:
    """Beat's reconcile: the repairing run, or one warning line (and no reports) while the connection is paused."""
    reason = paused(ctx)
    if reason is None:
        try:
            return [r.as_dict() for r in Reconciler(ctx, repair=True).run()]
        except PausedError as exc:  # paused while it ran
            reason = exc.message
    log.warning("reconcile skipped: %s", reason)
    return []


@app.task(name=keys.RECONCILE_TASK, ignore_result=True)
def reconcile() -> list[dict[str, Any]]:
    return run_scheduled(get_context(load_settings))
