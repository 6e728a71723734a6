"""How the sync reads a pair: each side's record as `plan` sees it, with references translated both ways.

Every record read (or answered by a write) is kept, because a write needs the record itself (its version for
If-Match, an invoice's status), and every side read in this task is remembered as fresh: a write to it needs no
second look first. A record is the client's model; it is turned into plain data once, for the mapping tables.
"""

from __future__ import annotations

from typing import Any

from shared.context import Context
from shared.entities import Options
from shared.errors import NotFoundError, PermanentError
from shared.messages import ChangeMessage, System, other
from shared.refs import CreateMissing, LinkLookup, resolve_refs
from shared.store.models import Link
from shared.versions import modified_at, record_version
from workers import plan as core
from workers.flow import Flow, Record, api_view


class Reader:
    def __init__(
        self, ctx: Context, flow: Flow[Any], message: ChangeMessage, create_missing: CreateMissing | None
    ) -> None:
        self.ctx, self.flow, self.msg, self.create_missing = ctx, flow, message, create_missing
        self.options = Options.of(ctx.settings)
        self.links = LinkLookup(ctx.db)
        self.fresh: set[System] = set()  # sides read in this task: no need to re-check them before a write
        self.records: dict[System, Record] = {}  # the latest of each side, as read or as a write answered

    def source(self, reread: bool) -> core.Source:
        """The message's record: read now, or as the poll saw it (NotFoundError when it is gone)."""
        msg = self.msg
        if reread:
            record = self.flow.read(self.ctx, msg.source, msg.source_id)
            self.fresh.add(msg.source)
            side = self.side(msg.source, record)
        else:
            assert msg.snapshot is not None
            # The snapshot is the record's API view already: validated into its model, not dumped back.
            side = self.side(msg.source, self.flow.from_snapshot(msg.source, msg.snapshot), msg.snapshot)
        return core.Source(msg.source, msg.source_id, side.version, side, forced=msg.reread, fresh=reread)

    def partner(self, link: Link) -> core.Side:
        """The linked partner; one that is gone is for reconcile to propagate."""
        target = other(self.msg.source)
        partner_id = link.partner_id(self.msg.source)
        try:
            record = self.flow.read(self.ctx, target, partner_id)
        except NotFoundError:
            raise PermanentError(
                f"the linked {target} {self.flow.entity[:-1]} {partner_id} no longer exists (deleted in {target}?); "
                "run `wavesync reconcile` to propagate the deletion",
                system="sync",
            ) from None
        self.fresh.add(target)
        return self.side(target, record)

    def side(self, system: System, record: Record, view: dict[str, object] | None = None) -> core.Side:
        """`record` as `plan` sees it; `view`: its API view, when the caller has it already."""
        self.records[system] = record
        view = api_view(record) if view is None else view
        return core.Side(
            system, record.id, record_version(system, view), modified_at(system, view), self._canonical(system, view)
        )

    def canonical(self, system: System, record: Record) -> dict[str, object]:
        """`record` as the sync compares it, references named by Customerp ids."""
        return self._canonical(system, api_view(record))

    def _canonical(self, system: System, view: dict[str, object]) -> dict[str, object]:
        fields = self.flow.definition.canonical(system, view, self.options)
        if system == "customerp":
            return fields
        return resolve_refs(self.links, self.flow.definition, fields, "wave", create_missing=self.create_missing)

    def outbound(self, system: System, fields: core.Fields) -> dict[str, object]:
        """Canonical `fields` with references named by `system`'s ids, to be written there."""
        if system == "customerp":
            return dict(fields)
        return resolve_refs(self.links, self.flow.definition, fields, "customerp", create_missing=self.create_missing)
