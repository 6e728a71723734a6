"""The Customerp sandbox's in-memory store: versioned records, tombstones, the change feed and idempotency keys.

Every method runs to completion without awaiting, so on uvicorn's single event loop each write is atomic.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sandboxes.customerp.validation import (
    RESOURCES,
    Problem,
    Resource,
    check_patch_keys,
    check_record,
    merge_patch,
)

ID_PREFIX: dict[Resource, str] = {"customers": "cus_", "products": "prd_", "orders": "ord_"}
# Numbers the ERP assigns when a create leaves them out; "sku" is never invented.
AUTO_NUMBER: dict[Resource, tuple[str, str]] = {"customers": ("customer_number", ""), "orders": ("order_number", "SO-")}
UNIQUE_FIELDS: dict[Resource, str] = {"customers": "customer_number", "products": "sku", "orders": "order_number"}
# Filters of GET /{resource}; True means compared case-insensitively.
LIST_FILTERS: dict[Resource, dict[str, bool]] = {
    "customers": {"email": True, "customer_number": False, "company_name": True},
    "products": {"sku": False, "name": True},
    "orders": {"order_number": False, "customer_id": False},
}
LOCKED_STATUSES = frozenset({"paid", "cancelled"})
FIELDS_EDITABLE_WHEN_LOCKED = frozenset({"status", "notes"})


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    """A problem answer (RFC 7807 style) raised anywhere below a handler."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: list[Problem] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors or []
        self.extra = extra or {}


def invalid(errors: list[Problem]) -> ApiError:
    return ApiError(422, "validation_failed", "The request body has invalid values.", errors=errors)


@dataclass
class Entry:
    """One record, live or deleted. `data` holds the writable fields, normalised, every field present."""

    id: str
    data: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime
    deleted: bool = False

    def render(self) -> dict[str, Any]:
        if self.deleted:
            return {
                "id": self.id,
                "deleted": True,
                "version": self.version,
                "updated_at": format_timestamp(self.updated_at),
            }
        return {
            "id": self.id,
            **json.loads(json.dumps(self.data)),
            "version": self.version,
            "created_at": format_timestamp(self.created_at),
            "updated_at": format_timestamp(self.updated_at),
        }

    @property
    def feed_key(self) -> tuple[datetime, str]:
        return (self.updated_at, self.id)


