"""The `orders` queue: Customerp Order ⇄ Wave Invoice.

Canonical orders refer to customers and products by their Customerp ids. Reading a Wave invoice or writing
one translates ids through the customer and product links; a dependency that is not linked yet is synced
first, inline, so an order never waits on another queue.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.errors import FieldError, ForbiddenEditError, InvalidDataError, PermanentError
from shared.mapping import orders as mapping
from shared.mapping.fields import Canonical, FieldValueError, canonical_from, payload
from shared.messages import ChangeMessage, System, other
from shared.settings import Entity
from shared.store import links as store
from workers import customers, products
from workers.base import SyncTask
from workers.engine import Flow, Record, is_repeat, sync_message

DEPENDENCIES: dict[Entity, Flow] = {"customers": customers.FLOW, "products": products.FLOW}
# Off while reconcile only checks: reading an invoice must then never create its customer.
SYNC_DEPENDENCIES: ContextVar[bool] = ContextVar("sync_dependencies", default=True)
# Partners already looked up by this task, both ways round: a linked pair's ids never change, and one order's
# sync translates the same customer and products several times (to write the invoice, then to read it back).
KNOWN_PARTNERS: ContextVar[dict[tuple[Entity, System, str], str] | None] = ContextVar("known_partners", default=None)


def _remember(entity: Entity, system: System, record_id: str, partner: str) -> None:
    known = KNOWN_PARTNERS.get()
    if known is not None:
        known[(entity, system, record_id)] = partner
        known[(entity, other(system), partner)] = record_id


def partner_id(ctx: Context, entity: Entity, system: System, record_id: str) -> str:
    """The id on the other side of `system`'s record `record_id`, syncing that record first if unlinked."""
    known = (KNOWN_PARTNERS.get() or {}).get((entity, system, record_id))
    if known is not None:
        return known
    for attempt in range(2):
        with ctx.db.session() as session:
            link = store.find_link(session, entity, system, record_id)
        if link is not None:
            _remember(entity, system, record_id, link.partner_id(system))
            return link.partner_id(system)
        if attempt == 0 and SYNC_DEPENDENCIES.get():
            sync_message(
                ctx,
                DEPENDENCIES[entity],
                ChangeMessage(entity=entity, source=system, source_id=record_id, reread=True),
                dependency=True,
            )
    raise PermanentError(
        f"the order's {entity[:-1]} {system}:{record_id} has no partner in {other(system)} (its creation is "
        f"switched off, or it is in the {entity} dead-letter queue): fix that first, then replay",
        system="sync",
    )


def partner_ids(ctx: Context, entity: Entity, system: System, record_ids: list[str]) -> dict[str, str]:
    """`partner_id` of many records at once: one query for the linked ones (an order's lines usually all are),
    then each unlinked one synced as `partner_id` does."""
    known = KNOWN_PARTNERS.get() or {}
    found = {r: known[(entity, system, r)] for r in record_ids if (entity, system, r) in known}
    wanted = set(record_ids) - found.keys()
    if wanted:
        with ctx.db.session() as session:
            linked = store.links_by_ids(session, entity, system, wanted)
        for record_id, link in linked.items():
            found[record_id] = link.partner_id(system)
            _remember(entity, system, record_id, link.partner_id(system))
    for record_id in sorted(wanted - found.keys()):
        found[record_id] = partner_id(ctx, entity, system, record_id)
    return found


def later_status(customerp: Any, wave: Any) -> Any:
    """An order's status only moves forward (Wave cannot move an invoice back): of two edits, the later stage wins."""
    return max((customerp, wave), key=lambda status: mapping.STATUS_RANK.get(status, -1))


