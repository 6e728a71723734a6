"""Every queue name, task name and Redis key the project uses, in one place.

All Redis keys start with `wavesync:` so the project can share a Redis with others; Celery's own keys are
the queue names below plus kombu's `_kombu.*` and `unacked*` bookkeeping.
"""

from __future__ import annotations

from shared.settings import ENTITIES, Entity

PREFIX = "wavesync"

# One Celery queue per entity, so each flow scales with its own workers; `control` carries pollers,
# reconcile and replay so that a backlog of records never delays the next poll. A worker on several queues takes
# them in this order (shared/celery_app.py): control first, then each entity before those that refer to it.
QUEUES: tuple[str, ...] = ("control", *ENTITIES)
CONTROL_QUEUE = "control"

# Stable task names: renaming a module must never orphan messages already in Redis.
SYNC_TASK = {entity: f"wavesync.sync.{entity}" for entity in ENTITIES}
POLL_TASK = "wavesync.poll"
RECONCILE_TASK = "wavesync.reconcile"
REPLAY_TASK = "wavesync.dlq.replay"
PRUNE_HISTORY_TASK = "wavesync.history.prune"
NOOP_TASK = "wavesync.noop"


def pending_key(entity: Entity, system: str, record_id: str) -> str:
    """Set while a change message for this record waits in its queue: later polls coalesce into it."""
    return f"{PREFIX}:pending:{entity}:{system}:{record_id}"


def record_lock_key(entity: Entity, system: str, record_id: str) -> str:
    """Held while a worker syncs one pair (keyed by its Customerp id; a Wave record not linked yet by its own), so
    two workers never write the same pair at once."""
    return f"{PREFIX}:lock:record:{entity}:{system}:{record_id}"


def worker_key(process: str) -> str:
    """Heartbeat of one live worker process (renewed every few seconds, see shared/leases.py): its absence tells
    others that whatever that process began (a create it sent) will not be finished by it."""
    return f"{PREFIX}:worker:{process}"


def done_key(entity: Entity, system: str, record_id: str) -> str:
    """The newest version a worker finished for a record that stayed unlinked, so polls do not enqueue it again."""
    return f"{PREFIX}:done:{entity}:{system}:{record_id}"


def creating_key(entity: Entity, target: str) -> str:
    """Hash of unfinished creations into `target`: source id -> {started_at, attempted_at, sent}. Lets a retry find
    what a crashed or unanswered create made, and a record made that way wait for its link."""
    return f"{PREFIX}:creating:{entity}:{target}"


def wave_index_key(entity: Entity, part: str) -> str:
    """The Wave key index (shared/natural_keys.py): `keys` (natural key -> ids) and `records` (id -> its keys)."""
    return f"{PREFIX}:index:wave:{entity}:{part}"


def wave_index_complete_key() -> str:
    """Sorted set: entity -> epoch seconds as of which its Wave key index holds every Wave record."""
    return f"{PREFIX}:index:wave:complete"


def wave_index_listed_key() -> str:
    """Sorted set: entity -> Wave's modifiedAt (epoch seconds) of the newest record on the first page the last listing
    into its index read (where the next listing starts, less a margin)."""
    return f"{PREFIX}:index:wave:listed"


def wave_index_lock_key(entity: Entity) -> str:
    """Held while one process lists Wave's recent changes of an entity into the index."""
    return f"{PREFIX}:lock:index:wave:{entity}"


def poller_lock_key(system: str, entity: Entity) -> str:
    """Held for one poller run, so two runs of the same poller never overlap."""
    return f"{PREFIX}:lock:poll:{system}:{entity}"


def reconcile_lock_key() -> str:
    return f"{PREFIX}:lock:reconcile"


def rate_bucket_key(system: str) -> str:
    """Token bucket shared by every worker on every host for one external system."""
    return f"{PREFIX}:rate:{system}"


def cooldown_key(system: str) -> str:
    """Set with a TTL when a worker gets a 429: every worker waits it out before calling that system."""
    return f"{PREFIX}:cooldown:{system}"


def poll_stats_key(system: str, entity: Entity) -> str:
    """Hash of the last poll run: started/finished timestamps, records seen and enqueued."""
    return f"{PREFIX}:poll:{system}:{entity}"


def redeliveries_key(task_id: str) -> str:
    """How often the broker redelivered one task (its worker died): a poison message ends in the DLQ."""
    return f"{PREFIX}:redeliveries:{task_id}"


def in_flight_key(system: str) -> str:
    """Sorted set of the leases of calls in flight to one external system: lease id -> expiry (server ms)."""
    return f"{PREFIX}:inflight:{system}"


def in_flight_wakeup_key(system: str) -> str:
    """List a released lease pushes to: callers waiting for a slot of that system block on it (BLPOP)."""
    return f"{PREFIX}:inflight:{system}:wakeup"


def credential_refresh_lock_key(system: str) -> str:
    """Held while one process refreshes a connection's OAuth tokens: the refresh token rotates, so two refreshes
    with the same one would spend it twice and disconnect the sync. Waiters then read the new pair from the store."""
    return f"{PREFIX}:lock:refresh:{system}"


def last_reconcile_key() -> str:
    """JSON of the last reconcile's report (when, check or repair, per entity), for the console."""
    return f"{PREFIX}:reconcile:last"


def beat_lease_key() -> str:
    """The beat lease (shared/beat_lease.py): the process id of the one beat that schedules, on a short TTL."""
    return f"{PREFIX}:lease:beat"
