"""Per-message statements of the SQLite store find a message's recipients by the primary
key, never by scanning the recipients_due index: with a backlog of deferred mail such a
scan costs time in proportion to the whole queue for every delivered message, every
selective flush and every start-up (found with bench/queue_scale.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage

from .conftest import build_message

PER_MESSAGE = ["_DELETE_DONE", "_DELETE_FINISHED", "_RESCHEDULE_MESSAGE", "_CLAIM_SELECTED",
               "_RECORD_RESULT", "_EXPAND", "_SET_TARGET", "_CLAIM_UPDATE"]  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> sqlite3.Connection:
    store = SqliteQueueStore(tmp_path / "queue.db")
    store.open()
    store.apply_batch([InsertMessage(build_message()) for _ in range(50)])
    store.close()
    return sqlite3.connect(tmp_path / "queue.db")


@pytest.mark.parametrize("name", PER_MESSAGE)
def test_per_message_statements_do_not_scan_the_due_index(
    db: sqlite3.Connection, name: str
) -> None:
    sql = getattr(SqliteQueueStore, name)
    plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, [None] * sql.count("?"))]
    assert not any("recipients_due" in step for step in plan), plan
    assert not any(step.startswith("SCAN r") or step == "SCAN recipients" for step in plan), plan
