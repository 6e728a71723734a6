"""The Customerp contract kit against the Customerp sandbox (every check passes) and against deliberately broken
variants of it (`CustomerpSandboxConfig(nonconforming=...)`): each break must fail the check written for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from sandboxes.customerp.app import CustomerpSandboxConfig, create_app
from sandboxes.customerp.store import NONCONFORMING
from sandboxes.serve import ServerThread
from shared.settings import Settings
from wavesync.conformance import SCRATCH_PREFIX, check_names, run_conformance
from wavesync.doctor import Check, render

REPO = Path(__file__).resolve().parents[2]
KEY = "conformance-key-5d0e"
TIED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _tied_clock() -> datetime:
    # One instant for every write: many records share an updated_at, so page boundaries fall inside ties.
    return TIED


@pytest.fixture
def erp() -> Iterator[Callable[..., str]]:
    """Start a seeded Customerp sandbox (with a deleted customer, so the feed holds a tombstone) on a tied clock."""
    servers: list[ServerThread] = []

    def start(*broken: str) -> str:
        config = CustomerpSandboxConfig(api_keys=(KEY,), clock=_tied_clock, nonconforming=frozenset(broken))
        server = ServerThread(create_app(config)).start()
        servers.append(server)
        with httpx.Client(base_url=server.url, timeout=10) as admin:
            admin.post("/_admin/seed", json={"customers": 9, "products": 7, "orders": 5}).raise_for_status()
            spare = admin.post("/_admin/customers", json={"company_name": "Spare Ltd"}).json()
            admin.delete(f"/_admin/customers/{spare['id']}").raise_for_status()
            spare = admin.post("/_admin/products", json={"name": "Spare part", "unit_price": "1"}).json()
            admin.delete(f"/_admin/products/{spare['id']}").raise_for_status()
        return server.url

    yield start
    for server in servers:
        server.stop()


def settings_for(url: str) -> Settings:
    return Settings(customerp_url=url, customerp_api_key=KEY, http_timeout=5)


def scratch_left(url: str) -> list[str]:
    snapshot = httpx.get(f"{url}/_admin/snapshot").json()
    return [c["company_name"] for c in snapshot["customers"] if c["company_name"].startswith(SCRATCH_PREFIX)]


def test_the_sandbox_passes_every_check_read_only(erp: Callable[..., str]) -> None:
    url = erp()
    checks = run_conformance(settings_for(url))
    assert [c.name for c in checks] == list(check_names(write_checks=False))
    not_ok = [c for c in checks if c.status != "ok" and c.name != "contract.tombstones_orders"]
    assert not_ok == [], render(checks)
    assert (
        "shared updated_at value(s) met" in next(c for c in checks if c.name == "contract.feed_exact_customers").detail
    )


def test_the_sandbox_passes_every_check_with_writes_and_leaves_no_scratch_record(erp: Callable[..., str]) -> None:
    url = erp()
    before = httpx.get(f"{url}/_admin/snapshot").json()
    checks = run_conformance(settings_for(url), write_checks=True)
    assert [c.name for c in checks] == list(check_names(write_checks=True))
    assert [c for c in checks if c.status == "fail"] == [], render(checks)
    assert scratch_left(url) == []
    after = httpx.get(f"{url}/_admin/snapshot").json()
    assert [c["id"] for c in after["customers"]] == [c["id"] for c in before["customers"]]


# Each deliberate break -> the check that must catch it, and words of the finding written for that break.
VARIANTS: dict[str, tuple[str, str]] = {
    "feed_skips_same_timestamp": ("contract.feed_exact_customers", "skips"),
    "feed_repeats_last_item": ("contract.feed_exact_customers", "repeats"),
    "feed_pages_reversed": ("contract.feed_exact_customers", "not ordered"),
    "exclusive_updated_since": ("contract.updated_since_customers", "leaves out"),
    "no_tombstones": ("contract.write_delete_tombstone", "no tombstone"),
    "bare_tombstones": ("contract.tombstones_customers", "lacks id/deleted/version/updated_at"),
    "ignores_idempotency_key": ("contract.write_idempotency", "a second record"),
    "no_etag": ("contract.etag_customers", "no ETag"),
    "etag_not_version": ("contract.etag_customers", "is not its version"),
    "no_if_match": ("contract.write_if_match", "without If-Match"),
    "not_found_empty_200": ("contract.not_found_customers", "answered 200"),
    "lenient_query": ("contract.bad_query", "answered 200"),
    "list_ignores_filters": ("contract.list_filter", "filter is ignored"),
    "create_without_version": ("contract.write_if_match", "KeyError 'version'"),
    "noop_write_bumps_version": ("contract.write_echo_quiet", "echo back"),
    "shallow_patch": ("contract.write_merge_patch", "did not keep"),
    "accepts_invalid_body": ("contract.write_invalid_body", "answered 201"),
}


def test_every_switch_has_a_variant_test() -> None:
    assert set(VARIANTS) == NONCONFORMING


@pytest.mark.parametrize(("variant", "check", "words"), [(v, *c) for v, c in VARIANTS.items()], ids=list(VARIANTS))
def test_a_nonconforming_erp_fails_the_check_written_for_it(
    erp: Callable[..., str], variant: str, check: str, words: str
) -> None:
    url = erp(variant)
    checks = run_conformance(settings_for(url), write_checks=True)
    assert [c.name for c in checks] == list(check_names(write_checks=True))  # one break stops no other check
    failed: dict[str, Check] = {c.name: c for c in checks if c.status == "fail"}
    assert check in failed, render(checks)
    assert words in failed[check].detail, render(checks)
    assert failed[check].fix
    assert scratch_left(url) == []  # twins of an ignored Idempotency-Key included


def customer_ids(url: str) -> list[str]:
    return [c["id"] for c in httpx.get(f"{url}/_admin/snapshot").json()["customers"]]


def test_a_list_that_ignores_its_filters_costs_no_real_customer(erp: Callable[..., str]) -> None:
    # The clean-up looks its scratch records up by name; an ERP that lists everything must not lose its customers.
    url = erp("list_ignores_filters")
    real = httpx.post(f"{url}/_admin/customers", json={"company_name": "Real Customer AS"}).json()  # no orders
    before = customer_ids(url)
    checks = run_conformance(settings_for(url), write_checks=True)
    assert customer_ids(url) == before
    assert real["id"] in before
    failed = {c.name: c for c in checks if c.status == "fail"}
    assert "filter is ignored" in failed["contract.list_filter"].detail, render(checks)
    cleanup = failed["contract.write_cleanup"]
    assert "ignored" in cleanup.detail
    assert "deleted none of them" in cleanup.detail


class _DeletesGetNoAnswer(httpx.HTTPTransport):
    """The network between the kit and the ERP loses every DELETE."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            raise httpx.ConnectError("connection refused", request=request)
        return super().handle_request(request)


