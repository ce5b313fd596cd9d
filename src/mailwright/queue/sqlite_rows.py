"""The SQLite queue store's reader side.

``SqliteReads`` holds the queries (``get_message``, ``list_messages``, ``queue_counts``,
``next_due``, bodies...) that run on a small pool of read connections (``ReadPool``),
each seeing the last committed state: WAL lets them run while the writer commits. The
rows are mapped by ``queue.records``. Trusts: its own database. Settings read: none.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailwright.core.headers import HeaderList, HeaderParser
from mailwright.queue.bodylog import read_segment
from mailwright.queue.records import MESSAGE_COLUMNS, RECIPIENT_COLUMNS, stored_message
from mailwright.queue.sqlite_schema import (
    QUEUED,
    refusing_since,
    store_error,
)
from mailwright.queue.store import (
    DeferredGroup,
    MessageState,
    QueueCounts,
    StoredMessage,
    StoreError,
    UnknownMessageError,
)

_FIND_ID = "SELECT id FROM messages WHERE queue_id = ?"


class SqliteReads:
    """The read side of ``SqliteQueueStore`` (a mixin: the store opens the pool)."""

    _reads: ReadPool | None
    _bodies_dir: Path  # the body log's segments (queue.bodylog)
    path: Path  # the database file

    def next_due(self) -> float | None:
        """When the next queued recipient becomes due (its lease counts as not due).

        Walks the recipients_due index in ``next_attempt`` order and stops at the first
        recipient whose ``next_attempt`` is no earlier than the best time found: only
        the leased recipients (deliveries in flight) before the first free one are read,
        not the whole backlog (an aggregate over it took 21 ms at 100,000 messages, each
        time the scheduler went idle).
        """
        best: float | None = None
        with self._reading() as conn:
            rows = conn.execute(
                """SELECT r.next_attempt, r.lease_until
                FROM recipients r JOIN messages m ON m.id = r.message_id
                WHERE r.state = ? AND m.state = ? ORDER BY r.next_attempt""",
                (QUEUED, MessageState.ACTIVE.value),
            )
            try:
                for next_attempt, lease_until in rows:
                    if best is not None and next_attempt >= best:
                        break
                    due = max(next_attempt, lease_until or 0.0)
                    best = due if best is None else min(best, due)
            finally:
                rows.close()  # finish the statement before the read transaction ends
        return None if best is None else float(best)

    # ---- reading ----------------------------------------------------------------------

    @contextmanager
    def _reading(self, snapshot: bool = True) -> Iterator[sqlite3.Connection]:
        """A read connection; with ``snapshot``, its queries see one committed state."""
        if self._reads is None:
            raise StoreError("queue store is not open")
        try:
            with self._reads.connection() as conn:
                if not snapshot:
                    yield conn
                    return
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    if conn.in_transaction:  # never hand a connection back mid-transaction
                        conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise store_error(exc) from exc

    def get_message(self, queue_id: str) -> StoredMessage | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.queue_id = ?", (queue_id,)
            ).fetchone()
            if row is None:
                return None
            recipients = conn.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.message_id = ? ORDER BY r.idx",
                (row["id"],),
            ).fetchall()
        return stored_message(row, recipients)

    def list_messages(self) -> list[StoredMessage]:
        """Every message, oldest first, with its recipients."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.received_at, m.id"
            ).fetchall()
            by_message: dict[str, list[sqlite3.Row]] = {row["queue_id"]: [] for row in rows}
            for r in conn.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id ORDER BY r.message_id, r.idx"
            ):
                by_message[r["queue_id"]].append(r)
        return [stored_message(row, by_message[row["queue_id"]]) for row in rows]

    def oldest_messages(self, limit: int) -> list[StoredMessage]:
        """The ``limit`` oldest messages with their recipients (a page of the queue)."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m ORDER BY m.received_at, m.id LIMIT ?",
                (max(0, limit),),
            ).fetchall()
            by_message: dict[str, list[sqlite3.Row]] = {row["queue_id"]: [] for row in rows}
            ids = [row["id"] for row in rows]
            marks = ",".join("?" * len(ids))
            for r in conn.execute(
                f"SELECT {RECIPIENT_COLUMNS} FROM recipients r"
                f" JOIN messages m ON m.id = r.message_id WHERE r.message_id IN ({marks})"
                " ORDER BY r.message_id, r.idx",
                ids,
            ):
                by_message[r["queue_id"]].append(r)
        return [stored_message(row, by_message[row["queue_id"]]) for row in rows]

    def count_messages(self) -> int:
        with self._reading(snapshot=False) as conn:
            return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    _COUNT_RECIPIENTS = """SELECT
        coalesce(sum(m.state = :hold), 0),
        coalesce(sum(m.state != :hold AND coalesce(r.lease_until, 0) > :now), 0),
        coalesce(sum(m.state != :hold AND coalesce(r.lease_until, 0) <= :now
            AND r.next_attempt > :now), 0),
        coalesce(sum(m.state != :hold AND coalesce(r.lease_until, 0) <= :now
            AND r.next_attempt <= :now), 0)
        FROM recipients r JOIN messages m ON m.id = r.message_id WHERE r.state = :queued"""

    def queue_counts(self, now: float) -> QueueCounts:
        """Messages per state and queued recipients per next step, in two aggregate
        queries (no rows are loaded: cheap enough for every metrics scrape), and whether
        a failed sync of the log keeps commits from being acknowledged (the lost mark)."""
        counts = QueueCounts(refusing_since=refusing_since(self.path))
        with self._reading() as conn:
            for state, n, oldest in conn.execute(
                "SELECT state, count(*), min(received_at) FROM messages GROUP BY state"
            ):
                if state == MessageState.HOLD.value:
                    counts.held_messages = n
                else:
                    counts.active_messages += n
                if oldest is not None and (counts.oldest is None or oldest < counts.oldest):
                    counts.oldest = float(oldest)
            args = {"hold": MessageState.HOLD.value, "now": now, "queued": QUEUED}
            row = conn.execute(self._COUNT_RECIPIENTS, args).fetchone()
        counts.held, counts.delivering, counts.deferred, counts.due = (int(v) for v in row)
        return counts

    _DEFERRED_WHERE = """FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.state = ? AND r.attempts > 0 AND m.state = ?"""

    def deferred_groups(self, limit: int = 20, samples: int = 5) -> list[DeferredGroup]:
        """Deferred recipients grouped by domain and last reply, largest groups first,
        each with up to ``samples`` queue ids."""
        args = (QUEUED, MessageState.ACTIVE.value)
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT r.domain, r.last_status, r.last_reply, count(*) AS n,"
                f" max(r.last_attempt) {self._DEFERRED_WHERE}"
                " GROUP BY r.domain, r.last_status, r.last_reply ORDER BY n DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            groups = {(r[0], r[1], r[2]): DeferredGroup(r[0], r[1], r[2], r[3], r[4]) for r in rows}
            for domain, status, reply, queue_id in conn.execute(
                "SELECT domain, last_status, last_reply, queue_id FROM ("
                " SELECT r.domain, r.last_status, r.last_reply, m.queue_id, row_number() OVER"
                " (PARTITION BY r.domain, r.last_status, r.last_reply"
                f" ORDER BY r.next_attempt, m.queue_id) AS n {self._DEFERRED_WHERE}"
                ") WHERE n <= ?",
                (*args, samples),
            ):
                group = groups.get((domain, status, reply))
                if group is not None and queue_id not in group.queue_ids:
                    group.queue_ids.append(queue_id)
        return list(groups.values())

    def read_headers(self, queue_id: str) -> HeaderList:
        with self._reading(snapshot=False) as conn:
            row = conn.execute(
                "SELECT h.data FROM headers h JOIN messages m ON m.id = h.message_id"
                " WHERE m.queue_id = ?",
                (queue_id,),
            ).fetchone()
        if row is None:
            raise UnknownMessageError(queue_id)
        data: bytes = row["data"]
        parser = HeaderParser(max_size=len(data) + 1)
        parser.feed(data)
        parser.close()
        return parser.headers

    def read_body(self, queue_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The body in pieces of at most ``chunk_size`` bytes, one stored chunk in memory.

        Each stored chunk is read in its own short query, so a slow consumer does not
        pin an old snapshot (which would stop WAL checkpoints); the first one comes with
        the query that finds the message, now. A message deleted while being read raises
        ``UnknownMessageError`` (at the next chunk it needs) rather than ending early.
        """
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        for _ in range(3):  # a body moved out of its segment meanwhile: look again
            with self._reading(snapshot=False) as conn:  # the first stored chunk comes along
                row = conn.execute(
                    "SELECT m.id, m.body_size, m.body_segment, m.body_offset, c.data"
                    " FROM messages m LEFT JOIN body_chunks c"
                    " ON c.message_id = m.id AND c.seq = 0 WHERE m.queue_id = ?",
                    (queue_id,),
                ).fetchone()
            if row is None:
                raise UnknownMessageError(queue_id)
            segment = row["body_segment"]
            if segment is None:
                return self._body_pieces(
                    queue_id, row["id"], row["body_size"], chunk_size, row["data"]
                )
            try:
                return read_segment(
                    self._bodies_dir, segment, row["body_offset"], row["body_size"], chunk_size
                )
            except FileNotFoundError:
                continue
        raise StoreError(f"{queue_id}: its body segment {segment} is missing")

    def _body_pieces(
        self, queue_id: str, mid: int, body_size: int, chunk_size: int, first: bytes | None
    ) -> Iterator[bytes]:
        seq = offset = 0
        while offset < body_size:
            data, first = first, None
            if data is None:
                with self._reading(snapshot=False) as conn:
                    row = conn.execute(
                        "SELECT data FROM body_chunks WHERE message_id = ? AND seq = ?",
                        (mid, seq),
                    ).fetchone()
                if row is None:
                    raise UnknownMessageError(f"{queue_id} (removed while its body was read)")
                data = row["data"]
            if len(data) <= chunk_size:
                yield data
            else:
                stored = memoryview(data)
                for start in range(0, len(stored), chunk_size):
                    yield bytes(stored[start : start + chunk_size])
            offset += len(data)
            seq += 1


class ReadPool:
    """Read connections handed out one query (or snapshot) at a time, to any thread."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreError("queue store is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        finally:
            with self._lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
