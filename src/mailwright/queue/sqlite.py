"""The embedded queue store: one SQLite database in WAL mode with ``synchronous=FULL``.

Layout: ``messages`` (envelope, MAIL parameters, origin, listing fields), ``recipients``
(the unit of work: state, schedule, last result, lease), ``headers`` (the encoded header
section, one blob per message) and ``body_chunks`` (the body in ~1 MiB blobs, so a
100 MiB message goes in and out with bounded memory). The schema version lives in
``PRAGMA user_version``; the schema is created on first open and older files are migrated
in place (version 2 adds each recipient's resolved local target: mailer, target and
controlling user, NULL for an ordinary address).

Writes: ``apply_batch`` runs a whole batch in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the
write connection, the batch's new messages inserted together (multi-row statements). When
any op fails, that transaction is rolled back and the batch runs again op by op, each op
inside its own savepoint so that a failing op is undone alone. When an op's failure makes
SQLite abandon the whole transaction (it may on SQLITE_FULL), the batch runs again from
BEGIN without that op: nothing had been committed. The COMMIT
is the fsync that makes the batch durable; a failed COMMIT is rolled back and raised for
the whole batch, never retried. Only the ``QueueWriter`` thread calls it.
Reads use a small pool of separate connections and see the last committed state
(WAL lets them run while the writer commits).

Deleted content is zeroed in b-tree pages but not in freed overflow pages
(``secure_delete = FAST``): large bodies of delivered mail stay in free pages of the file
until reused, as the blocks of a deleted queue file do.

This is the single-process embedded store: ``open`` treats every lease found in the
file as left over from a crash and clears it. Leases are still owner + expiry columns,
as a shared (PostgreSQL) store needs.

Trusts: its own database file (checked with ``PRAGMA quick_check`` at open) and values
already validated by the protocol layer. Settings read: none directly; the caller passes
``queue.path`` as ``path`` and may pass ``busy_timeout``, ``body_chunk_size`` and
``max_bytes`` (a cap on the database size: beyond it, inserts fail with StoreFullError).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailwright.core.address import Address
from mailwright.core.envelope import BodyType, Envelope, MailParams, Notify, Recipient, Ret
from mailwright.core.headers import HeaderList, HeaderParser
from mailwright.core.target import Mailer, Target
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeferredGroup,
    DeleteIfDone,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    MessageState,
    NewMessage,
    Op,
    Origin,
    QueueCounts,
    RecipientState,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    RescheduleNow,
    SetWarned,
    StoredMessage,
    StoredRecipient,
    StoreError,
    StoreFullError,
    UnknownMessageError,
)

SCHEMA_VERSION = 2
DEFAULT_BODY_CHUNK = 1 << 20
_JOURNAL_SIZE_LIMIT = 64 << 20  # truncate the WAL back to this after a checkpoint
# 8 KiB pages: SQLite writes the WAL and checkpoints page by page, one system call each
# (~20 us on ext4 whatever the size); doubling the page halves the calls for a body, and
# the queue writer's time per 100 KiB message fell 15 % (1 KiB messages: no change).
_PAGE_SIZE = 8192
_CHECKPOINT_BYTES = 4 << 20  # checkpoint when the WAL holds this much (SQLite's default)

_QUEUED = RecipientState.QUEUED.value

_SCHEMA_V1 = [
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        queue_id TEXT NOT NULL UNIQUE,
        sender_local TEXT,              -- NULL (with sender_domain): the null path <>
        sender_domain TEXT,
        mail_size INTEGER,              -- SIZE= as the client declared it
        body_type TEXT NOT NULL,
        smtputf8 INTEGER NOT NULL,
        ret TEXT,
        envid TEXT,
        auth TEXT,
        received_at REAL NOT NULL,
        size INTEGER NOT NULL,          -- header section + separator + body
        body_size INTEGER NOT NULL,
        state TEXT NOT NULL,
        hold_reason TEXT,
        protocol TEXT NOT NULL,
        client_address TEXT NOT NULL,
        client_name TEXT NOT NULL,
        helo TEXT NOT NULL,
        auth_user TEXT NOT NULL,
        local_user TEXT NOT NULL,
        message_id_header TEXT,
        subject TEXT,
        warned INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE recipients (
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        local TEXT NOT NULL,
        domain TEXT NOT NULL,
        orcpt TEXT,
        notify TEXT,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL,
        last_attempt REAL,
        last_status TEXT,
        last_reply TEXT,
        remote_mta TEXT,
        lease_owner TEXT,
        lease_until REAL,
        PRIMARY KEY (message_id, idx)
    )""",
    "CREATE INDEX recipients_due ON recipients (state, next_attempt)",
    """CREATE TABLE headers (
        message_id INTEGER PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
        data BLOB NOT NULL
    )""",
    """CREATE TABLE body_chunks (
        message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (message_id, seq)
    )""",
]

