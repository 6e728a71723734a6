"""The `customers` queue: Customerp Customer ⇄ Wave Customer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.errors import NotFoundError
from shared.mapping import customers as mapping
from shared.mapping.fields import Canonical
from shared.messages import ChangeMessage
from shared.natural_keys import NaturalKeyIndex, normalise_key
from workers.base import SyncTask
from workers.engine import Flow, Record, is_repeat, sync_message


def display_id_index(ctx: Context) -> NaturalKeyIndex:
    return NaturalKeyIndex(ctx.redis, "customers", "displayId")


def _same_customer(record: Record, canonical: Canonical) -> bool:
    email, number = canonical.get("email"), canonical.get("number")
    rec_email, rec_number = record.get("email"), record.get("displayId")
    if email and rec_email and normalise_key(email) == normalise_key(rec_email):
        return True
    return bool(number and rec_number and normalise_key(number) == normalise_key(rec_number))


class CustomerFlow(Flow):
    entity = "customers"
    fields = mapping.FIELDS
    identity = ("name", "email", "number")

    def wave_read(self, ctx: Context, wave_id: str) -> Record:
        return ctx.wave.get_customer(wave_id).model_dump(mode="json", by_alias=True)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> Record | None:
        """Email first (Sesam's merge criterion towards Wave), then customer number ↔ displayId."""
        if since is not None:
            for customer in ctx.wave.iter_customers(modified_after=since):
                record = customer.model_dump(mode="json", by_alias=True)
                if _same_customer(record, canonical):
                    return record
            return None
        if canonical.get("email"):
            found = [
                c.model_dump(mode="json", by_alias=True) for c in ctx.wave.find_customers(email=canonical["email"])
            ]
            if found:
                same_number = [r for r in found if _same_customer(r, {"number": canonical.get("number")})]
                return (same_number or found)[0]
        wave_id = display_id_index(ctx).get(canonical.get("number"))
        if wave_id:
            try:
                return self.wave_read(ctx, wave_id)
            except NotFoundError:
                return None
        return None

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Record | None:
        for field, value in (("email", canonical.get("email")), ("customer_number", canonical.get("number"))):
            if value:
                found = ctx.customerp.find("customers", **{field: value})
                if found:
                    return found[0].model_dump(mode="json")
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> Record:
        created = ctx.wave.create_customer(self.wave_input(ctx, canonical, None))
        record = created.model_dump(mode="json", by_alias=True)
        display_id_index(ctx).put(record.get("displayId"), record["id"])
        return record

    def wave_update(self, ctx: Context, record: Record, canonical: Canonical, changed: set[str]) -> Record:
        patched = ctx.wave.patch_customer(record["id"], self.wave_input(ctx, canonical, changed))
        return patched.model_dump(mode="json", by_alias=True)

    def wave_delete(self, ctx: Context, record: Record) -> None:
        ctx.wave.delete_customer(record["id"])
        display_id_index(ctx).forget(record.get("displayId"), record["id"])


FLOW = CustomerFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["customers"])
def sync_customer(self: SyncTask, message: dict[str, Any], failures: int = 0) -> str:
    return sync_message(self.ctx, FLOW, ChangeMessage.model_validate(message), repeat=is_repeat(self.request))
