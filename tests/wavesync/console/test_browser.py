"""The console in a real headless Chromium (the machine's, driven by Playwright) against a running worker, beat and
both sandboxes: log in, the overview against `status --json`, a bad product dead-lettered, fixed, replayed with the
button and shown resolved, a field-level merge in a record's history, and the read-only role without buttons.

The screenshots in docs/screenshots/ come from this module, written there only when asked
(`WAVESYNC_SCREENSHOTS=docs/screenshots`), otherwise into a temporary directory. Without Chromium the module is
skipped with the reason; under CI (the CI variable set) a missing Chromium fails it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxes.serve import ServerThread
from shared.deadletters import DeadLetters, Filter
from tests.harness import Sandboxes, System
from tests.workers.conftest import clean_redis
from wavesync.console.app import create_app
from wavesync.embedded import EmbeddedRedis
from wavesync.ops import collect_status

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("WAVESYNC_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OPERATOR = ("operator", "browser-test-operator-pw")
VIEWER = ("viewer", "browser-test-viewer-pw")
REPO = Path(__file__).resolve().parents[3]
# A test run never rewrites the tracked docs copy unless asked to.
SCREENSHOTS = (
    REPO / os.environ["WAVESYNC_SCREENSHOTS"]
    if os.environ.get("WAVESYNC_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / f"wavesync-screenshots-{os.getpid()}"
)

if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
    if os.environ.get("CI"):
        pytest.fail(f"Chromium is required under CI for the console's browser tests: {CHROMIUM} is missing")
    pytest.skip(
        f"Chromium not installed ({CHROMIUM} missing): the console's browser tests need it", allow_module_level=True
    )

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402 - only with Chromium present


class Stack:
    """Sandboxes, a worker, beat and the console, for the whole module (starting them is most of its time)."""

    def __init__(self, system: System, console: ServerThread) -> None:
        self.system = system
        self.console = console

    @property
    def url(self) -> str:
        return self.console.url


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    boxes = Sandboxes()
    clean_redis(redis_server.url)
    system = System(
        boxes,
        redis_server.url,
        tmp_path_factory.mktemp("console-browser"),
        console_password=OPERATOR[1],
        console_readonly_password=VIEWER[1],
    )
    boxes.cp("POST", "seed", {"customers": 6, "products": 3, "orders": 4})
    system.start_worker()
    system.start_beat()
    console = ServerThread(create_app(system.settings)).start()
    try:
        system.wait_for_polls()
        system.wait_idle(90)
        yield Stack(system, console)
    finally:
        console.stop()
        system.close()
        boxes.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def logged_in(browser: Browser, stack: Stack, who: tuple[str, str] = OPERATOR) -> Page:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(f"{stack.url}/")
    expect(page).to_have_url(re.compile(r"/login"))
    page.fill("input[name=username]", who[0])
    page.fill("input[name=password]", who[1])
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Overview")
    return page


def until(what: str, condition: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not seen within {timeout}s: {what}")


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def test_overview_matches_status_json(browser: Browser, stack: Stack) -> None:
    page = logged_in(browser, stack)
    stack.system.wait_idle(60)
    page.reload()
    report = collect_status(stack.system.settings)
    for entity, numbers in report["entities"].items():
        for name in ("links", "dead_letters"):
            cell = page.locator(f'[data-status="entities.{entity}.{name}"]')
            expect(cell).to_have_text(str(numbers[name]))
    assert report["entities"]["customers"]["links"] >= 6
    shot(page, "overview")
    page.close()


def test_a_bad_product_dead_letters_is_fixed_and_replayed_with_the_button(browser: Browser, stack: Stack) -> None:
    system = stack.system
    product = system.boxes.cp("POST", "products", {"name": "Euro widget", "unit_price": "5", "currency": "EUR"})
    db_letters = DeadLetters(system.ctx.db)

    def mine(status: str = "open") -> list[dict[str, Any]]:
        found = db_letters.list(Filter(entity="products", status=status))  # type: ignore[arg-type]
        return [e for e in found if e["source_id"] == product["id"]]

    [entry] = until("the product's dead letter", mine)
    page = logged_in(browser, stack)
    page.click("nav >> text=Dead letters")
    row = page.locator("table.dlq tbody tr", has_text=f"customerp:{product['id']}")
    expect(row).to_contain_text("currency")
    expect(row.locator(".badge")).to_have_text("open")
    shot(page, "dead-letters")

    row.locator(f'a[href="/dead-letters/{entry["id"]}"]').click()
    expect(page.locator("h1")).to_contain_text(f"Dead letter #{entry['id']}")
    expect(page.locator("table.compare")).to_contain_text("EUR")  # Customerp's current record, beside Wave's (none)
    shot(page, "dead-letter")

    # Fixed by a person in Customerp; replayed with the button (no poll needed: beat's is not what brings it back).
    system.boxes.cp("PATCH", f"products/{product['id']}", {"currency": "USD"})
    page.click("button:has-text('Replay')")
    expect(page.locator(".flash-ok")).to_contain_text("replayed 1 dead letter(s)")
    until("the entry resolved", lambda: mine("resolved"))
    page.goto(f"{stack.url}/dead-letters?status=all&entity=products")
    resolved = page.locator("table.dlq tbody tr", has_text=f"customerp:{product['id']}")
    expect(resolved.locator(".badge")).to_have_text(re.compile("synced"))
    page.goto(f"{stack.url}/dead-letters")
    expect(page.locator("table.dlq")).not_to_contain_text(f"customerp:{product['id']}")
    page.close()


def test_a_record_edited_on_both_sides_shows_a_field_level_merge(browser: Browser, stack: Stack) -> None:
    system = stack.system
    system.stop_beat()  # both edits must meet in one sync: no poll in between
    system.wait_idle(60)  # nor one beat queued or started before it stopped
    try:
        customer = system.boxes.snapshot("customerp")["customers"][0]
        with system.ctx.db.session() as session:
            from shared.store import links

            link = links.find_link(session, "customers", "customerp", str(customer["id"]))
            assert link is not None
            wave_id = link.wave_id
        system.boxes.cp("PATCH", f"customers/{customer['id']}", {"phone": "+1 555 0142"})
        system.boxes.wave_admin("PATCH", f"customers/{wave_id}", {"website": "https://merged.example"})
        system.poll(("customerp",))
        system.wait_idle(60)
    finally:
        system.start_beat()
    page = logged_in(browser, stack)
    page.fill("header .search input", customer["email"])
    page.press("header .search input", "Enter")
    expect(page).to_have_url(re.compile(f"/records/customers/customerp/{customer['id']}$"))
    merge = page.locator("table.history tbody tr", has_text="merged").first
    expect(merge).to_contain_text("phone")
    expect(merge).to_contain_text("+1 555 0142")
    expect(merge).to_contain_text("website")
    expect(merge).to_contain_text("https://merged.example")
    expect(merge).to_contain_text("both")
    expect(page.locator("table.compare")).to_contain_text("+1 555 0142")
    shot(page, "record")
    page.close()


def test_the_read_only_role_sees_no_action_buttons(browser: Browser, stack: Stack) -> None:
    page = logged_in(browser, stack, VIEWER)
    expect(page.locator(".role")).to_have_text("read-only")
    [entry, *_] = DeadLetters(stack.system.ctx.db).list(Filter(status="all"))
    customer = stack.system.boxes.snapshot("customerp")["customers"][0]
    for path in (
        "/",
        "/dead-letters?status=all",
        f"/dead-letters/{entry['id']}",
        f"/records/customers/customerp/{customer['id']}",
        "/reconcile",
    ):
        page.goto(f"{stack.url}{path}")
        for label in ("Replay", "Purge", "Sync now", "Reconcile this record", "Check (report only)", "Repair"):
            expect(page.get_by_role("button", name=label)).to_have_count(0)
    page.close()
