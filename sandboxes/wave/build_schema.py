"""Builds `schema.graphql`, the sandbox's SDL, as a subset of the reference Wave schema (run once, commit the result).

Usage, from the repository root: `python -m sandboxes.wave.build_schema > sandboxes/wave/schema.graphql`.
The reference is Wave's public schema vendored in `reference/` (sandboxes/wave/reference_schema.py merges it);
a contract test re-runs `build_sdl` on it and compares with the committed file, so the subset can never drift from
Wave's names and types.
"""

from __future__ import annotations

import sys
from typing import Any

from graphql import build_client_schema, print_schema

from sandboxes.wave.reference_schema import load_reference_introspection

ALL = ("*",)

# Type name -> the fields (object types) or input fields (input types) the sandbox implements; ALL keeps
# every field. Enums and scalars are kept whole. Everything reachable must be listed here.
SUBSET: dict[str, tuple[str, ...]] = {
    "Query": ("business", "businesses", "user"),
    "User": ALL,
    "BusinessConnection": ALL,
    "BusinessEdge": ALL,
    "Mutation": (
        "customerCreate",
        "customerPatch",
        "customerDelete",
        "productCreate",
        "productPatch",
        "productArchive",
        "invoiceCreate",
        "invoicePatch",
        "invoiceDelete",
        "invoiceApprove",
        "invoiceMarkSent",
        "invoiceSend",
    ),
    "Business": (
        "id",
        "name",
        "currency",
        "timezone",
        "isPersonal",
        "isClassicAccounting",
        "isClassicInvoicing",
        "isArchived",
        "createdAt",
        "modifiedAt",
        "account",
        "accounts",
        "customer",
        "customers",
        "product",
        "products",
        "invoice",
        "invoices",
    ),
    "Customer": (
        "id",
        "name",
        "address",
        "firstName",
        "lastName",
        "displayId",
        "email",
        "mobile",
        "phone",
        "fax",
        "tollFree",
        "website",
        "internalNotes",
        "currency",
        "shippingDetails",
        "createdAt",
        "modifiedAt",
        "isArchived",
    ),
    "Address": ALL,
    "Province": ("code", "name"),
    "Country": ("code", "name"),
    "CustomerShippingDetails": ALL,
    "Currency": ("code", "name", "exponent"),
    "Product": (
        "id",
        "name",
        "description",
        "unitPrice",
        "isSold",
        "isBought",
        "isArchived",
        "createdAt",
        "modifiedAt",
        "incomeAccount",
        "expenseAccount",
    ),
    "Account": ("id", "name", "description", "type", "subtype", "normalBalanceType", "isArchived"),
    "AccountType": ALL,
    "AccountSubtype": ("name", "value"),
    "Invoice": (
        "id",
        "customer",
        "createdAt",
        "modifiedAt",
        "pdfUrl",
        "viewUrl",
        "status",
        "title",
        "subhead",
        "invoiceNumber",
        "poNumber",
        "invoiceDate",
        "dueDate",
        "amountDue",
        "amountPaid",
        "taxTotal",
        "total",
        "currency",
        "exchangeRate",
        "items",
        "memo",
        "footer",
        "disableCreditCardPayments",
        "disableBankPayments",
        "disableAmexPayments",
        "itemTitle",
        "unitTitle",
        "priceTitle",
        "amountTitle",
        "hideName",
        "hideDescription",
        "hideUnit",
        "hidePrice",
        "hideAmount",
        "lastSentAt",
        "lastSentVia",
        "lastViewedAt",
    ),
    "InvoiceItem": ("product", "description", "quantity", "price", "unitPrice", "subtotal", "total"),
    "Money": ALL,
    "OffsetPageInfo": ALL,
    "InputError": ALL,
    "AccountConnection": ALL,
    "AccountEdge": ALL,
    "CustomerConnection": ALL,
    "CustomerEdge": ALL,
    "ProductConnection": ALL,
    "ProductEdge": ALL,
    "InvoiceConnection": ALL,
    "InvoiceEdge": ALL,
    "CustomerCreateOutput": ALL,
    "CustomerPatchOutput": ALL,
    "CustomerDeleteOutput": ALL,
    "ProductCreateOutput": ALL,
    "ProductPatchOutput": ALL,
    "ProductArchiveOutput": ALL,
    "InvoiceCreateOutput": ALL,
    "InvoicePatchOutput": ALL,
    "InvoiceDeleteOutput": ALL,
    "InvoiceApproveOutput": ALL,
    "InvoiceMarkSentOutput": ALL,
    "InvoiceSendOutput": ALL,
    "CustomerCreateInput": ALL,
    "CustomerPatchInput": ALL,
    "CustomerDeleteInput": ALL,
    "AddressInput": ALL,
    "CustomerShippingDetailsInput": ALL,
    "CustomerPatchShippingDetailsInput": ALL,
    "ProductCreateInput": ALL,
    "ProductPatchInput": ALL,
    "ProductArchiveInput": ALL,
    "InvoiceCreateInput": ALL,
    "InvoicePatchInput": ALL,
    "InvoiceCreateItemInput": ALL,
    "InvoiceCreateItemTaxInput": ALL,
    "InvoiceDeleteInput": ALL,
    "InvoiceApproveInput": ALL,
    "InvoiceMarkSentInput": ALL,
    "InvoiceSendInput": ALL,
}

