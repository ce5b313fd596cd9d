"""Regression: opening a second store on the same file in one process must not drop the locks.

``SqliteQueueStore.open`` used to open and close a descriptor of the database file
to create it private. Closing any descriptor of a file releases every POSIX lock
the process holds on it, SQLite's included: another process closing its last
connection then believed it was the last one and removed the WAL under the first
store's open connections ("disk I/O error", "database disk image is malformed").
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage
from mailwright.queue.writer import QueueWriter
from tests.unit.queue.conftest import build_message

ROOT = Path(__file__).resolve().parents[3]
OTHER_PROCESS = """
import sys
from pathlib import Path
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage
from mailwright.queue.writer import QueueWriter
from tests.unit.queue.conftest import build_message
store = SqliteQueueStore(Path(sys.argv[1]))
store.open(recover=False)
writer = QueueWriter(store)
writer.start()
for _ in range(3):
    writer.execute_sync(InsertMessage(build_message()))
writer.stop()
store.close()
"""


def test_a_second_store_in_the_same_process_keeps_the_first_ones_locks(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    first = SqliteQueueStore(path)
    first.open()
    writer = QueueWriter(first)
    writer.start()
    try:
        writer.execute_sync(InsertMessage(build_message()))
        assert first.count_messages() == 1
        second = SqliteQueueStore(path)
        second.open(recover=False)
        second.close()
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        subprocess.run([sys.executable, "-c", OTHER_PROCESS, str(path)], check=True, env=env)
        writer.execute_sync(InsertMessage(build_message()))
        assert first.count_messages() == 5
        with sqlite3.connect(path) as check:
            assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        writer.stop()
        first.close()
