"""The shared queue store: the ``QueueStore`` interface on a PostgreSQL database.

Several Mailwright nodes may use one database: claims lock what they lease
(``FOR UPDATE SKIP LOCKED``) and leases carry an owner and an expiry (``queue.lease``),
so a node that dies loses its leases when they expire and another node delivers the
recipients. Message content lives in the database (headers in one ``bytea``, the body in
chunks of ``body_chunk_size``), so any node can deliver any message.

The store is split by concern like the SQLite one: ``postgres_schema`` (schema,
migrations, session set-up, error mapping), ``postgres_batch`` (the writer side: one
transaction per ``apply_batch``, a savepoint per op) and ``postgres_rows`` (the reader
side on a connection pool). This module opens and closes the connections and cleans up
after a crash. psycopg is imported by these modules only: nothing on the start-up path
of ``sendmail`` or of a SQLite queue loads it.

At ``open`` with ``exclusive`` every lease in the database is cleared, as the
``QueueStore`` interface says: right for one node that holds its queue lock, wrong for a
database shared by several live nodes, which must open with ``exclusive=False`` (then
only the leases of dead processes of this host are cleared, the others expire).

Queue ids are unique across the nodes by construction: the write connection of every
process that writes the database (a daemon's workers, a command without a daemon) holds
one of ``ID_SLOTS`` queue id slots with a session advisory lock (``claim_id_slot``), and
the process's ids take only that slot's part of the id space (``core.queueid``). The lock
goes with the session: a process that lost its connection claims a slot again (maybe
another) on the next one. Should ids still meet (a slot taken over while its old holder
was cut off, in the same millisecond), ``queue_id`` is UNIQUE: the insert fails and the
client is told 451, never are two messages mixed.

Trusts: the database the connection string names (the operator's) and values already
validated by the protocol layer. Settings read: none directly; the caller passes the
libpq connection string (URI or keywords, never logged: errors name the database by
``where``, host, port and database name, without the password) and may pass
``body_chunk_size``, ``pool_size`` (read connections), ``connect_timeout`` and
``password_file`` (its first line is the password, read at ``open``).
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import psycopg_pool
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from mailwright.core import queueid
from mailwright.queue.lease import owner_is_dead
from mailwright.queue.postgres_batch import PostgresWrites
from mailwright.queue.postgres_rows import PostgresReads
from mailwright.queue.postgres_schema import (
    DEFAULT_BODY_CHUNK,
    ID_SLOTS,
    SCHEMA_VERSION,
    Conn,
    check_version,
    claim_id_slot,
    configure_session,
    migrate,
    schema_version,
)
from mailwright.queue.postgres_wire import CountingConnection, RoundTrips
from mailwright.queue.records import QUEUED
from mailwright.queue.store import Recovery, StoreError

__all__ = ["SCHEMA_VERSION", "PostgresQueueStore", "describe"]


def describe(conninfo: str) -> str:
    """The database a connection string names, for messages: no password, no options."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "postgresql (unparsable connection string)"
    host = params.get("host") or "local socket"
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{host}{port}/{params.get('dbname') or ''}"


