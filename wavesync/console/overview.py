"""The Overview page: the numbers of `wavesync status --json` (the same function makes both), the poller
watermarks, rate-limit and in-flight state, connection health, the last reconcile, and the latest decisions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from shared import history
from shared.settings import ENTITIES
from wavesync.console.auth import current_user
from wavesync.console.core import console_of, login_redirect
from wavesync.ops import collect_status, describe_connection


def _connections(report: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each connection `status` reports: its system, its state in words, and whether it is in order."""
    return [
        (str(c.get("system", "?")), describe_connection(c), c.get("state") in ("connected", "static_token"))
        for c in report.get("connections") or []
        if isinstance(c, dict)
    ]


def overview(request: Request) -> Response:
    if current_user(request) is None:
        return login_redirect(request)
    console = console_of(request)
    report = collect_status(console.settings)
    with console.db.session() as session:
        recent = [history.entry_json(e) for e in history.recent(session, limit=15)]
    client = console.redis
    last = None
    if client is not None:
        try:
            last = history.last_reconcile_report(client)
        except Exception as exc:  # noqa: BLE001 - the page shows what it can
            last = {"error": console.redact(str(exc))}
    return console.render(
        request,
        "overview.html",
        page="overview",
        report=report,
        entities=ENTITIES,
        connections=_connections(report),
        recent=recent,
        last_reconcile=last,
        reconcile_running=console.reconcile_running,
    )
