"""The error taxonomy: what a caller should do about a failure, decided once at the client boundary.

Workers never look at status codes. A client raises one of these; the base task turns the class into
retry, dead letter or a configuration stop (see workers/base.py). Messages must never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldError:
    """One invalid input value, as the remote system reported it (path into the payload, message, code)."""

    path: tuple[str, ...]
    message: str
    code: str = ""

    def describe(self) -> str:
        where = ".".join(self.path) if self.path else "(record)"
        return f"{where}: {self.message}" + (f" [{self.code}]" if self.code else "")


class SyncError(Exception):
    """Base of every classified failure. `system` names the side that failed ("wave", "customerp", "sync")."""

    def __init__(self, message: str, *, system: str = "sync") -> None:
        super().__init__(message)
        self.message = message
        self.system = system

    def __str__(self) -> str:
        return f"{self.system}: {self.message}"


class RetryableError(SyncError):
    """Transient: 429, 5xx, timeouts, dropped connections. `retry_after` is the server's hint in seconds."""

    def __init__(self, message: str, *, system: str = "sync", retry_after: float | None = None) -> None:
        super().__init__(message, system=system)
        self.retry_after = retry_after


class RateLimitedError(RetryableError):
    """HTTP 429: the whole fleet should back off, not only this worker."""


class MustWaitError(RetryableError):
    """Not a failure: the record waits a bounded time for something else to settle (a busy record, a create or
    write whose answer never came and may still land). Retried after `retry_after` without spending the retry
    budget: waiting out another sync's outcome must not dead-letter a record that nothing is wrong with.
    `wait_at_most`: the wait is known to end by then (a lock's lease runs out), so backoff never waits longer."""

    def __init__(
        self,
        message: str,
        *,
        system: str = "sync",
        retry_after: float | None = None,
        wait_at_most: float | None = None,
    ) -> None:
        super().__init__(message, system=system, retry_after=retry_after)
        self.wait_at_most = wait_at_most


class PausedError(MustWaitError):
    """A connection needs a person before anything can use it (Wave's grant was revoked or its refresh token was
    refused; the stored tokens cannot be decrypted): work that needs that system waits, uncounted and never
    dead-lettered, until `wavesync connect <system>` (or a fixed key) resumes it. `retry_after` is long on purpose:
    a person is needed, so asking again every second would only fill the logs."""

    def __init__(self, message: str, *, system: str = "sync", retry_after: float | None = 45.0) -> None:
        super().__init__(message, system=system, retry_after=retry_after)


class PermanentError(SyncError):
    """Retrying cannot help until a person changes data or configuration: dead-letter at once."""

    def __init__(
        self, message: str, *, system: str = "sync", field_errors: tuple[FieldError, ...] | list[FieldError] = ()
    ) -> None:
        super().__init__(message, system=system)
        self.field_errors = tuple(field_errors)

    def __str__(self) -> str:
        base = super().__str__()
        if self.field_errors:
            return base + " (" + "; ".join(e.describe() for e in self.field_errors) + ")"
        return base


class InvalidDataError(PermanentError):
    """The remote system rejected the values we sent (Wave inputErrors, Customerp 422) or our own checks did."""


class ForbiddenEditError(PermanentError):
    """The remote system forbids this edit in the record's current state (e.g. a paid invoice)."""


class NotFoundError(SyncError):
    """The record does not exist (any more) on that side."""


class ConflictError(RetryableError):
    """Optimistic concurrency lost (Customerp 412, Wave modifiedAt moved): re-read and try again."""


class AuthError(SyncError):
    """Credentials missing, wrong or expired, or the configuration points at the wrong place."""


@dataclass(frozen=True)
class ErrorInfo:
    """A dead-letter-friendly summary of an exception: class name, readable reason, field paths."""

    error_class: str
    reason: str
    field_paths: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        paths: tuple[str, ...] = ()
        if isinstance(exc, PermanentError):
            paths = tuple(".".join(e.path) for e in exc.field_errors)
        return cls(error_class=type(exc).__name__, reason=str(exc) or type(exc).__name__, field_paths=paths)
