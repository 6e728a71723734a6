"""Logging: JSON lines in containers, readable text on a terminal; configured secrets never appear.

A worker binds what it is working on (`bound(entity=..., record_id=..., task_id=...)`) for the duration of a
task; every line logged meanwhile, by any logger, carries those fields.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The fields a line may carry besides its message, in the order a text line shows them.
CONTEXT_KEYS = ("entity", "system", "record_id", "customerp_id", "wave_id", "task_id", "task_name")

_bound: ContextVar[dict[str, str] | None] = ContextVar("wavesync_log_context", default=None)


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Attach `fields` (None values are left out) to every line logged in this context (thread, task)."""
    token = _bound.set({**(_bound.get() or {}), **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _bound.reset(token)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (explicit `extra=` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_bound.get() or {}).items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class RedactingFilter(logging.Filter):
    """Replaces every configured secret in the rendered message, exception and stack text with ***."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: let the handler report it as usual
            return True
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, redact(value, self.secrets))
        return True


def _context(record: logging.LogRecord) -> dict[str, str]:
    out = {key: str(value) for key in CONTEXT_KEYS if (value := getattr(record, key, None)) is not None}
    if "task_id" not in out:
        # Celery's own lines (received, retry, succeeded) are logged inside the task too.
        from celery._state import get_current_task

        task = get_current_task()
        if task is not None and task.request.id:
            out["task_id"] = str(task.request.id)
            out["task_name"] = str(task.name)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the bound fields, and exception text if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger: message [entity=… record_id=… task_id=…]` for a person at a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        context = _context(record)
        context.pop("task_name", None)
        if context:
            text += " [" + " ".join(f"{k}={v}" for k, v in context.items()) + "]"
        return text


def configure(level: str, fmt: str, secrets: list[str]) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
