"""The history's pruning task, scheduled by beat on the control queue: keeps the audit trail within its bounds."""

from __future__ import annotations

import logging

from shared import history, keys
from shared.celery_app import app
from shared.context import get_context
from shared.settings import load_settings

log = logging.getLogger(__name__)


@app.task(name=keys.PRUNE_HISTORY_TASK, ignore_result=True)
def prune_history() -> int:
    """Delete history rows past WAVESYNC_HISTORY_RETENTION_DAYS and beyond WAVESYNC_HISTORY_MAX_ROWS."""
    ctx = get_context(load_settings)
    settings = ctx.settings
    removed = history.prune(ctx.db, retention_days=settings.history_retention_days, max_rows=settings.history_max_rows)
    if removed:
        log.info("pruned %d history rows", removed)
    return removed
