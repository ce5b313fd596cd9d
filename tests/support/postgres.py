"""A real PostgreSQL for the tests: one server per test session, a fresh database per test.

``postgres_server`` (session scope) runs ``initdb`` in a temporary directory and starts
``postgres`` on a free loopback port, as the ``postgres`` user (initdb refuses root): the
Debian binaries in ``/usr/lib/postgresql/*/bin`` (newest first) or those on PATH.
``postgres_database`` (function scope) creates a new, empty database on it with
``CREATE DATABASE`` (cheap: a copy of template1) and gives its libpq URI, so each test
starts clean while the server starts once. Missing PostgreSQL, psycopg or root is a
``require_peer`` skip on a workstation and a failure under ``CI=true``.

What it trusts: the local PostgreSQL installation. Reads no settings.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.milters import free_port, stop, wait_connectable
from tests.support.peers import is_root, require_module, require_peer

_numbers = itertools.count(1)


class PostgresServer:
    """A running server: ``url(dbname)`` and ``new_database()``."""

    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """Create an empty database; returns its URI."""
        import psycopg

        name = f"t{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]  # our own name
        return self.url(name)


def _binaries() -> tuple[str | None, str | None]:
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    path = os.pathsep.join([*(str(b) for b in bins), os.environ.get("PATH", "")])
    return shutil.which("initdb", path=path), shutil.which("postgres", path=path)


def _wait_ready(url: str, timeout: float = 30) -> None:
    """Wait until the server takes logins (it listens before it has finished starting)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.02)  # polling a server that is still starting


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_module("psycopg", "pip install '.[dev]' (psycopg)")
    initdb, server = _binaries()
    require_peer("PostgreSQL", bool(initdb and server), "initdb and postgres (package postgresql)")
    require_peer("root", is_root(), "runs PostgreSQL as the postgres user")
    assert initdb is not None and server is not None
    root = Path(tempfile.mkdtemp(prefix="mailwright-pg-"))  # pytest's tmp is closed to others
    shutil.chown(root, "postgres")
    data = root / "data"
    run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-A", "trust", "-U", "postgres", "-D", str(data)],
                   check=True, capture_output=True)  # fmt: skip
    port = free_port()
    # fsync stays on: the queue's tests check durability; a test server needs few buffers
    proc = subprocess.Popen(
        [*run_as, server, "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(root), "-c", "shared_buffers=16MB", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_connectable(("127.0.0.1", port))
        _wait_ready(PostgresServer(port).url())
        yield PostgresServer(port)
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The libpq URI of a new, empty database on the session's server."""
    return postgres_server.new_database()
