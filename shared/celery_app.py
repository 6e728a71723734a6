"""The one Celery app: Redis broker, JSON only, late acks, one queue per entity, beat schedule for the pollers.

The app is configured lazily from `Settings` the first time Celery reads its configuration, so tests and the
CLI can set `WAVESYNC_*` variables before that. Task modules are named here as strings: `shared/` never
imports `producers/` or `workers/`.
"""

from __future__ import annotations

import gc
from datetime import timedelta
from typing import Any

from celery import Celery, signals
from kombu import Queue

from shared import broker, keys, logs, message_leases, metrics
from shared.settings import ENTITIES, Settings, SettingsError, load_settings

TASK_MODULES = [
    "workers.customers",
    "workers.products",
    "workers.orders",
    "workers.deadletters",
    "workers.history",
    "producers.pollers",
    "producers.reconcile",
    "workers.noop",
]


def broker_url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise SettingsError(
            [
                "WAVESYNC_REDIS_URL is not set: set it to your Redis, or to the address a running `wavesync up` "
                "printed (`embedded Valkey on redis://...`)"
            ]
        )
    return str(settings.redis_url)


def celery_config(settings: Settings) -> dict[str, Any]:
    vt = settings.visibility_timeout
    transport = {
        # A lease, renewed by the worker holding the message (shared/message_leases.py): a killed worker's
        # messages are restored this long after its last renewal, a live worker's never.
        "visibility_timeout": vt,
        # A worker on several queues (`wavesync worker`, the demo) takes them in `keys.QUEUES` order: the next
        # poll before any backlog, and customers and products before the orders that refer to them, so a backfill's
        # order finds its customer linked instead of syncing it inline (one more read, and the customer's own
        # message then a no-op): 17 % less worker CPU per record in the bench (ABBA, README). The price: while the
        # worker cannot keep up with one entity, it takes no later entity's messages. Compose runs a worker per queue.
        "queue_order_strategy": "priority",
        "health_check_interval": 25,
        # Look for a dead worker's messages every few seconds (kombu scans every interval × throttle).
        "unacked_restore_interval": message_leases.RESTORE_INTERVAL_S,
        "unacked_restore_throttle": 1,
        # kombu's restore runs under a Redis mutex; one held by a worker killed mid-restore blocks the others
        # until it expires (300 s by default).
        "unacked_mutex_expire": vt,
    }
    schedule: dict[str, Any] = {}
    for system in ("customerp", "wave"):
        for entity in ENTITIES:
            schedule[f"poll-{system}-{entity}"] = {
                "task": keys.POLL_TASK,
                "schedule": timedelta(seconds=settings.poll_interval),
                "args": (system, entity),
                # A poll message that waited longer than an interval is worthless: the next one is coming.
                "options": {"queue": keys.CONTROL_QUEUE, "expires": settings.poll_interval},
            }
    schedule["reconcile"] = {
        "task": keys.RECONCILE_TASK,
        "schedule": timedelta(seconds=settings.reconcile_interval),
        "options": {"queue": keys.CONTROL_QUEUE, "expires": settings.reconcile_interval},
    }
    schedule["prune-history"] = {
        "task": keys.PRUNE_HISTORY_TASK,
        "schedule": timedelta(seconds=settings.history_prune_interval),
        "options": {"queue": keys.CONTROL_QUEUE, "expires": settings.history_prune_interval},
    }
    url = broker_url(settings)
    return {
        "broker_url": url,
        "broker_use_ssl": broker.tls(url),
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "result_backend": None,
        "result_backend_transport_options": {"visibility_timeout": vt},
        "visibility_timeout": vt,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        # A killed child requeues its message; the base task caps redeliveries so a poison message ends in
        # the dead-letter queue instead of looping.
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_time_limit * 0.8,
        "worker_soft_shutdown_timeout": 10.0,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # No task events by default: each is one more Redis publish (and kombu client) per task, a sixth of a
        # worker's CPU in the bench's profile. Flower turns them on in the running workers itself (its
        # `enable_events`, on by default) for as long as it watches; `celery events` needs `wavesync celery control
        # enable_events` first.
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "worker_hijack_root_logger": False,
        "task_queues": [Queue(name) for name in keys.QUEUES],
        "task_default_queue": keys.CONTROL_QUEUE,
        "task_routes": {
            **{keys.SYNC_TASK[e]: {"queue": e} for e in ENTITIES},
            keys.POLL_TASK: {"queue": keys.CONTROL_QUEUE},
            keys.RECONCILE_TASK: {"queue": keys.CONTROL_QUEUE},
            keys.REPLAY_TASK: {"queue": keys.CONTROL_QUEUE},
            keys.PRUNE_HISTORY_TASK: {"queue": keys.CONTROL_QUEUE},
        },
        "beat_schedule": schedule,
        "beat_max_loop_interval": 5,
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
        # One beat per fleet: others stand by until its lease lapses (shared/beat_lease.py).
        "beat_scheduler": "shared.beat_lease:LeasedScheduler",
        "timezone": "UTC",
        "enable_utc": True,
    }


# kombu's Redis transport with one client per channel for its bookkeeping (shared/broker.py).
broker.install()
app = Celery("wavesync", include=TASK_MODULES, set_as_current=True)
app.steps["consumer"].add(message_leases.MessageLeases)
# Lazy: read when Celery first needs its configuration, after the CLI or a test has set WAVESYNC_* variables.
app.add_defaults(lambda: celery_config(load_settings()))


@signals.setup_logging.connect
def _setup_logging(**_kwargs: Any) -> None:
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format, settings.secrets())


@signals.worker_init.connect
def _worker_metrics(**_kwargs: Any) -> None:
    settings = load_settings()
    metrics.serve(settings.metrics_port, settings.metrics_host, settings)


@signals.worker_ready.connect
def _freeze_startup_objects(**_kwargs: Any) -> None:
    # What start-up imported and built (Celery, SQLAlchemy's mappers, pydantic's schemas, the clients) lives as long
    # as the process: frozen, the cyclic collector no longer walks it on every full collection (each took ~0.1 s of a
    # busy worker's CPU, measured with `gc.callbacks` over a bench backfill; docs/profiling.md).
    gc.freeze()


@signals.beat_init.connect
def _beat_metrics(**_kwargs: Any) -> None:
    settings = load_settings()
    metrics.serve(settings.metrics_port + 1 if settings.metrics_port else 0, settings.metrics_host, settings)
