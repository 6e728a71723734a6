"""The `customers` queue: Customerp Customer ⇄ Wave Customer."""

from __future__ import annotations

from datetime import datetime

from shared import keys
from shared.celery_app import app
from shared.context import Context
from shared.customerp.models import Customer
from shared.entities import CUSTOMERS
from shared.mapping.fields import Canonical
from shared.messages import ChangeMessage
from shared.natural_keys import normalise_key
from shared.wave.models import WaveCustomer
from workers.base import SyncTask, is_repeat
from workers.engine import sync
from workers.flow import Flow


def _same_customer(record: WaveCustomer, canonical: Canonical) -> bool:
    email, number = canonical.get("email"), canonical.get("number")
    if email and record.email and normalise_key(email) == normalise_key(record.email):
        return True
    return bool(number and record.display_id and normalise_key(number) == normalise_key(record.display_id))


class CustomerFlow(Flow[WaveCustomer]):
    definition = CUSTOMERS
    models = {"customerp": Customer, "wave": WaveCustomer}

    def wave_read(self, ctx: Context, wave_id: str) -> WaveCustomer:
        return ctx.wave.get_customer(wave_id)

    def wave_match(self, ctx: Context, canonical: Canonical, since: datetime | None) -> WaveCustomer | None:
        """Email first (Sesam's merge criterion towards Wave), then customer number ↔ displayId."""
        if since is not None:
            return next(
                (c for c in ctx.wave.iter_customers(modified_after=since) if _same_customer(c, canonical)), None
            )
        values = {"email": canonical.get("email"), "displayId": canonical.get("number")}
        return self.wave_match_by_keys(ctx, values, lambda record: _same_customer(record, canonical))

    def customerp_match(self, ctx: Context, canonical: Canonical) -> Customer | None:
        for field, value in (("email", canonical.get("email")), ("customer_number", canonical.get("number"))):
            if value:
                found = ctx.customerp.find("customers", **{field: value})
                if found:
                    return found[0]
        return None

    def wave_create(self, ctx: Context, canonical: Canonical) -> WaveCustomer:
        return ctx.wave.create_customer(self.wave_input(ctx, canonical, None))

    def wave_update(self, ctx: Context, record: WaveCustomer, canonical: Canonical, changed: set[str]) -> WaveCustomer:
        patched = ctx.wave.patch_customer(record.id, self.wave_input(ctx, canonical, changed))
        ctx.wave_keys.put_record("customers", patched)
        return patched

    def wave_delete(self, ctx: Context, record: WaveCustomer) -> None:
        ctx.wave.delete_customer(record.id)
        ctx.wave_keys.forget_record("customers", record.id)


FLOW = CustomerFlow()


@app.task(bind=True, base=SyncTask, name=keys.SYNC_TASK["customers"])
def sync_customer(self: SyncTask, message: ChangeMessage, failures: int = 0) -> str:
    return sync(self.ctx, FLOW, message, repeat=is_repeat(self.request))
