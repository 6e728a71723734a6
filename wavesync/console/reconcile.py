"""The Reconcile page: the last report (of any run: beat's, the CLI's, this page's) and buttons for a check and,
after a confirmation, a repair, each run in a background thread of the console."""

from __future__ import annotations

import logging
import threading

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from shared import history
from wavesync.console.auth import current_user
from wavesync.console.core import Console, action_form, console_of, flash, login_redirect

log = logging.getLogger(__name__)


def reconcile_page(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    last = None
    error = console.reconcile_error
    if console.redis is not None:
        try:
            last = history.last_reconcile_report(console.redis)
        except Exception as exc:  # noqa: BLE001 - shown on the page
            error = console.redact(f"cannot read the last report: {exc}")
    return console.render(
        request, "reconcile.html", page="reconcile", last=last, running=console.reconcile_running, error=error
    )


def start(console: Console, *, repair: bool) -> bool:
    """Start a run in the background unless one is on; its report lands where the page reads it."""
    with console._lock:
        if console.reconcile_running:
            return False
        console.reconcile_running = "repair" if repair else "check"
        console.reconcile_error = None

    def run() -> None:
        from wavesync.ops import run_reconcile

        try:
            run_reconcile(console.settings, repair=repair, quiet=True)
        except Exception as exc:  # noqa: BLE001 - a failed run is reported on the page
            console.reconcile_error = console.redact(f"the last {'repair' if repair else 'check'} failed: {exc}")
            log.warning("console reconcile failed: %s", console.reconcile_error)
        finally:
            console.reconcile_running = None

    threading.Thread(target=run, name="console-reconcile", daemon=True).start()
    return True


async def check(request: Request) -> Response:
    checked = await action_form(request)
    if isinstance(checked, Response):
        return checked
    console = console_of(request)
    if start(console, repair=False):
        flash(request, "reconcile check started: it reads both systems in full; reload for the report")
    else:
        flash(request, f"a reconcile {console.reconcile_running} is already running", "warn")
    return RedirectResponse("/reconcile", status_code=303)


async def repair(request: Request) -> Response:
    checked = await action_form(request)
    if isinstance(checked, Response):
        return checked
    _user, form = checked
    console = console_of(request)
    if form.get("confirm") != "yes":
        return console.render(request, "confirm_repair.html", page="reconcile")
    if start(console, repair=True):
        flash(request, "reconcile repair started: drift is re-synced through the normal queues")
    else:
        flash(request, f"a reconcile {console.reconcile_running} is already running", "warn")
    return RedirectResponse("/reconcile", status_code=303)