class PostgresQueueStore(PostgresReads, PostgresWrites):
    """``QueueStore`` on a PostgreSQL database; see the module docstring."""

    def __init__(
        self,
        conninfo: str,
        *,
        body_chunk_size: int = DEFAULT_BODY_CHUNK,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
        password_file: Path | None = None,
    ) -> None:
        self._conninfo = conninfo
        self._password_file = password_file
        self.where = describe(conninfo)
        self.id_slot: int | None = None  # the queue id slot the write connection holds
        self.schema_from: int | None = None  # set by open(): the version found (0: new)
        self.recovery: Recovery | None = None  # set by open()
        self._body_chunk = body_chunk_size
        self._pool_size = pool_size
        self._timeout = connect_timeout
        self._conn: Conn | None = None
        self._writable = False  # opened for writing: a lost write connection is remade
        self._pool: psycopg_pool.ConnectionPool[Conn] | None = None
        self._handlers = self._handler_table()
        self.round_trips = RoundTrips()  # of all its connections (queue.postgres_wire)

    # ---- life cycle -------------------------------------------------------------------

    def open(self, recover: bool = True, *, exclusive: bool = True) -> None:
        """Open for writing: create or migrate the schema, and with ``recover`` clear
        leases (all with ``exclusive``, else only dead owners') and finished messages."""
        if self._writable:
            return
        self._read_password()
        conn = self._connect()
        try:
            self.schema_from = migrate(conn, self.where)
            if recover:
                self.recovery = self._recover(conn, exclusive)
            self._claim_ids(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot open queue store {self.where}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._writable = True
        try:
            self._open_pool()
        except StoreError:
            self.close()
            raise

    def open_for_reading(self) -> None:
        """Open only the read side (``mailq`` while a daemon writes). Creates nothing."""
        if self._pool is not None:
            return
        version = self.stored_schema_version()
        if version == 0:
            raise StoreError(f"no queue at {self.where}")
        check_version(version, self.where)
        self._open_pool()

    def stored_schema_version(self) -> int:
        """The database's schema version (0: none yet), read without changing anything."""
        self._read_password()
        conn = self._connect()
        try:
            return schema_version(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot read queue store {self.where}: {exc}") from exc
        finally:
            conn.close()

    def close(self) -> None:
        """Close every connection; idempotent. The writer must be stopped first."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._writable = False

    def _read_password(self) -> None:
        """Put the password file's first line into the connection string (kept in memory
        only: ``where`` and every message name the database without it)."""
        if self._password_file is None:
            return
        try:
            with self._password_file.open(encoding="utf-8") as file:
                password = file.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or str(exc)
            where = self._password_file
            raise StoreError(f"cannot read the password file {where}: {why}") from None
        self._conninfo = make_conninfo(self._conninfo, password=password)
        self._password_file = None  # read once: a reconnect uses the same password

    def _connect(self) -> Conn:
        try:
            conn = CountingConnection.connect(
                self._conninfo,
                autocommit=True,  # transactions are explicit: conn.transaction()
                row_factory=dict_row,
                connect_timeout=max(1, round(self._timeout)),
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to queue store {self.where}: {exc}") from exc
        conn.round_trips = self.round_trips
        try:
            configure_session(conn)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot set up queue store {self.where}: {exc}") from exc
        return conn

    def _writer(self) -> Conn:
        if self._conn is None:
            if not self._writable:
                raise StoreError("queue store is not open")
            conn = self._connect()  # after a lost connection, which lost the id slot too
            try:
                self._claim_ids(conn)
            except psycopg.Error as exc:
                conn.close()
                raise StoreError(f"cannot set up queue store {self.where}: {exc}") from exc
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _claim_ids(self, conn: Conn) -> None:
        """Hold a queue id slot on the write connection and make this process's queue ids
        use it (the module docstring)."""
        self.id_slot = claim_id_slot(conn, int.from_bytes(os.urandom(2)) % ID_SLOTS)
        queueid.use_partition(self.id_slot, ID_SLOTS)

    def _open_pool(self) -> None:
        def configure(conn: Conn) -> None:
            if isinstance(conn, CountingConnection):
                conn.round_trips = self.round_trips
            configure_session(conn)

        pool: psycopg_pool.ConnectionPool[Conn] = psycopg_pool.ConnectionPool(
            self._conninfo,
            connection_class=CountingConnection,
            kwargs={"autocommit": True, "row_factory": dict_row},
            min_size=1,
            max_size=max(1, self._pool_size),
            timeout=self._timeout,
            configure=configure,
            # a connection the server dropped (a restart) is replaced, not handed out
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name="mailwright-queue",
        )
        try:
            pool.open(wait=True, timeout=self._timeout)
        except psycopg_pool.PoolTimeout as exc:
            pool.close()
            raise StoreError(f"cannot connect to queue store {self.where}: {exc}") from exc
        self._pool = pool

    # ---- recovery ---------------------------------------------------------------------

    def _recover(self, conn: Conn, exclusive: bool) -> Recovery:
        """Void leases of interrupted work (all, or only dead owners'); drop finished
        messages. Orphan rows cannot exist: deletes cascade."""
        report = Recovery()
        with conn.transaction():
            if exclusive:
                report.leases_cleared = conn.execute(
                    "UPDATE recipients SET lease_owner = NULL, lease_until = NULL"
                    " WHERE lease_owner IS NOT NULL OR lease_until IS NOT NULL"
                ).rowcount
            else:
                owners = conn.execute(
                    "SELECT DISTINCT lease_owner FROM recipients WHERE lease_owner IS NOT NULL"
                ).fetchall()
                dead = [row["lease_owner"] for row in owners if owner_is_dead(row["lease_owner"])]
                if dead:
                    report.leases_cleared = conn.execute(
                        "UPDATE recipients SET lease_owner = NULL, lease_until = NULL"
                        " WHERE lease_owner = ANY(%s)",
                        (dead,),
                    ).rowcount
            report.finished_deleted = conn.execute(
                "DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM recipients r"
                " WHERE r.message_id = messages.id AND r.state = %s)",
                (QUEUED,),
            ).rowcount
        return report
