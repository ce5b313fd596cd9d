"""Where DMARC results wait for the aggregate reports: a SQLite file or the shared database.

``ReportStore`` is what ``policy.dmarc`` (``add``, per evaluated message of a domain
with ``rua``) and ``policy.dmarc_reports`` (``rows``, ``claim``, ``purge``) need, all
blocking (callers use a thread). ``report_store`` picks one from the settings:

- SQLite (the default backend): ``dmarc.db`` in ``queue.directory``, shared by the
  workers of the host. One connection per process, kept open (a row per message must
  be cheap), WAL with ``synchronous = NORMAL``: a crash may lose the last rows of a
  report, never the queue's mail.
- PostgreSQL (``queue.backend = "postgresql"``): the tables ``dmarc_results`` and
  ``dmarc_report_runs`` of the shared database (schema version 4,
  ``queue.postgres_schema``), so one report covers the mail of every node.

``claim(period_end)`` records that the reports of the period ending then are being
sent and says whether this caller is the first: with several nodes on one database
only one of them sends a period's reports.

Trusts its own files and database. Settings read: ``queue.backend``,
``queue.directory``, ``queue.postgresql``, ``queue.postgresql_password_file``.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mailwright.config.schema import QueueSection
from mailwright.core.dmarc_report import Row

if TYPE_CHECKING:  # psycopg only with the PostgreSQL backend
    from mailwright.queue.postgres_schema import Conn
    from mailwright.queue.postgres_state import StateDatabase

__all__ = ["PostgresReportStore", "ReportStore", "SqliteReportStore", "report_store"]

COLUMNS = (
    "at, policy_domain, header_from, source_ip, envelope_from, disposition, dkim, spf,"
    " reasons, auth, policy"
)


class ReportStore(Protocol):
    def add(self, row: Row) -> None: ...

    def rows(self, begin: float, end: float) -> list[Row]: ...

    def claim(self, period_end: float) -> bool: ...

    def purge(self, before: float) -> None: ...


def _values(row: Row) -> tuple[object, ...]:
    return (
        row.at, row.policy_domain, row.header_from, row.source_ip, row.envelope_from,
        row.disposition, row.dkim, row.spf, row.reasons, row.auth, row.policy,
    )  # fmt: skip


_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dmarc_results (at REAL NOT NULL, policy_domain TEXT NOT NULL,"
    " header_from TEXT NOT NULL, source_ip TEXT NOT NULL, envelope_from TEXT NOT NULL,"
    " disposition TEXT NOT NULL, dkim TEXT NOT NULL, spf TEXT NOT NULL, reasons TEXT NOT NULL,"
    " auth TEXT NOT NULL, policy TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dmarc_results_at ON dmarc_results (at)",
    "CREATE TABLE IF NOT EXISTS dmarc_report_runs (period_end REAL PRIMARY KEY,"
    " sender TEXT NOT NULL, at REAL NOT NULL)",
)


class SqliteReportStore:
    """``dmarc.db``: one small SQLite file per host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pid = 0

    def _connection(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():  # a forked worker opens its own
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                str(self.path), timeout=5.0, isolation_level=None, check_same_thread=False
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # report rows: cheap over durable
            for statement in _SQLITE_SCHEMA:
                db.execute(statement)
            self._db, self._pid = db, os.getpid()
        return self._db

    def add(self, row: Row) -> None:
        with self._lock:
            self._connection().execute(
                f"INSERT INTO dmarc_results ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                _values(row),
            )

    def rows(self, begin: float, end: float) -> list[Row]:
        with self._lock:
            found = (
                self._connection()
                .execute(
                    f"SELECT {COLUMNS} FROM dmarc_results WHERE at >= ? AND at < ? ORDER BY at",
                    (begin, end),
                )
                .fetchall()
            )
        return [Row(*values) for values in found]

    def claim(self, period_end: float) -> bool:
        with self._lock:
            cursor = self._connection().execute(
                "INSERT OR IGNORE INTO dmarc_report_runs VALUES (?, ?, ?)",
                (period_end, _me(), time.time()),
            )
            return cursor.rowcount == 1

    def purge(self, before: float) -> None:
        with self._lock:
            db = self._connection()
            db.execute("DELETE FROM dmarc_results WHERE at < ?", (before,))
            db.execute("DELETE FROM dmarc_report_runs WHERE period_end < ?", (before - 86400 * 30,))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class PostgresReportStore:
    """The tables ``dmarc_results`` and ``dmarc_report_runs`` of the shared database."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def add(self, row: Row) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                f"INSERT INTO dmarc_results ({COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                _values(row),
            )

        self.database.run(work, transaction=False)

    def rows(self, begin: float, end: float) -> list[Row]:
        def work(conn: Conn) -> list[Row]:
            found = conn.execute(
                f"SELECT {COLUMNS} FROM dmarc_results WHERE at >= %s AND at < %s ORDER BY at",
                (begin, end),
            ).fetchall()
            return [Row(**values) for values in found]

        return self.database.run(work, transaction=False)

    def claim(self, period_end: float) -> bool:
        def work(conn: Conn) -> bool:
            cursor = conn.execute(
                "INSERT INTO dmarc_report_runs VALUES (%s, %s, %s)"
                " ON CONFLICT (period_end) DO NOTHING",
                (period_end, _me(), time.time()),
            )
            return cursor.rowcount == 1

        return self.database.run(work, transaction=False)

    def purge(self, before: float) -> None:
        def work(conn: Conn) -> None:
            conn.execute("DELETE FROM dmarc_results WHERE at < %s", (before,))
            conn.execute(
                "DELETE FROM dmarc_report_runs WHERE period_end < %s", (before - 86400 * 30,)
            )

        self.database.run(work)


def report_store(queue: QueueSection) -> ReportStore:
    """The store for the configured queue backend (nothing is opened yet)."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres_state import state_database

        return PostgresReportStore(state_database(queue))
    return SqliteReportStore(queue.directory / "dmarc.db")