class OrderFlow(Flow):
    entity = "orders"
    fields = mapping.FIELDS
    resolvers = {"status": later_status}
    identity = ("number", "customer")

    # --- canonical form ------------------------------------------------------------------------------------

    def canonical(self, ctx: Context, system: System, record: Record) -> Canonical:
        canonical = super().canonical(ctx, system, record)
        lines = record.get("lines" if system == "customerp" else "items") or []
        canonical["lines"] = []
        for index, line in enumerate(lines):
            try:
                canonical["lines"].append(canonical_from(line, mapping.LINE_FIELDS, system))
            except FieldValueError as exc:
                path = ("lines" if system == "customerp" else "items", str(index), *exc.path)
                raise InvalidDataError(
                    f"order line value cannot be read: {exc}",
                    system=system,
                    field_errors=[FieldError(path, str(exc), "unreadable")],
                ) from None
        if system == "wave":
            canonical["status"] = mapping.wave_status(record.get("status"), record.get("lastSentAt"))
            if canonical.get("customer"):
                canonical["customer"] = partner_id(ctx, "customers", "wave", canonical["customer"])
            fallback = ctx.settings.fallback_product_id
            for line in canonical["lines"]:
                if line.get("product") == fallback:
                    line["product"] = None
            wave_products = [line["product"] for line in canonical["lines"] if line.get("product")]
            products = partner_ids(ctx, "products", "wave", wave_products)
            for line in canonical["lines"]:
                if line.get("product"):
                    line["product"] = products[line["product"]]
        return canonical

    def check(self, ctx: Context, target: System, canonical: Canonical) -> None:
        if target != "wave":
            return
        errors = []
        for index, line in enumerate(canonical.get("lines") or []):
            if not line.get("product") and not ctx.settings.fallback_product_id:
                errors.append(
                    FieldError(
                        ("lines", str(index), "product_id"), "Wave requires a product on every invoice line", "required"
                    )
                )
        if errors:
            raise InvalidDataError(
                "order has lines without a product; add a product to each line, or set "
                "WAVESYNC_FALLBACK_PRODUCT_ID to a Wave product for free-text lines",
                system="sync",
                field_errors=errors,
            )
        if canonical.get("status") == "cancelled":
            raise ForbiddenEditError(
                "the order is cancelled and Wave has no cancelled invoice state: delete the order in Customerp "
                "(its invoice is then deleted) or the invoice in Wave",
                system="sync",
                field_errors=[FieldError(("status",), "cancelled has no Wave equivalent", "status")],
            )

    # --- payloads ------------------------------------------------------------------------------------------

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = payload(canonical, self.fields, "customerp", changed)
        if changed is None or "lines" in changed:
            body["lines"] = [payload(line, mapping.LINE_FIELDS, "customerp") for line in canonical.get("lines", [])]
        return body

    def wave_input(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        fields = set(canonical) - {"status", "lines"} if changed is None else changed - {"status", "lines"}
        body = payload(canonical, self.fields, "wave", fields)
        if body.get("customerId"):
            body["customerId"] = partner_id(ctx, "customers", "customerp", body["customerId"])
        if changed is None or "lines" in changed:
            # invoicePatch replaces all items, so the whole list is always sent.
            lines = canonical.get("lines", [])
            products = partner_ids(ctx, "products", "customerp", [ln["product"] for ln in lines if ln.get("product")])
            body["items"] = [self._wave_item(ctx, line, products) for line in lines]
        if changed is None:
            body = {k: v for k, v in body.items() if v is not None}
            body["status"] = "SAVED" if mapping.STATUS_RANK.get(canonical.get("status") or "draft", 0) >= 1 else "DRAFT"
        return body

    def _wave_item(self, ctx: Context, line: Canonical, products: dict[str, str]) -> dict[str, Any]:
        item = payload(line, mapping.LINE_FIELDS, "wave")
        product = line.get("product")
        item["productId"] = products[product] if product else ctx.settings.fallback_product_id
        return {k: v for k, v in item.items() if v is not None}

    # --- the Wave side -------------------------------------------------------------------------------------

    def wave_read(self, ctx: Context, wave_id: str) -> Record:
        return ctx.wave.get_invoice(wave_id).model_dump(mode="json", by_alias=True)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> Record | None:
        number = canonical.get("number")
        if not number:
            return None
        if since is not None:
            for invoice in ctx.wave.iter_invoices(modified_after=since):
                if invoice.model_dump(mode="json", by_alias=True).get("invoiceNumber") == number:
                    return invoice.model_dump(mode="json", by_alias=True)
            return None
        found = ctx.wave.find_invoices(invoice_number=number)
        return found[0].model_dump(mode="json", by_alias=True) if found else None

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Record | None:
        if canonical.get("number"):
            found = ctx.customerp.find("orders", order_number=canonical["number"])
            if found:
                return found[0].model_dump(mode="json")
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> Record:
        record = ctx.wave.create_invoice(self.wave_input(ctx, canonical, None)).model_dump(mode="json", by_alias=True)
        return self._advance_status(ctx, record, canonical)

    def wave_update(self, ctx: Context, record: Record, canonical: Canonical, changed: set[str]) -> Record:
        current = mapping.wave_status(record.get("status"), record.get("lastSentAt"))
        wanted = canonical.get("status") or "draft"
        if "status" in changed and mapping.STATUS_RANK.get(wanted, 0) < mapping.STATUS_RANK.get(current, 0):
            raise ForbiddenEditError(
                f"the order went back to {wanted!r} but its Wave invoice is {record.get('status')} and Wave invoices "
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
                record = ctx.wave.patch_invoice(record["id"], patch).model_dump(mode="json", by_alias=True)
        return self._advance_status(ctx, record, canonical)

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        return self._advance_status(ctx, record, canonical) if target == "wave" else record

    def _advance_status(self, ctx: Context, record: Record, canonical: Canonical) -> Record:
        wanted = mapping.STATUS_RANK.get(canonical.get("status") or "draft", 0)
        if record.get("status") == "DRAFT" and wanted >= 1:
            record = ctx.wave.approve_invoice(record["id"]).model_dump(mode="json", by_alias=True)
        current = mapping.wave_status(record.get("status"), record.get("lastSentAt"))
        if current == "confirmed" and wanted == mapping.STATUS_RANK["sent"]:  # SAVED, or overdue and never sent
            record = ctx.wave.mark_invoice_sent(record["id"]).model_dump(mode="json", by_alias=True)
        return record

    def wave_delete(self, ctx: Context, record: Record) -> None:
        ctx.wave.delete_invoice(record["id"])


FLOW = OrderFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["orders"])
def sync_order(self: SyncTask, message: dict[str, Any], failures: int = 0) -> str:
    token = KNOWN_PARTNERS.set({})
    try:
        return sync_message(self.ctx, FLOW, ChangeMessage.model_validate(message), repeat=is_repeat(self.request))
    finally:
        KNOWN_PARTNERS.reset(token)
