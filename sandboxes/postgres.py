"""A throwaway PostgreSQL cluster from the machine's server binaries, for the tests and `python -m bench --postgres`.

Like the API sandboxes, a stand-in for what a deployment talks to; fsync is off (nothing here must survive)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy

from sandboxes.serve import free_port


def _bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.insert(0, Path(found))
    if not candidates:
        raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine")
    return candidates[0].parent


def _unprivileged(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the `postgres` (or `nobody`) account.
    if os.geteuid() != 0:
        return args
    for user in ("postgres", "nobody"):
        if subprocess.run(["id", "-u", user], capture_output=True, check=False).returncode == 0:
            return ["runuser", "-u", user, "--", *args]
    raise RuntimeError("running as root and no unprivileged user to run PostgreSQL")


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Yields a SQLAlchemy URL of a fresh cluster. Raises RuntimeError (or the failed initdb's CalledProcessError)
    when no cluster can be started here."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="wavesync-pg-"))
    os.chmod(root, 0o777)  # noqa: S103 - the unprivileged PostgreSQL user must write here
    data = root / "data"
    port = free_port()
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "wavesync", "--auth=trust", "-E", "UTF8", "--no-sync"]
    subprocess.run(_unprivileged(initdb), check=True, capture_output=True)
    server = subprocess.Popen(
        _unprivileged(
            [
                *(str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(root)),
                *("-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"),
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"postgresql+psycopg://wavesync@127.0.0.1:{port}/postgres"
    try:
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
                    raise RuntimeError("PostgreSQL did not accept connections") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fresh_database(server_url: str, name: str) -> Iterator[str]:
    """A new database on the cluster for one stack, dropped afterwards."""
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
