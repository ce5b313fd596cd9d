"""The connection to the shared queue database for the policy state the nodes share.

With ``queue.backend = "postgresql"`` the state that must be the same on every node for
policy to hold when clients hop between nodes lives in the queue's database (schema
version 3, ``queue.postgres_schema``): greylist triplets (``policy.greylist_postgres``),
AUTH failure and connection rate events (``policy.limits_postgres``), the host status
(``manager.hoststatus``) and MTA-STS policies (``routing.mtasts_store``). Each of them
runs its statements through ``StateDatabase.run``: one short transaction on a small pool
of its own (opened at the first use, with the queue store's conventions: the connection
string, the password file, ``synchronous_commit`` never off), blocking, so callers run
it in a thread. ``state_database`` gives every part of one process the same one.

A database that cannot be reached is a ``StoreError`` for the caller, who decides what
it means (docs/cluster.md); after a lost connection or a pool timeout the next calls for
``pause`` seconds fail at once instead of each waiting for the pool's timeout, so a
database that is down costs the sessions no waiting.

Trusts: the database the connection string names (the operator's). Settings read:
``queue.postgresql``, ``queue.postgresql_password_file`` (through ``state_database``).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psycopg
import psycopg_pool

from mailwright.config.schema import QueueSection
from mailwright.queue.postgres import PostgresQueueStore
from mailwright.queue.postgres_schema import Conn
from mailwright.queue.store import StoreError

__all__ = ["StateDatabase", "state_database"]

T = TypeVar("T")
PAUSE = 5.0  # seconds calls fail at once after the database was found unreachable


class StateDatabase:
    """A pool on the shared database; ``run`` is thread-safe and blocking."""

    def __init__(
        self,
        conninfo: str,
        *,
        password_file: Path | None = None,
        pool_size: int = 2,
        timeout: float = 5.0,
        pause: float = PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = PostgresQueueStore(
            conninfo, password_file=password_file, pool_size=pool_size, connect_timeout=timeout
        )
        self.where = self._store.where
        self.pause = pause
        self._clock = clock
        self._lock = threading.Lock()
        self._open = False
        self._down_until = float("-inf")
        self._why = ""

    def run(self, work: Callable[[Conn], T], *, transaction: bool = True) -> T:
        """``work(conn)`` in one transaction (or, without ``transaction``, each statement
        its own: one round trip less for a single statement); StoreError when the
        database fails."""
        if self._clock() < self._down_until:
            raise StoreError(f"shared state {self.where} is unavailable: {self._why}")
        try:
            self._opened()
            with self._store.connection() as conn:
                if not transaction:
                    return work(conn)
                with conn.transaction():
                    return work(conn)
        except StoreError as exc:
            if _unreachable(exc):
                self._down_until = self._clock() + self.pause
                self._why = str(exc)
            raise

    def _opened(self) -> None:
        with self._lock:
            if not self._open:
                self._store.open_for_reading()  # refuses a newer schema, as the queue does
                self._open = True

    def close(self) -> None:
        with self._lock:
            self._store.close()
            self._open = False


def _unreachable(exc: StoreError) -> bool:
    """Whether the failure was the database's absence, not one statement's."""
    cause = exc.__cause__
    if cause is None:
        return True  # open_for_reading's own errors: no connection, no schema
    return isinstance(
        cause, psycopg.OperationalError | psycopg.InterfaceError | psycopg_pool.PoolTimeout
    )


_databases: dict[tuple[int, str, str], StateDatabase] = {}
_databases_lock = threading.Lock()


def state_database(queue: QueueSection) -> StateDatabase:
    """This process's ``StateDatabase`` for the configured queue database (one per process:
    a worker forked from a process that had one makes its own)."""
    key = (os.getpid(), queue.postgresql, str(queue.postgresql_password_file))
    with _databases_lock:
        database = _databases.get(key)
        if database is None:
            database = StateDatabase(queue.postgresql, password_file=queue.postgresql_password_file)
            _databases[key] = database
            atexit.register(database.close)
    return database
