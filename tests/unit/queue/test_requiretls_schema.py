"""The REQUIRETLS column (RFC 8689) in the queue's schema: SQLite version 5 and PostgreSQL
version 6 add it to a queue that has messages, which read back without REQUIRETLS, and a
message queued after the migration keeps it. On SQLite, the columns after it (the body's
place in the body log) stay in step, and a body moved out of the log keeps it too.

Real SQLite files in tmp_path; a real PostgreSQL (tests/support/postgres.py).
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from mailwright.core.envelope import MailParams
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.sqlite_batch import GRADUATE_AFTER
from mailwright.queue.store import InsertMessage, QueueStore, StoreError
from tests.support.postgres import sql_rows, sql_run
from tests.unit.queue.conftest import old_queue

from .conftest import build_message

TLS = MailParams(requiretls=True)


def requiretls(store: QueueStore, queue_id: str) -> bool:
    stored = store.get_message(queue_id)
    assert stored is not None
    return stored.envelope.params.requiretls


def test_a_version_4_queue_is_migrated_and_its_messages_are_without_requiretls(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.db"
    old_queue(path, 4)
    store = SqliteQueueStore(path)
    store.open()
    try:
        assert store.schema_from == 4
        old = store.get_message("OLDQID")
        assert old is not None and old.envelope.params.requiretls is False
        assert old.recipients[0].address == "b@y.test"
        store.apply_batch([InsertMessage(build_message("NEWTLS", params=TLS))])
        assert requiretls(store, "NEWTLS") is True
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 5
        columns = {row[1]: row for row in raw.execute("PRAGMA table_info(messages)")}
        _, _, kind, notnull, default, _ = columns["requiretls"]
        assert (kind, notnull, default) == ("INTEGER", 1, "0")


def test_a_body_in_the_body_log_keeps_requiretls(tmp_path: Path) -> None:
    # the body's segment and offset come after REQUIRETLS in the INSERTs: all must match
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=30_000)
    store.open()
    try:
        store.apply_batch([InsertMessage(build_message("OLD", body=b"o" * 40_000, params=TLS))])
        results = store.apply_batch(  # the duplicate makes it op by op
            [
                InsertMessage(build_message("NEW", body=b"n" * 40_000, params=TLS)),
                InsertMessage(build_message("OLD")),
            ]
        )
        assert results[0] is None and isinstance(results[1], StoreError)
        with sqlite3.connect(path) as raw:
            rows = raw.execute(
                "SELECT queue_id, requiretls, body_segment IS NOT NULL, body_offset"
                " FROM messages ORDER BY queue_id"
            ).fetchall()
        assert rows == [("NEW", 1, 1, 0), ("OLD", 1, 1, 0)]  # each in a segment of its own
        assert b"".join(store.read_body("NEW")) == b"n" * 40_000
        # the older segment's body moves into the database, the message row stays
        old_segment = raw_segment(path, "OLD")
        assert old_segment is not None
        past = time.time() - GRADUATE_AFTER - 60
        os.utime(path.with_name(path.name + ".bodies") / old_segment, (past, past))
        store.sweep_bodies(all_dead=False)
        assert raw_segment(path, "OLD") is None
        assert requiretls(store, "OLD") is True
        assert b"".join(store.read_body("OLD")) == b"o" * 40_000
    finally:
        store.close()


def raw_segment(path: Path, queue_id: str) -> str | None:
    """The segment of the body log holding a message's body; None: in the database."""
    with sqlite3.connect(path) as raw:
        sql = "SELECT body_segment FROM messages WHERE queue_id = ?"
        segment: str | None = raw.execute(sql, (queue_id,)).fetchone()[0]
    return segment


def test_a_version_5_database_is_migrated_and_its_messages_are_without_requiretls(
    postgres_database: str,
) -> None:
    from mailwright.queue import postgres_schema
    from mailwright.queue.postgres import PostgresQueueStore

    store = PostgresQueueStore(postgres_database)
    store.open()
    store.apply_batch([InsertMessage(build_message("OLD"))])
    store.close()
    # as version 5 left it: no column
    sql_run(postgres_database, "ALTER TABLE messages DROP COLUMN requiretls")
    sql_run(postgres_database, "DROP TABLE tlsrpt_posts")  # version 7's
    sql_run(postgres_database, "ALTER TABLE tlsrpt_counts DROP COLUMN receiving_helo,"
            " DROP COLUMN failure_reason")  # version 8's  # fmt: skip
    sql_run(postgres_database, "UPDATE mailwright_schema SET version = 5")
    store = PostgresQueueStore(postgres_database)
    store.open()
    try:
        assert requiretls(store, "OLD") is False
        store.apply_batch([InsertMessage(build_message("NEWTLS", params=TLS))])
        assert requiretls(store, "NEWTLS") is True
    finally:
        store.close()
    version = sql_rows(postgres_database, "SELECT version FROM mailwright_schema")
    assert version == [(postgres_schema.SCHEMA_VERSION,)] == [(8,)]
    column = sql_rows(
        postgres_database,
        "SELECT data_type, is_nullable, column_default FROM information_schema.columns"
        " WHERE table_name = 'messages' AND column_name = 'requiretls'",
    )
    assert column == [("integer", "NO", "0")]