# version 2: a recipient may carry its resolved local target (alias expansion). Additive:
# ADD COLUMN with NULL defaults rewrites nothing, so migrating a large queue is instant.
_SCHEMA_V2 = [
    "ALTER TABLE recipients ADD COLUMN mailer TEXT",  # core.target.Mailer; NULL: an address
    "ALTER TABLE recipients ADD COLUMN target TEXT",
    "ALTER TABLE recipients ADD COLUMN ctl_user TEXT",
]

_MIGRATIONS: dict[int, list[str]] = {1: _SCHEMA_V1, 2: _SCHEMA_V2}  # version -> statements

_MESSAGE_COLUMNS = """m.id, m.queue_id, m.sender_local, m.sender_domain, m.mail_size,
    m.body_type, m.smtputf8, m.ret, m.envid, m.auth, m.received_at, m.size, m.state,
    m.hold_reason, m.protocol, m.client_address, m.client_name, m.helo, m.auth_user,
    m.local_user, m.message_id_header, m.subject, m.warned"""

_RECIPIENT_COLUMNS = """m.queue_id, r.idx, r.local, r.domain, r.orcpt, r.notify, r.state,
    r.attempts, r.next_attempt, r.last_attempt, r.last_status, r.last_reply, r.remote_mta,
    r.lease_owner, r.lease_until, r.mailer, r.target, r.ctl_user"""

_FIND_ID = "SELECT id FROM messages WHERE queue_id = ?"


@dataclass(slots=True)
class Recovery:
    """What ``open`` cleaned up after an unclean stop."""

    leases_cleared: int = 0
    orphans_deleted: int = 0
    finished_deleted: int = 0


