"""Session-wide real services for the tests: an embedded Valkey, PostgreSQL from the machine's binaries.

Integration tests configure the process through WAVESYNC_* variables before the Celery app first reads its
configuration, so every test in the session shares one Redis (flushed between tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandboxes.serve import free_port
from wavesync.embedded import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
SHARED_REFERENCE = REPO.parent / "shared"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"), persistent=True).start()
    os.environ["WAVESYNC_REDIS_URL"] = server.url
    yield server
    server.stop()


def _postgres_bin() -> Path | None:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, Path(found))
    return candidates[0].parent if candidates else None


def _as_postgres_user(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the `postgres` (or `nobody`) account.
    if os.geteuid() != 0:
        return args
    for user in ("postgres", "nobody"):
        if subprocess.run(["id", "-u", user], capture_output=True, check=False).returncode == 0:
            return ["runuser", "-u", user, "--", *args]
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster; skipped locally when impossible, a failure under CI."""
    given = os.environ.get("WAVESYNC_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    bindir = _postgres_bin()
    try:
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
        root = Path(tempfile.mkdtemp(prefix="wavesync-pg-"))
        os.chmod(root, 0o777)  # noqa: S103 - the unprivileged PostgreSQL user must write here
        data = root / "data"
        port = free_port()
        subprocess.run(
            _as_postgres_user(
                [str(bindir / "initdb"), "-D", str(data), "-U", "wavesync", "--auth=trust", "-E", "UTF8", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        server = subprocess.Popen(
            _as_postgres_user(
                [
                    str(bindir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ]
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL could not be started under CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    url = f"postgresql+psycopg://wavesync@127.0.0.1:{port}/postgres"
    import sqlalchemy

    deadline = time.monotonic() + 30
    while True:
        try:
            engine = sqlalchemy.create_engine(url)
            with engine.connect():
                pass
            engine.dispose()
            break
        except sqlalchemy.exc.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                if os.environ.get("CI"):
                    pytest.fail("PostgreSQL did not accept connections")
                pytest.skip("PostgreSQL did not accept connections")
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(30)
    shutil.rmtree(root, ignore_errors=True)


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
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
