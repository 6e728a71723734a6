"""Customerp Order ⇄ Wave Invoice: the field table, status mapping and line transforms."""

from __future__ import annotations

from shared.mapping.fields import FieldMap

FIELDS: tuple[FieldMap, ...] = (
    FieldMap(
        "number",
        ("order_number",),
        ("invoiceNumber",),
        ("invoiceNumber",),
        "String!",
        note="onboarding and orphan match key",
    ),
    FieldMap(
        "customer",
        ("customer_id",),
        ("customerId",),
        ("customerId",),
        "ID!",
        kind="ref",
        note="through the customer link; the customer is synced first when unlinked",
    ),
    FieldMap("order_date", ("order_date",), ("invoiceDate",), ("invoiceDate",), "Date!", kind="date"),
    FieldMap(
        "due_date",
        ("due_date",),
        ("dueDate",),
        ("dueDate",),
        "Date!",
        kind="date",
        note="Wave defaults it from payment terms when empty",
    ),
    FieldMap("currency", ("currency",), ("currency",), ("currency",), "CurrencyCode", kind="code"),
    FieldMap("po_number", ("po_number",), ("poNumber",), ("poNumber",), "String", note="PO / customer reference"),
    FieldMap("notes", ("notes",), ("memo",), ("memo",), "String", note="memo printed on the invoice"),
    FieldMap(
        "status",
        ("status",),
        ("status",),
        None,
        "InvoiceStatus!",
        kind="text",
        note="see the status table; written with invoiceApprove / invoiceMarkSent",
    ),
)

LINE_FIELDS: tuple[FieldMap, ...] = (
    FieldMap(
        "product",
        ("product_id",),
        ("productId",),
        ("productId",),
        "ID!",
        kind="ref",
        note="through the product link; Wave requires a product on every line",
    ),
    FieldMap("description", ("description",), ("description",), ("description",), "String"),
    FieldMap(
        "quantity",
        ("quantity",),
        ("quantity",),
        ("quantity",),
        "Decimal!",
        kind="decimal8",
        note="rounded to 8 decimals",
    ),
    FieldMap(
        "unit_price",
        ("unit_price",),
        ("unitPrice",),
        ("unitPrice",),
        "Decimal!",
        kind="decimal8",
        note="excl. VAT; rounded to 8 decimals",
    ),
)

# Wave status → canonical (Customerp) status. Payment states are Wave's: they flow to Customerp only.
WAVE_STATUS: dict[str, str] = {
    "DRAFT": "draft",
    "SAVED": "confirmed",
    "SENT": "sent",
    "VIEWED": "sent",
    "UNPAID": "sent",
    "OVERDUE": "sent",
    "PARTIAL": "partially_paid",
    "PAID": "paid",
    "OVERPAID": "paid",
}
# Wave derives these from the amount due and the due date, whether or not the invoice was ever sent: an approved
# invoice that was never sent is `confirmed`, like a SAVED one.
SENT_OR_CONFIRMED = frozenset({"UNPAID", "OVERDUE"})


def wave_status(status: str | None, last_sent_at: object) -> str:
    """The canonical status of a Wave invoice (see WAVE_STATUS); `last_sent_at` counts only as set or not."""
    if status in SENT_OR_CONFIRMED and not last_sent_at:
        return "confirmed"
    return WAVE_STATUS.get(str(status), "draft")


# How far along the life cycle a status is; Wave only moves forward (approve, mark sent).
STATUS_RANK: dict[str, int] = {"draft": 0, "confirmed": 1, "sent": 2, "partially_paid": 3, "paid": 4}
