"""Wave's public schema for reference: the vendored 2021 introspection with the 2026 input types laid over it.

The two dumps live untouched in `reference/` beside this module (where they came from: `reference/SOURCE.md`;
`make refresh-wave-schema` fetches them again). Neither is complete alone: the 2021 dump has every object type but
old inputs; the 2026 one has only input types and enums, among them `InvoicePatchInput`. The merge takes the 2021
schema, replaces its enums and input types with the 2026 ones, drops input fields whose type neither dump defines,
and adds the `invoicePatch` mutation, whose output follows Wave's uniform `{<entity>, didSucceed, inputErrors}`.
Read by the contract tests and `build_schema` only, never at run time.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from graphql import GraphQLSchema, build_client_schema

REFERENCE_DIR = Path(__file__).with_name("reference")
BASE_FILE = "schema-2021.introspection.json"
OVERLAY_FILE = "input-types-2026.json"

_BUILTIN_SCALARS = frozenset({"String", "ID", "Int", "Boolean", "Float"})


def _named(type_ref: dict[str, Any]) -> str:
    while type_ref.get("ofType"):
        type_ref = type_ref["ofType"]
    name: str = type_ref["name"]
    return name


def _type(kind: str, name: str | None = None, of: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": kind, "name": name, "ofType": of}


def _field(name: str, type_ref: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "description": None,
        "args": [],
        "type": type_ref,
        "isDeprecated": False,
        "deprecationReason": None,
    }


def _invoice_patch(types: dict[str, dict[str, Any]]) -> None:
    """Add `invoicePatch` (in Wave since after 2021) when the base schema lacks it."""
    mutation = types["Mutation"]
    if any(f["name"] == "invoicePatch" for f in mutation["fields"]):
        return
    boolean = _type("NON_NULL", of=_type("SCALAR", "Boolean"))
    errors = _type("LIST", of=_type("NON_NULL", of=_type("OBJECT", "InputError")))
    types["InvoicePatchOutput"] = {
        "kind": "OBJECT",
        "name": "InvoicePatchOutput",
        "description": "Output of the `invoicePatch` mutation (shape inferred from Wave's payload pattern).",
        "fields": [
            _field("invoice", _type("OBJECT", "Invoice")),
            _field("didSucceed", boolean),
            _field("inputErrors", errors),
        ],
        "inputFields": None,
        "interfaces": [],
        "enumValues": None,
        "possibleTypes": None,
    }
    argument = {
        "name": "input",
        "description": None,
        "defaultValue": None,
        "type": _type("NON_NULL", of=_type("INPUT_OBJECT", "InvoicePatchInput")),
    }
    patch = _field("invoicePatch", _type("NON_NULL", of=_type("OBJECT", "InvoicePatchOutput")))
    patch |= {"description": "Patch an invoice (exists in 2026; not in the 2021 dump).", "args": [argument]}
    mutation["fields"].append(patch)


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The merged introspection result (`{"__schema": ...}`) and what the overlay had to leave out, as text."""
    merged: dict[str, Any] = copy.deepcopy(base["data"])
    types: dict[str, dict[str, Any]] = {t["name"]: t for t in merged["__schema"]["types"]}
    left_out: list[str] = []
    for name, enum in overlay["enums"].items():
        values = [{"isDeprecated": False, "deprecationReason": None, **v} for v in enum.get("enumValues", [])]
        types[name] = enum | {"kind": "ENUM", "fields": None, "inputFields": None, "interfaces": None}
        types[name] |= {"possibleTypes": None, "enumValues": values}
    inputs: dict[str, dict[str, Any]] = overlay["input_types"]
    known = set(types) | set(inputs) | _BUILTIN_SCALARS
    for name, source in inputs.items():
        fields = []
        for field in source["inputFields"]:
            if _named(field["type"]) in known:
                fields.append(field)
            else:
                left_out.append(f"{name}.{field['name']} (type {_named(field['type'])} not in the dumps)")
        types[name] = source | {"kind": "INPUT_OBJECT", "inputFields": fields, "fields": None, "interfaces": None}
        types[name] |= {"possibleTypes": None, "enumValues": None}
    # An overlay input may name an input type that only the overlay mentions and never defines: drop such fields.
    for named in types.values():
        if named["kind"] != "INPUT_OBJECT":
            continue
        kept = [f for f in named["inputFields"] if _named(f["type"]) in types or _named(f["type"]) in _BUILTIN_SCALARS]
        left_out += [
            f"{named['name']}.{f['name']} (dangling type {_named(f['type'])})"
            for f in named["inputFields"]
            if f not in kept
        ]
        named["inputFields"] = kept
    _invoice_patch(types)
    merged["__schema"]["types"] = list(types.values())
    return merged, left_out


def load_reference_introspection(reference_dir: Path = REFERENCE_DIR) -> dict[str, Any]:
    """The merged reference introspection built from the two vendored dumps."""
    base = json.loads((reference_dir / BASE_FILE).read_text(encoding="utf-8"))
    overlay = json.loads((reference_dir / OVERLAY_FILE).read_text(encoding="utf-8"))
    introspection, _left_out = merge(base, overlay)
    return introspection


def load_reference_schema(reference_dir: Path = REFERENCE_DIR) -> GraphQLSchema:
    introspection: Any = load_reference_introspection(reference_dir)
    return build_client_schema(introspection)
