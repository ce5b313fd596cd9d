"""The SQLite queue store's batch engine: the writer side of ``SqliteQueueStore``.

``apply_batch`` runs a whole batch in one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the
write connection, the batch's new messages inserted together (multi-row statements).
When any op fails, that transaction is rolled back and the batch runs again op by op,
each op inside its own savepoint so that a failing op is undone alone. When an op's
failure makes SQLite abandon the whole transaction (it may on SQLITE_FULL), the batch
runs again from BEGIN without that op: nothing had been committed. The COMMIT writes
the log; the ``fdatasync`` that makes it durable (``sync_log``, for a batch holding any
durable op: ``Op.durable``) comes after the write lock is released, in ``apply_batch``
or, through ``apply_batch_unsynced``, from the ``QueueWriter``'s sync stage; a failed
COMMIT is rolled back and raised for the whole batch, never retried, and after a failed
sync no sync succeeds until a checkpoint has synced every commit into the database file
(``sync_log``). Only the ``QueueWriter``'s threads call it. One handler per operation
type. When several processes write one file, an flock on a gate file beside it orders
their batches (the sync is outside it). Large bodies of new messages go to the body log
first (``queue.bodylog``), before the gate: the transaction only refers to them. An
append that fails leaves those bodies to the transaction, as small ones are.

Trusts: values already validated by the protocol layer. Settings read: none.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from mailwright.core.envelope import Recipient
from mailwright.queue.bodylog import SPARE_SWEEP, BodyLog, fsync_directory, read_segment
from mailwright.queue.records import (
    RECIPIENT_COLUMNS,
    message_row,
    recipient_row,
    stored_recipient,
)
from mailwright.queue.sqlite_rows import _FIND_ID
from mailwright.queue.sqlite_schema import (
    QUEUED,
    configure_writer,
    lost_mark,
    rollback_quietly,
    store_error,
    translate_error,
)
from mailwright.queue.sqlwrites import (
    SharedWrites,
    batch_steps,
    result_row,
    result_waves,
    wave_lists,
)
from mailwright.queue.store import (
    NO_LEASE,
    AddRecipients,
    ClaimDue,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    Lease,
    MessageState,
    NewMessage,
    Op,
    RecipientState,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    ReleaseProcessLeases,
    RenewLeases,
    RescheduleNow,
    SetWarned,
    StoredRecipient,
    StoreError,
    Sync,
    UnknownMessageError,
)


class _TransactionLostError(Exception):
    """Op ``index`` failed and SQLite rolled back the whole transaction with it."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


log = logging.getLogger(__name__)
_T = TypeVar("_T")

# the id, the columns of ``records.message_row`` in its order, then the body's placement
_MESSAGE_TABLE = """messages (id, queue_id, sender_local, sender_domain, mail_size, body_type,
    smtputf8, ret, envid, auth, requiretls, received_at, size, body_size, state, hold_reason,
    protocol, client_address, client_name, helo, auth_user, local_user, message_id_header,
    subject, body_segment, body_offset)"""
# bodies from this size on go to the body log: below it the second write of the
# checkpoint costs less than a file write and an fdatasync more per batch
BODY_LOG_MIN = 32 << 10
SWEEP_INTERVAL = 60.0  # seconds between looks for segments nobody refers to
GRADUATE_AFTER = 600.0  # seconds: bodies still in a segment this old move to body_chunks
_GRADUATE_PER_SWEEP = 64  # messages moved per sweep, each in its own transaction
_Placement = tuple[str | None, int | None]  # (segment, offset); (None, None): in the database
_IN_DATABASE: _Placement = (None, None)
_RECIPIENT_TABLE = """recipients (message_id, idx, local, domain, orcpt, notify, state,
    next_attempt, lease_owner, lease_until)"""
_MAX_VARIABLES = 30000  # below SQLite's default limit of 32766 bound parameters
_MAX_OUTRIGHT = 500  # recipients of a message deleted outright, at most (bound parameters)


