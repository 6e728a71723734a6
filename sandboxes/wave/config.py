"""Configuration of the Wave sandbox: businesses, tokens, page-size cap, invoice rules, clock and faults.

Every behaviour the reference notes mark UNVERIFIED is a knob here; the defaults are the choices documented in
sandboxes/wave/README.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from sandboxes.faults import FaultConfig
from sandboxes.wave.oauth import OAuthSandboxConfig

DEFAULT_BUSINESS_UUID = "1da2a177-7868-46c1-8339-3c867ed2edd9"
DEFAULT_TOKEN = "wave-sandbox-token"  # noqa: S105 - the well-known token of a local fake


def utc_now() -> datetime:
    return datetime.now(UTC)


class ManualClock:
    """A clock tests move by hand: `clock = ManualClock(start); clock.advance(seconds=5)`. Thread-safe."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 1, 15, 9, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float = 0.0, *, days: float = 0.0) -> datetime:
        with self._lock:
            self._now += timedelta(seconds=seconds, days=days)
            return self._now

    def set(self, now: datetime) -> None:
        with self._lock:
            self._now = now


@dataclass(frozen=True)
class BusinessConfig:
    uuid: str = DEFAULT_BUSINESS_UUID
    name: str = "Sandbox Trading Ltd"
    currency: str = "USD"
    timezone: str = "America/Toronto"
    is_archived: bool = False
    # Wave's invoice API "requires `isClassicInvoicing` to be `false`"; the sandbox reports the flag (wavesync
    # doctor checks it) but serves invoices either way.
    is_classic_invoicing: bool = False


@dataclass(frozen=True)
class InvoiceRules:
    """Which invoice edits Wave refuses (UNVERIFIED upstream; defaults follow the reference notes §8.4)."""

    payment_terms_days: int = 30  # dueDate default = invoiceDate + this
    unique_invoice_numbers: bool = True  # duplicate invoiceNumber -> inputErrors code DUPLICATE
    forbid_patch_when_paid: bool = True  # invoicePatch refused once amountPaid > 0 (code INVALID_STATE)
    forbid_delete_when_paid: bool = True  # invoiceDelete refused while payments exist (code INVALID_STATE)
    forbid_patch_statuses: frozenset[str] = frozenset()  # e.g. {"SENT", "VIEWED"} for the stricter reading
    forbid_delete_statuses: frozenset[str] = frozenset()
    default_title: str = "Invoice"


@dataclass(frozen=True)
class WaveSandboxConfig:
    businesses: tuple[BusinessConfig, ...] = (BusinessConfig(),)
    tokens: frozenset[str] = frozenset({DEFAULT_TOKEN})
    # Wave's docs show error bodies only. Apollo-style servers answer a failed login with 200 + UNAUTHENTICATED,
    # proxies and other clients expect 401: both are supported, 200 is the default.
    auth_failure_status: int = 200
    # HTTP status for GRAPHQL_PARSE_FAILED / GRAPHQL_VALIDATION_FAILED / BAD_USER_INPUT (no Wave evidence: 200).
    validation_error_status: int = 200
    max_page_size: int = 200
    page_size_overflow: Literal["clamp", "error"] = "clamp"
    invoice_rules: InvoiceRules = field(default_factory=InvoiceRules)
    allow_negative_product_price: bool = False
    # An unknown id in a mutation's own `id`/`invoiceId`: a top-level NOT_FOUND error (default, like queries) or
    # didSucceed=false with an inputError coded NOT_FOUND on that path.
    unknown_target_id: Literal["top_level", "input_error"] = "top_level"
    faults: FaultConfig = field(default_factory=FaultConfig)
    clock: Callable[[], datetime] = utc_now
    # OAuth2 endpoints (`/oauth2/authorize/`, `/oauth2/token/`; sandboxes/wave/oauth.py): their access tokens are
    # accepted beside `tokens`. The default serves them with a well-known client; None switches them off.
    oauth: OAuthSandboxConfig | None = field(default_factory=OAuthSandboxConfig)
    # Response shapes captured from the real API (reference notes §16) are the default: an empty list reports
    # totalPages 1, Decimals come unpadded ("100", "10.5"), unset customer strings come back as "". True restores
    # the sandbox's earlier forms (totalPages 0, "100.00", null) so clients can be proven against both.
    legacy_shapes: bool = False
