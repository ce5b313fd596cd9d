"""The queue store the settings name: the one place that picks a ``QueueStore`` backend.

``queue.backend = "sqlite"`` (the default) is ``queue.db`` in ``queue.directory``, written
by this host's processes only; ``"postgresql"`` is the database ``queue.postgresql``
names, which several processes on several hosts may share (``docs/cluster.md``). The
PostgreSQL backend (and with it psycopg) is imported only when configured, so the SQLite
paths and ``sendmail`` never load it.

What differs for callers: ``clears_all_leases`` (may a process that holds this host's
queue lock treat every lease it finds as a crash's? Only when nothing beyond this host
writes the queue) and ``exists`` (is there a queue to read, without creating one).
``schema_versions`` and ``migrate_schema`` serve ``mailwright queue migrate``: the store's
schema version against this program's, and the pending migrations applied.

Settings read: ``queue.backend``, ``queue.directory``, ``queue.postgresql``,
``queue.postgresql_password_file``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailwright.config.schema import QueueSection
from mailwright.queue.store import NewerSchemaError

if TYPE_CHECKING:  # the backends are imported when used (psycopg only when configured)
    from mailwright.queue.postgres import PostgresQueueStore
    from mailwright.queue.sqlite import SqliteQueueStore

__all__ = [
    "SchemaVersions",
    "clears_all_leases",
    "describe",
    "exists",
    "migrate_schema",
    "queue_store",
    "schema_versions",
]


def queue_store(
    queue: QueueSection, *, shared: bool = False
) -> SqliteQueueStore | PostgresQueueStore:
    """The configured store, not opened. ``shared``: several processes of this host
    write the SQLite file (the daemon's workers); PostgreSQL needs no such gate."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres import PostgresQueueStore as Postgres

        return Postgres(queue.postgresql, password_file=queue.postgresql_password_file)
    from mailwright.queue.sqlite import SqliteQueueStore as Sqlite

    return Sqlite(queue.database, shared=shared)


def clears_all_leases(queue: QueueSection) -> bool:
    """Whether holding the queue lock makes every lease in the queue a crash's: true for
    the SQLite file; a shared database also holds the live leases of other hosts (those
    of dead owners on this host are cleared at open, the others expire)."""
    return queue.backend == "sqlite"


def exists(queue: QueueSection) -> bool:
    """Whether there may be a queue to read (a database is asked when opened)."""
    return queue.backend != "sqlite" or queue.database.exists()


def describe(queue: QueueSection) -> str:
    """The queue's place for messages: the file, or the database without its password."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres import describe as describe_database

        return describe_database(queue.postgresql)
    return str(queue.database)


@dataclass(frozen=True, slots=True)
class SchemaVersions:
    """The queue store's schema version (0: none yet) and this program's."""

    stored: int
    program: int

    @property
    def pending(self) -> bool:
        return self.stored < self.program


def _program_version(queue: QueueSection) -> int:
    if queue.backend == "postgresql":
        from mailwright.queue import postgres_schema

        return postgres_schema.SCHEMA_VERSION
    from mailwright.queue import sqlite_schema

    return sqlite_schema.SCHEMA_VERSION


def schema_versions(queue: QueueSection) -> SchemaVersions:
    """Both versions, changing nothing; a store newer than this program is a StoreError
    (an older node never writes a schema it does not know)."""
    store = queue_store(queue)
    stored = store.stored_schema_version()
    versions = SchemaVersions(stored, _program_version(queue))
    if stored > versions.program:
        raise NewerSchemaError(
            f"queue store {describe(queue)} has schema version {stored}, newer than this"
            f" program's {versions.program}: upgrade Mailwright on this node"
        )
    return versions


def migrate_schema(queue: QueueSection) -> SchemaVersions:
    """Apply the pending migrations (creating the schema in an empty store); the versions
    before. Opens the store for writing without recovery, so a running daemon's work in
    flight is left alone."""
    store = queue_store(queue)
    try:
        store.open(recover=False, exclusive=False)
        before = store.schema_from
    finally:
        store.close()
    return SchemaVersions(before or 0, _program_version(queue))
