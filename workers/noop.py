"""A task that does nothing: the bare-Celery ceiling the benchmark measures the engine against."""

from __future__ import annotations

from shared import keys
from shared.celery_app import app


@app.task(name=keys.NOOP_TASK, ignore_result=True)
def noop(_payload: dict[str, object] | None = None) -> None:
    return None
