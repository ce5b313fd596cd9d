"""Where MTA-STS policies are kept beyond one process's memory, so a restart (or another
node) does not forget them.

RFC 8461 5.1 wants a sender to keep a domain's policy until its ``max_age`` runs out:
an attacker who strips the TXT record or blocks the policy host after a restart must not
turn an enforced domain into plain text. ``StsPolicyStore`` is what
``routing.mtasts.MtaStsPolicies`` needs (``routing.mtasts.StsPolicyStore``):
``load(domain)`` and ``save(domain, saved)``,
blocking (it runs them in a thread). ``policy_store`` picks one from the settings:

- SQLite (the default backend): ``mta-sts.db`` in ``queue.directory``, shared by the
  workers of the host; a connection per call (calls are rare: a policy fetched, a domain
  looked up at most once per ``MtaStsPolicies.refresh``), WAL, ``synchronous = FULL``,
  so a saved policy is on disk when ``save`` returns.
- PostgreSQL (``queue.backend = "postgresql"``): the table ``mta_sts_policies`` of the
  shared database (schema version 3, ``queue.postgres_state``): a policy one node
  fetched is used by every node.

``expires`` is seconds since the epoch (the hosts' clocks; a skew of seconds against a
``max_age`` of days does not matter). Errors are ``StoreError`` (PostgreSQL) or
``sqlite3.Error``/``OSError``; the caller logs them and goes on with its memory.

Trusts its own files and database. Settings read: ``queue.backend``,
``queue.directory``, ``queue.postgresql``, ``queue.postgresql_password_file``.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

from mailwright.config.schema import QueueSection
from mailwright.routing.mtasts import SavedPolicy, StsMode, StsPolicy, StsPolicyStore

if TYPE_CHECKING:  # psycopg only with the PostgreSQL backend
    from mailwright.queue.postgres_schema import Conn
    from mailwright.queue.postgres_state import StateDatabase

__all__ = ["PostgresPolicyStore", "SqlitePolicyStore", "policy_store"]


def _saved(policy_id: str, mode: str, mx: str, max_age: int, expires: float) -> SavedPolicy:
    patterns = tuple(p for p in mx.split("\n") if p)
    return SavedPolicy(StsPolicy(StsMode(mode), patterns, int(max_age)), policy_id, expires)


def _row(domain: str, saved: SavedPolicy) -> tuple[str, str, str, str, int, float]:
    policy = saved.policy
    mx = "\n".join(policy.mx)
    return (domain, saved.policy_id, policy.mode.value, mx, policy.max_age, saved.expires)


def _saved_at(saved: SavedPolicy) -> float:
    """When the caller saved it (on its clock): policies expired by then go."""
    return saved.expires - saved.policy.max_age


_SQLITE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mta_sts_policies (domain TEXT PRIMARY KEY,"
    " policy_id TEXT NOT NULL, mode TEXT NOT NULL, mx TEXT NOT NULL,"
    " max_age INTEGER NOT NULL, expires REAL NOT NULL)"
)


class SqlitePolicyStore:
    """``mta-sts.db``: one small SQLite file per host."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(str(self.path), timeout=5.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # saved means on disk: a restart keeps it
        db.execute(_SQLITE_SCHEMA)
        return db

    def load(self, domain: str) -> SavedPolicy | None:
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT policy_id, mode, mx, max_age, expires FROM mta_sts_policies"
                " WHERE domain = ?",
                (domain,),
            ).fetchone()
        return None if row is None else _saved(*row)

    def save(self, domain: str, saved: SavedPolicy) -> None:
        with closing(self._connect()) as db:
            db.execute("INSERT OR REPLACE INTO mta_sts_policies VALUES (?, ?, ?, ?, ?, ?)",
                       _row(domain, saved))  # fmt: skip
            db.execute("DELETE FROM mta_sts_policies WHERE expires < ?", (_saved_at(saved),))


class PostgresPolicyStore:
    """The table ``mta_sts_policies`` of the shared database."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def load(self, domain: str) -> SavedPolicy | None:
        def work(conn: Conn) -> SavedPolicy | None:
            row = conn.execute(
                "SELECT policy_id, mode, mx, max_age, expires FROM mta_sts_policies"
                " WHERE domain = %s",
                (domain,),
            ).fetchone()
            if row is None:
                return None
            return _saved(row["policy_id"], row["mode"], row["mx"], row["max_age"], row["expires"])

        return self.database.run(work)

    def save(self, domain: str, saved: SavedPolicy) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                "INSERT INTO mta_sts_policies VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (domain) DO UPDATE SET policy_id = excluded.policy_id,"
                " mode = excluded.mode, mx = excluded.mx, max_age = excluded.max_age,"
                " expires = excluded.expires",
                _row(domain, saved),
            )
            conn.execute("DELETE FROM mta_sts_policies WHERE expires < %s", (_saved_at(saved),))

        self.database.run(work)


def policy_store(queue: QueueSection) -> StsPolicyStore:
    """The store for the configured queue backend (nothing is opened yet)."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres_state import state_database

        return PostgresPolicyStore(state_database(queue))
    return SqlitePolicyStore(queue.directory / "mta-sts.db")
