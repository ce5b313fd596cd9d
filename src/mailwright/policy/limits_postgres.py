"""The connection rate and AUTH failure counters of every node, in the shared database.

With ``queue.backend = "postgresql"`` the counters of ``policy.limits`` count in the
table ``limit_events`` (schema version 3) instead of this host's memory: one row per
event, ``(kind, key, at)``, counted over the window with the index on those columns. A
new event is one statement (the insert and the count in one round trip, no explicit
transaction); ``clear`` (a successful AUTH) deletes the key's rows. Rows older than
their window go lazily: each process deletes its kind's old rows at most once per
``PURGE_EVERY`` seconds, with the event that finds it due. The table is UNLOGGED (no
WAL on the per-connection path; a crash or a failover of the database empties it,
which only forgets recent failures).

Keys are the SHA-256 of the address or user name (16 bytes): a fixed size, no NUL
(``policy.limits`` joins user and address with one) and no user names in the table.
Times are the caller's clock (seconds since the epoch): nodes are assumed synchronised
(NTP); the windows are a minute and more. Errors are ``StoreError``. The calls run in a
thread (``asyncio.to_thread``): the event loop never waits for the database. Trusts its
caller for the keys. Reads no settings (the windows come with each counter).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

from mailwright.queue.postgres_schema import Conn
from mailwright.queue.postgres_state import StateDatabase

__all__ = ["PostgresCounter", "PostgresLimits"]

PURGE_EVERY = 60.0


def _key(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:16]


class PostgresCounter:
    """One kind of event (``limit_events.kind``) over ``window`` seconds."""

    def __init__(
        self,
        database: StateDatabase,
        kind: str,
        window: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.kind = kind
        self.window = window
        self.clock = clock
        self._purged = float("-inf")

    async def add(self, key: str) -> int:
        """Count one event now; the events in the window, this one included."""
        return await asyncio.to_thread(self._add, _key(key), self.clock())

    async def count(self, key: str) -> int:
        return await asyncio.to_thread(self._count, _key(key), self.clock())

    async def clear(self, key: str) -> None:
        await asyncio.to_thread(self._clear, _key(key))

    def _add(self, key: bytes, now: float) -> int:
        purge = now - self._purged >= PURGE_EVERY

        def work(conn: Conn) -> int:
            # a data-modifying WITH runs whether or not it is read; the count does not
            # see its row (one snapshot), hence the + 1
            row = conn.execute(
                "WITH new AS (INSERT INTO limit_events (kind, key, at) VALUES (%s, %s, %s))"
                " SELECT count(*) + 1 AS n FROM limit_events"
                " WHERE kind = %s AND key = %s AND at > %s",
                (self.kind, key, now, self.kind, key, now - self.window),
            ).fetchone()
            if purge:
                conn.execute(
                    "DELETE FROM limit_events WHERE kind = %s AND at <= %s",
                    (self.kind, now - self.window),
                )
            return 1 if row is None else int(row["n"])

        count = self.database.run(work, transaction=False)
        if purge:
            self._purged = now
        return count

    def _count(self, key: bytes, now: float) -> int:
        def work(conn: Conn) -> int:
            row = conn.execute(
                "SELECT count(*) AS n FROM limit_events WHERE kind = %s AND key = %s AND at > %s",
                (self.kind, key, now - self.window),
            ).fetchone()
            return 0 if row is None else int(row["n"])

        return self.database.run(work, transaction=False)

    def _clear(self, key: bytes) -> None:
        def work(conn: Conn) -> None:
            conn.execute("DELETE FROM limit_events WHERE kind = %s AND key = %s", (self.kind, key))

        self.database.run(work, transaction=False)


class PostgresLimits:
    """``policy.limits.ClusterCounters`` on the shared database."""

    def __init__(self, database: StateDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock

    def connection_rate(self) -> PostgresCounter:
        """New connections per client address over the last minute."""
        return PostgresCounter(self.database, "connection_rate", 60.0, self.clock)

    def auth_failures(
        self, window: float
    ) -> tuple[PostgresCounter, PostgresCounter, PostgresCounter]:
        """AUTH failures per address, per (user, address) and per user over ``window``."""
        return (
            PostgresCounter(self.database, "auth_ip", window, self.clock),
            PostgresCounter(self.database, "auth_user_ip", window, self.clock),
            PostgresCounter(self.database, "auth_user", window, self.clock),
        )
