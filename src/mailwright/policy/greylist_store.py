"""The greylisting database: which (network, sender, recipient) triplets wait, passed or expired.

One SQLite file (WAL mode) of its own, never the queue store. ``check`` makes
one decision in one short ``BEGIN IMMEDIATE`` transaction, so concurrent
sessions (or a second process) cannot both count the same retry. Rows are
removed lazily, at most once an hour (``PURGE_INTERVAL``): a triplet still
waiting once ``retry_window`` is over, a passed one not seen for ``expire``.
Calls block: the filter runs them in a worker thread. The clock is a
parameter so tests need no sleeping. Trusts its caller for the triplet
values (already normalised). Reads no settings; ``GreylistTimes`` carries them.

``GreylistDatabase`` is what the filter needs of a store: this SQLite one, or with
``queue.backend = "postgresql"`` the tables in the shared database
(``policy.greylist_postgres``), so that a client retrying through another node is
recognised. Both decide with ``decide``: the rules are written once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

PURGE_INTERVAL = 3600.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS triplets (network TEXT NOT NULL, sender TEXT NOT NULL, "
    "recipient TEXT NOT NULL, first_seen REAL NOT NULL, passed_at REAL, last_seen REAL NOT NULL, "
    "PRIMARY KEY (network, sender, recipient))",
    "CREATE TABLE IF NOT EXISTS clients (network TEXT PRIMARY KEY, passed INTEGER NOT NULL, "
    "last_seen REAL NOT NULL, last_message TEXT NOT NULL)",
)


@dataclass(frozen=True, slots=True)
class Triplet:
    network: str  # the client's network, e.g. "192.0.2.0/24"
    sender: str  # lower-case address, "" for the null sender
    recipient: str  # lower-case address


@dataclass(frozen=True, slots=True)
class GreylistTimes:
    delay: float  # a retry is accepted this long after the first attempt ...
    retry_window: float  # ... and no later than this
    expire: float  # a passed triplet (and a client's count) is kept this long after last use
    auto_whitelist: int = 0  # a network with this many passed messages is not greylisted; 0 = off


class Outcome(StrEnum):
    NEW = "new"  # first attempt (or first since the window or expiry ran out): defer
    EARLY = "early"  # retried before the delay: defer
    PASSED = "passed"  # retried in the window: accept, remembered from now on
    KNOWN = "known"  # a triplet that passed before: accept
    CLIENT = "client"  # the network is auto-whitelisted: accept


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    wait: float = 0.0  # deferred: seconds until a retry is accepted
    waited: float = 0.0  # passed: seconds since the first attempt

    @property
    def accepted(self) -> bool:
        return self.outcome in (Outcome.PASSED, Outcome.KNOWN, Outcome.CLIENT)


class GreylistDatabase(Protocol):
    """A greylisting database; blocking calls (the filter runs them in a thread)."""

    def check(self, triplet: Triplet, times: GreylistTimes, message: str) -> Verdict: ...

    def counts(self) -> tuple[int, int]: ...

    def close(self) -> None: ...


# a stored triplet: (first_seen, passed_at or None, last_seen)
Stored = tuple[float, float | None, float]


def decide(row: Stored | None, times: GreylistTimes, now: float) -> Verdict:
    """The verdict on one attempt of a triplet stored as ``row`` (None: unknown). The
    store then writes it: KNOWN touches the row, PASSED marks it passed, NEW (re)starts
    it, EARLY changes nothing."""
    if row is not None:
        first_seen, passed_at, last_seen = row
        if passed_at is not None and now - last_seen <= times.expire:
            return Verdict(Outcome.KNOWN)
        waited = now - first_seen
        if passed_at is None and waited < times.delay:
            return Verdict(Outcome.EARLY, wait=times.delay - waited)
        if passed_at is None and waited <= times.retry_window:
            return Verdict(Outcome.PASSED, waited=waited)
    return Verdict(Outcome.NEW, wait=times.delay)


class GreylistStore:
    """Thread-safe: one connection, used by one worker thread at a time."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_mode=WAL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._purged_at = float("-inf")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def check(self, triplet: Triplet, times: GreylistTimes, message: str) -> Verdict:
        """Decide one attempt; ``message`` (the queue id) counts a message once per client."""
        now = self.clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if now - self._purged_at >= PURGE_INTERVAL:
                    self._purge(now, times)
                    self._purged_at = now
                verdict = self._decide(triplet, times, now)
                if verdict.outcome in (Outcome.PASSED, Outcome.KNOWN, Outcome.CLIENT):
                    self._count(triplet.network, now, message, times.expire)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return verdict

    def _decide(self, triplet: Triplet, times: GreylistTimes, now: float) -> Verdict:
        if times.auto_whitelist and self._client_passed(triplet.network, now, times) >= (
            times.auto_whitelist
        ):
            return Verdict(Outcome.CLIENT)
        key = (triplet.network, triplet.sender, triplet.recipient)
        row = self._db.execute(
            "SELECT first_seen, passed_at, last_seen FROM triplets "
            "WHERE network = ? AND sender = ? AND recipient = ?",
            key,
        ).fetchone()
        verdict = decide(row, times, now)
        if verdict.outcome is Outcome.KNOWN:
            self._db.execute(
                "UPDATE triplets SET last_seen = ? "
                "WHERE network = ? AND sender = ? AND recipient = ?",
                (now, *key),
            )
        elif verdict.outcome is Outcome.PASSED:
            self._db.execute(
                "UPDATE triplets SET passed_at = ?, last_seen = ? "
                "WHERE network = ? AND sender = ? AND recipient = ?",
                (now, now, *key),
            )
        elif verdict.outcome is Outcome.NEW:
            self._db.execute(
                "INSERT OR REPLACE INTO triplets VALUES (?, ?, ?, ?, NULL, ?)", (*key, now, now)
            )
        return verdict

    def _client_passed(self, network: str, now: float, times: GreylistTimes) -> int:
        row = self._db.execute(
            "SELECT passed, last_seen FROM clients WHERE network = ?", (network,)
        ).fetchone()
        if row is None or now - row[1] > times.expire:
            return 0
        return int(row[0])

    def _count(self, network: str, now: float, message: str, expire: float) -> None:
        """One more accepted message from this network (once per queue id; restart if expired)."""
        self._db.execute(
            "INSERT INTO clients VALUES (?, 1, ?, ?) ON CONFLICT (network) DO UPDATE SET "
            "passed = CASE WHEN last_seen < ? THEN 1 "
            "ELSE passed + (last_message != excluded.last_message) END, "
            "last_seen = excluded.last_seen, last_message = excluded.last_message",
            (network, now, message, now - expire),
        )

    def _purge(self, now: float, times: GreylistTimes) -> None:
        self._db.execute(
            "DELETE FROM triplets WHERE (passed_at IS NULL AND first_seen < ?) "
            "OR (passed_at IS NOT NULL AND last_seen < ?)",
            (now - times.retry_window, now - times.expire),
        )
        self._db.execute("DELETE FROM clients WHERE last_seen < ?", (now - times.expire,))

    def counts(self) -> tuple[int, int]:
        """(triplets, client networks) stored: for tests and status."""
        with self._lock:
            triplets = self._db.execute("SELECT count(*) FROM triplets").fetchone()[0]
            clients = self._db.execute("SELECT count(*) FROM clients").fetchone()[0]
        return int(triplets), int(clients)