def encode_cursor(key: tuple[datetime, str]) -> str:
    raw = json.dumps([format_timestamp(key[0]), key[1]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, record_id = json.loads(raw)
        if not isinstance(stamp, str) or not isinstance(record_id, str):
            raise ValueError("cursor parts")
        return datetime.fromisoformat(stamp).astimezone(UTC), record_id
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this server issued.") from exc


def fingerprint(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Deliberate contract breaks, each switched on by name, so the conformance kit (wavesync/conformance.py) can be
# shown to catch them. Never set outside tests.
NONCONFORMING = frozenset(
    {
        "feed_skips_same_timestamp",  # the cursor compares updated_at only: ties at a page boundary are skipped
        "exclusive_updated_since",  # updated_since is `>` instead of `>=`
        "no_tombstones",  # deleted records vanish from the feed
        "ignores_idempotency_key",  # every create makes a new record
        "no_etag",  # records are served without an ETag
        "no_if_match",  # PATCH neither needs nor checks If-Match
        "list_ignores_filters",  # GET /{resource} lists every record whatever the filters
        "create_without_version",  # a create answers the record without its version
        "noop_write_bumps_version",  # a PATCH that changes nothing still moves version and updated_at (echo loops)
        "shallow_patch",  # PATCH replaces nested objects whole instead of merging them (RFC 7396)
        "bare_tombstones",  # tombstones in the feed lack their version
        "feed_repeats_last_item",  # the cursor compares with >=: each page starts with the last one's last item
        "feed_pages_reversed",  # the items of each feed page come newest first
        "etag_not_version",  # the ETag is the updated_at in milliseconds, not the version
        "not_found_empty_200",  # an unknown id answers 200 with an empty body
        "lenient_query",  # a malformed updated_since is ignored instead of refused
        "accepts_invalid_body",  # a create with invalid values is stored anyway
    }
)


@dataclass
class Store:
    clock: Callable[[], datetime]
    nonconforming: frozenset[str] = frozenset()
    tables: dict[Resource, dict[str, Entry]] = field(default_factory=lambda: {r: {} for r in RESOURCES})
    idempotency: dict[tuple[Resource, str], tuple[str, str]] = field(default_factory=dict)
    _sequence: dict[Resource, int] = field(default_factory=lambda: dict.fromkeys(RESOURCES, 0))
    _numbers: dict[Resource, int] = field(default_factory=lambda: dict.fromkeys(RESOURCES, 10_000))
    _high_water: datetime = field(default_factory=lambda: datetime.min.replace(tzinfo=UTC))
    # Live records' unique numbers (customer_number, sku, order_number) -> record id; keeps seeding linear.
    _unique: dict[Resource, dict[str, str]] = field(default_factory=lambda: {r: {} for r in RESOURCES})

    def reset(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.idempotency.clear()
        self._sequence = dict.fromkeys(RESOURCES, 0)
        self._numbers = dict.fromkeys(RESOURCES, 10_000)
        self._high_water = datetime.min.replace(tzinfo=UTC)
        self._unique = {r: {} for r in RESOURCES}

    # -- time and identity -------------------------------------------------------------------------------

    def _stamp(self, previous: datetime | None = None) -> datetime:
        """Commit time: never before an earlier commit, and strictly after this record's previous stamp.

        So a feed reader's cursor (updated_at, id) can never be passed by a later write, even with a frozen clock.
        """
        now = max(_utc(self.clock()), self._high_water)
        if previous is not None and now <= previous:
            now = previous + timedelta(microseconds=1)
        self._high_water = now
        return now

    def _new_id(self, resource: Resource) -> str:
        self._sequence[resource] += 1
        return f"{ID_PREFIX[resource]}{self._sequence[resource]:08d}"

    def _next_number(self, resource: Resource) -> str:
        prefix = AUTO_NUMBER[resource][1]
        while True:
            self._numbers[resource] += 1
            candidate = f"{prefix}{self._numbers[resource]}"
            if candidate not in self._unique[resource]:
                return candidate

    # -- reads -----------------------------------------------------------------------------------------

    def live(self, resource: Resource) -> Iterator[Entry]:
        return (e for e in self.tables[resource].values() if not e.deleted)

    def get(self, resource: Resource, record_id: str) -> Entry:
        entry = self.tables[resource].get(record_id)
        if entry is None or entry.deleted:
            raise ApiError(404, "not_found", f"No {resource[:-1]} with id {record_id!r}.")
        return entry

    def find(self, resource: Resource, filters: dict[str, str]) -> list[Entry]:
        casefold = LIST_FILTERS[resource]
        if "list_ignores_filters" in self.nonconforming:
            filters = {}
        matches = []
        for entry in sorted(self.live(resource), key=lambda e: e.id):
            for name, wanted in filters.items():
                value = entry.data[name]
                if casefold[name]:
                    if not isinstance(value, str) or value.casefold() != wanted.casefold():
                        break
                elif value != wanted:
                    break
            else:
                matches.append(entry)
        return matches

    def changes(
        self, resource: Resource, *, since: datetime | None, cursor: str | None, limit: int
    ) -> tuple[list[Entry], str | None, bool]:
        """Records and tombstones after the cursor (or at/after `since`), ordered by (updated_at, id)."""
        entries = sorted(self.tables[resource].values(), key=lambda e: e.feed_key)
        broken = self.nonconforming
        if "no_tombstones" in broken:
            entries = [e for e in entries if not e.deleted]
        if cursor is not None:
            after = decode_cursor(cursor)
            if "feed_skips_same_timestamp" in broken:
                entries = [e for e in entries if e.updated_at > after[0]]
            elif "feed_repeats_last_item" in broken:
                entries = [e for e in entries if e.feed_key >= after]
            else:
                entries = [e for e in entries if e.feed_key > after]
        elif since is not None:
            if "exclusive_updated_since" in broken:
                entries = [e for e in entries if e.updated_at > since]
            else:
                entries = [e for e in entries if e.updated_at >= since]
        page, has_more = entries[:limit], len(entries) > limit
        next_cursor = encode_cursor(page[-1].feed_key) if page else cursor
        if "feed_pages_reversed" in broken:
            page.reverse()
        return page, next_cursor, has_more

    # -- writes ----------------------------------------------------------------------------------------

    def create(self, resource: Resource, body: Any, *, idempotency_key: str | None = None) -> tuple[Entry, bool]:
        """Create a record; with an idempotency key already used for the same body, return that record again."""
        body_print = fingerprint(body)
        if idempotency_key is not None:
            seen = self.idempotency.get((resource, idempotency_key))
            if seen is not None:
                seen_print, record_id = seen
                if seen_print != body_print:
                    raise ApiError(
                        422,
                        "idempotency_key_reused",
                        "This Idempotency-Key was already used with a different request body.",
                    )
                entry = self.tables[resource][record_id]
                if entry.deleted:
                    raise ApiError(
                        409, "idempotency_key_record_deleted", "The record created with this key was deleted since."
                    )
                return entry, True
        record, errors = check_record(resource, body)
        if record is None or (errors and "accepts_invalid_body" not in self.nonconforming):
            raise invalid(errors)
        self._check_relations(resource, record, None)
        if resource in AUTO_NUMBER and record[AUTO_NUMBER[resource][0]] is None:
            record[AUTO_NUMBER[resource][0]] = self._next_number(resource)
        now = self._stamp()
        entry = Entry(self._new_id(resource), record, 1, now, now)
        self.tables[resource][entry.id] = entry
        self._index(resource, entry, None)
        if idempotency_key is not None:
            self.idempotency[(resource, idempotency_key)] = (body_print, entry.id)
        return entry, False

    def update(self, resource: Resource, record_id: str, patch: Any, *, if_match: int | None) -> Entry:
        """Apply a merge patch. A patch that changes nothing keeps the version and updated_at (no echo)."""
        entry = self.get(resource, record_id)
        if if_match is not None and if_match != entry.version:
            raise version_mismatch(entry)
        key_errors = check_patch_keys(resource, patch)
        if key_errors:
            raise invalid(key_errors)
        shallow = "shallow_patch" in self.nonconforming and isinstance(patch, dict)
        record, errors = check_record(resource, {**entry.data, **patch} if shallow else merge_patch(entry.data, patch))
        if record is None or errors:
            raise invalid(errors)
        if record == entry.data and "noop_write_bumps_version" not in self.nonconforming:
            return entry
        if resource == "orders" and entry.data["status"] in LOCKED_STATUSES:
            changed = {k for k in record if record[k] != entry.data[k]} - FIELDS_EDITABLE_WHEN_LOCKED
            if changed:
                raise ApiError(
                    409,
                    "order_locked",
                    f"A {entry.data['status']} order only allows changes to status and notes.",
                    errors=[Problem((name,), "cannot change on a locked order", "locked") for name in sorted(changed)],
                )
        self._check_relations(resource, record, entry.id)
        self._index(resource, entry, record)
        entry.data = record
        entry.version += 1
        entry.updated_at = self._stamp(entry.updated_at)
        return entry

    def delete(self, resource: Resource, record_id: str, *, if_match: int | None) -> Entry:
        entry = self.get(resource, record_id)
        if if_match is not None and if_match != entry.version:
            raise version_mismatch(entry)
        if resource == "customers" and any(o.data["customer_id"] == record_id for o in self.live("orders")):
            raise ApiError(409, "has_orders", "The customer has orders; delete or move them first.")
        if resource == "products" and any(
            line["product_id"] == record_id for o in self.live("orders") for line in o.data["lines"]
        ):
            raise ApiError(409, "in_use", "Order lines use this product; archive it instead.")
        self._unique[resource].pop(entry.data[UNIQUE_FIELDS[resource]], None)
        entry.deleted = True
        entry.version += 1
        entry.updated_at = self._stamp(entry.updated_at)
        return entry

    def _check_relations(self, resource: Resource, record: dict[str, Any], self_id: str | None) -> None:
        errors: list[Problem] = []
        unique = UNIQUE_FIELDS[resource]
        value = record[unique]
        if value is not None and self._unique[resource].get(value, self_id) != self_id:
            errors.append(Problem((unique,), f"{value!r} is already used by another record", "taken"))
        if resource == "orders":
            if not self._is_live("customers", record["customer_id"]):
                errors.append(Problem(("customer_id",), "no such customer", "not_found"))
            for index, line in enumerate(record["lines"]):
                product_id = line["product_id"]
                if product_id is not None and not self._is_live("products", product_id):
                    errors.append(Problem(("lines", index, "product_id"), "no such product", "not_found"))
        if errors:
            raise invalid(errors)

    def _index(self, resource: Resource, entry: Entry, new_data: dict[str, Any] | None) -> None:
        """Point the unique index at `entry`'s new number (None: index its current data)."""
        unique = UNIQUE_FIELDS[resource]
        if new_data is not None:
            self._unique[resource].pop(entry.data[unique], None)
        value = (new_data if new_data is not None else entry.data)[unique]
        if value is not None:
            self._unique[resource][value] = entry.id

    def _is_live(self, resource: Resource, record_id: Any) -> bool:
        entry = self.tables[resource].get(record_id) if isinstance(record_id, str) else None
        return entry is not None and not entry.deleted

    def snapshot(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        tombstones: dict[str, Any] = {}
        for resource in RESOURCES:
            entries = sorted(self.tables[resource].values(), key=lambda e: e.id)
            result[resource] = [e.render() for e in entries if not e.deleted]
            tombstones[resource] = [e.render() for e in entries if e.deleted]
        result["tombstones"] = tombstones
        return result


def version_mismatch(entry: Entry) -> ApiError:
    return ApiError(
        412,
        "version_mismatch",
        f"The record is at version {entry.version}; re-read it and apply the change again.",
        extra={"current_version": entry.version},
    )
