"""The embedded queue store: one SQLite database in WAL mode, each durable commit synced.

Layout: ``messages`` (envelope, MAIL parameters, origin, listing fields), ``recipients``
(the unit of work: state, schedule, last result, lease), ``headers`` (the encoded header
section, one blob per message) and ``body_chunks`` (the body in ~1 MiB blobs, so a
100 MiB message goes in and out with bounded memory). A body of ``body_log_min`` bytes
or more arriving through ``InsertMessage`` goes instead to the body log, append-only
segment files in ``<file>.bodies`` beside the database (``queue.bodylog``), written and
fsynced before the transaction and outside the write lock; the message row names its
segment and offset. Segments nobody refers to are removed after a batch, at most every
``SWEEP_INTERVAL`` or when one was sealed, and at open; bodies still in a segment older
than ``GRADUATE_AFTER`` (deferred mail) are moved into ``body_chunks`` then, so that a
few long-lived messages do not keep whole segments on disk. The schema version lives in
``PRAGMA user_version``; the schema is created on first open and older files are migrated
in place (``sqlite_schema``).

The store is split by concern: ``sqlite_schema`` (schema, migrations, pragmas, error
mapping), ``sqlite_batch`` (the writer side: ``apply_batch`` runs a whole batch in one
transaction, one fsync) and ``sqlite_rows`` (the reader side, on a pool of read
connections that see the last committed state, and the row mapping). This module opens
and closes the file and cleans up after a crash.

Deleted content is zeroed in b-tree pages but not in freed overflow pages
(``secure_delete = FAST``): large bodies of delivered mail stay in free pages of the file
until reused, as the blocks of a deleted queue file do.

Leases are owner + expiry columns (``queue.lease`` names the owners). ``open`` with
``exclusive`` (the daemon, holding the queue lock) treats every lease found in the file
as left over from a crash and clears it; without, it clears only the leases of owners
known dead and lets the others expire, as a store shared by several processes needs.

After a failed sync of the log, ``<file>-lost`` beside the database tells every process
that opens the log later to acknowledge nothing until a checkpoint (``sqlite_batch``).

Trusts: its own database file (checked with ``PRAGMA quick_check`` at open) and values
already validated by the protocol layer. Settings read: none directly; the caller passes
``queue.path`` as ``path`` and may pass ``busy_timeout``, ``body_chunk_size``,
``max_bytes`` (a cap on the database size: beyond it, inserts fail with StoreFullError)
``shared`` (several processes write the file: the daemon's workers order their write
transactions with an flock on ``<file>-writers``), ``body_log_min`` (None: every body in
the database) and ``segment_bytes``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from mailwright.queue.bodylog import SEGMENT_BYTES, BodyLog
from mailwright.queue.lease import new_owner, owner_is_dead
from mailwright.queue.sqlite_batch import BODY_LOG_MIN, SqliteWrites
from mailwright.queue.sqlite_rows import ReadPool, SqliteReads
from mailwright.queue.sqlite_schema import (
    _SCHEMA_V1,
    DEFAULT_BODY_CHUNK,
    QUEUED,
    SCHEMA_VERSION,
    check_integrity,
    configure_writer,
    create_private,
    migrate,
    rollback_quietly,
    stored_version,
)
from mailwright.queue.store import Recovery, StoreError

__all__ = ["SCHEMA_VERSION", "_SCHEMA_V1", "Recovery", "SqliteQueueStore"]


class SqliteQueueStore(SqliteReads, SqliteWrites):
    """``QueueStore`` on one SQLite file; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout: float = 5.0,
        body_chunk_size: int = DEFAULT_BODY_CHUNK,
        max_bytes: int | None = None,
        shared: bool = False,
        body_log_min: int | None = BODY_LOG_MIN,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        self.path = path
        self._bodies_dir = path.with_name(path.name + ".bodies")
        self._body_log_min = body_log_min
        self._segment_bytes = segment_bytes
        self.shared = shared  # written by several processes: batches pass the gate
        self._gate: int | None = None
        self.schema_from: int | None = None  # set by open(): the version found (0: new)
        self.recovery: Recovery | None = None  # set by open()
        self._busy_timeout = busy_timeout
        self._body_chunk = body_chunk_size
        self._max_bytes = max_bytes
        self._conn: sqlite3.Connection | None = None
        self._reads: ReadPool | None = None
        self._handlers = self._handler_table()
        self._log_syncing = threading.Lock()

    # ---- life cycle -------------------------------------------------------------------

    def open(self, recover: bool = True, *, exclusive: bool = True) -> None:
        """Open for writing. ``recover=False`` is for a second process (an admin command)
        while the daemon may run: no lease clearing, no clean-up of its work in flight.
        ``exclusive``: the caller holds the queue lock, so every lease found is left
        over from a crash and is cleared; without it only dead owners' leases are
        (``QueueStore.open``)."""
        if self._conn is not None:
            return
        try:
            create_private(self.path)
            conn = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open queue store {self.path}: {exc}") from exc
        try:
            configure_writer(conn, self.path, self._max_bytes)
            check_integrity(conn, self.path)
            self.schema_from = migrate(conn, self.path)
            if recover:
                self.recovery = self._recover(conn, exclusive)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open queue store {self.path}: {exc}") from exc
            raise
        self._conn = conn
        self._reads = ReadPool(self._connect_reader)
        if self.shared:
            self._gate = self._open_gate()
        if self._body_log_min is not None:
            self._bodylog = BodyLog(self._bodies_dir, new_owner(), self._segment_bytes)
            if recover:
                self.sweep_bodies(all_dead=exclusive)

    def _open_gate(self) -> int:
        gate = self.path.with_name(self.path.name + "-writers")
        try:
            return os.open(gate, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self.close()
            raise StoreError(f"cannot open {gate}: {exc}") from exc

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
        self._reads = ReadPool(self._connect_reader)

    def stored_schema_version(self) -> int:
        """The file's schema version (0: no file yet), read without changing anything."""
        return stored_version(self.path)

    def close(self) -> None:
        """Close every connection; idempotent. The writer must be stopped first."""
        if self._bodylog is not None:
            self._bodylog.close()
            self._bodylog = None
        if self._reads is not None:
            self._reads.close()
            self._reads = None
        if self._conn is not None:
            self.close_log()
            self._conn.close()
            self._conn = None
        if self._gate is not None:
            os.close(self._gate)
            self._gate = None

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

    # "+r.state" keeps SQLite from answering "a queued recipient of this message?" through
    # the recipients_due index (state, next_attempt), which scans every queued recipient
    # of the whole queue per message (13 s to open a store of 20,000 deferred messages):
    # the primary key (message_id, idx) finds a message's few recipients directly.
    _DELETE_FINISHED = """DELETE FROM messages WHERE NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND +r.state = ?)"""

    def _recover(self, conn: sqlite3.Connection, exclusive: bool) -> Recovery:
        """Void leases of interrupted work (all, or only dead owners'); drop orphans and
        finished messages."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            report = Recovery()
            report.leases_cleared = self._clear_leases(conn, exclusive)
            for table in ("recipients", "headers", "body_chunks"):
                report.orphans_deleted += conn.execute(
                    f"DELETE FROM {table} WHERE message_id NOT IN (SELECT id FROM messages)"
                ).rowcount
            report.finished_deleted = conn.execute(self._DELETE_FINISHED, (QUEUED,)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            rollback_quietly(conn)
            raise
        return report

    def _clear_leases(self, conn: sqlite3.Connection, exclusive: bool) -> int:
        if exclusive:  # the queue lock is ours: no other process holds a lease
            return conn.execute(
                "UPDATE recipients SET lease_owner = NULL, lease_until = NULL"
                " WHERE lease_owner IS NOT NULL OR lease_until IS NOT NULL"
            ).rowcount
        owners = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT lease_owner FROM recipients WHERE lease_owner IS NOT NULL"
            )
        ]
        dead = [(owner,) for owner in owners if owner_is_dead(owner)]
        sql = "UPDATE recipients SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?"
        return sum(conn.execute(sql, owner).rowcount for owner in dead)