def _finishing(ops: Sequence[RecordResults]) -> list[tuple[str, list[int]] | None]:
    """For each op, (queue id, indexes) when it finishes one message alone: every result
    final, one per recipient, no new messages, and no other op of the run naming that
    message; else None (its results are recorded row by row)."""
    named: dict[str, int] = {}
    for op in ops:
        for queue_id in {res.queue_id for res in op.results}:
            named[queue_id] = named.get(queue_id, 0) + 1
    found: list[tuple[str, list[int]] | None] = []
    for op in ops:
        results = op.results
        queue_ids = {res.queue_id for res in results}
        indexes = sorted({res.index for res in results})
        if (
            len(queue_ids) == 1
            and named[results[0].queue_id] == 1
            and not op.new_messages
            and len(indexes) == len(results)
            and len(indexes) <= _MAX_OUTRIGHT
            and all(res.state.is_final for res in results)
        ):
            found.append((results[0].queue_id, indexes))
        else:
            found.append(None)
    return found


def _results_grouped(
    ops: Sequence[Op[Any]], steps: list[int | list[int]]
) -> list[int | list[int] | tuple[int, ...]]:
    """``steps`` with each run of consecutive ``RecordResults`` ops made one tuple step."""
    out: list[int | list[int] | tuple[int, ...]] = []
    run: list[int] = []
    for step in steps:
        if isinstance(step, int) and type(ops[step]) is RecordResults:
            run.append(step)
            continue
        if run:
            out.append(tuple(run))
            run = []
        out.append(step)
    if run:
        out.append(tuple(run))
    return out


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


