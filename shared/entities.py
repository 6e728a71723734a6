"""What each synced entity is, whoever reads it: fields, identity, canonical form, match keys, references, creation
policy and the checks before a write. Pure: no I/O. Workers and reconcile use the same definitions.

A canonical record refers to other records (an order's customer and products) by ids of the system it was read
from; `shared/refs.py` translates them through the links, so that every canonical record the sync compares uses
Customerp's ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.errors import FieldError, ForbiddenEditError, InvalidDataError
from shared.mapping import customers, orders, products
from shared.mapping.fields import Canonical, FieldMap, FieldValueError, canonical_from
from shared.merge import Resolver, is_empty
from shared.messages import System
from shared.settings import Entity, Settings


@dataclass(frozen=True)
class Options:
    """The settings a canonical form or a check depends on."""

    currency: str = "USD"
    fallback_product_id: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> Options:
        return cls(settings.wave_currency, settings.fallback_product_id)


@dataclass(frozen=True)
class Reference:
    """A field naming a record of another entity: `("customer",)`, or `("lines", "product")` in each line."""

    entity: Entity
    path: tuple[str, ...]


@dataclass(frozen=True)
class EntityDef:
    name: Entity
    fields: tuple[FieldMap, ...]
    # Fields that tell a record made by a create from the values sent (other fields may have moved on since).
    identity: tuple[str, ...] = ("name",)
    # The natural key each system holds (onboarding matches by it; reconcile counts duplicates by it).
    natural_key: Mapping[System, str] = field(default_factory=dict)
    # Fields whose conflicts follow a rule of their own, over the conflict policy.
    resolvers: Mapping[str, Resolver] = field(default_factory=dict)
    references: tuple[Reference, ...] = ()

    def canonical(self, system: System, record: Mapping[str, Any], options: Options) -> Canonical:
        """The record as the sync compares it (references still in `system`'s ids)."""
        try:
            return canonical_from(record, self.fields, system)
        except FieldValueError as exc:
            raise unreadable(self.name, system, exc, exc.path) from None

    def wanted(self, canonical: Mapping[str, Any]) -> bool:
        """Whether a record with no partner gets one made (where creation is switched on)."""
        return True

    def check(self, target: System, canonical: Mapping[str, Any], options: Options) -> None:
        """Refuse, before any write, what `target` would reject or misrepresent."""

    def holds(self, record: Mapping[str, Any], sent: Mapping[str, Any]) -> bool:
        """Whether `record` may be what a create of `sent` made: it has each identifying value `sent` has."""
        return all(record.get(name) == sent[name] for name in self.identity if not is_empty(sent.get(name)))


def unreadable(entity: str, system: System, exc: Exception, path: tuple[str, ...]) -> InvalidDataError:
    return InvalidDataError(
        f"{entity} {system} value cannot be read: {exc}",
        system=system,
        field_errors=[FieldError(path, str(exc), "unreadable")],
    )


def creation_enabled(settings: Settings, entity: Entity, target: System) -> bool:
    return entity in (settings.create_in_wave if target == "wave" else settings.create_in_customerp)


class _Products(EntityDef):
    def canonical(self, system: System, record: Mapping[str, Any], options: Options) -> Canonical:
        currency = record.get("currency") if system == "customerp" else None
        if currency and currency.upper() != options.currency:
            raise InvalidDataError(
                f"product {record.get('sku') or record['id']} is priced in {currency}, but Wave prices products "
                f"in the business currency {options.currency}",
                system="customerp",
                field_errors=[FieldError(("currency",), f"must be {options.currency}", "currency")],
            )
        return super().canonical(system, record, options)

    def wanted(self, canonical: Mapping[str, Any]) -> bool:
        # An archived product with no partner is history, not something to start selling on the other side; this
        # also keeps a product deleted in Customerp (archived in Wave) from coming back.
        return not canonical.get("archived")


def later_status(customerp: Any, wave: Any) -> Any:
    """An order's status only moves forward (Wave cannot move an invoice back): of two edits, the later stage wins."""
    return max((customerp, wave), key=lambda status: orders.STATUS_RANK.get(status, -1))


class _Orders(EntityDef):
    def canonical(self, system: System, record: Mapping[str, Any], options: Options) -> Canonical:
        canonical = super().canonical(system, record, options)
        container = "lines" if system == "customerp" else "items"
        canonical["lines"] = []
        for index, line in enumerate(record.get(container) or []):
            try:
                canonical["lines"].append(canonical_from(line, orders.LINE_FIELDS, system))
            except FieldValueError as exc:
                raise unreadable("order line", system, exc, (container, str(index), *exc.path)) from None
        if system == "wave":
            canonical["status"] = orders.wave_status(record.get("status"), record.get("lastSentAt"))
            for line in canonical["lines"]:
                if options.fallback_product_id and line.get("product") == options.fallback_product_id:
                    line["product"] = None  # a free-text line, given Wave's required product
        return canonical

    def check(self, target: System, canonical: Mapping[str, Any], options: Options) -> None:
        if target != "wave":
            return
        errors = [
            FieldError(("lines", str(index), "product_id"), "Wave requires a product on every invoice line", "required")
            for index, line in enumerate(canonical.get("lines") or [])
            if not line.get("product") and not options.fallback_product_id
        ]
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


CUSTOMERS = EntityDef(
    "customers",
    customers.FIELDS,
    identity=("name", "email", "number"),
    natural_key={"customerp": "email", "wave": "email"},
)
PRODUCTS = _Products("products", products.FIELDS, natural_key={"customerp": "name", "wave": "name"})
ORDERS = _Orders(
    "orders",
    orders.FIELDS,
    identity=("number", "customer"),
    natural_key={"customerp": "order_number", "wave": "invoiceNumber"},
    resolvers={"status": later_status},
    references=(Reference("customers", ("customer",)), Reference("products", ("lines", "product"))),
)
DEFINITIONS: dict[Entity, EntityDef] = {d.name: d for d in (CUSTOMERS, PRODUCTS, ORDERS)}
