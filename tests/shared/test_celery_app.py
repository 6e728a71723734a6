"""The Celery app's process hooks."""

from __future__ import annotations

import gc

from celery import signals

from shared.celery_app import app


def test_a_ready_worker_freezes_what_start_up_built_out_of_the_collectors_sight() -> None:
    gc.unfreeze()
    try:
        signals.worker_ready.send(sender=app)
        assert gc.get_freeze_count() > 10_000  # the imported modules, Celery's and SQLAlchemy's objects
    finally:
        gc.unfreeze()
