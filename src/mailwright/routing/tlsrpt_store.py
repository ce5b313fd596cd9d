"""Where the TLS session counts of RFC 8460 reports are kept until the daily report.

``TlsReportStore`` is what the daemon's reporting (``daemon.tlsreports``) needs: ``add``
the counts a process took from its ``routing.tlsrpt.TlsRecorder`` (one upsert per
counter, adding to it), the ``days`` not yet reported, the ``counts`` of a day,
``claim`` a day's report run (so only one process, or one node, sends it) and
``finish`` it (the day's counts go). Calls are blocking: run them in a thread.
``report_store`` picks one from the settings, as ``routing.mtasts_store`` does:

- SQLite (the default backend): ``tlsrpt.db`` in ``queue.directory``, shared by the
  workers of the host; a connection per call (a flush a minute per process, a report run
  a day), WAL, ``synchronous = NORMAL`` (a power failure may lose the last flush's
  counts: statistics, not mail).
- PostgreSQL (``queue.backend = "postgresql"``): the tables ``tlsrpt_counts``,
  ``tlsrpt_runs`` (schema version 4), ``tlsrpt_posts`` (7) and the columns
  ``receiving_helo`` and ``failure_reason`` of ``tlsrpt_counts`` (8) of the shared
  database, so the report of a domain counts the sessions of every node and one node
  sends it.

A counter's key is that of version 4 (day, policy, result, sending IP, receiving MX host
and IP); the peer's EHLO name and the failure's reason (``Tally.receiving_helo``,
``Tally.reason``) are not part of it but ride along: each row keeps the latest non-empty
value of each that was added to it (within one ``add``, any one of those given). A
simplification, so that the key, and the upsert of nodes of the previous version during a
rolling upgrade, stay as they were: a report gives one EHLO name and one reason per
counter, not a count per reason. An older ``tlsrpt.db`` gets the two columns when it is
opened (``ALTER TABLE``; two processes doing it at once are fine).

A report whose POST failed waits in ``tlsrpt_posts`` (``retry_later``) to be tried again
(RFC 8460 5.4): ``take_due`` hands some due ones to one process for a lease (their next
attempt pushed past it, so another process or node leaves them alone), ``forget`` drops
one that went or was given up.

A claim is a lease: the row of the day in ``tlsrpt_runs`` names its owner until it is
finished or the lease (``lease`` seconds) runs out, when another may take it (a
process that died while sending). Errors are ``StoreError`` (PostgreSQL) or
``sqlite3.Error``/``OSError``; the caller logs them and tries again later.

Trusts its own files and database. Settings read: ``queue.backend``,
``queue.directory``, ``queue.postgresql``, ``queue.postgresql_password_file``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mailwright.config.schema import QueueSection
from mailwright.routing.tlsrpt import PolicyType, ReportedPolicy, Result, Tally

if TYPE_CHECKING:  # psycopg only with the PostgreSQL backend
    from mailwright.queue.postgres_schema import Conn
    from mailwright.queue.postgres_state import StateDatabase

__all__ = [
    "PendingPost",
    "PostgresReportStore",
    "SqliteReportStore",
    "TlsReportStore",
    "report_store",
]

KEEP_RUNS = 40  # days of finished runs remembered (a late flush of a day is dropped)

_COLUMNS = (
    "day, domain, policy_type, policy_strings, mx_hosts, result,"
    " sending_ip, receiving_mx, receiving_ip"
)
# not part of the key: the latest non-empty value given is kept (see above)
_DETAILS = ("receiving_helo", "failure_reason")
_ADD = (
    f"INSERT INTO tlsrpt_counts ({_COLUMNS}, {', '.join(_DETAILS)}, count)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    f" ON CONFLICT ({_COLUMNS}) DO UPDATE SET count = tlsrpt_counts.count + excluded.count"
    + "".join(
        f", {c} = CASE WHEN excluded.{c} <> '' THEN excluded.{c} ELSE tlsrpt_counts.{c} END"
        for c in _DETAILS
    )
)
_DAYS = (
    "SELECT DISTINCT day FROM tlsrpt_counts WHERE day NOT IN"
    " (SELECT day FROM tlsrpt_runs WHERE done IS NOT NULL) ORDER BY day"
)
_COUNTS = f"SELECT {_COLUMNS}, {', '.join(_DETAILS)}, count FROM tlsrpt_counts WHERE day = ?"
# a day nobody holds (no row, or an expired claim of an unfinished run) becomes ours
_CLAIM = (
    "INSERT INTO tlsrpt_runs (day, owner, lease_until, done) VALUES (?, ?, ?, NULL)"
    " ON CONFLICT (day) DO UPDATE SET owner = excluded.owner, lease_until = excluded.lease_until"
    " WHERE tlsrpt_runs.done IS NULL AND tlsrpt_runs.lease_until < ? RETURNING day"
)
_FINISH = [
    "UPDATE tlsrpt_runs SET done = ? WHERE day = ? AND owner = ?",
    "DELETE FROM tlsrpt_counts WHERE day IN (SELECT day FROM tlsrpt_runs WHERE done IS NOT NULL)",
    "DELETE FROM tlsrpt_runs WHERE done IS NOT NULL AND done < ?",
]


_POST_COLUMNS = "url, domain, day, data, first_attempt, next_attempt, attempts"
_RETRY_LATER = (
    f"INSERT INTO tlsrpt_posts ({_POST_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (url, domain, day) DO UPDATE SET next_attempt = excluded.next_attempt,"
    " attempts = excluded.attempts"
)
# at most ``limit`` due posts (the oldest due first) become the caller's for ``lease``
# seconds; the outer condition is checked again on a row another node updated meanwhile
_TAKE_DUE = (
    "UPDATE tlsrpt_posts SET next_attempt = ? WHERE next_attempt <= ? AND (url, domain, day)"
    " IN (SELECT url, domain, day FROM tlsrpt_posts WHERE next_attempt <= ?"
    f" ORDER BY next_attempt LIMIT ?) RETURNING {_POST_COLUMNS}"
)
_FORGET = "DELETE FROM tlsrpt_posts WHERE url = ? AND domain = ? AND day = ?"


@dataclass(frozen=True, slots=True)
class PendingPost:
    """A report whose POST failed, waiting to be tried again (RFC 8460 5.4)."""

    url: str
    domain: str
    day: str
    data: bytes  # the gzip JSON, as first built
    first_attempt: float
    next_attempt: float
    attempts: int

    def values(self) -> tuple[Any, ...]:
        return (
            self.url,
            self.domain,
            self.day,
            self.data,
            self.first_attempt,
            self.next_attempt,
            self.attempts,
        )

    @classmethod
    def of(cls, values: Sequence[Any]) -> PendingPost:
        url, domain, day, data, first, following, attempts = values
        return cls(url, domain, day, bytes(data), float(first), float(following), int(attempts))


class TlsReportStore(Protocol):
    def add(self, counts: dict[Tally, int]) -> None: ...

    def days(self) -> list[str]: ...

    def counts(self, day: str) -> dict[Tally, int]: ...

    def claim(self, day: str, owner: str, now: float, lease: float) -> bool: ...

    def finish(self, day: str, owner: str, now: float) -> None: ...

    def retry_later(self, post: PendingPost) -> None: ...

    def take_due(self, now: float, lease: float, limit: int) -> list[PendingPost]: ...

    def forget(self, post: PendingPost) -> None: ...


def _row(tally: Tally, count: int) -> tuple[Any, ...]:
    policy = tally.policy
    return (
        tally.day,
        policy.domain,
        policy.type.value,
        json.dumps(policy.strings),
        json.dumps(policy.mx_hosts),
        tally.result.value,
        tally.sending_ip,
        tally.receiving_mx,
        tally.receiving_ip,
        tally.receiving_helo,
        tally.reason,
        count,
    )


def _tally(values: tuple[Any, ...]) -> tuple[Tally, int]:
    day, domain, kind, strings, mx, result, sending, receiving_mx, receiving_ip = values[:9]
    helo, reason, count = values[9:]
    policy = ReportedPolicy(
        PolicyType(kind), domain, tuple(json.loads(strings)), tuple(json.loads(mx))
    )
    tally = Tally(day, policy, Result(result), sending, receiving_mx, receiving_ip, helo, reason)
    return tally, int(count)


_SQLITE_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS tlsrpt_counts (day TEXT NOT NULL, domain TEXT NOT NULL,"
    " policy_type TEXT NOT NULL, policy_strings TEXT NOT NULL, mx_hosts TEXT NOT NULL,"
    " result TEXT NOT NULL, sending_ip TEXT NOT NULL, receiving_mx TEXT NOT NULL,"
    " receiving_ip TEXT NOT NULL, count INTEGER NOT NULL,"
    " receiving_helo TEXT NOT NULL DEFAULT '', failure_reason TEXT NOT NULL DEFAULT '',"
    f" PRIMARY KEY ({_COLUMNS}))",
    "CREATE TABLE IF NOT EXISTS tlsrpt_runs (day TEXT PRIMARY KEY, owner TEXT NOT NULL,"
    " lease_until REAL NOT NULL, done REAL)",
    "CREATE TABLE IF NOT EXISTS tlsrpt_posts (url TEXT NOT NULL, domain TEXT NOT NULL,"
    " day TEXT NOT NULL, data BLOB NOT NULL, first_attempt REAL NOT NULL,"
    " next_attempt REAL NOT NULL, attempts INTEGER NOT NULL, PRIMARY KEY (url, domain, day))",
]


def _add_details(db: sqlite3.Connection) -> None:
    """The columns of ``_DETAILS`` in a ``tlsrpt.db`` made before them (appended, as the
    CREATE TABLE above has them); another process may be adding them at the same moment."""
    present = {row[1] for row in db.execute("PRAGMA table_info(tlsrpt_counts)")}
    for column in _DETAILS:
        if column in present:
            continue
        try:
            db.execute(f"ALTER TABLE tlsrpt_counts ADD COLUMN {column} TEXT NOT NULL DEFAULT ''")
        except sqlite3.OperationalError as exc:
            if "duplicate column name" not in str(exc):
                raise


class SqliteReportStore:
    """``tlsrpt.db``: one small SQLite file per host."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SQLITE_SCHEMA:
                db.execute(statement)
            _add_details(db)
        except BaseException:
            db.close()
            raise
        return db

    def add(self, counts: dict[Tally, int]) -> None:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(_ADD, [_row(t, n) for t, n in counts.items()])
            db.execute("COMMIT")

    def days(self) -> list[str]:
        with closing(self._connect()) as db:
            return [row[0] for row in db.execute(_DAYS)]

    def counts(self, day: str) -> dict[Tally, int]:
        with closing(self._connect()) as db:
            return dict(_tally(row) for row in db.execute(_COUNTS, (day,)))

    def claim(self, day: str, owner: str, now: float, lease: float) -> bool:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute(_CLAIM, (day, owner, now + lease, now)).fetchone()
            db.execute("COMMIT")
        return row is not None

    def finish(self, day: str, owner: str, now: float) -> None:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute(_FINISH[0], (now, day, owner))
            db.execute(_FINISH[1])
            db.execute(_FINISH[2], (now - KEEP_RUNS * 86400,))
            db.execute("COMMIT")

    def retry_later(self, post: PendingPost) -> None:
        with closing(self._connect()) as db:
            db.execute(_RETRY_LATER, post.values())

    def take_due(self, now: float, lease: float, limit: int) -> list[PendingPost]:
        with closing(self._connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            rows = db.execute(_TAKE_DUE, (now + lease, now, now, limit)).fetchall()
            db.execute("COMMIT")
        return [PendingPost.of(row) for row in rows]

    def forget(self, post: PendingPost) -> None:
        with closing(self._connect()) as db:
            db.execute(_FORGET, (post.url, post.domain, post.day))


def _pg(statement: str) -> str:
    return statement.replace("?", "%s")


class PostgresReportStore:
    """The tables ``tlsrpt_counts``, ``tlsrpt_runs`` and ``tlsrpt_posts`` of the shared
    database."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def add(self, counts: dict[Tally, int]) -> None:
        rows = [_row(t, n) for t, n in sorted(counts.items(), key=lambda item: _row(*item))]

        def work(conn: Conn) -> None:  # sorted: two nodes' upserts never deadlock
            with conn.cursor() as cursor:
                cursor.executemany(_pg(_ADD), rows)

        self.database.run(work)

    def days(self) -> list[str]:
        def work(conn: Conn) -> list[str]:
            return [row["day"] for row in conn.execute(_DAYS).fetchall()]

        return self.database.run(work, transaction=False)

    def counts(self, day: str) -> dict[Tally, int]:
        names = [*(c.strip() for c in _COLUMNS.split(",")), *_DETAILS, "count"]

        def work(conn: Conn) -> dict[Tally, int]:
            rows = conn.execute(_pg(_COUNTS), (day,)).fetchall()
            return dict(_tally(tuple(row[n] for n in names)) for row in rows)

        return self.database.run(work, transaction=False)

    def claim(self, day: str, owner: str, now: float, lease: float) -> bool:
        def work(conn: Conn) -> bool:
            return conn.execute(_pg(_CLAIM), (day, owner, now + lease, now)).fetchone() is not None

        return self.database.run(work)

    def finish(self, day: str, owner: str, now: float) -> None:
        def work(conn: Conn) -> None:
            conn.execute(_pg(_FINISH[0]), (now, day, owner))
            conn.execute(_FINISH[1])
            conn.execute(_pg(_FINISH[2]), (now - KEEP_RUNS * 86400,))

        self.database.run(work)

    def retry_later(self, post: PendingPost) -> None:
        def work(conn: Conn) -> None:
            conn.execute(_pg(_RETRY_LATER), post.values())

        self.database.run(work)

    def take_due(self, now: float, lease: float, limit: int) -> list[PendingPost]:
        names = [c.strip() for c in _POST_COLUMNS.split(",")]

        def work(conn: Conn) -> list[PendingPost]:
            rows = conn.execute(_pg(_TAKE_DUE), (now + lease, now, now, limit)).fetchall()
            return [PendingPost.of([row[n] for n in names]) for row in rows]

        return self.database.run(work)

    def forget(self, post: PendingPost) -> None:
        def work(conn: Conn) -> None:
            conn.execute(_pg(_FORGET), (post.url, post.domain, post.day))

        self.database.run(work)


def report_store(queue: QueueSection) -> TlsReportStore:
    """The store for the configured queue backend (nothing is opened yet)."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres_state import state_database

        return PostgresReportStore(state_database(queue))
    return SqliteReportStore(queue.directory / "tlsrpt.db")
