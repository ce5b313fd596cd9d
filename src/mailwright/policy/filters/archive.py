"""The ``archive`` filter: stores every accepted message with its envelope in a database table.

``database`` is a file path for SQLite (default ``archive.db`` in the queue
directory) or a ``postgresql://`` URL (needs the ``psycopg`` package). One row
per message in ``table`` (created if missing): queue id, time, sender,
recipients (JSON), client, HELO, authenticated user, Message-ID, Subject, size,
hold reason and the whole message as it will be queued. Put it last in the
``filters`` chain so it stores what the other filters decided; a message
refused later (by the queue commit failing) may be archived and then
retried by its client, so the queue id is stored with it. Discarded messages
are not archived. Writes run in a worker thread so the event loop never
blocks on the database. Trusts its configuration (the table name is checked to
be an identifier). Settings: its ``options``, ``queue.directory``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailwright.config.schema import Settings
from mailwright.core.reply import Reply
from mailwright.policy.filters.base import Filter
from mailwright.policy.hooks import SessionInfo, Transaction

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
COLUMNS = (
    "queue_id", "archived_at", "sender", "recipients", "client_address", "client_name", "helo",
    "auth_user", "message_id", "subject", "size", "hold_reason", "message",
)  # fmt: skip


class ArchiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str | None = None  # path (SQLite) or postgresql:// URL; default queue/archive.db
    table: str = "mail_archive"
    max_size: int = Field(default=0, ge=0)  # store only the envelope of bigger mail; 0 = no limit

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier")
        return value

    @field_validator("database")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        if value and value.startswith(("postgresql://", "postgres://")):
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise ValueError("a PostgreSQL archive needs the psycopg package") from None
        return value


class Backend(Protocol):
    def insert(self, row: tuple[Any, ...]) -> None: ...
    def close(self) -> None: ...


# The column types where they are not plain TEXT, per database (the same table otherwise).
SQLITE_TYPES = {
    "id": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "queue_id": "TEXT NOT NULL",
    "archived_at": "REAL NOT NULL",
    "sender": "TEXT NOT NULL",
    "recipients": "TEXT NOT NULL",
    "size": "INTEGER NOT NULL",
    "message": "BLOB",
}
POSTGRES_TYPES = {
    **SQLITE_TYPES,
    "id": "BIGSERIAL PRIMARY KEY",
    "archived_at": "DOUBLE PRECISION NOT NULL",
    "recipients": "JSONB NOT NULL",
    "size": "BIGINT NOT NULL",
    "message": "BYTEA",
}


class SqlBackend:
    """The archive table on a DB-API connection (``mark``: its parameter placeholder)."""

    def __init__(self, db: Any, table: str, types: dict[str, str], mark: str) -> None:
        self.db = db
        columns = ", ".join(f"{name} {types.get(name, 'TEXT')}" for name in ("id", *COLUMNS))
        self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
        marks = ", ".join(mark for _ in COLUMNS)
        self.sql = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({marks})"

    def insert(self, row: tuple[Any, ...]) -> None:
        self.db.execute(self.sql, row)

    def close(self) -> None:
        self.db.close()


def sqlite_backend(path: Path, table: str) -> SqlBackend:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return SqlBackend(db, table, SQLITE_TYPES, "?")


def postgres_backend(url: str, table: str) -> SqlBackend:
    import psycopg

    return SqlBackend(psycopg.connect(url, autocommit=True), table, POSTGRES_TYPES, "%s")


class ArchiveFilter(Filter):
    Options = ArchiveOptions

    def __init__(self, name: str, options: Any, settings: Settings) -> None:
        super().__init__(name, options, settings)
        self._backend: Backend | None = None
        self._lock = threading.Lock()  # one connection, used from worker threads in turn

    def _open(self) -> Backend:
        if self._backend is None:
            options: ArchiveOptions = self.options
            target = options.database or str(self.settings.queue.directory / "archive.db")
            if target.startswith(("postgresql://", "postgres://")):
                self._backend = postgres_backend(target, options.table)
            else:
                self._backend = sqlite_backend(Path(target), options.table)
        return self._backend

    def _store(self, row: tuple[Any, ...]) -> None:
        with self._lock:
            self._open().insert(row)

    async def message(self, session: SessionInfo, txn: Transaction) -> Reply | None:
        if txn.discard:
            return None
        await asyncio.to_thread(self._store, self._row(session, txn))
        return None

    def _row(self, session: SessionInfo, txn: Transaction) -> tuple[Any, ...]:
        assert txn.headers is not None and txn.body is not None
        options: ArchiveOptions = self.options
        head = txn.headers.encode()
        size = len(head) + 2 + txn.body.size
        keep = options.max_size == 0 or size <= options.max_size
        message = head + b"\r\n" + b"".join(txn.body.chunks()) if keep else None
        msgid, subject = txn.headers.get("Message-ID"), txn.headers.get("Subject")
        return (
            txn.queue_id,
            time.time(),
            "" if txn.sender is None else str(txn.sender),
            json.dumps([str(r.address) for r in txn.recipients]),
            session.client_address,
            session.client_name,
            session.helo,
            session.auth_user,
            msgid.text if msgid else None,
            subject.text if subject else None,
            size,
            txn.hold_reason,
            message,
        )
