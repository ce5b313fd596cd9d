"""The SQLite queue store's schema, its migrations, connection set-up and error mapping.

The schema version lives in ``PRAGMA user_version``; ``migrate`` creates the schema on
first open and migrates older files in place (returning the version it found), one
version at a time, in one transaction (version 2 adds each recipient's resolved local
target: mailer, target and controlling user, NULL for an ordinary address; version 3 an
index of leases by owner; version 4 the place of a body in the body log; version 5 the
REQUIRETLS parameter of MAIL FROM).
A file of a newer version is refused (``check_version``); ``stored_version`` reads the
version without writing (``mailwright queue migrate --check``).
``configure_writer`` sets the pragmas of the write connection (WAL,
``synchronous=FULL``, page size, size cap); ``check_integrity`` runs ``PRAGMA
quick_check``. The error helpers map SQLite and OS errors to ``StoreError`` and
``StoreFullError`` for both sides of the store. ``lost_mark`` names the file that says a
process's sync of the log failed (``queue.sqlite_batch``), ``refusing_since`` reads it.

Trusts: nothing but the database file it checks. Settings read: none (``sqlite`` passes
``queue.path`` and the size cap).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from mailwright.queue.store import (
    NewerSchemaError,
    RecipientState,
    StoreError,
    batch_failure,
    failure,
)

SCHEMA_VERSION = 5
DEFAULT_BODY_CHUNK = 1 << 20
_JOURNAL_SIZE_LIMIT = 64 << 20  # truncate the WAL back to this after a checkpoint
# 8 KiB pages: SQLite writes the WAL and checkpoints page by page, one system call each
# (~20 us on ext4 whatever the size); doubling the page halves the calls for a body, and
# the queue writer's time per 100 KiB message fell 15 % (1 KiB messages: no change).
_PAGE_SIZE = 8192
_CHECKPOINT_BYTES = 4 << 20  # checkpoint when the WAL holds this much (SQLite's default)

QUEUED = RecipientState.QUEUED.value

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

# version 3: leases are renewed and released per owner (``RenewLeases``, ``ReleaseLeases``,
# dead owners at open); a partial index finds an owner's leases without reading the whole
# queue. Only leased recipients are in it, so it stays small; building it reads the
# recipients table once.
_SCHEMA_V3 = [
    "CREATE INDEX recipients_lease ON recipients (lease_owner) WHERE lease_owner IS NOT NULL",
]

# version 4: a large body may live in a segment of the body log beside the database
# (``queue.bodylog``): the segment's name and the body's offset in it; NULL: the body is in
# ``body_chunks``. Additive, and the index holds only messages with a segment.
_SCHEMA_V4 = [
    "ALTER TABLE messages ADD COLUMN body_segment TEXT",
    "ALTER TABLE messages ADD COLUMN body_offset INTEGER",
    "CREATE INDEX messages_segment ON messages (body_segment) WHERE body_segment IS NOT NULL",
]

# version 5: the REQUIRETLS parameter of MAIL FROM (RFC 8689), 1 when the client gave it.
# Additive: messages queued before it are 0, as they were received without it.
_SCHEMA_V5 = [
    "ALTER TABLE messages ADD COLUMN requiretls INTEGER NOT NULL DEFAULT 0",
]

MIGRATIONS: dict[int, list[str]] = {
    1: _SCHEMA_V1,
    2: _SCHEMA_V2,
    3: _SCHEMA_V3,
    4: _SCHEMA_V4,
    5: _SCHEMA_V5,
}  # version: DDL


def configure_writer(conn: sqlite3.Connection, path: Path, max_bytes: int | None) -> None:
    # only a new, empty database takes a page size (WAL mode fixes it), see _PAGE_SIZE
    conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"queue store {path}: cannot use WAL mode (got {mode})")
    # NORMAL can lose commits on power loss: FULL until the batch writer takes over, which
    # commits at NORMAL and syncs the log itself, outside the workers' write lock
    conn.execute("PRAGMA synchronous = FULL")
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
    if max_bytes is not None:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(1, max_bytes // page_size)}")


def check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check")]
    if rows != ["ok"]:
        lines = [line for row in rows for line in row.splitlines() if "***" not in line]
        more = f"; {len(lines) - 3} more" if len(lines) > 3 else ""
        detail = "; ".join(lines[:3]) + more
        raise StoreError(
            f"queue store {path} failed its integrity check ({detail}); "
            "restore it from a backup or move it aside"
        )


def check_version(version: int, path: Path) -> None:
    """Refuse a file a newer Mailwright wrote: this program does not know its schema."""
    if version > SCHEMA_VERSION:
        raise NewerSchemaError(
            f"queue store {path} has schema version {version}, newer than "
            f"this program's {SCHEMA_VERSION}: upgrade Mailwright"
        )


def stored_version(path: Path) -> int:
    """The file's schema version, read without writing anything; 0 when there is none."""
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read queue store {path}: {exc}") from exc


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Create or migrate the schema in one transaction; the version found before."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        check_version(version, path)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[target]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        rollback_quietly(conn)
        raise
    return version


# ---- errors and transactions ---------------------------------------------------------------


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        return code == sqlite3.SQLITE_FULL or "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def translate_error(exc: Exception) -> Exception:
    """A failure as callers see it: database and I/O errors become StoreError."""
    return failure(exc, full=_is_full(exc), database=isinstance(exc, sqlite3.Error | OSError))


def store_error(exc: Exception) -> StoreError:
    """A failure of the whole batch (or of a read), always a StoreError."""
    return batch_failure(translate_error(exc), exc)


def rollback_quietly(conn: sqlite3.Connection) -> bool:
    """Roll back any open transaction; False if even that failed."""
    if not conn.in_transaction:
        return True
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        return False
    return True


def lost_mark(path: Path) -> Path:
    """``<file>-lost`` beside the database: there while a process could not sync the
    log and no checkpoint has made every commit durable since (``queue.sqlite_batch``)."""
    return path.with_name(path.name + "-lost")


def refusing_since(path: Path) -> float | None:
    """When the lost mark of the queue at ``path`` was made (its mtime), or None: while
    it is there no commit of this queue is acknowledged."""
    try:
        return os.stat(lost_mark(path)).st_mtime
    except OSError:  # none (or not ours to look at: the status shows the rest anyway)
        return None


def create_private(path: Path) -> None:
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
