"""What a long-running service checks before it starts: a writable data directory and a migrated link store.

Each failure is one line and exit status 2 (a `SettingsError`), never a traceback: a container that crash-loops
must say why in its first log line.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import SQLAlchemyError

from shared.settings import Settings, SettingsError
from shared.store.db import alembic_config, engine_for


def prepare_data_dir(settings: Settings) -> Path:
    """Create WAVESYNC_DATA_DIR if needed and prove it writable (beat keeps its schedule there, SQLite its file)."""
    path = settings.data_dir
    probe = path / f".write-test-{uuid.uuid4().hex}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SettingsError(
            [
                f"cannot use WAVESYNC_DATA_DIR={path}: {reason}; point it at a directory this user "
                f"(uid {os.getuid()}) can write, e.g. a volume"
            ]
        ) from None
    return path


def require_migrated(settings: Settings) -> None:
    """Refuse to run against a link store whose schema is behind (or ahead of) this version's migrations."""
    heads = set(ScriptDirectory.from_config(alembic_config(settings.database_url)).get_heads())
    try:
        with engine_for(settings.database_url).connect() as connection:
            current = set(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise SettingsError([f"cannot reach the link store ({detail}); check WAVESYNC_DATABASE_URL"]) from None
    if current != heads:
        have = ", ".join(sorted(current)) or "no tables"
        raise SettingsError(
            [
                f"the link store is at revision {have}, this version needs {', '.join(sorted(heads))}: "
                "run `wavesync db upgrade` first"
            ]
        )
