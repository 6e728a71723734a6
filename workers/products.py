"""The `products` queue: Customerp Product ⇄ Wave Product."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.errors import FieldError, ForbiddenEditError, InvalidDataError, NotFoundError, PermanentError
from shared.mapping import products as mapping
from shared.mapping.fields import Canonical
from shared.messages import ChangeMessage, System
from shared.natural_keys import NaturalKeyIndex, normalise_key
from workers.base import SyncTask
from workers.engine import Flow, Record, is_repeat, sync_message


def name_index(ctx: Context) -> NaturalKeyIndex:
    return NaturalKeyIndex(ctx.redis, "products", "name")


_income_accounts: dict[str, str] = {}


def income_account(ctx: Context) -> str:
    """WAVESYNC_WAVE_INCOME_ACCOUNT_ID, or the business's first income account (looked up once per process)."""
    configured = ctx.settings.wave_income_account_id
    if configured:
        return configured
    business = ctx.settings.wave_business_id
    if business not in _income_accounts:
        accounts = ctx.wave.list_accounts(["INCOME"])
        if not accounts:
            raise PermanentError(
                "the Wave business has no income account: create one, or set WAVESYNC_WAVE_INCOME_ACCOUNT_ID",
                system="wave",
            )
        _income_accounts[business] = accounts[0].id
    return _income_accounts[business]


class ProductFlow(Flow):
    entity = "products"
    fields = mapping.FIELDS

    def canonical(self, ctx: Context, system: System, record: Record) -> Canonical:
        if system == "customerp":
            currency = record.get("currency")
            if currency and currency.upper() != ctx.settings.wave_currency:
                raise InvalidDataError(
                    f"product {record.get('sku') or record['id']} is priced in {currency}, but Wave prices products "
                    f"in the business currency {ctx.settings.wave_currency}",
                    system="customerp",
                    field_errors=[FieldError(("currency",), f"must be {ctx.settings.wave_currency}", "currency")],
                )
        return super().canonical(ctx, system, record)

    def should_create(self, canonical: Canonical) -> bool:
        # An archived product with no partner is history, not something to start selling on the other side;
        # this also keeps a product deleted in Customerp (archived in Wave) from coming back.
        return not canonical.get("archived")

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = super().customerp_body(ctx, canonical, changed)
        if changed is None:
            body["currency"] = ctx.settings.wave_currency
        return body

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        if target == "wave" and canonical.get("archived") and not record.get("isArchived"):
            return ctx.wave.archive_product(record["id"]).model_dump(mode="json", by_alias=True)
        return record

    def wave_read(self, ctx: Context, wave_id: str) -> Record:
        return ctx.wave.get_product(wave_id).model_dump(mode="json", by_alias=True)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> Record | None:
        """By name: Wave products have no SKU."""
        name = canonical.get("name")
        if not name:
            return None
        if since is not None:
            for product in ctx.wave.iter_products(modified_after=since, archived=None):
                record = product.model_dump(mode="json", by_alias=True)
                if normalise_key(record["name"]) == normalise_key(name):
                    return record
            return None
        wave_id = name_index(ctx).get(name)
        if wave_id:
            try:
                record = self.wave_read(ctx, wave_id)
            except NotFoundError:
                return None
            # An archived Wave product is history (often one deleted in Customerp): a live product of the same
            # name is a new product, not that one coming back (Wave's API cannot un-archive it).
            if record.get("isArchived") and not canonical.get("archived"):
                return None
            return record
        return None

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Record | None:
        if canonical.get("name"):
            found = ctx.customerp.find("products", name=canonical["name"])
            if found:
                return found[0].model_dump(mode="json")
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> Record:
        # Wave only offers a product on invoices when it has an income account (isSold).
        created = ctx.wave.create_product(
            {**self.wave_input(ctx, canonical, None), "incomeAccountId": income_account(ctx)}
        )
        record = created.model_dump(mode="json", by_alias=True)
        if canonical.get("archived"):
            record = ctx.wave.archive_product(record["id"]).model_dump(mode="json", by_alias=True)
        name_index(ctx).put(record["name"], record["id"])
        return record

    def wave_update(self, ctx: Context, record: Record, canonical: Canonical, changed: set[str]) -> Record:
        if "archived" in changed and not canonical.get("archived"):
            raise ForbiddenEditError(
                f"the Wave product {record['name']!r} is archived and Wave's API cannot un-archive it: restore it in "
                "Wave's web app (Products & Services), then replay this dead letter",
                system="wave",
                field_errors=[FieldError(("archived",), "cannot be un-archived through the API", "archived")],
            )
        fields = changed - {"archived"}
        if fields:
            record = ctx.wave.patch_product(record["id"], self.wave_input(ctx, canonical, fields)).model_dump(
                mode="json", by_alias=True
            )
            name_index(ctx).put(record["name"], record["id"])
        if "archived" in changed:
            record = ctx.wave.archive_product(record["id"]).model_dump(mode="json", by_alias=True)
        return record

    def wave_delete(self, ctx: Context, record: Record) -> None:
        # Wave has no productDelete: archiving is its deletion.
        if not record.get("isArchived"):
            ctx.wave.archive_product(record["id"])


FLOW = ProductFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["products"])
def sync_product(self: SyncTask, message: dict[str, Any], failures: int = 0) -> str:
    return sync_message(self.ctx, FLOW, ChangeMessage.model_validate(message), repeat=is_repeat(self.request))
