"""The `products` queue: Customerp Product ⇄ Wave Product."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.customerp.models import Product
from shared.entities import PRODUCTS
from shared.errors import FieldError, ForbiddenEditError, PermanentError
from shared.mapping.fields import Canonical
from shared.messages import ChangeMessage, System
from shared.natural_keys import normalise_key
from shared.wave.models import WaveProduct
from workers.base import SyncTask, is_repeat
from workers.engine import sync
from workers.flow import Flow, Record

_income_accounts: dict[str, str] = {}
# One thread looks the account up while the others wait for its answer: without it, every thread's first product
# create of a worker's life listed the accounts itself. While Wave fails, the waiting threads then try one after
# another, each up to an HTTP timeout; their creates could not have gone through meanwhile anyway.
_income_accounts_lookup = threading.Lock()


def income_account(ctx: Context) -> str:
    """WAVESYNC_WAVE_INCOME_ACCOUNT_ID, or the business's first income account (looked up once per process)."""
    configured = ctx.settings.wave_income_account_id
    if configured:
        return configured
    business = ctx.settings.wave_business_id
    with _income_accounts_lookup:
        if business in _income_accounts:
            return _income_accounts[business]
        accounts = ctx.wave.list_accounts(["INCOME"])
        if not accounts:
            raise PermanentError(
                "the Wave business has no income account: create one, or set WAVESYNC_WAVE_INCOME_ACCOUNT_ID",
                system="wave",
            )
        _income_accounts[business] = accounts[0].id
        return _income_accounts[business]


class ProductFlow(Flow[WaveProduct]):
    definition = PRODUCTS
    models = {"customerp": Product, "wave": WaveProduct}

    def customerp_body(self, ctx: Context, canonical: Canonical, changed: set[str] | None) -> dict[str, Any]:
        body = super().customerp_body(ctx, canonical, changed)
        if changed is None:
            body["currency"] = ctx.settings.wave_currency
        return body

    def finish_create(self, ctx: Context, target: System, record: Record, canonical: Canonical) -> Record:
        if isinstance(record, WaveProduct) and canonical.get("archived") and not record.is_archived:
            return ctx.wave.archive_product(record.id)
        return record

    def wave_read(self, ctx: Context, wave_id: str) -> WaveProduct:
        return ctx.wave.get_product(wave_id)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> WaveProduct | None:
        """By name: Wave products have no SKU."""
        name = canonical.get("name")
        if not name:
            return None
        if since is not None:
            products = ctx.wave.iter_products(modified_after=since, archived=None)
            return next((p for p in products if normalise_key(p.name) == normalise_key(name)), None)

        def same(record: WaveProduct) -> bool:
            # An archived Wave product is history (often one deleted in Customerp): a live product of the same name
            # is a new product, not that one coming back (Wave's API cannot un-archive it).
            archived_for_live = record.is_archived and not canonical.get("archived")
            return normalise_key(record.name) == normalise_key(name) and not archived_for_live

        return self.wave_match_by_keys(ctx, {"name": name}, same)

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Product | None:
        if canonical.get("name"):
            found = ctx.customerp.find("products", name=canonical["name"])
            if found:
                return found[0]
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> WaveProduct:
        # Wave only offers a product on invoices when it has an income account (isSold).
        record = ctx.wave.create_product(
            {**self.wave_input(ctx, canonical, None), "incomeAccountId": income_account(ctx)}
        )
        if canonical.get("archived"):
            record = ctx.wave.archive_product(record.id)
        return record

    def wave_update(self, ctx: Context, record: WaveProduct, canonical: Canonical, changed: set[str]) -> WaveProduct:
        if "archived" in changed and not canonical.get("archived"):
            raise ForbiddenEditError(
                f"the Wave product {record.name!r} is archived and Wave's API cannot un-archive it: restore it in "
                "Wave's web app (Products & Services), then replay this dead letter",
                system="wave",
                field_errors=[FieldError(("archived",), "cannot be un-archived through the API", "archived")],
            )
        fields = changed - {"archived"}
        if fields:
            record = ctx.wave.patch_product(record.id, self.wave_input(ctx, canonical, fields))
        if "archived" in changed:
            record = ctx.wave.archive_product(record.id)
        ctx.wave_keys.put_record("products", record)
        return record

    def wave_delete(self, ctx: Context, record: WaveProduct) -> None:
        # Wave has no productDelete: archiving is its deletion.
        if not record.is_archived:
            ctx.wave.archive_product(record.id)


FLOW = ProductFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["products"])
def sync_product(self: SyncTask, message: ChangeMessage, failures: int = 0) -> str:
    return sync(self.ctx, FLOW, message, repeat=is_repeat(self.request))
