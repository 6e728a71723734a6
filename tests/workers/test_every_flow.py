"""What every flow must do, table-driven over customers, products and orders: echo-free settling, conflicts on
the same and on different fields, duplicate and stale delivery, and a Wave deletion carried over by reconcile.

Each row names one linked pair's fields on both sides; the flows' own quirks are in their own test modules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from producers.reconcile import Reconciler
from shared import keys
from shared.celery_app import app
from shared.messages import ChangeMessage
from shared.settings import Entity
from shared.store import links as store
from tests.harness import System
from tests.workers.test_orders_flow import make_order

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Field:
    customerp: str
    wave: str
    values: tuple[str, str]  # one edit per side


@dataclass(frozen=True)
class FlowCase:
    entity: Entity
    wave_list: str  # the Wave sandbox's collection
    make: Callable[[System], str]  # makes one Customerp record (nothing else unlinked-only); returns its id
    first: Field
    second: Field

    def __str__(self) -> str:
        return self.entity


def _customer(system: System) -> str:
    created: dict[str, Any] = system.boxes.cp("POST", "customers", {"company_name": "Flow Co", "email": "flow@co.test"})
    return str(created["id"])


def _product(system: System) -> str:
    created: dict[str, Any] = system.boxes.cp(
        "POST", "products", {"name": "Flow widget", "unit_price": "12.5", "currency": "USD"}
    )
    return str(created["id"])


def _order(system: System) -> str:
    return str(make_order(system, lines=1, number="FLOW-1")["id"])


CASES = [
    FlowCase(
        "customers",
        "customers",
        _customer,
        Field("website", "website", ("https://cp.example", "https://wave.example")),
        Field("mobile", "mobile", ("+47 400 00 001", "+47 400 00 002")),
    ),
    FlowCase(
        "products",
        "products",
        _product,
        Field("description", "description", ("Edited in Customerp", "Edited in Wave")),
        Field("name", "name", ("Flow widget CP", "Flow widget Wave")),
    ),
    FlowCase(
        "orders",
        "invoices",
        _order,
        Field("notes", "memo", ("Notes from Customerp", "Memo from Wave")),
        Field("po_number", "poNumber", ("PO-CP", "PO-WAVE")),
    ),
]


@dataclass
class Pair:
    """One case's Customerp-made record, synced to Wave on a running system."""

    system: System
    case: FlowCase
    customerp_id: str

    def records(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Both records as they are now, found through the link store."""
        case, boxes = self.case, self.system.boxes
        with self.system.ctx.db.session() as session:
            link = store.find_link(session, case.entity, "customerp", self.customerp_id)
        assert link is not None, f"{case.entity} {self.customerp_id} is not linked"
        cp = next(r for r in boxes.snapshot("customerp")[case.entity] if str(r["id"]) == link.customerp_id)
        wave = next(r for r in boxes.snapshot("wave")[case.wave_list] if str(r["id"]) == link.wave_id)
        return cp, wave

    def edit(self, side: str, values: dict[str, Any]) -> None:
        cp, wave = self.records()
        if side == "customerp":
            self.system.boxes.cp("PATCH", f"{self.case.entity}/{cp['id']}", values)
        else:
            self.system.boxes.wave_admin("PATCH", f"{self.case.wave_list}/{wave['id']}", values)

    def message(self, record: dict[str, Any]) -> ChangeMessage:
        """The message the Customerp poller makes of `record`."""
        return ChangeMessage(
            entity=self.case.entity,
            source="customerp",
            source_id=str(record["id"]),
            version=f"{record['version']:012d}",
            snapshot=record,
        )


@pytest.fixture(params=CASES, ids=str)
def pair(request: pytest.FixtureRequest, system: System) -> Pair:
    case: FlowCase = request.param
    made = Pair(system, case, case.make(system))
    system.settle()
    assert system.dead_letters() == []
    return made


def send(message: ChangeMessage) -> None:
    app.send_task(keys.SYNC_TASK[message.entity], args=[message.to_json()], queue=message.entity)


def test_creating_the_partner_from_a_poll_reads_the_record_no_second_time(pair: Pair) -> None:
    # The poll's page carried the record: the create in Wave needed no read of it in Customerp (issue #15).
    assert pair.system.boxes.counters("customerp").get(f"{pair.case.entity}.get", 0) == 0


def test_a_settled_pair_makes_no_writes_on_further_polls(pair: Pair) -> None:
    system = pair.system
    before = system.writes()
    for _ in range(3):
        system.poll()
        system.wait_idle()
    assert system.writes() == before


def test_edits_on_different_fields_of_both_sides_both_survive(pair: Pair) -> None:
    first, second = pair.case.first, pair.case.second
    pair.edit("customerp", {first.customerp: first.values[0]})
    pair.edit("wave", {second.wave: second.values[1]})
    pair.system.settle()
    cp, wave = pair.records()
    assert (cp[first.customerp], cp[second.customerp]) == (first.values[0], second.values[1])
    assert (wave[first.wave], wave[second.wave]) == (first.values[0], second.values[1])


@pytest.mark.parametrize("later", ["customerp", "wave"])
def test_edits_of_one_field_on_both_sides_follow_the_newest(pair: Pair, later: str) -> None:
    earlier = "wave" if later == "customerp" else "customerp"
    field = pair.case.first
    value = {"customerp": field.values[0], "wave": field.values[1]}
    pair.edit(earlier, {getattr(field, earlier): value[earlier]})
    pair.edit(later, {getattr(field, later): value[later]})
    pair.system.settle()
    cp, wave = pair.records()
    assert (cp[field.customerp], wave[field.wave]) == (value[later], value[later])


def test_a_duplicated_message_writes_once(pair: Pair) -> None:
    field, system = pair.case.first, pair.system
    pair.edit("customerp", {field.customerp: field.values[0]})
    cp, _wave = pair.records()
    before = system.writes()
    for _ in range(3):
        send(pair.message(cp))
    system.wait_idle()
    assert system.writes()["wave"] == before["wave"] + 1
    assert pair.records()[1][field.wave] == field.values[0]


def test_a_stale_message_after_a_newer_one_changes_nothing(pair: Pair) -> None:
    field, system = pair.case.first, pair.system
    pair.edit("customerp", {field.customerp: field.values[0]})
    old, _wave = pair.records()
    pair.edit("customerp", {field.customerp: field.values[1]})
    system.settle()
    before = system.writes()
    send(pair.message(old))  # a late redelivery must not roll the pair back
    system.wait_idle()
    assert system.writes() == before
    cp, wave = pair.records()
    assert (cp[field.customerp], wave[field.wave]) == (field.values[1], field.values[1])


def test_a_record_deleted_in_wave_is_deleted_in_customerp_by_reconcile(pair: Pair) -> None:
    system, entity = pair.system, pair.case.entity
    _cp, wave = pair.records()
    system.boxes.wave_admin("DELETE", f"{pair.case.wave_list}/{wave['id']}")
    assert system.poll() == 0  # polling cannot see a Wave deletion
    [report] = Reconciler(system.ctx, repair=False).run((entity,))
    assert report.deleted_in_wave == [pair.customerp_id]
    Reconciler(system.ctx, repair=True).run((entity,))
    system.wait_idle()
    assert pair.customerp_id not in {str(r["id"]) for r in system.boxes.snapshot("customerp")[entity]}
    with system.ctx.db.session() as session:
        assert store.find_link(session, entity, "customerp", pair.customerp_id) is None
    [after] = Reconciler(system.ctx, repair=False).run((entity,))
    assert after.problems == 0
    assert system.dead_letters() == []
