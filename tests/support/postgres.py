"""A real PostgreSQL for the tests: one server per test session, a fresh database per test.

``postgres_server`` (session scope) runs ``initdb`` in a temporary directory and starts
``postgres`` on a free loopback port, as the ``postgres`` user (initdb refuses root): the
Debian binaries in ``/usr/lib/postgresql/*/bin`` (newest first) or those on PATH.
``PrivatePostgres`` is such a server of a test's own, to stop and start again.
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
from typing import Any

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


class PrivatePostgres(PostgresServer):
    """A server of one's own in ``root`` (a test may stop and start it again, on the
    same port and data): ``start()``, ``stop()``."""

    def __init__(self, root: Path) -> None:
        super().__init__(free_port())
        initdb, self._server = _binaries()
        self._pg_ctl = str(Path(initdb or "").with_name("pg_ctl"))
        require_peer("PostgreSQL", bool(initdb and self._server), "initdb and postgres")
        require_peer("root", is_root(), "runs PostgreSQL as the postgres user")
        assert initdb is not None
        self.root = root
        shutil.chown(root, "postgres")
        self.data = root / "data"
        subprocess.run([*RUN_AS, initdb, "-A", "trust", "-U", "postgres", "-D", str(self.data)],
                       check=True, capture_output=True)  # fmt: skip
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivatePostgres:
        assert self._server is not None
        # fsync stays on: the queue's tests check durability; a test server needs few buffers
        self._proc = subprocess.Popen(
            [*RUN_AS, self._server, "-D", str(self.data), "-p", str(self.port), "-h",
             "127.0.0.1", "-k", str(self.root), "-c", "shared_buffers=16MB",
             "-c", "max_connections=200"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_connectable(("127.0.0.1", self.port))
        _wait_ready(self.url())
        return self

    def stop(self) -> None:
        """A fast shutdown: clients are disconnected, not waited for. Through ``pg_ctl``:
        a signal to runuser would reach postgres followed by a SIGKILL, which leaves
        backends holding the shared memory and a restart refused."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            subprocess.run([*RUN_AS, self._pg_ctl, "stop", "-D", str(self.data), "-m", "fast",
                            "-w", "-t", "30"], capture_output=True)  # fmt: skip
        stop(self._proc, timeout=30)
        self._proc = None


RUN_AS = ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    require_module("psycopg", "pip install '.[dev]' (psycopg)")
    root = Path(tempfile.mkdtemp(prefix="mailwright-pg-"))  # pytest's tmp is closed to others
    try:
        server = PrivatePostgres(root).start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """The libpq URI of a new, empty database on the session's server."""
    return postgres_server.new_database()


def sql_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    """The rows of one query, on a connection of its own (what a test inspects)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()  # type: ignore[arg-type]


def sql_run(url: str, sql: str) -> None:
    """One statement on a connection of its own (what a test changes behind the store)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def state_database(url: str) -> Any:
    """A ``queue.postgres_state.StateDatabase`` (as a node has one) on ``url``, whose
    schema is made first as a daemon makes it at start."""
    from mailwright.queue.postgres import PostgresQueueStore
    from mailwright.queue.postgres_state import StateDatabase

    store = PostgresQueueStore(url)
    store.open(recover=False, exclusive=False)
    store.close()
    return StateDatabase(url)
