"""The backends the QueueStore conformance suite runs against.

Each backend is a factory of fresh store objects on one and the same storage, so a
test can close a store and open another on what the first left (durability, crash
recovery). Only SQLite today; the PostgreSQL backend adds its factory here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import QueueStore

StoreFactory = Callable[[], QueueStore]


def _sqlite(tmp_path: Path) -> StoreFactory:
    path = tmp_path / "queue.db"
    return lambda: SqliteQueueStore(path)


BACKENDS: dict[str, Callable[[Path], StoreFactory]] = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of unopened stores on one backend's storage; all are closed at the end."""
    made: list[QueueStore] = []
    factory = BACKENDS[request.param](tmp_path)

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
