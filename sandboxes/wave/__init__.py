"""A faithful fake of Wave's public GraphQL API (customers, products, invoices) for tests and demos."""

from sandboxes.wave.app import GRAPHQL_PATH, WaveSandbox, create_app
from sandboxes.wave.config import (
    DEFAULT_BUSINESS_UUID,
    DEFAULT_TOKEN,
    BusinessConfig,
    InvoiceRules,
    ManualClock,
    WaveSandboxConfig,
)
from sandboxes.wave.ids import business_id, parse_record_id, record_id

DEFAULT_BUSINESS_ID = business_id(DEFAULT_BUSINESS_UUID)

__all__ = [
    "DEFAULT_BUSINESS_ID",
    "DEFAULT_BUSINESS_UUID",
    "DEFAULT_TOKEN",
    "GRAPHQL_PATH",
    "BusinessConfig",
    "InvoiceRules",
    "ManualClock",
    "WaveSandbox",
    "WaveSandboxConfig",
    "business_id",
    "create_app",
    "parse_record_id",
    "record_id",
]
