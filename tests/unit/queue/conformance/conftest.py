"""The backends the QueueStore conformance suite runs against.

Each backend is a factory of fresh store objects on one and the same storage, so a
test can close a store and open another on what the first left (durability, crash
recovery): a file for SQLite, a fresh database on the session's PostgreSQL server
(tests/support/postgres.py, started only when a PostgreSQL test runs) for PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import QueueStore

StoreFactory = Callable[[], QueueStore]


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    path = tmp_path / "queue.db"
    return lambda: SqliteQueueStore(path)


def _postgresql(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    url = str(request.getfixturevalue("postgres_database"))
    from mailwright.queue.postgres import PostgresQueueStore  # psycopg only when used

    return lambda: PostgresQueueStore(url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreFactory]] = {
    "sqlite": _sqlite,
    "postgresql": _postgresql,
}


@pytest.fixture(params=sorted(BACKENDS))
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of unopened stores on one backend's storage; all are closed at the end."""
    made: list[QueueStore] = []
    factory = BACKENDS[request.param](request, tmp_path)

    def make() -> QueueStore:
        store = factory()
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(new_store: StoreFactory) -> QueueStore:
    """An open store (as the daemon opens it: with recovery, holding the queue lock)."""
    s = new_store()
    s.open()
    return s
