"""How one entity is read, matched and written on each side: the I/O of a sync, one subclass per worker module.

The Customerp side is the same for every entity (one REST resource each); the Wave side differs by entity, so
subclasses implement the `wave_*` methods and may refine the payload builders. Every canonical record passed in
here already names referenced records by the ids of the system it is written to (shared/refs.py).

Records are the clients' own models (frozen, validated where they were read): a record is turned into plain data
once, where the mapping tables read it (`api_view`), and a poll's snapshot becomes a model again (`from_snapshot`).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar, cast

from pydantic import ValidationError

from shared.context import Context
from shared.customerp import models as cp
from shared.entities import EntityDef
from shared.errors import ConflictError, FieldError, InvalidDataError, NotFoundError
from shared.mapping.fields import Canonical, payload
from shared.messages import System
from shared.settings import Entity
from shared.wave.models import WaveCustomer, WaveInvoice, WaveProduct

log = logging.getLogger(__name__)

CustomerpRecord = cp.Record
WaveRecord = WaveCustomer | WaveProduct | WaveInvoice
Record = CustomerpRecord | WaveRecord
W = TypeVar("W", bound=WaveRecord)  # the Wave model of one flow's entity


def api_view(record: Record) -> dict[str, Any]:
    """`record` as the mapping tables, versions and the key index read it: JSON values under the API's field names
    (Wave's nested references flattened the way its inputs name them: shared/wave/models.py)."""
    return record.model_dump(mode="json", by_alias=True)


class Flow(ABC, Generic[W]):
    definition: EntityDef
    models: dict[System, type[CustomerpRecord] | type[WaveRecord]]

    def from_snapshot(self, system: System, snapshot: dict[str, Any]) -> Record:
        """A poll's snapshot (the record's API view, carried as JSON by the message) as the record it was. A snapshot
        no client would have read (a hand-made or corrupted message) is invalid data, with the paths of its faults."""
        try:
            return self.models[system].model_validate(snapshot)
        except ValidationError as exc:
            faults = [FieldError(tuple(str(p) for p in e["loc"]), e["msg"], "unreadable") for e in exc.errors()]
            raise InvalidDataError(
                f"the {system} {self.entity[:-1]} this message carries cannot be read",
                system=system,
                field_errors=faults,
            ) from None

    @property
    def entity(self) -> Entity:
        return self.definition.name

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        return payload(canonical, self.definition.fields, "customerp", changed)

    def wave_input(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = payload(canonical, self.definition.fields, "wave", changed)
        return prune_nulls(body) if changed is None else body

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        """Complete a create that takes several calls (approve an invoice, archive a product) after an attempt
        that died between them. Default: a create is one call."""
        return record

    # --- the Wave side, per entity -----------------------------------------------------------------------------

    @abstractmethod
    def wave_read(self, ctx: Context, wave_id: str) -> W: ...

    @abstractmethod
    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> W | None: ...

    @abstractmethod
    def wave_create(self, ctx: Context, canonical: Canonical) -> W: ...

    @abstractmethod
    def wave_update(self, ctx: Context, record: W, canonical: Canonical, changed: set[str]) -> W: ...

    @abstractmethod
    def wave_delete(self, ctx: Context, record: W) -> None: ...

    @abstractmethod
    def customerp_match(self, ctx: Context, canonical: Canonical) -> CustomerpRecord | None: ...

    def wave_match_by_keys(self, ctx: Context, values: Mapping[str, str | None], same: Callable[[W], bool]) -> W | None:
        """The Wave record holding these natural keys ({Wave field: value}) that `same` accepts, found through the
        index the Wave pollers keep (shared/natural_keys.py) and confirmed by a read. The index is brought up to
        date (within WAVESYNC_MATCH_FRESHNESS) before "none" is believed: a person may have made the record in
        Wave since the last poll. A record a create makes is not indexed here: it is linked at once, so no match
        could take it, and the next poll indexes it."""
        index = ctx.wave_keys
        tried: set[str] = set()
        for up_to_date in (False, True):
            if up_to_date:
                index.ensure_fresh(self.entity, ctx.wave)
                found = index.candidates(self.entity, values)
            else:
                found = index.lookup(self.entity, values, ctx.wave)  # brings the index up to date when it finds none
            for wave_id in (f for f in found if f not in tried):
                tried.add(wave_id)
                try:
                    record = self.wave_read(ctx, wave_id)
                except NotFoundError:
                    index.forget_record(self.entity, wave_id)  # deleted in Wave: polls never see that
                    continue
                if same(record):
                    return record
            if not found:
                return None
        return None

    # --- both sides --------------------------------------------------------------------------------------------

    def read(self, ctx: Context, system: System, record_id: str) -> Record:
        if system == "wave":
            return self.wave_read(ctx, record_id)
        return ctx.customerp.get(self.entity, record_id)

    def match(self, ctx: Context, system: System, canonical: Canonical, since: datetime | None) -> Record | None:
        """An existing record on `system` that is the same real thing (natural key). `since` narrows the search to
        records changed after an interrupted create started."""
        if system == "wave":
            return self.wave_match(ctx, canonical, since)
        return self.customerp_match(ctx, canonical)

    def create(self, ctx: Context, system: System, canonical: Canonical, source_id: str) -> Record:
        if system == "wave":
            return self.wave_create(ctx, canonical)
        # A deterministic key: a retry after a lost response returns the record already created.
        key = f"wavesync:{self.entity}:wave:{source_id}"
        body = self.customerp_body(ctx, canonical, None)
        return ctx.customerp.create(self.entity, body, idempotency_key=key)

    def update(
        self, ctx: Context, system: System, record: Record, canonical: Canonical, changed: set[str], *, verify: bool
    ) -> Record:
        """Write `changed` fields of `canonical` onto `record`, refusing if the record moved on meanwhile.

        Customerp writes are conditional (If-Match). Wave has no conditional write: when `record` was not read in
        this task (a poll snapshot), re-read it and compare modifiedAt first.
        """
        if isinstance(record, CustomerpRecord):
            body = self.customerp_body(ctx, canonical, changed)
            return ctx.customerp.update(self.entity, record.id, body, version=record.version)
        own = self._wave(record)
        if verify:
            current = self.wave_read(ctx, own.id)
            if current.modified_at != own.modified_at:
                raise ConflictError(f"Wave {self.entity[:-1]} changed since it was polled", system="wave")
        return self.wave_update(ctx, own, canonical, changed)

    def delete(self, ctx: Context, system: System, record: Record) -> None:
        """Delete `record`; one that is already gone (an earlier attempt whose answer was lost) counts as done."""
        try:
            if isinstance(record, CustomerpRecord):
                ctx.customerp.delete(self.entity, record.id, version=record.version)
            else:
                self.wave_delete(ctx, self._wave(record))
        except NotFoundError:
            log.info("%s %s:%s was already deleted", self.entity, system, record.id)

    def _wave(self, record: Record) -> W:
        """`record` as this flow's Wave model: the one place the shell's system-agnostic records are narrowed."""
        if not isinstance(record, self.models["wave"]):
            raise TypeError(f"not a Wave {self.entity[:-1]}: {type(record).__name__}")
        return cast(W, record)


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