# Fields left out on purpose although their type is listed (the sandbox has no discounts).
OMITTED_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {("InvoiceCreateInput", "discounts"), ("InvoicePatchInput", "discounts")}
)

_BUILTIN_SCALARS = {"String", "ID", "Int", "Float", "Boolean"}


def _named(type_ref: dict[str, Any]) -> str:
    while type_ref.get("ofType"):
        type_ref = type_ref["ofType"]
    name: str = type_ref["name"]
    return name


def build_introspection_subset(reference: dict[str, Any]) -> dict[str, Any]:
    """Cut the reference introspection result down to SUBSET; fail loudly on a dangling reference."""
    types = {t["name"]: t for t in reference["__schema"]["types"]}
    kept: dict[str, dict[str, Any]] = {}
    for name, wanted in SUBSET.items():
        source = dict(types[name])
        key = "inputFields" if source["kind"] == "INPUT_OBJECT" else "fields"
        fields = [
            f for f in source[key] if (wanted == ALL or f["name"] in wanted) and (name, f["name"]) not in OMITTED_FIELDS
        ]
        missing = set(wanted) - {f["name"] for f in fields} - {"*"}
        if missing:
            raise KeyError(f"{name} has no fields {sorted(missing)} in the reference")
        source[key] = fields
        if source["kind"] == "OBJECT":
            source["interfaces"] = []  # Node/BusinessNode need `business`, which the sandbox does not expose
        kept[name] = source
    pending = list(kept.values())
    while pending:
        t = pending.pop()
        refs = [f["type"] for f in (t.get("fields") or []) + (t.get("inputFields") or [])]
        refs += [a["type"] for f in (t.get("fields") or []) for a in f["args"]]
        for ref in refs:
            name = _named(ref)
            if name in kept or name in _BUILTIN_SCALARS:
                continue
            if types[name]["kind"] not in ("ENUM", "SCALAR"):
                raise KeyError(f"{t['name']} refers to {name}, which SUBSET does not list")
            kept[name] = types[name]
            pending.append(types[name])
    schema = dict(reference["__schema"])
    builtin = _BUILTIN_SCALARS
    schema["types"] = [
        kept.get(t["name"], t)
        for t in reference["__schema"]["types"]
        if t["name"] in kept or t["name"].startswith("__") or t["name"] in builtin
    ]
    schema["subscriptionType"] = None
    schema["directives"] = [d for d in schema.get("directives", []) if d["name"] in ("include", "skip", "deprecated")]
    return {"__schema": schema}


def build_sdl(reference: dict[str, Any]) -> str:
    """The SDL text of the subset, exactly as committed in schema.graphql."""
    header = (
        "# Wave public GraphQL API: the subset the wavesync sandbox implements.\n"
        "# Generated by sandboxes/wave/build_schema.py from the reference dumps; do not edit by hand.\n\n"
    )
    subset: Any = build_introspection_subset(reference)
    return header + print_schema(build_client_schema(subset)) + "\n"


def main() -> None:
    sys.stdout.write(build_sdl(load_reference_introspection()))


if __name__ == "__main__":
    main()
