"""References between records (an order's customer and products), translated from one system's ids to the other's
through the links: an explicit step, so that canonical forms stay pure and a reader never syncs by accident.

`resolve_refs(..., create_missing=None)` only reads links (reconcile, the console): an unlinked reference is an
PermanentError naming it. A worker passes `create_missing`, which syncs the referenced record first (an order's new
customer gets its partner inline, so an order never waits on another queue), then looks again.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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

    def partners(self, entity: Entity, system: System, record_ids: Iterable[str]) -> dict[str, str]:
        """The partner ids of those of `record_ids` that are linked (one query for all not known yet)."""
        wanted = set(record_ids)
        found = {r: self.known[(entity, system, r)] for r in wanted if (entity, system, r) in self.known}
        unknown = wanted - found.keys()
        if unknown:
            with self.db.session() as session:
                linked = store.links_by_ids(session, entity, system, unknown)
            for record_id, link in linked.items():
                found[record_id] = link.partner_id(system)
                self.known[(entity, system, record_id)] = link.partner_id(system)
                self.known[(entity, other(system), link.partner_id(system))] = record_id
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
    for reference in definition.references:
        ids = list(_values(out, reference))
        if not ids:
            continue
        partners = lookup.partners(reference.entity, from_system, ids)
        for record_id in sorted(set(ids) - partners.keys()):
            if create_missing is not None:
                create_missing(reference.entity, from_system, record_id)
                partners |= lookup.partners(reference.entity, from_system, [record_id])
            if record_id not in partners:
                raise PermanentError(
                    f"the {definition.name[:-1]}'s {reference.entity[:-1]} {from_system}:{record_id} has no partner in "
                    f"{other(from_system)} (its creation is switched off, or it is in the {reference.entity} "
                    "dead-letter queue): fix that first, then replay",
                    system="sync",
                )
        _replace(out, reference, partners)
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