def test_scratch_records_the_clean_up_could_not_delete_are_a_fail_line(erp: Callable[..., str]) -> None:
    url = erp()
    checks = run_conformance(settings_for(url), write_checks=True, transport=_DeletesGetNoAnswer())
    assert [c.name for c in checks] == list(check_names(write_checks=True))
    cleanup = next(c for c in checks if c.name == "contract.write_cleanup")
    assert cleanup.status == "fail", render(checks)
    left = [
        c
        for c in httpx.get(f"{url}/_admin/snapshot").json()["customers"]
        if c["company_name"].startswith(SCRATCH_PREFIX)
    ]
    assert left
    assert all(c["id"] in cleanup.detail for c in left), cleanup.detail


def test_an_unknown_switch_is_refused() -> None:
    with pytest.raises(ValueError, match="feed_is_slow"):
        CustomerpSandboxConfig(nonconforming=frozenset({"feed_is_slow"}))


def _wavesync(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WAVESYNC_")}
    env = {**clean, "WAVESYNC_CUSTOMERP_URL": url, "WAVESYNC_CUSTOMERP_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "wavesync", *args], capture_output=True, text=True, timeout=120, env=env, cwd=REPO
    )


def test_the_command_exits_0_on_the_sandbox_and_1_on_a_broken_erp(erp: Callable[..., str]) -> None:
    good = _wavesync("doctor", "customerp", "--conformance", "--write-checks", "--json", url=erp())
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    bad = _wavesync("doctor", "customerp", "--conformance", url=erp("no_etag"))
    assert bad.returncode == 1
    assert "✗ GET customers/" in bad.stdout
    assert KEY not in good.stdout + bad.stdout + good.stderr + bad.stderr
    refused = _wavesync("doctor", "customerp", "--write-checks", url=erp())
    assert refused.returncode == 2
    assert "--write-checks needs --conformance" in refused.stderr


def test_an_answer_without_the_contracts_shape_is_a_fail_line_not_a_traceback(erp: Callable[..., str]) -> None:
    result = _wavesync("doctor", "customerp", "--conformance", "--write-checks", url=erp("create_without_version"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "✗ the answer did not have the contract's shape: KeyError 'version'" in result.stdout
    assert "scratch record(s) deleted" in result.stdout  # the checks after it ran, the clean-up too
