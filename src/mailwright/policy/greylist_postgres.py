"""The greylisting database in the shared PostgreSQL queue database, for every node.

With ``queue.backend = "postgresql"`` the ``greylist`` filter keeps its triplets and
its auto-whitelist counts in the tables ``greylist_triplets`` and ``greylist_clients``
(schema version 3) instead of a SQLite file per host: a client that retries through
another node (MX records, a load balancer) is recognised there. The rules are those of
``policy.greylist_store`` (``decide``); each ``check`` is one transaction that locks the
triplet's row (``FOR UPDATE``), so two nodes cannot both count one retry; two first
attempts at once both defer. Old rows go lazily as in the SQLite store, at most once per
``PURGE_INTERVAL`` by each process.

Times are the caller's clock (seconds since the epoch): the nodes' clocks are assumed
synchronised (NTP); a skew of seconds only moves the delay by as much. A database that
cannot be reached raises ``StoreError`` and the filter's ``on_failure`` answers (a
``451`` by default: the message could not be queued either). Calls block (the filter
runs them in a thread). Trusts its caller for the triplet values. Reads no settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailwright.policy.greylist_store import (
    PURGE_INTERVAL,
    GreylistTimes,
    Outcome,
    Triplet,
    Verdict,
    decide,
)
from mailwright.queue.postgres_schema import Conn
from mailwright.queue.postgres_state import StateDatabase

_WHERE = "WHERE network = %s AND sender = %s AND recipient = %s"


class PostgresGreylistStore:
    """``GreylistDatabase`` on the shared database; thread-safe."""

    def __init__(self, database: StateDatabase, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.clock = clock
        self._purged_at = float("-inf")

    def close(self) -> None:
        """Nothing of its own to close: the pool is the process's (``state_database``)."""

    def check(self, triplet: Triplet, times: GreylistTimes, message: str) -> Verdict:
        now = self.clock()
        purge = now - self._purged_at >= PURGE_INTERVAL

        def work(conn: Conn) -> Verdict:
            if purge:
                _purge(conn, now, times)
            verdict = _decide(conn, triplet, times, now)
            if verdict.accepted:
                _count(conn, triplet.network, now, message, times.expire)
            return verdict

        verdict = self.database.run(work)
        if purge:
            self._purged_at = now
        return verdict

    def counts(self) -> tuple[int, int]:
        def work(conn: Conn) -> tuple[int, int]:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM greylist_triplets) AS triplets,"
                " (SELECT count(*) FROM greylist_clients) AS clients"
            ).fetchone()
            assert row is not None
            return int(row["triplets"]), int(row["clients"])

        return self.database.run(work)


def _decide(conn: Conn, triplet: Triplet, times: GreylistTimes, now: float) -> Verdict:
    if times.auto_whitelist and _client_passed(conn, triplet.network, now, times) >= (
        times.auto_whitelist
    ):
        return Verdict(Outcome.CLIENT)
    key = (triplet.network, triplet.sender, triplet.recipient)
    row = conn.execute(
        f"SELECT first_seen, passed_at, last_seen FROM greylist_triplets {_WHERE} FOR UPDATE",
        key,
    ).fetchone()
    stored = None if row is None else (row["first_seen"], row["passed_at"], row["last_seen"])
    verdict = decide(stored, times, now)
    if verdict.outcome is Outcome.KNOWN:
        conn.execute(f"UPDATE greylist_triplets SET last_seen = %s {_WHERE}", (now, *key))
    elif verdict.outcome is Outcome.PASSED:
        conn.execute(
            f"UPDATE greylist_triplets SET passed_at = %s, last_seen = %s {_WHERE}",
            (now, now, *key),
        )
    elif verdict.outcome is Outcome.NEW:
        conn.execute(
            "INSERT INTO greylist_triplets VALUES (%s, %s, %s, %s, NULL, %s)"
            " ON CONFLICT (network, sender, recipient) DO UPDATE SET"
            " first_seen = excluded.first_seen, passed_at = NULL, last_seen = excluded.last_seen",
            (*key, now, now),
        )
    return verdict


def _client_passed(conn: Conn, network: str, now: float, times: GreylistTimes) -> int:
    row = conn.execute(
        "SELECT passed, last_seen FROM greylist_clients WHERE network = %s", (network,)
    ).fetchone()
    if row is None or now - row["last_seen"] > times.expire:
        return 0
    return int(row["passed"])


def _count(conn: Conn, network: str, now: float, message: str, expire: float) -> None:
    """One more accepted message from this network (once per queue id; restart if expired)."""
    conn.execute(
        "INSERT INTO greylist_clients AS c VALUES (%s, 1, %s, %s) ON CONFLICT (network)"
        " DO UPDATE SET passed = CASE WHEN c.last_seen < %s THEN 1"
        " ELSE c.passed + (c.last_message <> excluded.last_message)::int END,"
        " last_seen = excluded.last_seen, last_message = excluded.last_message",
        (network, now, message, now - expire),
    )


def _purge(conn: Conn, now: float, times: GreylistTimes) -> None:
    conn.execute(
        "DELETE FROM greylist_triplets WHERE (passed_at IS NULL AND first_seen < %s)"
        " OR (passed_at IS NOT NULL AND last_seen < %s)",
        (now - times.retry_window, now - times.expire),
    )
    conn.execute("DELETE FROM greylist_clients WHERE last_seen < %s", (now - times.expire,))
