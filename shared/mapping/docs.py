"""Renders docs/mappings.md from the field tables (`python -m shared.mapping.docs > docs/mappings.md`).

A test fails when the committed document differs from what the code says, so the tables cannot drift.
"""

from __future__ import annotations

from shared.mapping import customers, orders, products
from shared.mapping.fields import FieldMap

HEADER = """# Property mappings

The seed document's tables, filled. Generated from `shared/mapping/*.py` by `python -m shared.mapping.docs`;
`tests/shared/mapping/test_docs.py` fails when this file and the code disagree.

Every property syncs both ways through a canonical form (see `shared/mapping/fields.py`): empty strings count as
empty, codes are upper-case, decimals are rounded the way Wave rounds them. Conflicts are merged field by field
(README, "Conflicts").
"""


def _path(path: tuple[str, ...] | None) -> str:
    return ".".join(path) if path else "—"


def _table(title: str, rows: tuple[FieldMap, ...], direction: str, prefix: str = "") -> str:
    out = [f"### {title}", ""]
    if direction == "to_wave":
        out += ["| Customerp property | Wave property | Wave data type | Transformation |", "|---|---|---|---|"]
        for f in rows:
            wave = _path(f.wave_write) if f.wave_write else f"{_path(f.wave_read)} (own mutation)"
            out.append(f"| {prefix}{_path(f.customerp)} | {prefix and 'items[].'}{wave} | {f.wave_type} | {f.note} |")
    else:
        out += ["| Wave property | Customerp property | Wave data type | Transformation |", "|---|---|---|---|"]
        for f in rows:
            out.append(
                f"| {prefix and 'items[].'}{_path(f.wave_read)} | {prefix}{_path(f.customerp)} | "
                f"{f.wave_type} | {f.note} |"
            )
    return "\n".join(out)


def render() -> str:
    parts = [HEADER]
    for title, module in (("Customer ⇄ Customer", customers), ("Product ⇄ Product", products)):
        parts += [
            f"## {title}",
            "",
            _table(f"Customerp {title.split()[0]} → Wave {title.split()[-1]}", module.FIELDS, "to_wave"),
            "",
            _table(f"Wave {title.split()[-1]} → Customerp {title.split()[0]}", module.FIELDS, "to_customerp"),
            "",
        ]
    parts += [
        "## Order ⇄ Invoice",
        "",
        _table("Customerp Order → Wave Invoice", orders.FIELDS, "to_wave"),
        "",
        _table("Customerp Order lines → Wave Invoice items", orders.LINE_FIELDS, "to_wave", "lines[]."),
        "",
        _table("Wave Invoice → Customerp Order", orders.FIELDS, "to_customerp"),
        "",
        _table("Wave Invoice items → Customerp Order lines", orders.LINE_FIELDS, "to_customerp", "lines[]."),
        "",
        "### Invoice status",
        "",
        "| Wave status | Customerp status |",
        "|---|---|",
    ]
    parts += [
        f"| {wave} | {'confirmed until it was sent, then sent' if wave in orders.SENT_OR_CONFIRMED else cp} |"
        for wave, cp in orders.WAVE_STATUS.items()
    ]
    parts += [
        "",
        "Customerp → Wave: `confirmed` approves a draft invoice (`invoiceApprove`), `sent` marks it sent "
        "(`invoiceMarkSent`). Wave invoices only move forward, so a status moved back, `cancelled`, or a "
        "payment status set in Customerp is a dead letter with the reason: payments are recorded in Wave.",
        "",
        "## Bad input: what happens to it",
        "",
        "Values one system accepts and the other refuses or changes. `tests/badinput/` holds one case per row.",
        "",
        "| input | outcome |",
        "|---|---|",
        "| product price with more than 5 decimals | normalised: Wave stores it rounded half away from zero to 5 "
        "decimals; Customerp keeps its own (equal after rounding, so no write-back) |",
        "| invoice quantity or price with more than 8 decimals (from Wave) | normalised: Wave rounds to 8 "
        "decimals, which Customerp holds |",
        "| zero product price, negative order line price (a discount), tiny quantities | synced as they are |",
        "| emoji, right-to-left text, combining marks | synced unchanged |",
        "| two customers sharing an email (either side) | both synced: the link, not the email, pairs records; "
        "`reconcile --check` counts a duplicate only where one system holds more records with a key than "
        "the other |",
        "| text longer than the other side holds (10,000-character notes, long phones) | dead letter naming "
        "the field and the limit |",
        "| NUL or other control characters, an email Customerp finds invalid (from Wave) | dead letter naming "
        "the field |",
        "| a currency or country code the other side does not know (`VES`, `HRK`) | dead letter with the code |",
        "| zero, negative or more than 12-digit quantities and prices from Wave | dead letter naming the line "
        "and field |",
        "| a due date before the invoice date (from Wave) | dead letter (`due_date`) |",
        "| an invoice whose customer or product was deleted before it synced | dead letter: the dependency "
        "has no partner |",
        "| a cancelled order; a status moved back; a payment status set in Customerp | dead letter with the "
        "reason (see the status table) |",
        "| a record read that cannot be parsed (a malformed date, a wrong type) | dead letter naming the field |",
        "| a blank name (both APIs refuse one; a record read without one) | dead letter: the other side's "
        "`required` error on `name` |",
        "",
        "## Not synced",
        "",
        "- Customerp only: customer `vat_number`; product `sku` (Wave has none), product `currency` (must be "
        "the Wave business currency, else dead letter).",
        "- Wave only: customer `fax`, `tollFree`, shipping `phone`/`instructions`; invoice `title`, `subhead`, "
        "`footer`, taxes and discounts; product accounts and sales taxes.",
        "",
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
