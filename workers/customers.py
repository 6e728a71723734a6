"""The `customers` queue: Customerp Customer ⇄ Wave Customer."""

from __future__ import annotations

from datetime import datetime

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.entities import CUSTOMERS
from shared.mapping.fields import Canonical
from shared.messages import ChangeMessage
from shared.natural_keys import normalise_key
from workers.base import SyncTask, is_repeat
from workers.engine import sync
from workers.flow import Flow, Record


def _same_customer(record: Record, canonical: Canonical) -> bool:
    email, number = canonical.get("email"), canonical.get("number")
    rec_email, rec_number = record.get("email"), record.get("displayId")
    if email and rec_email and normalise_key(email) == normalise_key(rec_email):
        return True
    return bool(number and rec_number and normalise_key(number) == normalise_key(rec_number))


class CustomerFlow(Flow):
    definition = CUSTOMERS

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
        values = {"email": canonical.get("email"), "displayId": canonical.get("number")}
        return self.wave_match_by_keys(ctx, values, lambda record: _same_customer(record, canonical))

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
        return record

    def wave_update(self, ctx: Context, record: Record, canonical: Canonical, changed: set[str]) -> Record:
        patched = ctx.wave.patch_customer(record["id"], self.wave_input(ctx, canonical, changed))
        ctx.wave_keys.put_record("customers", patched)
        return patched.model_dump(mode="json", by_alias=True)

    def wave_delete(self, ctx: Context, record: Record) -> None:
        ctx.wave.delete_customer(record["id"])
        ctx.wave_keys.forget_record("customers", record["id"])


FLOW = CustomerFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["customers"])
def sync_customer(self: SyncTask, message: ChangeMessage, failures: int = 0) -> str:
    return sync(self.ctx, FLOW, message, repeat=is_repeat(self.request))
