"""queue.backend: the configured store, and psycopg loaded only for PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailwright.config.schema import QueueSection
from mailwright.queue import backend
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import SRC


def test_sqlite_is_the_default_and_may_clear_every_lease(tmp_path: Path) -> None:
    queue = QueueSection(directory=tmp_path)
    store = backend.queue_store(queue, shared=True)
    assert isinstance(store, SqliteQueueStore) and store.shared
    assert backend.clears_all_leases(queue)
    assert not backend.exists(queue)
    assert backend.describe(queue) == str(tmp_path / "queue.db")


def test_postgresql_never_clears_other_nodes_leases(tmp_path: Path) -> None:
    queue = QueueSection(
        directory=tmp_path, backend="postgresql", postgresql="postgresql://u:pw@db:5433/mail"
    )
    assert not backend.clears_all_leases(queue)
    assert backend.exists(queue)
    assert backend.describe(queue) == "postgresql://db:5433/mail"  # no password


def test_a_sqlite_queue_does_not_load_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mailwright.config.schema import QueueSection\n"
        "from mailwright.queue.backend import queue_store\n"
        f"store = queue_store(QueueSection(directory=Path({str(tmp_path)!r})))\n"
        "store.open()\n"
        "store.close()\n"
        "print('psycopg' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        check=True,
    )
    assert out.stdout.decode().strip() == "False"
