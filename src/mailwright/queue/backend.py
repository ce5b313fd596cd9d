"""The queue store the settings name: the one place that picks a ``QueueStore`` backend.

``queue.backend = "sqlite"`` (the default) is ``queue.db`` in ``queue.directory``, written
by this host's processes only; ``"postgresql"`` is the database ``queue.postgresql``
names, which several processes on several hosts may share (``docs/cluster.md``). The
PostgreSQL backend (and with it psycopg) is imported only when configured, so the SQLite
paths and ``sendmail`` never load it.

What differs for callers: ``clears_all_leases`` (may a process that holds this host's
queue lock treat every lease it finds as a crash's? Only when nothing beyond this host
writes the queue) and ``exists`` (is there a queue to read, without creating one).

Settings read: ``queue.backend``, ``queue.directory``, ``queue.postgresql``,
``queue.postgresql_password_file``.
"""

from __future__ import annotations

from mailwright.config.schema import QueueSection
from mailwright.queue.store import QueueStore

__all__ = ["clears_all_leases", "describe", "exists", "queue_store"]


def queue_store(queue: QueueSection, *, shared: bool = False) -> QueueStore:
    """The configured store, not opened. ``shared``: several processes of this host
    write the SQLite file (the daemon's workers); PostgreSQL needs no such gate."""
    if queue.backend == "postgresql":
        from mailwright.queue.postgres import PostgresQueueStore  # psycopg only when used

        return PostgresQueueStore(queue.postgresql, password_file=queue.postgresql_password_file)
    from mailwright.queue.sqlite import SqliteQueueStore

    return SqliteQueueStore(queue.database, shared=shared)


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