class SqliteWrites(SharedWrites):
    """The write side of ``SqliteQueueStore`` (a mixin: the store opens the connection)."""

    path: Path
    _conn: sqlite3.Connection | None
    _body_chunk: int
    _max_bytes: int | None
    _handlers: dict[type[Any], Callable[[sqlite3.Connection, Any], object]]
    _gate: int | None  # a file whose flock orders the writers of several processes
    _relaxed: sqlite3.Connection | None = None  # the connection now at synchronous=NORMAL
    _needs_sync = False  # the batch being applied holds a durable op: its commit needs a sync
    _bodylog: BodyLog | None = None  # where large bodies go; None: all in the database
    _bodies_dir: Path
    _body_log_min: int | None
    _placed: dict[int, _Placement] = {}  # id(NewMessage) -> where its body went, per batch
    _last_sweep = 0.0  # the last full sweep (monotonic)
    _last_look = 0.0  # the last sweep of any kind
    _log: int | None = None  # the WAL, open for ``sync_log`` (see there)
    _log_syncing: threading.Lock  # one sync of the log at a time (see ``sync_log``)
    _log_lost = False  # a sync failed: nothing is durable until a checkpoint (``_lose_log``)

    def _connect(self) -> sqlite3.Connection:
        raise NotImplementedError

    # ---- writing ----------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        results, sync = self.apply_batch_unsynced(ops)
        if sync is not None:
            sync()
        return results

    def apply_batch_unsynced(self, ops: Sequence[Op[Any]]) -> tuple[list[object], Sync | None]:
        """The batch committed, its WAL frames written but not yet synced (see ``_begin``)."""
        self._placed = self._place_bodies(ops)
        self._needs_sync = False
        try:
            results = self._gated(functools.partial(self._apply_batch, ops))
        finally:
            self._placed = {}
        sync = self.sync_log if self._needs_sync else None
        self._sweep_if_due()
        return results, sync

    def sync_log(self) -> None:
        """Make every commit written so far durable, by any process: ``fdatasync`` the WAL.

        The WAL is opened by name at the first sync (it exists once anything is
        committed) and kept open until ``close_log``: while the writer's connection is
        open SQLite never removes or replaces the file (only the last connection to
        close may, after checkpointing and syncing it all into the database). Opening it
        for every sync cost more than the call: ``os.open`` lets go of the GIL, and the
        event loop thread, just woken to start the committed message's delivery (the
        writer's ``on_applied``), took it and kept it for that whole burst, 0.1-0.25 ms
        before the disk was even asked. Now nothing stands between that wake-up and the
        ``fdatasync``, which lets go of the GIL only once the disk is at work.

        A failed sync is never tried again (``_log_lost``). Syncs run one at a time: the
        writer thread and the sync stage share the descriptor, and the kernel reports a
        write-back error once per open file, to whichever call asks first; two at once,
        the one whose commits failed to reach the disk could hear the other's success.
        """
        with self._log_syncing:
            try:
                fd = self._log if self._log is not None else self._open_log()
                if not self._log_lost:
                    self._fdatasync(fd)
                    return
            except OSError as exc:
                self._lose_log(exc)
            self._recover_lost_log()  # raises while it cannot

    _fdatasync = staticmethod(os.fdatasync)  # the one call that makes the log durable

    @property
    def _lost_mark(self) -> Path:
        """A file beside the database while a process's log is lost (``_lose_log``)."""
        return lost_mark(self.path)

    def _open_log(self) -> int:
        """Open the WAL for ``sync_log``, then look for another process's lost mark.

        A descriptor opened after the kernel has reported a write-back error to another
        process's is not told of it: that process's mark says so instead. Opened first,
        then looked: a mark made after the look means an error this descriptor hears."""
        fd = self._log = os.open(f"{self.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
        if self._lost_mark.exists():
            self._log_lost = True
            log.error(
                "queue store %s: another process could not sync the log; nothing is"
                " acknowledged until a checkpoint has made every commit durable",
                self.path,
            )
        return fd

    def _lose_log(self, exc: OSError) -> NoReturn:
        """A sync failed: the frames it wrote may be missing on disk, and SQLite's recovery
        stops at the first bad frame of the log, so every commit after them, in any
        process, would go with them in a crash, however well their own syncs went. Until
        a checkpoint has copied everything into the database file and synced that, no
        commit counts as durable. The batch that failed hears so either way (a duplicate
        at worst: its clients try again)."""
        self._log_lost = True
        self._set_lost_mark(True)
        log.critical(
            "queue store %s: cannot sync the log: %s; nothing is acknowledged until a"
            " checkpoint has made every commit durable in the database file",
            self.path,
            exc,
        )
        try:
            self._recover_lost_log()
        except StoreError as again:
            log.error("%s", again)
        raise StoreError(f"queue store {self.path}: cannot sync the log: {exc}") from exc

    def _recover_lost_log(self) -> None:
        """Checkpoint the whole log into the database file (``TRUNCATE``: SQLite syncs the
        file after copying, then starts the log afresh) on a connection of its own (the
        writer's may be inside a transaction). Raises StoreError until that completes:
        a reader on an older snapshot keeps frames from being copied, and the busy
        timeout bounds the wait."""
        try:
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"queue store {self.path}: cannot checkpoint: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous = FULL")  # the checkpoint syncs what it copies
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"queue store {self.path}: cannot checkpoint: {exc}") from exc
        finally:
            conn.close()
        if busy:
            raise StoreError(
                f"queue store {self.path}: the log is not durable and a checkpoint could"
                " not finish (busy: a reader on an older snapshot, or a writer)"
            )
        self._log_lost = False
        self._set_lost_mark(False)
        log.warning(
            "queue store %s: a checkpoint made every commit durable; acknowledging again",
            self.path,
        )

    def _set_lost_mark(self, lost: bool) -> None:
        """Make or remove the lost mark, and sync its directory (best effort: a disk that
        fails may refuse this too; this process's own state holds either way)."""
        mark = self._lost_mark
        try:
            if lost:
                os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            else:
                mark.unlink(missing_ok=True)
            fsync_directory(mark.parent)
        except OSError as exc:
            log.error("queue store %s: lost mark %s: %s", self.path, mark, exc)

    def close_log(self) -> None:
        """Close the WAL descriptor ``sync_log`` keeps (before the connection closes)."""
        with self._log_syncing:
            fd, self._log = self._log, None
        if fd is not None:
            os.close(fd)

    def _gated(self, run: Callable[[], _T]) -> _T:
        gate = self._gate
        if gate is None:
            return run()
        # several processes write this file (the daemon's workers): they queue for the
        # write lock in the kernel, woken the moment it is free, instead of SQLite's busy
        # handler, which polls after sleeping 1, 2, 5, 10... ms
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            return run()
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)

    # ---- the body log -------------------------------------------------------------------

    def _place_bodies(self, ops: Sequence[Op[Any]]) -> dict[int, _Placement]:
        """Append the batch's large bodies to the body log, durably; where each went."""
        bodylog, least = self._bodylog, self._body_log_min
        if bodylog is None or least is None:
            return {}
        large = [
            op.message
            for op in ops
            if isinstance(op, InsertMessage) and op.message.body.size >= least
        ]
        if not large:
            return {}
        if self._max_bytes is not None:
            incoming = sum(m.body.size for m in large)
            if bodylog.disk_bytes() + incoming > self._max_bytes:
                return {}  # the database's own cap refuses them, op by op
        try:
            places = bodylog.append([m.body for m in large])
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                log.error("queue body log: %s; bodies go to the database", exc)
            return {}
        return {id(m): place for m, place in zip(large, places, strict=True)}

    def _sweep_if_due(self) -> None:
        bodylog = self._bodylog
        if bodylog is None:
            return
        now = time.monotonic()
        if bodylog.rotated or now - self._last_sweep >= SWEEP_INTERVAL:
            self.sweep_bodies(all_dead=False)
        elif now - self._last_look >= SPARE_SWEEP and bodylog.wants_spare:
            # a segment still needed at the rotation's sweep is looked at again soon:
            # recycled, it spares the next segment's syncs (bodies still move out of old
            # segments at the pace of the full sweeps)
            self.sweep_bodies(all_dead=False, graduate=False)

    def sweep_bodies(self, *, all_dead: bool, graduate: bool = True) -> int:
        """Remove segments nobody refers to (and no writer appends to); move bodies out
        of segments older than ``GRADUATE_AFTER`` unless not ``graduate``. ``all_dead``:
        the caller holds the queue lock. Returns the segments removed."""
        bodylog, conn = self._bodylog, self._conn
        if bodylog is None or conn is None:
            return 0
        self._last_look = time.monotonic()
        if graduate:
            bodylog.rotated = False
            self._last_sweep = self._last_look
        try:
            listed = bodylog.listing()  # before the references: see queue.bodylog
            done = bodylog.removable(listed, set(), all_dead=all_dead)
            referenced = self._referenced_segments(conn, done)
            old = [
                n for n in done if graduate and n in referenced and bodylog.age(n) > GRADUATE_AFTER
            ]
            for name in old:
                self._graduate(conn, name)
            if old:
                referenced = self._referenced_segments(conn, done)
            gone = bodylog.removable(listed, referenced, all_dead=all_dead)
            if gone:  # the commits that dropped their last references, any process's,
                self.sync_log()  # go to disk first: a crash must not bring one back
            return bodylog.remove(gone)
        except (OSError, sqlite3.Error, StoreError) as exc:
            log.error("queue body log: sweep failed: %s", exc)
            return 0

    @staticmethod
    def _referenced_segments(conn: sqlite3.Connection, names: Sequence[str]) -> set[str]:
        """Those of ``names`` a message refers to: a look-up in the index per name, not a
        walk over every message with a segment (a sweep may come every ``SPARE_SWEEP``)."""
        sql = "SELECT 1 FROM messages WHERE body_segment = ? LIMIT 1"
        return {name for name in names if conn.execute(sql, (name,)).fetchone() is not None}

    def _graduate(self, conn: sqlite3.Connection, segment: str) -> None:
        """Move the bodies still in ``segment`` into ``body_chunks``, message by message."""
        rows = conn.execute(
            "SELECT id, body_offset, body_size FROM messages WHERE body_segment = ? LIMIT ?",
            (segment, _GRADUATE_PER_SWEEP),
        ).fetchall()
        for mid, offset, size in rows:
            self._gated(functools.partial(self._graduate_one, conn, segment, mid, offset, size))

    def _graduate_one(
        self, conn: sqlite3.Connection, segment: str, mid: int, offset: int, size: int
    ) -> None:
        if self._relaxed is conn:  # the segment goes once this commit is on disk
            conn.execute("PRAGMA synchronous = FULL")
            self._relaxed = None
        conn.execute("BEGIN IMMEDIATE")
        try:
            moved = conn.execute(
                "UPDATE messages SET body_segment = NULL, body_offset = NULL"
                " WHERE id = ? AND body_segment = ?",
                (mid, segment),
            ).rowcount
            if moved:
                pieces = read_segment(self._bodies_dir, segment, offset, size, self._body_chunk)
                for seq, piece in enumerate(pieces):
                    conn.execute(self._INSERT_CHUNK, (mid, seq, piece))
            conn.execute("COMMIT")
        except BaseException:
            self._abort(conn)
            raise

    def _apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
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

    def _begin(self, conn: sqlite3.Connection, ops: Sequence[Op[Any]]) -> None:
        """BEGIN at ``synchronous=NORMAL``; notes whether any op needs the disk (``Op.durable``).

        In WAL mode a ``synchronous=NORMAL`` commit writes its frames to the log but does
        not wait for the disk, and stays in order: a later ``fdatasync`` of the log makes
        it durable with every commit before it, and a checkpoint syncs the log before it
        copies anything. So the fsync of a durable batch (``sync_log``) happens after the
        write lock is released, where it no longer holds up the other workers' commits,
        and the ``QueueWriter`` may commit its next batch meanwhile. A power failure can
        only lose commits that nobody was told of yet, and the lease-only batches since
        the last sync."""
        if any(getattr(op, "durable", True) for op in ops):  # unknown: durable
            self._needs_sync = True
        if self._relaxed is not conn:
            conn.execute("PRAGMA synchronous = NORMAL")
            self._relaxed = conn
        conn.execute("BEGIN IMMEDIATE")

    def _run_batch(
        self, conn: sqlite3.Connection, ops: Sequence[Op[Any]], failed: dict[int, Exception]
    ) -> list[object]:
        try:
            self._begin(conn, ops)
        except sqlite3.Error as exc:
            raise store_error(exc) from exc
        try:
            results = [
                failed[i] if i in failed else self._apply_one(conn, i, op)
                for i, op in enumerate(ops)
            ]
            conn.execute("COMMIT")
        except BaseException as exc:
            self._abort(conn)
            if isinstance(exc, sqlite3.Error):  # the COMMIT (or a savepoint) failed
                raise store_error(exc) from exc  # for the whole batch; never retried
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
                raise _TransactionLostError(index, translate_error(exc)) from exc
            conn.execute("ROLLBACK TO op")
            conn.execute("RELEASE op")
            return translate_error(exc)
        conn.execute("RELEASE op")
        return result

    def _abort(self, conn: sqlite3.Connection) -> None:
        """Leave the write connection usable after a failed batch."""
        if rollback_quietly(conn):
            return
        # ROLLBACK itself failed: start over with a fresh connection
        conn.close()
        self._conn = None
        try:
            fresh = self._connect()
            configure_writer(fresh, self.path, self._max_bytes)
        except (sqlite3.Error, StoreError):
            return  # the next batch reports "not open"
        self._conn = fresh

    # -- InsertMessage

    _INSERT_MESSAGE = """INSERT INTO messages (queue_id, sender_local, sender_domain, mail_size,
        body_type, smtputf8, ret, envid, auth, requiretls, received_at, size, body_size,
        state, hold_reason, protocol, client_address, client_name, helo, auth_user,
        local_user, message_id_header, subject, body_segment, body_offset)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
    _INSERT_HEADERS = "INSERT INTO headers (message_id, data) VALUES (?, ?)"
    _INSERT_CHUNK = "INSERT INTO body_chunks (message_id, seq, data) VALUES (?, ?, ?)"
    _INSERT_RECIPIENT = """INSERT INTO recipients (message_id, idx, local, domain, orcpt, notify,
        state, next_attempt, lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""

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
            self._begin(conn, ops)
        except sqlite3.Error as exc:
            raise store_error(exc) from exc
        results: list[object] = [None] * len(ops)
        try:
            for step in _results_grouped(ops, batch_steps(ops)):
                if isinstance(step, tuple):  # consecutive RecordResults, recorded together
                    records = [cast(RecordResults, ops[i]) for i in step]
                    outcomes = self._record_many(conn, records)
                    for i, outcome in zip(step, outcomes, strict=True):
                        results[i] = outcome
                    continue
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
                raise store_error(exc) from exc  # for the whole batch; never retried
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
            place = self._placed.get(id(msg), _IN_DATABASE)
            messages.append((mid, *message_row(msg, header_bytes), *place))
            headers.append((mid, header_bytes))
            size = msg.body.size
            if place[0] is not None:
                pass  # in the body log already
            elif size <= self._INLINE_BODY and inline + size <= self._INLINE_BATCH:
                inline += size
                pieces = list(msg.body.chunks(self._body_chunk))
                if sum(map(len, pieces)) != size:
                    raise StoreError(f"body of {msg.queue_id}: size changed")
                chunks.extend((mid, seq, piece) for seq, piece in enumerate(pieces))
            else:
                streamed.append((mid, msg))
            recipients.extend(
                recipient_row(mid, i, r, msg.due, op.lease)
                for i, r in enumerate(msg.envelope.recipients)
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

    def _insert(self, conn: sqlite3.Connection, msg: NewMessage, lease: Lease = NO_LEASE) -> None:
        if not msg.envelope.recipients:
            raise ValueError(f"message {msg.queue_id} has no recipients")
        header_bytes = msg.headers.encode()
        place = self._placed.get(id(msg), _IN_DATABASE)
        try:
            cur = conn.execute(self._INSERT_MESSAGE, (*message_row(msg, header_bytes), *place))
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"queue id {msg.queue_id} is already in the queue") from exc
        mid = cur.lastrowid
        conn.execute(self._INSERT_HEADERS, (mid, header_bytes))
        written = 0 if place[0] is None else msg.body.size  # else in the body log already
        for seq, chunk in enumerate(msg.body.chunks(self._body_chunk) if place[0] is None else ()):
            conn.execute(self._INSERT_CHUNK, (mid, seq, chunk))
            written += len(chunk)
        if written != msg.body.size:
            raise StoreError(
                f"body of {msg.queue_id}: read {written} bytes, expected {msg.body.size}"
            )
        self._insert_recipients(conn, mid, 0, msg.envelope.recipients, msg.due, lease)
        self._set_targets(conn, mid, 0, msg.envelope.recipients)

    def _insert_recipients(
        self,
        conn: sqlite3.Connection,
        mid: int | None,
        first_index: int,
        recipients: Sequence[Recipient],
        due: float,
        lease: Lease = NO_LEASE,
    ) -> None:
        conn.executemany(
            self._INSERT_RECIPIENT,
            [recipient_row(mid, first_index + i, r, due, lease) for i, r in enumerate(recipients)],
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

    _CLAIM_SELECT = f"""SELECT r.message_id AS mid, {RECIPIENT_COLUMNS}
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE r.state = ? AND r.next_attempt <= ? AND m.state = ?
          AND (r.lease_until IS NULL OR r.lease_until <= ?)
        ORDER BY r.next_attempt LIMIT ?"""
    _CLAIM_SELECTED = f"""SELECT r.message_id AS mid, {RECIPIENT_COLUMNS}
        FROM recipients r JOIN messages m ON m.id = r.message_id
        WHERE m.queue_id IN (SELECT value FROM json_each(?))
          AND +r.state = ? AND +r.next_attempt <= ? AND m.state = ?
          AND (r.lease_until IS NULL OR r.lease_until <= ?)
        ORDER BY r.next_attempt LIMIT ?"""
    _CLAIM_UPDATE = """UPDATE recipients SET lease_owner = ?, lease_until = ?
        WHERE message_id = ? AND idx = ?"""

    def _claim_due(self, conn: sqlite3.Connection, op: ClaimDue) -> list[StoredRecipient]:
        args = (QUEUED, op.now, MessageState.ACTIVE.value, op.now, op.limit)
        if op.queue_ids is None:
            rows = conn.execute(self._CLAIM_SELECT, args).fetchall()
        else:
            selected = json.dumps(list(op.queue_ids))
            rows = conn.execute(self._CLAIM_SELECTED, (selected, *args)).fetchall()
        until = op.now + op.lease_seconds
        conn.executemany(
            self._CLAIM_UPDATE, [(op.owner, until, row["mid"], row["idx"]) for row in rows]
        )
        claimed = [stored_recipient(row) for row in rows]
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
    # The results of several ops in one statement per wave (``sqlwrites.result_waves``):
    # each statement is one trip of the writer thread through SQLite, and the GIL it gives
    # up and waits for again behind the event loop; one statement per result made the
    # write lock the workers share wait for that too. It returns the recipients it changed
    # (the others are stale: no longer queued).
    _RECORD_MANY = """UPDATE recipients SET state = v.state,
            next_attempt = coalesce(v.next_attempt, recipients.next_attempt),
            attempts = recipients.attempts + v.tried,
            last_attempt = coalesce(v.last_attempt, recipients.last_attempt),
            last_status = v.status, last_reply = v.reply, remote_mta = v.mta,
            lease_owner = NULL, lease_until = NULL
        FROM (SELECT m.id AS mid, json_extract(j.value, '$[1]') AS idx,
                json_extract(j.value, '$[2]') AS state,
                json_extract(j.value, '$[3]') AS next_attempt,
                json_extract(j.value, '$[4]') AS tried,
                json_extract(j.value, '$[5]') AS last_attempt,
                json_extract(j.value, '$[6]') AS status,
                json_extract(j.value, '$[7]') AS reply,
                json_extract(j.value, '$[8]') AS mta
              FROM json_each(?) AS j
              JOIN messages m ON m.queue_id = json_extract(j.value, '$[0]')) AS v
        WHERE recipients.message_id = v.mid AND recipients.idx = v.idx
          AND recipients.state = ?
        RETURNING recipients.message_id, recipients.idx"""
    _DELETE_DONE_MANY = """DELETE FROM messages WHERE queue_id IN (SELECT value FROM json_each(?))
        AND NOT EXISTS (SELECT 1 FROM recipients r
                        WHERE r.message_id = messages.id AND +r.state = ?)
        RETURNING queue_id"""

    # A message whose queued recipients are exactly the ones an op finishes is deleted
    # outright: its recipients' rows would only be updated to be deleted with it. The
    # counts stand for "every one of them is queued, and no other one is".
    _DELETE_FINISHED_OUTRIGHT = """DELETE FROM messages WHERE queue_id = ?
        AND (SELECT count(*) FROM recipients r
             WHERE r.message_id = messages.id AND +r.state = ?) = ?
        AND (SELECT count(*) FROM recipients r
             WHERE r.message_id = messages.id AND +r.state = ? AND r.idx IN ({})) = ?"""

    def _record_many(
        self, conn: sqlite3.Connection, ops: Sequence[RecordResults]
    ) -> list[RecordOutcome]:
        """``RecordResults`` ops in a row, with the outcome each would have had alone: a
        result is stale if its recipient was no longer queued when its turn came, and a
        finished message is removed by the op whose result finished it (or, finished
        before, by the first op naming it)."""
        outcomes: list[RecordOutcome | None] = [None] * len(ops)
        rest: list[int] = []
        for k, finishing in enumerate(_finishing(ops)):
            if finishing is not None and self._delete_outright(conn, *finishing):
                outcomes[k] = RecordOutcome(stale=[], removed=[finishing[0]])
            else:
                rest.append(k)
        if rest:
            recorded = self._record_each(conn, [ops[k] for k in rest])
            for k, outcome in zip(rest, recorded, strict=True):
                outcomes[k] = outcome
        return cast(list[RecordOutcome], outcomes)

    def _delete_outright(self, conn: sqlite3.Connection, queue_id: str, indexes: list[int]) -> bool:
        """Delete ``queue_id`` if its queued recipients are exactly ``indexes``."""
        sql = self._DELETE_FINISHED_OUTRIGHT.format(",".join("?" * len(indexes)))
        count = len(indexes)
        args = (queue_id, QUEUED, count, QUEUED, *indexes, count)
        return conn.execute(sql, args).rowcount > 0

    def _record_each(
        self, conn: sqlite3.Connection, ops: Sequence[RecordResults]
    ) -> list[RecordOutcome]:
        """``_record_many`` for ops recorded row by row: the grouped updates, then the
        deletion of the messages they finished."""
        flat = [(k, res) for k, op in enumerate(ops) for res in op.results]
        results = [res for _, res in flat]
        waves = result_waves(results)
        ids = self._message_ids(conn, {res.queue_id for res in results})
        changed: set[int] = set()  # positions in ``flat``
        for members in wave_lists(range(len(flat)), waves):
            rows = json.dumps([result_row(results[i]) for i in members])
            done = {(r[0], r[1]) for r in conn.execute(self._RECORD_MANY, (rows, QUEUED))}
            changed.update(
                i for i in members if (ids.get(results[i].queue_id), results[i].index) in done
            )
        for op in ops:
            for msg in op.new_messages:
                self._insert(conn, msg)
        owner: dict[str, int] = {}  # the op that removes each message, if it is finished
        for i, (k, res) in enumerate(flat):
            if i in changed or res.queue_id not in owner:
                owner[res.queue_id] = k
        touched = json.dumps(list(owner))
        gone = {row[0] for row in conn.execute(self._DELETE_DONE_MANY, (touched, QUEUED))}
        outcomes = [RecordOutcome(stale=[], removed=[]) for _ in ops]
        for i, (k, res) in enumerate(flat):
            if i not in changed:
                outcomes[k].stale.append((res.queue_id, res.index))
        for queue_id, k in owner.items():
            if queue_id in gone:
                outcomes[k].removed.append(queue_id)
        return outcomes

    @staticmethod
    def _message_ids(conn: sqlite3.Connection, queue_ids: set[str]) -> dict[str, int]:
        sql = "SELECT queue_id, id FROM messages WHERE queue_id IN (SELECT value FROM json_each(?))"
        return {row[0]: row[1] for row in conn.execute(sql, (json.dumps(sorted(queue_ids)),))}

    # "+state": by the primary key, not the recipients_due index (see _DELETE_FINISHED)
    _DELETE_DONE = """DELETE FROM messages WHERE queue_id = ? AND NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND +r.state = ?)"""

    def _delete_if_done(self, conn: sqlite3.Connection, queue_ids: Sequence[str]) -> list[str]:
        # one statement per message; rowcount counts the message row only, not the cascade
        return [
            queue_id
            for queue_id in queue_ids
            if conn.execute(self._DELETE_DONE, (queue_id, QUEUED)).rowcount > 0
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
            args = (RecipientState.EXPANDED.value, mid, op.replaces, QUEUED)
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

    # -- leases and schedule

    def _release_leases(self, conn: sqlite3.Connection, op: ReleaseLeases) -> int:
        sql = "UPDATE recipients SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
        return conn.execute(sql, (op.owner,)).rowcount

    _RELEASE_PROCESS = """UPDATE recipients SET lease_owner = NULL, lease_until = NULL
        WHERE lease_owner IS NOT NULL AND substr(lease_owner, 1, length(?) + 1) = ? || ':'"""

    def _release_process_leases(self, conn: sqlite3.Connection, op: ReleaseProcessLeases) -> int:
        return sum(
            conn.execute(self._RELEASE_PROCESS, (process, process)).rowcount
            for process in op.processes
        )

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
        args = (op.now, QUEUED, domain, domain)
        if op.queue_ids is None:
            return conn.execute(self._RESCHEDULE, args).rowcount
        return sum(
            conn.execute(self._RESCHEDULE_MESSAGE, (*args, queue_id)).rowcount
            for queue_id in op.queue_ids
        )

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

    def _renew_leases(self, conn: sqlite3.Connection, op: RenewLeases) -> int:
        sql = "UPDATE recipients SET lease_until = ? WHERE lease_owner = ?"
        return conn.execute(sql, (op.now + op.lease_seconds, op.owner)).rowcount
