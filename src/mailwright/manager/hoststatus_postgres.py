"""The host-status entries of every node: the table ``host_status`` of the shared database.

``manager.hoststatus.SharedHostStatus`` writes an entry when a node finds a next hop
dead, deletes it when the hop answers again (or at a flush), and reads the unexpired
ones every few seconds. Lifetimes are the database server's clock (``now()``): an entry
is stored with its end, and read as the seconds it has left, so nodes whose clocks
differ agree on it. Expired rows are deleted by the read that finds them. Blocking
calls (run in threads); errors are ``StoreError``. Trusts its own database for the
stored replies. Reads no settings.
"""

from __future__ import annotations

import json

from mailwright.core.reply import Reply
from mailwright.manager.hoststatus import SharedEntry
from mailwright.queue.postgres_schema import Conn
from mailwright.queue.postgres_state import StateDatabase

__all__ = ["PostgresHostStatusTable"]

_NOW = "extract(epoch from now())"


def _encode(reply: Reply) -> str:
    return json.dumps({"code": reply.code, "status": reply.status, "lines": list(reply.lines)})


def _decode(text: str) -> Reply:
    data = json.loads(text)
    return Reply.of(int(data["code"]), data["status"], *data["lines"])


class PostgresHostStatusTable:
    """``manager.hoststatus.HostStatusTable`` on the shared database."""

    def __init__(self, database: StateDatabase) -> None:
        self.database = database

    def load(self) -> list[SharedEntry]:
        def work(conn: Conn) -> list[SharedEntry]:
            conn.execute(f"DELETE FROM host_status WHERE until <= {_NOW}")
            rows = conn.execute(
                f"SELECT key, reply, remote_mta, until - {_NOW} AS remaining FROM host_status"
            ).fetchall()
            return [
                SharedEntry(r["key"], _decode(r["reply"]), r["remote_mta"], float(r["remaining"]))
                for r in rows
            ]

        return self.database.run(work)

    def save(self, key: str, reply: Reply, remote_mta: str, ttl: float) -> None:
        def work(conn: Conn) -> None:
            conn.execute(
                f"INSERT INTO host_status VALUES (%s, %s, %s, {_NOW} + %s)"
                " ON CONFLICT (key) DO UPDATE SET reply = excluded.reply,"
                " remote_mta = excluded.remote_mta, until = excluded.until",
                (key, _encode(reply), remote_mta, ttl),
            )

        self.database.run(work, transaction=False)

    def delete(self, key: str) -> None:
        def work(conn: Conn) -> None:
            conn.execute("DELETE FROM host_status WHERE key = %s", (key,))

        self.database.run(work, transaction=False)

    def delete_all(self) -> None:
        def work(conn: Conn) -> None:
            conn.execute("DELETE FROM host_status")

        self.database.run(work, transaction=False)
