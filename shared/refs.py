"""References between records (an order's customer and products), translated from one system's ids to the other's
through the links: an explicit step, so that canonical forms stay pure and a reader never syncs by accident.

`resolve_refs(..., create_missing=None)` only reads links (reconcile, the console): an unlinked reference is an
PermanentError naming it. A worker passes `create_missing`, which syncs the referenced record first (an order's new
customer gets its partner inline, so an order never waits on another queue), then looks again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from shared.entities import EntityDef, Reference
from shared.errors import PermanentError
from shared.messages import System, other
from shared.settings import Entity
from shared.store import links as store
from shared.store.db import Database

CreateMissing = Callable[[Entity, System, str], None]


class LinkLookup:
    """Partner ids by link, remembered for one sync: a pair's ids never change, and one order's sync translates the
    same customer and products several times (to write the invoice, then to read it back)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.known: dict[tuple[Entity, System, str], str] = {}

    def partners(self, system: System, wanted: Mapping[Entity, Iterable[str]]) -> dict[tuple[Entity, str], str]:
        """{(entity, id): partner id} of those `wanted` records ({entity: ids of `system`}) that are linked: one
        query for all not known yet."""
        found: dict[tuple[Entity, str], str] = {}
        unknown: dict[str, set[str]] = {}
        for entity, ids in wanted.items():
            for record_id in ids:
                known = self.known.get((entity, system, record_id))
                if known is not None:
                    found[(entity, record_id)] = known
                else:
                    unknown.setdefault(entity, set()).add(record_id)
        if unknown:
            with self.db.session() as session:
                linked = store.partner_ids(session, system, unknown)
            for (name, record_id), partner in linked.items():
                entity = cast(Entity, name)
                found[(entity, record_id)] = partner
                self.known[(entity, system, record_id)] = partner
                self.known[(entity, other(system), partner)] = record_id
        return found


def resolve_refs(
    lookup: LinkLookup,
    definition: EntityDef,
    canonical: Mapping[str, Any],
    from_system: System,
    *,
    create_missing: CreateMissing | None,
) -> dict[str, Any]:
    """A copy of `canonical` whose references name the records of the other system instead of `from_system`'s."""
    if not definition.references:
        return dict(canonical)
    out = copy.deepcopy(dict(canonical))
    wanted = {reference.entity: list(_values(out, reference)) for reference in definition.references}
    partners = lookup.partners(from_system, wanted)
    for entity, ids in wanted.items():
        for record_id in sorted(set(ids) - {i for e, i in partners if e == entity}):
            if create_missing is not None:
                create_missing(entity, from_system, record_id)
                partners |= lookup.partners(from_system, {entity: [record_id]})
            if (entity, record_id) not in partners:
                raise PermanentError(
                    f"the {definition.name[:-1]}'s {entity[:-1]} {from_system}:{record_id} has no partner in "
                    f"{other(from_system)} (its creation is switched off, or it is in the {entity} dead-letter "
                    "queue): fix that first, then replay",
                    system="sync",
                )
    for reference in definition.references:
        _replace(out, reference, {i: p for (e, i), p in partners.items() if e == reference.entity})
    return out


def _values(record: dict[str, Any], reference: Reference) -> Iterable[str]:
    head, *rest = reference.path
    if not rest:
        if record.get(head):
            yield str(record[head])
        return
    for item in record.get(head) or []:
        if item.get(rest[0]):
            yield str(item[rest[0]])


def _replace(record: dict[str, Any], reference: Reference, partners: Mapping[str, str]) -> None:
    head, *rest = reference.path
    if not rest:
        if record.get(head):
            record[head] = partners[str(record[head])]
        return
    for item in record.get(head) or []:
        if item.get(rest[0]):
            item[rest[0]] = partners[str(item[rest[0]])]
