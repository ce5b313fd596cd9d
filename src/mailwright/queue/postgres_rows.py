"""The PostgreSQL queue store's reader side.

``PostgresReads`` holds the queries (``get_message``, ``list_messages``, ``queue_counts``,
``next_due``, bodies...) of ``PostgresQueueStore``. They run on a pool of connections
(``psycopg_pool``) in autocommit mode; a read of several queries runs in one
``REPEATABLE READ READ ONLY`` transaction, so it sees one committed state. A body is
read one stored chunk per short query, so a slow consumer holds one chunk in memory and
no transaction open. Rows are mapped by ``queue.records``.

Trusts: its own database. Settings read: none.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import psycopg
import psycopg_pool

from mailwright.core.headers import HeaderList, HeaderParser
from mailwright.queue.postgres_schema import Conn, store_error
from mailwright.queue.records import MESSAGE_COLUMNS, QUEUED, RECIPIENT_COLUMNS, stored_message
from mailwright.queue.store import (
    DeferredGroup,
    MessageState,
    QueueCounts,
    StoredMessage,
    StoreError,
    UnknownMessageError,
)

_ACTIVE = MessageState.ACTIVE.value
_HOLD = MessageState.HOLD.value


class PostgresReads:
    """The read side of ``PostgresQueueStore`` (a mixin: the store opens the pool)."""

    _pool: psycopg_pool.ConnectionPool[Conn] | None

    @contextmanager
    def _reading(self, snapshot: bool = True) -> Iterator[Conn]:
        """A pooled connection; with ``snapshot``, its queries see one committed state."""
        pool = self._pool
        if pool is None:
            raise StoreError("queue store is not open")
        try:
            with pool.connection() as conn:
                if not snapshot:
                    yield conn
                    return
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
            raise store_error(exc) from exc

    def connection(self) -> AbstractContextManager[Conn]:
        """A pooled connection in autocommit mode (each statement its own transaction),
        for the cluster's tables (``queue.postgres_nodes``)."""
        return self._reading(snapshot=False)

    def next_due(self) -> float | None:
        """When the next queued recipient of an active message becomes due (a lease
        counts as not due before it expires)."""
        with self._reading(snapshot=False) as conn:
            row = conn.execute(
                """SELECT min(greatest(r.next_attempt, coalesce(r.lease_until, 0))) AS due
                FROM recipients r JOIN messages m ON m.id = r.message_id
                WHERE r.state = %s AND m.state = %s""",
                (QUEUED, _ACTIVE),
            ).fetchone()
        due = None if row is None else row["due"]
        return None if due is None else float(due)

    def get_message(self, queue_id: str) -> StoredMessage | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.queue_id = %s", (queue_id,)
            ).fetchone()
            if row is None:
                return None
            recipients = conn.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.message_id = %s ORDER BY r.idx",
                (row["id"],),
            ).fetchall()
        return stored_message(row, recipients)

    def list_messages(self) -> list[StoredMessage]:
        """Every message, oldest first, with its recipients."""
        return self._messages(None)

    def oldest_messages(self, limit: int) -> list[StoredMessage]:
        """The ``limit`` oldest messages with their recipients (a page of the queue)."""
        return self._messages(max(0, limit))

    def _messages(self, limit: int | None) -> list[StoredMessage]:
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.received_at, m.id LIMIT %s",
                (limit,),
            ).fetchall()
            by_message: dict[str, list[dict[str, Any]]] = {row["queue_id"]: [] for row in rows}
            for r in conn.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.message_id = ANY(%s)"
                " ORDER BY r.message_id, r.idx",
                ([row["id"] for row in rows],),
            ):
                by_message[r["queue_id"]].append(r)
        return [stored_message(row, by_message[row["queue_id"]]) for row in rows]

    def count_messages(self) -> int:
        with self._reading(snapshot=False) as conn:
            row = conn.execute("SELECT count(*) AS n FROM messages").fetchone()
        return 0 if row is None else int(row["n"])

    _COUNT_RECIPIENTS = """SELECT
        count(*) FILTER (WHERE m.state = %(hold)s) AS held,
        count(*) FILTER (WHERE m.state != %(hold)s
            AND coalesce(r.lease_until, 0) > %(now)s) AS delivering,
        count(*) FILTER (WHERE m.state != %(hold)s AND coalesce(r.lease_until, 0) <= %(now)s
            AND r.next_attempt > %(now)s) AS deferred,
        count(*) FILTER (WHERE m.state != %(hold)s AND coalesce(r.lease_until, 0) <= %(now)s
            AND r.next_attempt <= %(now)s) AS due
        FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.state = %(queued)s"""

    def queue_counts(self, now: float) -> QueueCounts:
        """Messages per state and queued recipients per next step, in two aggregates."""
        counts = QueueCounts()
        with self._reading() as conn:
            for row in conn.execute(
                "SELECT state, count(*) AS n, min(received_at) AS oldest"
                " FROM messages GROUP BY state"
            ):
                if row["state"] == _HOLD:
                    counts.held_messages = row["n"]
                else:
                    counts.active_messages += row["n"]
                oldest = row["oldest"]
                if oldest is not None and (counts.oldest is None or oldest < counts.oldest):
                    counts.oldest = float(oldest)
            args = {"hold": _HOLD, "now": now, "queued": QUEUED}
            got = conn.execute(self._COUNT_RECIPIENTS, args).fetchone()
        if got is not None:
            counts.held, counts.delivering = int(got["held"]), int(got["delivering"])
            counts.deferred, counts.due = int(got["deferred"]), int(got["due"])
        return counts

    _DEFERRED_WHERE = """FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.state = %s AND r.attempts > 0 AND m.state = %s"""

    def deferred_groups(self, limit: int = 20, samples: int = 5) -> list[DeferredGroup]:
        """Deferred recipients grouped by domain and last reply, largest groups first,
        each with up to ``samples`` queue ids."""
        args = (QUEUED, _ACTIVE)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT r.domain, r.last_status, r.last_reply, count(*) AS n,"
                f" max(r.last_attempt) AS last {self._DEFERRED_WHERE}"
                " GROUP BY r.domain, r.last_status, r.last_reply ORDER BY n DESC LIMIT %s",
                (*args, limit),
            ).fetchall()
            groups = {
                (r["domain"], r["last_status"], r["last_reply"]): DeferredGroup(
                    r["domain"], r["last_status"], r["last_reply"], r["n"], r["last"]
                )
                for r in rows
            }
            for r in conn.execute(
                "SELECT domain, last_status, last_reply, queue_id FROM ("
                " SELECT r.domain, r.last_status, r.last_reply, m.queue_id, row_number() OVER"
                " (PARTITION BY r.domain, r.last_status, r.last_reply"
                f" ORDER BY r.next_attempt, m.queue_id) AS n {self._DEFERRED_WHERE}"
                ") AS sampled WHERE n <= %s ORDER BY n",
                (*args, samples),
            ):
                group = groups.get((r["domain"], r["last_status"], r["last_reply"]))
                if group is not None and r["queue_id"] not in group.queue_ids:
                    group.queue_ids.append(r["queue_id"])
        return list(groups.values())

    def read_headers(self, queue_id: str) -> HeaderList:
        with self._reading(snapshot=False) as conn:
            row = conn.execute(
                "SELECT h.data FROM headers h JOIN messages m ON m.id = h.message_id"
                " WHERE m.queue_id = %s",
                (queue_id,),
            ).fetchone()
        if row is None:
            raise UnknownMessageError(queue_id)
        data = bytes(row["data"])
        parser = HeaderParser(max_size=len(data) + 1)
        parser.feed(data)
        parser.close()
        return parser.headers

    def read_body(self, queue_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The body in pieces of at most ``chunk_size`` bytes, one stored chunk in memory.

        The first stored chunk comes with the query that finds the message, now; each
        later one is its own short query. A message deleted while being read raises
        ``UnknownMessageError`` (at the next chunk it needs) rather than ending early.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        with self._reading(snapshot=False) as conn:
            row = conn.execute(
                "SELECT m.id, m.body_size, c.data FROM messages m LEFT JOIN body_chunks c"
                " ON c.message_id = m.id AND c.seq = 0 WHERE m.queue_id = %s",
                (queue_id,),
            ).fetchone()
        if row is None:
            raise UnknownMessageError(queue_id)
        first = None if row["data"] is None else bytes(row["data"])
        return self._body_pieces(queue_id, row["id"], row["body_size"], chunk_size, first)

    def _body_pieces(
        self, queue_id: str, mid: int, body_size: int, chunk_size: int, first: bytes | None
    ) -> Iterator[bytes]:
        seq = offset = 0
        while offset < body_size:
            data, first = first, None
            if data is None:
                with self._reading(snapshot=False) as conn:
                    row = conn.execute(
                        "SELECT data FROM body_chunks WHERE message_id = %s AND seq = %s",
                        (mid, seq),
                    ).fetchone()
                if row is None:
                    raise UnknownMessageError(f"{queue_id} (removed while its body was read)")
                data = bytes(row["data"])
            if len(data) <= chunk_size:
                yield data
            else:
                stored = memoryview(data)
                for start in range(0, len(stored), chunk_size):
                    yield bytes(stored[start : start + chunk_size])
            offset += len(data)
            seq += 1
