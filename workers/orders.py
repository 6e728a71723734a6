"""The `orders` queue: Customerp Order ⇄ Wave Invoice.

Canonical orders name customers and products by their Customerp ids; the engine translates them through the
customer and product links (shared/refs.py). A customer or product not linked yet is synced first, inline, so an
order never waits on another queue.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.customerp.models import Order
from shared.entities import ORDERS
from shared.errors import FieldError, ForbiddenEditError
from shared.mapping import orders as mapping
from shared.mapping.fields import Canonical, payload
from shared.messages import ChangeMessage, System
from shared.settings import Entity
from shared.wave.models import WaveInvoice
from workers import customers, products
from workers.base import SyncTask, is_repeat
from workers.engine import sync
from workers.flow import Flow, Record

DEPENDENCIES: dict[Entity, Flow[Any]] = {"customers": customers.FLOW, "products": products.FLOW}


class OrderFlow(Flow[WaveInvoice]):
    definition = ORDERS
    models = {"customerp": Order, "wave": WaveInvoice}

    # --- payloads ------------------------------------------------------------------------------------------

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = payload(canonical, self.definition.fields, "customerp", changed)
        if changed is None or "lines" in changed:
            body["lines"] = [payload(line, mapping.LINE_FIELDS, "customerp") for line in canonical.get("lines", [])]
        return body

    def wave_input(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        fields = set(canonical) - {"status", "lines"} if changed is None else changed - {"status", "lines"}
        body = payload(canonical, self.definition.fields, "wave", fields)
        if changed is None or "lines" in changed:
            # invoicePatch replaces all items, so the whole list is always sent.
            body["items"] = [self._wave_item(ctx, line) for line in canonical.get("lines", [])]
        if changed is None:
            body = {k: v for k, v in body.items() if v is not None}
            body["status"] = "SAVED" if mapping.STATUS_RANK.get(canonical.get("status") or "draft", 0) >= 1 else "DRAFT"
        return body

    def _wave_item(self, ctx: Context, line: Canonical) -> dict[str, Any]:
        item = payload(line, mapping.LINE_FIELDS, "wave")
        item["productId"] = line.get("product") or ctx.settings.fallback_product_id
        return {k: v for k, v in item.items() if v is not None}

    # --- the Wave side -------------------------------------------------------------------------------------

    def wave_read(self, ctx: Context, wave_id: str) -> WaveInvoice:
        return ctx.wave.get_invoice(wave_id)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> WaveInvoice | None:
        number = canonical.get("number")
        if not number:
            return None
        if since is not None:
            return next((i for i in ctx.wave.iter_invoices(modified_after=since) if i.invoice_number == number), None)
        return self.wave_match_by_keys(ctx, {"invoiceNumber": number}, lambda record: record.invoice_number == number)

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Order | None:
        if canonical.get("number"):
            found = ctx.customerp.find("orders", order_number=canonical["number"])
            if found:
                return found[0]
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> WaveInvoice:
        return self._advance_status(ctx, ctx.wave.create_invoice(self.wave_input(ctx, canonical, None)), canonical)

    def wave_update(self, ctx: Context, record: WaveInvoice, canonical: Canonical, changed: set[str]) -> WaveInvoice:
        current = mapping.wave_status(record.status, record.last_sent_at)
        wanted = canonical.get("status") or "draft"
        if "status" in changed and mapping.STATUS_RANK.get(wanted, 0) < mapping.STATUS_RANK.get(current, 0):
            raise ForbiddenEditError(
                f"the order went back to {wanted!r} but its Wave invoice is {record.status} and Wave invoices "
                "only move forward; edit the status in Wave, or restore the order's status",
                system="sync",
                field_errors=[FieldError(("status",), f"cannot go from {current} back to {wanted}", "status")],
            )
        if wanted in ("partially_paid", "paid") and current not in ("partially_paid", "paid"):
            raise ForbiddenEditError(
                "the order is marked paid in Customerp, but payments are recorded in Wave: record the payment on "
                "the Wave invoice instead",
                system="sync",
                field_errors=[FieldError(("status",), "payments are recorded in Wave", "status")],
            )
        fields = changed - {"status"}
        if fields:
            patch = self.wave_input(ctx, canonical, fields)
            if patch:
                record = ctx.wave.patch_invoice(record.id, patch)
        return self._advance_status(ctx, record, canonical)

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        return self._advance_status(ctx, record, canonical) if isinstance(record, WaveInvoice) else record

    def _advance_status(self, ctx: Context, record: WaveInvoice, canonical: Canonical) -> WaveInvoice:
        wanted = mapping.STATUS_RANK.get(canonical.get("status") or "draft", 0)
        if record.status == "DRAFT" and wanted >= 1:
            record = ctx.wave.approve_invoice(record.id)
        current = mapping.wave_status(record.status, record.last_sent_at)
        if current == "confirmed" and wanted == mapping.STATUS_RANK["sent"]:  # SAVED, or overdue and never sent
            record = ctx.wave.mark_invoice_sent(record.id)
        return record

    def wave_delete(self, ctx: Context, record: WaveInvoice) -> None:
        ctx.wave.delete_invoice(record.id)
        ctx.wave_keys.forget_record("orders", record.id)


FLOW = OrderFlow()


def sync_dependency(ctx: Context) -> Any:
    """How an order's sync gets a partner for a customer or product not linked yet: sync it first, inline."""

    def create_missing(entity: Entity, system: System, record_id: str) -> None:
        message = ChangeMessage(entity=entity, source=system, source_id=record_id, reread=True)
        sync(ctx, DEPENDENCIES[entity], message, dependency=True)

    return create_missing


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["orders"])
def sync_order(self: SyncTask, message: ChangeMessage, failures: int = 0) -> str:
    ctx = self.ctx
    return sync(ctx, FLOW, message, repeat=is_repeat(self.request), create_missing=sync_dependency(ctx))
