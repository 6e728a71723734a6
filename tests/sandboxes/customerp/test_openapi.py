"""The published contract (sandboxes/customerp/openapi.yaml): valid OpenAPI 3.1, consistent with the models,
the sandbox's code lists and validation specs, and honoured by the running sandbox (schemathesis)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from pydantic import BaseModel
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from sandboxes.customerp.codes import COUNTRY_CODES, CURRENCY_CODES
from sandboxes.customerp.validation import ADDRESS_SPEC, LINE_SPEC, ORDER_STATUSES, SPECS
from sandboxes.serve import ServerThread
from shared.customerp.models import Address, Customer, Order, OrderLine, Product, Tombstone
from tests.sandboxes.customerp.conftest import API_KEY

OPENAPI_PATH = str(files("sandboxes.customerp").joinpath("openapi.yaml"))
DOC: dict[str, Any] = yaml.safe_load(Path(OPENAPI_PATH).read_text(encoding="utf-8"))
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
READ_ONLY = {"id", "version", "created_at", "updated_at"}


def test_document_is_valid_openapi_3_1() -> None:
    OPENAPI_31_VALIDATOR.validate(DOC)
    assert DOC["openapi"].startswith("3.1")


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_compiles_as_json_schema_2020_12(name: str) -> None:
    validator = jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    )
    assert validator is not None


@pytest.mark.parametrize(
    ("schema", "model"),
    [
        ("Customer", Customer),
        ("Product", Product),
        ("Order", Order),
        ("OrderLine", OrderLine),
        ("Address", Address),
        ("Tombstone", Tombstone),
    ],
)
def test_record_schemas_have_the_model_fields(schema: str, model: type[BaseModel]) -> None:
    assert set(SCHEMAS[schema]["properties"]) == set(model.model_fields)


@pytest.mark.parametrize(
    ("resource", "name"), [("customers", "Customer"), ("products", "Product"), ("orders", "Order")]
)
def test_write_schemas_list_exactly_the_writable_fields(resource: str, name: str) -> None:
    writable = set(SCHEMAS[name]["properties"]) - READ_ONLY
    specs = SPECS[resource]  # type: ignore[index]

    assert set(SCHEMAS[f"{name}Create"]["properties"]) == writable == set(specs)
    assert set(SCHEMAS[f"{name}Patch"]["properties"]) == writable
    assert set(SCHEMAS[f"{name}Create"]["required"]) == {k for k, spec in specs.items() if spec.required}
    assert set(SCHEMAS[name]["required"]) == set(SCHEMAS[name]["properties"])
    assert SCHEMAS[f"{name}Create"]["additionalProperties"] is False


def test_nested_schemas_match_the_sandbox_specs() -> None:
    assert set(SCHEMAS["Address"]["properties"]) == set(ADDRESS_SPEC)
    assert set(SCHEMAS["OrderLine"]["properties"]) == set(LINE_SPEC)
    assert tuple(SCHEMAS["OrderStatus"]["enum"]) == ORDER_STATUSES


def test_code_lists_match_the_sandbox() -> None:
    assert set(SCHEMAS["CountryCode"]["enum"]) == COUNTRY_CODES
    assert set(SCHEMAS["CurrencyCode"]["enum"]) == CURRENCY_CODES


# --- the running sandbox against the document -------------------------------------------------------------

# Missing If-Match is 428 Precondition Required (RFC 6585), a legitimate answer to a missing required header.
# Schema-valid requests may still be refused: the contract has rules a schema cannot say (cursors the server
# issued, references to live records, due_date >= order_date), so "positive data acceptance" is not checked.
CONFIG = SchemathesisConfig.from_str(
    """
[checks.missing_required_header]
expected-statuses = [400, 401, 403, 406, 415, 422, 428]

[checks.positive_data_acceptance]
enabled = false

[phases.coverage]
enabled = false

[generation]
mode = "all"
max-examples = 12
deterministic = true
"""
)
SCHEMA = schemathesis.openapi.from_path(OPENAPI_PATH, config=CONFIG)


@pytest.fixture(scope="module")
def contract_server(sandbox: ServerThread) -> ServerThread:
    with httpx.Client(base_url=sandbox.url) as http:
        http.post("/_admin/reset").raise_for_status()
        http.post("/_admin/seed", json={"customers": 3, "products": 3, "orders": 3, "seed": 1}).raise_for_status()
    return sandbox


@SCHEMA.parametrize()
@settings(
    max_examples=12,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_sandbox_honours_the_contract(case: schemathesis.Case[Any], contract_server: ServerThread) -> None:
    # Status codes, content types, headers and bodies must match the document, and nothing may answer 500.
    case.call_and_validate(base_url=contract_server.url, headers={"X-API-Key": API_KEY})
