"""Session-wide real services for the tests: an embedded Valkey, PostgreSQL from the machine's binaries.

Integration tests configure the process through WAVESYNC_* variables before the Celery app first reads its
configuration, so every test in the session shares one Redis (flushed between tests).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from sandboxes.postgres import postgres_cluster
from shared.store.db import engine_for
from wavesync.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"), persistent=True).start()
    os.environ["WAVESYNC_REDIS_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; skipped locally when impossible, a failure under CI."""
    given = os.environ.get("WAVESYNC_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    with ExitStack() as cluster:
        try:
            url = cluster.enter_context(postgres_cluster())
        except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL could not be started under CI: {exc}")
            pytest.skip(f"PostgreSQL not available: {exc}")
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test runs on SQLite and on PostgreSQL (a fresh schema each time)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'links.db'}"
        return
    base = request.getfixturevalue("postgres_url")
    import sqlalchemy

    name = f"t{os.getpid()}_{time.monotonic_ns()}"
    engine = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + f"/{name}"
    yield url
    # The test's pooled connections are closed here, not left to the garbage collector: psycopg warns from a finalizer
    # then, and pytest formats that warning's traceback in the middle of whatever runs, which on Python 3.11 can be
    # another ast.parse (Hypothesis describing a strategy): "AST constructor recursion depth mismatch".
    engine_for(url).dispose()
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
