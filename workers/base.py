"""The one place that decides what a failure means: retry with backoff, or the entity's dead-letter queue.

Task bodies only sync; this base class turns the error taxonomy of `shared/errors.py` into actions:
- RetryableError (5xx, timeouts, 412, races, a busy record) → retry with exponential backoff and full jitter,
  at least the server's Retry-After; after `max_retries` → dead letter;
- RateLimitedError (429) → retry after Retry-After plus a widening jitter, without using up the retry budget
  (the transport has already paused and slowed the whole fleet, see shared/ratelimit.py);
- MustWaitError (a busy record, another write's outcome still unknown) → retry after the wait with backoff,
  without using up the retry budget: each such wait is bounded where it is raised;
- PausedError (a connection needs re-authorization: `wavesync connect wave`) → retried every 30-60 s, uncounted and
  never dead-lettered, said in the log once a minute rather than once per waiting message;
- AuthError → retried at the longest delay (credentials get fixed and workers restarted; an outage must not
  empty every queue into the dead letters within a minute), then dead-lettered with a hint to replay;
- PermanentError, NotFoundError, and any unexpected exception (a bug, or data no rule foresaw) → dead letter
  at once, with a reason. A worker never crashes on data and never loops on a poison message.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import redis
from celery import Task
from celery.exceptions import Retry, SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from shared import history, keys, logs, metrics
from shared.context import Context, get_context
from shared.enqueue import task_repr
from shared.errors import (
    AuthError,
    ErrorInfo,
    MustWaitError,
    PausedError,
    RateLimitedError,
    RetryableError,
    SyncError,
)
from shared.messages import ChangeMessage, other
from shared.settings import load_settings
from shared.store import links as store

log = logging.getLogger(__name__)

MAX_REDELIVERIES = 3
INFRASTRUCTURE_ERRORS = (OperationalError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def backoff_seconds(failures: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Full jitter (AWS): uniform in [0, min(cap, base·2^failures)], never sooner than Retry-After."""
    ceiling = min(cap, base * (2**failures))
    delay = rng.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return round(delay, 3)


def throttle_backoff_seconds(
    throttles: int, base: float, cap: float, retry_after: float | None, rng: random.Random
) -> float:
    """After a 429: the server's Retry-After plus a jitter that widens with each 429 of this message, so the
    fleet's retries do not all return in the same instant when the cooldown ends."""
    jitter = rng.uniform(0, min(cap, base * (2**throttles)))
    return round(min(cap, (retry_after if retry_after is not None else 1.0) + jitter), 3)


# A paused connection (PausedError: it needs `wavesync connect`) is asked again at most this often per message, and
# said in the log once per this many seconds per process, not once per waiting message.
PAUSE_MAX_S = 60.0
_pause_said: dict[str, float] = {}


def pause_backoff_seconds(cap: float, rng: random.Random) -> float:
    """A person is needed: wait between half and all of min(PAUSE_MAX_S, the retry cap)."""
    ceiling = min(PAUSE_MAX_S, cap)
    return round(ceiling / 2 + rng.uniform(0, ceiling / 2), 3)


def _say_paused(exc: PausedError, secrets: list[str]) -> None:
    now = time.monotonic()
    if now - _pause_said.get(exc.system, -PAUSE_MAX_S) >= PAUSE_MAX_S:
        _pause_said[exc.system] = now
        log.warning("work that needs %s is paused; messages wait: %s", exc.system, logs.redact(str(exc), secrets))


def auth_backoff_seconds(cap: float, rng: random.Random) -> float:
    """Credentials do not come back in a second: wait between half the cap and the cap."""
    return round(cap / 2 + rng.uniform(0, cap / 2), 3)


def is_repeat(request: Any) -> bool:
    """Whether a task's message was delivered before: a retry, or a redelivery after a worker died."""
    delivery = getattr(request, "delivery_info", None) or {}
    return bool(getattr(request, "retries", 0)) or bool(delivery.get("redelivered"))


def direction(message: ChangeMessage) -> str:
    return f"{message.source}->{other(message.source)}"