class SqliteQueueStore:
    """``QueueStore`` on one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        body_chunk_size: int = DEFAULT_BODY_CHUNK,
        max_bytes: int | None = None,
    ) -> None:
        self.path = path
        self.recovery: Recovery | None = None  # set by open()
        self._busy_timeout = busy_timeout
        self._body_chunk = body_chunk_size
        self._max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._reads: _ReadPool | None = None
        self._handlers: dict[type[Any], Callable[[sqlite3.Connection, Any], object]] = {
            InsertMessage: self._insert_message,
            ClaimDue: self._claim_due,
            RecordResults: self._record_results,
            ReleaseLeases: self._release_leases,
            HoldMessage: self._hold_message,
            ReleaseMessage: self._release_message,
            DeleteMessage: self._delete_message,
            SetWarned: self._set_warned,
            RescheduleNow: self._reschedule_now,
            AddRecipients: self._add_recipients,
            DeleteIfDone: self._delete_if_done_op,
        }

    # ---- life cycle -------------------------------------------------------------------

    def open(self, recover: bool = True) -> None:
        """Open for writing. ``recover=False`` is for a second process (an admin command)
        while the daemon may run: no lease clearing, no clean-up of its work in flight."""
        if self._conn is not None:
            return
        try:
            _create_private(self.path)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open queue store {self.path}: {exc}") from exc
        try:
            self._configure_writer(conn)
            self._check_integrity(conn)
            self._migrate(conn)
            if recover:
                self.recovery = self._recover(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open queue store {self.path}: {exc}") from exc
            raise
        self._conn = conn
        self._reads = _ReadPool(self._connect_reader)

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
                (_QUEUED, MessageState.ACTIVE.value),
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

    def open_for_reading(self) -> None:
        """Open only the read side, e.g. for ``mailq`` while the daemon owns the writer.

        Runs no recovery (the daemon may have work in flight) and creates nothing.
        """
        if self._reads is not None:
            return
        if not self.path.exists():
            raise StoreError(f"no queue at {self.path}")
        try:
            conn = self._connect_reader()
            conn.execute("SELECT 1 FROM messages LIMIT 1").fetchall()
            conn.close()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read queue store {self.path}: {exc}") from exc
        self._reads = _ReadPool(self._connect_reader)

    def close(self) -> None:
        """Close every connection; idempotent. The writer must be stopped first."""
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # opened here, used by the writer thread
            cached_statements=256,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    def _configure_writer(self, conn: sqlite3.Connection) -> None:
        # only a new, empty database takes a page size (WAL mode fixes it), see _PAGE_SIZE
        conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"queue store {self.path}: cannot use WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")  # NORMAL can lose commits on power loss
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, _CHECKPOINT_BYTES // page_size)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
        # Debian builds SQLite with SECURE_DELETE: every deleted body would be overwritten
        # with zeros, page by page, through the WAL and the checkpoint, which doubled the
        # queue's write I/O for relayed mail. FAST still zeroes what is deleted from b-tree
        # pages (envelopes, headers, small bodies) but leaves freed overflow pages (large
        # bodies) as they were until reused, as deleting a queue file does in Postfix.
        conn.execute("PRAGMA secure_delete = FAST")
        if self._max_bytes is not None:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {max(1, self._max_bytes // page_size)}")

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            lines = [line for row in rows for line in row.splitlines() if "***" not in line]
            more = f"; {len(lines) - 3} more" if len(lines) > 3 else ""
            detail = "; ".join(lines[:3]) + more
            raise StoreError(
                f"queue store {self.path} failed its integrity check ({detail}); "
                "restore it from a backup or move it aside"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"queue store {self.path} has schema version {version}, newer than "
                    f"this program's {SCHEMA_VERSION}"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise

    # "+r.state" keeps SQLite from answering "a queued recipient of this message?" through
    # the recipients_due index (state, next_attempt), which scans every queued recipient
    # of the whole queue per message (13 s to open a store of 20,000 deferred messages):
    # the primary key (message_id, idx) finds a message's few recipients directly.
    _DELETE_FINISHED = """DELETE FROM messages WHERE NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND +r.state = ?)"""

    def _recover(self, conn: sqlite3.Connection) -> Recovery:
        """Void leases of interrupted work; drop orphans and finished messages."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            report = Recovery()
            report.leases_cleared = conn.execute(
                "UPDATE recipients SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner IS NOT NULL OR lease_until IS NOT NULL"
            ).rowcount
            for table in ("recipients", "headers", "body_chunks"):
                report.orphans_deleted += conn.execute(
                    f"DELETE FROM {table} WHERE message_id NOT IN (SELECT id FROM messages)"
                ).rowcount
            report.finished_deleted = conn.execute(self._DELETE_FINISHED, (_QUEUED,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            _rollback_quietly(conn)
            raise
        return report

    # ---- writing ----------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        if self._conn is not None and ops:
            results = self._fast_batch(self._conn, ops)
            if results is not None:
                return results
        failed: dict[int, Exception] = {}  # ops that made SQLite give up the transaction
        while True:
            conn = self._conn
            if conn is None:
                raise StoreError("queue store is not open")
            try:
                return self._run_batch(conn, ops, failed)
            except _TransactionLostError as lost:
                # nothing is committed yet: run the batch again without that op
                failed[lost.index] = lost.error

    def _run_batch(
        self, conn: sqlite3.Connection, ops: Sequence[Op[Any]], failed: dict[int, Exception]
    ) -> list[object]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc
        try:
            results = [
                failed[i] if i in failed else self._apply_one(conn, i, op)
                for i, op in enumerate(ops)
            ]
            conn.execute("COMMIT")
        except BaseException as exc:
            self._abort(conn)
            if isinstance(exc, sqlite3.Error):  # the COMMIT (or a savepoint) failed
                raise _store_error(exc) from exc  # for the whole batch; never retried
            raise
        return results

    def _apply_one(self, conn: sqlite3.Connection, index: int, op: Op[Any]) -> object:
        handler = self._handlers.get(type(op))
        if handler is None:
            return TypeError(f"not a queue operation: {op!r}")
        conn.execute("SAVEPOINT op")
        try:
            result = handler(conn, op)
        except Exception as exc:
            if not conn.in_transaction:
                # SQLite gave up the whole transaction, as it may on SQLITE_FULL or I/O errors
                raise _TransactionLostError(index, _translate(exc)) from exc
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return _translate(exc)
        conn.execute("RELEASE op")
        return result

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Leave the write connection usable after a failed batch."""
        if _rollback_quietly(conn):
            return
        # ROLLBACK itself failed: start over with a fresh connection
        conn.close()
        self._conn = None
        try:
            fresh = self._connect()
            self._configure_writer(fresh)
        except (sqlite3.Error, StoreError):
            return  # the next batch reports "not open"
        self._conn = fresh

    # -- InsertMessage

    _INSERT_MESSAGE = """INSERT INTO messages (queue_id, sender_local, sender_domain, mail_size,
        body_type, smtputf8, ret, envid, auth, received_at, size, body_size, state,
        hold_reason, protocol, client_address, client_name, helo, auth_user, local_user,
        message_id_header, subject)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
    _INSERT_HEADERS = "INSERT INTO headers (message_id, data) VALUES (?, ?)"
    _INSERT_CHUNK = "INSERT INTO body_chunks (message_id, seq, data) VALUES (?, ?, ?)"
    _INSERT_RECIPIENT = """INSERT INTO recipients (message_id, idx, local, domain, orcpt, notify,
        state, next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"""

    def _insert_message(self, conn: sqlite3.Connection, op: InsertMessage) -> None:
        self._insert(conn, op.message)

    # The fast path: the whole batch in one transaction without a savepoint per op, and
    # the new messages of the batch inserted with one multi-row INSERT per table instead
    # of five statements each. Each statement releases the GIL while SQLite works, and
    # getting it back behind the busy event loop thread cost tens of microseconds each
    # time, in the writer thread that limits throughput. When any op raises before COMMIT
    # the transaction is rolled back (nothing is kept) and the batch runs again op by op,
    # with savepoints, which reports each op's own failure. A failed COMMIT fails the
    # batch, as there.

    _INLINE_BODY = 256 << 10  # larger bodies are streamed chunk by chunk
    _INLINE_BATCH = 16 << 20  # bound on the body bytes held for one batch's statements

    def _fast_batch(self, conn: sqlite3.Connection, ops: Sequence[Op[Any]]) -> list[object] | None:
        """Apply ``ops`` in one transaction, no savepoints; None: use the op-by-op path."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc
        results: list[object] = [None] * len(ops)
        try:
            for step in _fast_steps(ops):
                if isinstance(step, list):
                    self._insert_rows_of(conn, [ops[i] for i in step])
                    continue
                op = ops[step]
                handler = self._handlers.get(type(op))
                if handler is None:
                    raise TypeError(f"not a queue operation: {op!r}")
                results[step] = handler(conn, op)
        except Exception:  # any op's problem: let the op-by-op path find and report it
            self._abort(conn)
            return None
        try:
            conn.execute("COMMIT")
        except BaseException as exc:
            self._abort(conn)
            if isinstance(exc, sqlite3.Error):
                raise _store_error(exc) from exc  # for the whole batch; never retried
            raise
        return results

    def _insert_rows_of(self, conn: sqlite3.Connection, ops: Sequence[Op[Any]]) -> None:
        first = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM messages").fetchone()[0]
        messages: list[tuple[object, ...]] = []
        headers: list[tuple[object, ...]] = []
        chunks: list[tuple[object, ...]] = []
        recipients: list[tuple[object, ...]] = []
        streamed: list[tuple[int, NewMessage]] = []
        inline = 0
        for mid, op in enumerate(ops, start=first):
            assert isinstance(op, InsertMessage)
            msg = op.message
            if not msg.envelope.recipients:
                raise ValueError(f"message {msg.queue_id} has no recipients")
            header_bytes = msg.headers.encode()
            messages.append((mid, *_message_row(msg, header_bytes)))
            headers.append((mid, header_bytes))
            size = msg.body.size
            if size <= self._INLINE_BODY and inline + size <= self._INLINE_BATCH:
                inline += size
                pieces = list(msg.body.chunks(self._body_chunk))
                if sum(map(len, pieces)) != size:
                    raise StoreError(f"body of {msg.queue_id}: size changed")
                chunks.extend((mid, seq, piece) for seq, piece in enumerate(pieces))
            else:
                streamed.append((mid, msg))
            recipients.extend(
                _recipient_row(mid, i, r, msg.due) for i, r in enumerate(msg.envelope.recipients)
            )
        _insert_many(conn, _MESSAGE_TABLE, messages)
        _insert_many(conn, "headers (message_id, data)", headers)
        _insert_many(conn, "body_chunks (message_id, seq, data)", chunks)
        _insert_many(conn, _RECIPIENT_TABLE, recipients)
        for mid, op in enumerate(ops, start=first):  # resolved targets: usually none
            assert isinstance(op, InsertMessage)
            self._set_targets(conn, mid, 0, op.message.envelope.recipients)
        for mid, msg in streamed:
            written = 0
            for seq, piece in enumerate(msg.body.chunks(self._body_chunk)):
                conn.execute(self._INSERT_CHUNK, (mid, seq, piece))
                written += len(piece)
            if written != msg.body.size:
                raise StoreError(f"body of {msg.queue_id}: size changed")

    def _insert(self, conn: sqlite3.Connection, msg: NewMessage) -> None:
        if not msg.envelope.recipients:
            raise ValueError(f"message {msg.queue_id} has no recipients")
        header_bytes = msg.headers.encode()
        try:
            cur = conn.execute(self._INSERT_MESSAGE, _message_row(msg, header_bytes))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"queue id {msg.queue_id} is already in the queue") from exc
        mid = cur.lastrowid
        conn.execute(self._INSERT_HEADERS, (mid, header_bytes))
        written = 0
        for seq, chunk in enumerate(msg.body.chunks(self._body_chunk)):
            conn.execute(self._INSERT_CHUNK, (mid, seq, chunk))
            written += len(chunk)
        if written != msg.body.size:
            raise StoreError(
                f"body of {msg.queue_id}: read {written} bytes, expected {msg.body.size}"
            )
        self._insert_recipients(conn, mid, 0, msg.envelope.recipients, msg.due)
        self._set_targets(conn, mid, 0, msg.envelope.recipients)

    def _insert_recipients(
        self,
        conn: sqlite3.Connection,
        mid: int | None,
        first_index: int,
        recipients: Sequence[Recipient],
        due: float,
    ) -> None:
        conn.executemany(
            self._INSERT_RECIPIENT,
            [_recipient_row(mid, first_index + i, r, due) for i, r in enumerate(recipients)],
        )

    _SET_TARGET = """UPDATE recipients SET mailer = ?, target = ?, ctl_user = ?
        WHERE message_id = ? AND idx = ?"""

    def _set_targets(
        self,
        conn: sqlite3.Connection,
        mid: int | None,
        first_index: int,
        recipients: Sequence[Recipient],
    ) -> None:
        """Store the resolved targets (alias expansion's recipients; usually none)."""
        rows = [
            (r.target.mailer.value, r.target.value, r.target.user, mid, first_index + i)
            for i, r in enumerate(recipients)
            if r.target is not None
        ]
        if rows:
            conn.executemany(self._SET_TARGET, rows)

    # -- ClaimDue

    _CLAIM_SELECT = f"""SELECT r.message_id AS mid, {_RECIPIENT_COLUMNS}
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.state = ? AND r.next_attempt <= ? AND m.state = ?
          AND (r.lease_until IS NULL OR r.lease_until <= ?)
        ORDER BY r.next_attempt LIMIT ?"""
    _CLAIM_SELECTED = f"""SELECT r.message_id AS mid, {_RECIPIENT_COLUMNS}
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE m.queue_id IN (SELECT value FROM json_each(?))
          AND +r.state = ? AND +r.next_attempt <= ? AND m.state = ?
          AND (r.lease_until IS NULL OR r.lease_until <= ?)
        ORDER BY r.next_attempt LIMIT ?"""
    _CLAIM_UPDATE = """UPDATE recipients SET lease_owner = ?, lease_until = ?
        WHERE message_id = ? AND idx = ?"""

    def _claim_due(self, conn: sqlite3.Connection, op: ClaimDue) -> list[StoredRecipient]:
        args = (_QUEUED, op.now, MessageState.ACTIVE.value, op.now, op.limit)
        if op.queue_ids is None:
            rows = conn.execute(self._CLAIM_SELECT, args).fetchall()
        else:
            selected = json.dumps(list(op.queue_ids))
            rows = conn.execute(self._CLAIM_SELECTED, (selected, *args)).fetchall()
        until = op.now + op.lease_seconds
        conn.executemany(
            self._CLAIM_UPDATE, [(op.owner, until, row["mid"], row["idx"]) for row in rows]
        )
        claimed = [_stored_recipient(row) for row in rows]
        for recipient in claimed:
            recipient.lease_owner, recipient.lease_until = op.owner, until
        return claimed

    # -- RecordResults and DeleteIfDone

    _RECORD_RESULT = """UPDATE recipients SET state = ?,
            next_attempt = coalesce(?, next_attempt),
            attempts = attempts + ?,
            last_attempt = coalesce(?, last_attempt),
            last_status = ?, last_reply = ?, remote_mta = ?,
            lease_owner = NULL, lease_until = NULL
        WHERE message_id = (SELECT id FROM messages WHERE queue_id = ?)
          AND idx = ? AND state = ?"""
    # "+state": by the primary key, not the recipients_due index (see _DELETE_FINISHED)
    _DELETE_DONE = """DELETE FROM messages WHERE queue_id = ? AND NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND +r.state = ?)"""

    def _record_results(self, conn: sqlite3.Connection, op: RecordResults) -> RecordOutcome:
        stale: list[tuple[str, int]] = []
        touched: dict[str, None] = {}  # an ordered set
        for res in op.results:
            queued = not res.state.is_final
            cur = conn.execute(
                self._RECORD_RESULT,
                (
                    res.state.value,
                    res.next_attempt if queued else None,
                    0 if res.attempted_at is None else 1,
                    res.attempted_at,
                    res.status,
                    res.reply,
                    res.remote_mta,
                    res.queue_id,
                    res.index,
                    _QUEUED,
                ),
            )
            if cur.rowcount == 0:
                stale.append((res.queue_id, res.index))
            else:
                touched[res.queue_id] = None
        for msg in op.new_messages:
            self._insert(conn, msg)
        return RecordOutcome(stale=stale, removed=self._delete_if_done(conn, list(touched)))

    def _delete_if_done_op(self, conn: sqlite3.Connection, op: DeleteIfDone) -> list[str]:
        return self._delete_if_done(conn, op.queue_ids)

    def _delete_if_done(self, conn: sqlite3.Connection, queue_ids: Sequence[str]) -> list[str]:
        # one statement per message; rowcount counts the message row only, not the cascade
        return [
            queue_id
            for queue_id in queue_ids
            if conn.execute(self._DELETE_DONE, (queue_id, _QUEUED)).rowcount > 0
        ]

    # -- AddRecipients

    _EXPAND = """UPDATE recipients SET state = ?, lease_owner = NULL, lease_until = NULL
        WHERE message_id = ? AND idx = ? AND state = ?"""
    _NEXT_INDEX = "SELECT coalesce(max(idx), -1) + 1 FROM recipients WHERE message_id = ?"

    def _add_recipients(self, conn: sqlite3.Connection, op: AddRecipients) -> list[int]:
        row = conn.execute(_FIND_ID, (op.queue_id,)).fetchone()
        if row is None:
            raise UnknownMessageError(op.queue_id)
        mid = row["id"]
        if op.replaces is not None:
            args = (RecipientState.EXPANDED.value, mid, op.replaces, _QUEUED)
            if conn.execute(self._EXPAND, args).rowcount == 0:
                raise ValueError(f"recipient {op.replaces} of {op.queue_id} is not queued")
        first = conn.execute(self._NEXT_INDEX, (mid,)).fetchone()[0]
        self._insert_recipients(conn, mid, first, op.recipients, op.now)
        self._set_targets(conn, mid, first, op.recipients)
        for msg in op.new_messages:  # a list's copy, an "expanded" report
            self._insert(conn, msg)
        if op.replaces is not None:
            self._delete_if_done(conn, [op.queue_id])  # expanded to nobody: finished
        return list(range(first, first + len(op.recipients)))

    # -- message-level administration

    def _hold_message(self, conn: sqlite3.Connection, op: HoldMessage) -> bool:
        sql = "UPDATE messages SET state = ?, hold_reason = ? WHERE queue_id = ?"
        return conn.execute(sql, (MessageState.HOLD.value, op.reason, op.queue_id)).rowcount > 0

    def _release_message(self, conn: sqlite3.Connection, op: ReleaseMessage) -> bool:
        sql = "UPDATE messages SET state = ?, hold_reason = NULL WHERE queue_id = ?"
        return conn.execute(sql, (MessageState.ACTIVE.value, op.queue_id)).rowcount > 0

    def _delete_message(self, conn: sqlite3.Connection, op: DeleteMessage) -> bool:
        sql = "DELETE FROM messages WHERE queue_id = ?"
        return conn.execute(sql, (op.queue_id,)).rowcount > 0

    def _set_warned(self, conn: sqlite3.Connection, op: SetWarned) -> bool:
        sql = "UPDATE messages SET warned = 1 WHERE queue_id = ?"
        return conn.execute(sql, (op.queue_id,)).rowcount > 0

    # -- leases and schedule

    def _release_leases(self, conn: sqlite3.Connection, op: ReleaseLeases) -> int:
        sql = "UPDATE recipients SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
        return conn.execute(sql, (op.owner,)).rowcount

    _RESCHEDULE = """UPDATE recipients SET next_attempt = ?
        WHERE state = ? AND (? IS NULL OR domain = ?)"""
    _RESCHEDULE_MESSAGE = (
        """UPDATE recipients SET next_attempt = ?
        WHERE +state = ? AND (? IS NULL OR domain = ?) AND message_id = ("""
        + _FIND_ID
        + ")"
    )

    def _reschedule_now(self, conn: sqlite3.Connection, op: RescheduleNow) -> int:
        domain = None if op.recipient_domain is None else op.recipient_domain.lower()
        args = (op.now, _QUEUED, domain, domain)
        if op.queue_ids is None:
            return conn.execute(self._RESCHEDULE, args).rowcount
        return sum(
            conn.execute(self._RESCHEDULE_MESSAGE, (*args, queue_id)).rowcount
            for queue_id in op.queue_ids
        )

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
            raise _store_error(exc) from exc

    def get_message(self, queue_id: str) -> StoredMessage | None:
        with self._reading() as conn:
            row = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.queue_id = ?", (queue_id,)
            ).fetchone()
            if row is None:
                return None
            recipients = conn.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id WHERE r.message_id = ? ORDER BY r.idx",
                (row["id"],),
            ).fetchall()
        return _stored_message(row, recipients)

    def list_messages(self) -> list[StoredMessage]:
        """Every message, oldest first, with its recipients."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m ORDER BY m.received_at, m.id"
            ).fetchall()
            by_message: dict[str, list[sqlite3.Row]] = {row["queue_id"]: [] for row in rows}
            for r in conn.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients r"
                " JOIN messages m ON m.id = r.message_id ORDER BY r.message_id, r.idx"
            ):
                by_message[r["queue_id"]].append(r)
        return [_stored_message(row, by_message[row["queue_id"]]) for row in rows]

    def oldest_messages(self, limit: int) -> list[StoredMessage]:
        """The ``limit`` oldest messages with their recipients (a page of the queue)."""
        with self._reading() as conn:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m ORDER BY m.received_at, m.id LIMIT ?",
                (max(0, limit),),
            ).fetchall()
            by_message: dict[str, list[sqlite3.Row]] = {row["queue_id"]: [] for row in rows}
            ids = [row["id"] for row in rows]
            marks = ",".join("?" * len(ids))
            for r in conn.execute(
                f"SELECT {_RECIPIENT_COLUMNS} FROM recipients r"
                f" JOIN messages m ON m.id = r.message_id WHERE r.message_id IN ({marks})"
                " ORDER BY r.message_id, r.idx",
                ids,
            ):
                by_message[r["queue_id"]].append(r)
        return [_stored_message(row, by_message[row["queue_id"]]) for row in rows]

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
        queries (no rows are loaded: cheap enough for every metrics scrape)."""
        counts = QueueCounts()
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
            args = {"hold": MessageState.HOLD.value, "now": now, "queued": _QUEUED}
            row = conn.execute(self._COUNT_RECIPIENTS, args).fetchone()
        counts.held, counts.delivering, counts.deferred, counts.due = (int(v) for v in row)
        return counts

    _DEFERRED_WHERE = """FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.state = ? AND r.attempts > 0 AND m.state = ?"""

    def deferred_groups(self, limit: int = 20, samples: int = 5) -> list[DeferredGroup]:
        """Deferred recipients grouped by domain and last reply, largest groups first,
        each with up to ``samples`` queue ids."""
        args = (_QUEUED, MessageState.ACTIVE.value)
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
        with self._reading(snapshot=False) as conn:  # the first stored chunk comes along
            row = conn.execute(
                "SELECT m.id, m.body_size, c.data FROM messages m LEFT JOIN body_chunks c"
                " ON c.message_id = m.id AND c.seq = 0 WHERE m.queue_id = ?",
                (queue_id,),
            ).fetchone()
        if row is None:
            raise UnknownMessageError(queue_id)
        return self._body_pieces(queue_id, row["id"], row["body_size"], chunk_size, row["data"])

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


class _ReadPool:
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


class _TransactionLostError(Exception):
    """Op ``index`` failed and SQLite rolled back the whole transaction with it."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


# ---- conversions ----------------------------------------------------------------------------

_MESSAGE_TABLE = """messages (id, queue_id, sender_local, sender_domain, mail_size, body_type,
    smtputf8, ret, envid, auth, received_at, size, body_size, state, hold_reason, protocol,
    client_address, client_name, helo, auth_user, local_user, message_id_header, subject)"""
_RECIPIENT_TABLE = """recipients (message_id, idx, local, domain, orcpt, notify, state,
    next_attempt)"""
_MAX_VARIABLES = 30000  # below SQLite's default limit of 32766 bound parameters


# Operations that commute with inserting new messages: they never name a message that is
# not yet in the queue (a claim may take the new messages' recipients, as it would have
# one commit later), so a batch's new messages may all go in first, together.
_COMMUTE_WITH_INSERTS = (ClaimDue, RecordResults, ReleaseLeases)


def _fast_steps(ops: Sequence[Op[Any]]) -> list[int | list[int]]:
    """The order of the fast path: op indexes, with the InsertMessage ops grouped (a list)
    for one multi-row insert. They move ahead of the other ops when all of these commute
    with them; otherwise only consecutive inserts are grouped and the order is kept."""
    inserts = [i for i, op in enumerate(ops) if type(op) is InsertMessage]
    if not inserts:
        return list(range(len(ops)))
    others = [i for i, op in enumerate(ops) if type(op) is not InsertMessage]
    if all(type(ops[i]) in _COMMUTE_WITH_INSERTS for i in others) and not _names_new(ops):
        return [inserts, *others]
    steps: list[int | list[int]] = []
    for i, op in enumerate(ops):
        last = steps[-1] if steps else None
        if type(op) is not InsertMessage:
            steps.append(i)
        elif isinstance(last, list):
            last.append(i)
        else:
            steps.append([i])
    return steps


def _names_new(ops: Sequence[Op[Any]]) -> bool:
    """Whether a result in the batch is for a message the batch inserts (never in practice)."""
    new = {op.message.queue_id for op in ops if isinstance(op, InsertMessage)}
    return any(
        res.queue_id in new for op in ops if isinstance(op, RecordResults) for res in op.results
    )


def _insert_many(conn: sqlite3.Connection, table: str, rows: list[tuple[object, ...]]) -> None:
    """INSERT ``rows`` (all of one width) with as few multi-row statements as the limits let."""
    if not rows:
        return
    width = len(rows[0])
    per_statement = max(1, _MAX_VARIABLES // width)
    placeholders = "(" + ", ".join("?" * width) + ")"
    for start in range(0, len(rows), per_statement):
        part = rows[start : start + per_statement]
        values = ", ".join([placeholders] * len(part))
        conn.execute(f"INSERT INTO {table} VALUES {values}", [v for row in part for v in row])


def _recipient_row(mid: int | None, index: int, r: Recipient, due: float) -> tuple[object, ...]:
    return (
        mid,
        index,
        r.address.local,
        r.address.domain,
        r.orcpt,
        _notify_text(r.notify),
        _QUEUED,
        due,
    )


def _message_row(msg: NewMessage, header_bytes: bytes) -> tuple[object, ...]:
    env, params, origin = msg.envelope, msg.envelope.params, msg.origin
    message_id = msg.headers.get("Message-ID")
    subject = msg.headers.get("Subject")
    held = msg.hold_reason is not None
    return (
        msg.queue_id,
        None if env.sender is None else env.sender.local,
        None if env.sender is None else env.sender.domain,
        params.size,
        params.body.value,
        int(params.smtputf8),
        None if params.ret is None else params.ret.value,
        params.envid,
        params.auth,
        msg.received_at,
        len(header_bytes) + 2 + msg.body.size,
        msg.body.size,
        (MessageState.HOLD if held else MessageState.ACTIVE).value,
        msg.hold_reason,
        origin.protocol,
        origin.client_address,
        origin.client_name,
        origin.helo,
        origin.auth_user,
        origin.local_user,
        None if message_id is None else message_id.text,
        None if subject is None else subject.text,
    )


def _notify_text(notify: frozenset[Notify] | None) -> str | None:
    return None if notify is None else ",".join(sorted(n.value for n in notify))


def _notify_set(text: str | None) -> frozenset[Notify] | None:
    if text is None:
        return None
    return frozenset(Notify(part) for part in text.split(",") if part)


def _stored_recipient(row: sqlite3.Row) -> StoredRecipient:
    return StoredRecipient(
        message_id=row["queue_id"],
        index=row["idx"],
        address=str(Address(row["local"], row["domain"])),
        orcpt=row["orcpt"],
        notify=row["notify"],
        state=RecipientState(row["state"]),
        attempts=row["attempts"],
        next_attempt=row["next_attempt"],
        last_attempt=row["last_attempt"],
        last_status=row["last_status"],
        last_reply=row["last_reply"],
        remote_mta=row["remote_mta"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        target=_target(row),
    )


def _target(row: sqlite3.Row) -> Target | None:
    mailer = row["mailer"]
    if mailer is None:
        return None
    return Target(Mailer(mailer), row["target"] or "", row["ctl_user"] or "")


def _stored_message(row: sqlite3.Row, recipient_rows: list[sqlite3.Row]) -> StoredMessage:
    sender = None
    if row["sender_local"] is not None:
        sender = Address(row["sender_local"], row["sender_domain"])
    params = MailParams(
        size=row["mail_size"],
        body=BodyType(row["body_type"]),
        smtputf8=bool(row["smtputf8"]),
        ret=None if row["ret"] is None else Ret(row["ret"]),
        envid=row["envid"],
        auth=row["auth"],
    )
    return StoredMessage(
        queue_id=row["queue_id"],
        envelope=Envelope(sender, params, [_envelope_recipient(r) for r in recipient_rows]),
        received_at=row["received_at"],
        size=row["size"],
        state=MessageState(row["state"]),
        hold_reason=row["hold_reason"],
        origin=Origin(
            protocol=row["protocol"],
            client_address=row["client_address"],
            client_name=row["client_name"],
            helo=row["helo"],
            auth_user=row["auth_user"],
            local_user=row["local_user"],
        ),
        message_id_header=row["message_id_header"],
        subject=row["subject"],
        warned=bool(row["warned"]),
        recipients=[_stored_recipient(r) for r in recipient_rows],
    )


def _envelope_recipient(row: sqlite3.Row) -> Recipient:
    return Recipient(
        Address(row["local"], row["domain"]),
        _notify_set(row["notify"]),
        row["orcpt"],
        _target(row),
    )


# ---- errors and transactions ---------------------------------------------------------------


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _translate(exc: Exception) -> Exception:
    """A failure as callers see it: database and I/O errors become StoreError."""
    if isinstance(exc, StoreError | UnknownMessageError):
        return exc
    if _is_full(exc):
        error: StoreError = StoreFullError(f"queue store is full: {exc}")
    elif isinstance(exc, sqlite3.Error | OSError):
        error = StoreError(f"queue store error: {exc}")
    else:
        return exc  # a caller's mistake (ValueError, TypeError): passed on as it is
    error.__cause__ = exc
    return error


def _store_error(exc: Exception) -> StoreError:
    """A failure of the whole batch (or of a read), always a StoreError."""
    translated = _translate(exc)
    if isinstance(translated, StoreError):
        return translated
    error = StoreError(f"queue store error: {exc!r}")
    error.__cause__ = exc
    return error


def _rollback_quietly(conn: sqlite3.Connection) -> bool:
    """Roll back any open transaction; False if even that failed."""
    if not conn.in_transaction:
        return True
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        return False
    return True


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (it holds mail).

    An existing file is never opened here: closing any descriptor of it would release
    every POSIX lock this process holds on it, SQLite's included, and a connection
    elsewhere could then delete the WAL under this process's open connections.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