class SyncTask(Task):  # type: ignore[type-arg]
    """Base of every per-record task. A message arrives as JSON and is validated here once; task bodies take
    (message: ChangeMessage, failures: int = 0)."""

    abstract = True
    acks_late = True
    # Celery's own retry cap (3 by default) must never apply: the budget here is the `failures` argument, and
    # 429s do not spend it. Without this a record would vanish, not dead-letter, after Celery's 3rd retry.
    max_retries = None
    _rng = random.Random()

    @property
    def ctx(self) -> Context:
        return get_context(load_settings)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raw = args[0] if args else kwargs.get("message")
        failures = int(kwargs.get("failures", 0))
        try:
            message = ChangeMessage.model_validate(raw)
        except ValueError as exc:
            # Not ours or corrupted: nothing to retry and no record to dead-letter; say so loudly.
            log.error("dropping a malformed message for %s: %s", self.name, str(exc)[:500])
            return "malformed"
        with logs.bound(
            entity=message.entity,
            system=message.source,
            record_id=message.source_id,
            task_id=self.request.id,
            task_name=self.name,
        ):
            return self._process(message, failures)

    def _process(self, message: ChangeMessage, failures: int) -> str:
        if self._redelivered_too_often(message):
            self._dead_letter(
                message,
                RuntimeError(
                    f"the worker died {MAX_REDELIVERIES} times while syncing this record (killed, out of memory?)"
                ),
            )
            return "dead-lettered"
        try:
            # The validated message itself: validated once here, not again in the task body.
            outcome = str(self.run(message))
        except Retry:
            raise
        except RateLimitedError as exc:
            return self._retry(message, failures, exc, count=False)
        except PausedError as exc:
            if not self.request.retries:  # one history row per waiting message, not one per 30-60 s retry
                history.record_paused(self.ctx.db, self.ctx.settings, message, str(exc))
            return self._retry(message, failures, exc, count=False, paused=True)
        except MustWaitError as exc:
            return self._retry(message, failures, exc, count=False, wait=True)
        except AuthError as exc:
            return self._retry(message, failures, exc, count=True, auth=True)
        except (RetryableError, SoftTimeLimitExceeded, *INFRASTRUCTURE_ERRORS) as exc:
            return self._retry(message, failures, exc, count=True)
        except Exception as exc:  # noqa: BLE001 - a bug or unforeseen data must not crash the worker
            self._dead_letter(message, exc)
            return "dead-lettered"
        history.record_outcome(self.ctx.db, self.ctx.settings, message, outcome)  # a skip, stored by nothing else
        if message.reread:
            # A replay or a reconcile repair that ends without a write still settles the record's dead letter.
            with self.ctx.db.session() as session:
                store.resolve_dead_letters(session, message.entity, {message.source: message.source_id})
        metrics.RECORDS.labels(message.entity, direction(message), outcome).inc()
        return outcome

    def _retry(
        self,
        message: ChangeMessage,
        failures: int,
        exc: BaseException,
        *,
        count: bool,
        auth: bool = False,
        wait: bool = False,
        paused: bool = False,
    ) -> str:
        """Raise Celery's Retry with the next countdown; or dead-letter when the budget is spent."""
        settings = self.ctx.settings
        if count and failures >= settings.max_retries:
            self._dead_letter(message, exc, retries_exhausted=True)
            return "dead-lettered"
        if paused:
            countdown = pause_backoff_seconds(settings.retry_backoff_max, self._rng)
        elif auth:
            countdown = auth_backoff_seconds(settings.retry_backoff_max, self._rng)
        else:
            # Uncounted retries (429s, waits) back off by how often this message already came back uncounted;
            # after a 429 the fleet is paused already, so only a widening jitter is added to its Retry-After.
            uncounted = max(0, int(self.request.retries or 0) - failures)  # Celery counts every retry
            shape = throttle_backoff_seconds if not count and not wait else backoff_seconds
            countdown = shape(
                failures if count else uncounted,
                settings.retry_backoff_base,
                settings.retry_backoff_max,
                getattr(exc, "retry_after", None),
                self._rng,
            )
            if isinstance(exc, MustWaitError) and exc.wait_at_most is not None:
                # The wait ends at a known time (a dead worker's lock lapses): backing off past it only adds delay.
                countdown = min(countdown, exc.wait_at_most)
        metrics.RETRIES.labels(message.entity, type(exc).__name__).inc()
        if isinstance(exc, PausedError):
            _say_paused(exc, settings.secrets())
        else:
            log.warning(
                "retrying %s in %.1fs (%s%s): %s",
                message.key(),
                countdown,
                type(exc).__name__,
                "" if count else ", not counted",
                logs.redact(str(exc), settings.secrets()),
            )
        raise self.retry(
            args=(message.to_json(),),
            kwargs={"failures": failures + 1 if count else failures},
            countdown=countdown,
            max_retries=None,
            argsrepr=task_repr(message),  # type: ignore[call-arg]  # Celery passes it on; celery-types omit **options
        )

    def _dead_letter(self, message: ChangeMessage, exc: BaseException, *, retries_exhausted: bool = False) -> None:
        settings = self.ctx.settings
        info = ErrorInfo.of(exc)
        reason = logs.redact(info.reason, settings.secrets())
        if retries_exhausted:
            reason = f"gave up after {settings.max_retries} retries: {reason}"
            if isinstance(exc, AuthError):
                reason += " (check the credentials and URL of that system, restart the workers, then replay)"
        ids = {message.source: message.source_id}
        try:
            with self.ctx.db.session() as session:
                link = store.find_link(session, message.entity, message.source, message.source_id)
                if link is not None:
                    ids = {"customerp": link.customerp_id, "wave": link.wave_id}
                store.record_dead_letter(
                    session,
                    entity=message.entity,
                    source=message.source,
                    source_id=message.source_id,
                    customerp_id=ids.get("customerp"),
                    wave_id=ids.get("wave"),
                    message=message.model_dump(mode="json"),
                    version=message.version,
                    error_class=info.error_class,
                    reason=reason,
                    field_paths=list(info.field_paths),
                )
                history.record(session, history.dead_lettered(settings, message, ids, info.error_class, reason))
        except INFRASTRUCTURE_ERRORS as db_exc:
            # The dead-letter store is down: keep the message alive rather than lose it.
            raise self.retry(
                args=(message.to_json(),),
                countdown=5,
                max_retries=None,
                exc=db_exc,
                argsrepr=task_repr(message),  # type: ignore[call-arg]  # as above
            ) from None
        metrics.DEAD_LETTERS.labels(message.entity, info.error_class).inc()
        metrics.RECORDS.labels(message.entity, direction(message), "dead-lettered").inc()
        log.error(
            "dead-lettered %s: %s: %s",
            message.key(),
            info.error_class,
            reason,
            extra={"customerp_id": ids.get("customerp"), "wave_id": ids.get("wave")},
            # A classified error is explained by its reason; anything else is a bug and needs its traceback.
            exc_info=None if isinstance(exc, SyncError) else exc,
        )

    def _redelivered_too_often(self, message: ChangeMessage) -> bool:
        delivery = getattr(self.request, "delivery_info", None) or {}
        if not delivery.get("redelivered") or not self.request.id:
            return False
        key = keys.redeliveries_key(self.request.id)
        count = int(self.ctx.redis.incr(key))
        self.ctx.redis.expire(key, 24 * 3600)
        return count > MAX_REDELIVERIES
