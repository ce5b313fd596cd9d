"""The host-status cache: a next hop that just failed at connection level is not
dialled again for every message (Sendmail's host status, Postfix's dead-destination
cache).

Keyed by ``NextHop.key``; entries expire after ``queue.host_status_timeout``.
A success clears the entry at once. ``HostStatus`` is what the scheduler uses; the
scheduler asks it for every delivery, so its answers come from memory:

- ``HostStatusCache``: this process's memory only (SQLite, the default backend): a
  restart forgets, which only costs one more connection attempt.
- ``SharedHostStatus`` (``queue.backend = "postgresql"``, through
  ``manager.hoststatus_postgres``): the same memory, written through to the table
  ``host_status`` of the shared database when an entry changes (a hop found dead, a
  dead hop that answered again, a flush), and refreshed from it at most every
  ``refresh`` seconds (``REFRESH``), when asked: a hop one node found dead is skipped by the others
  within seconds. The database work runs in threads in the background and never holds
  a delivery up; a database that is away is logged and the memory goes on alone.

Trusts the scheduler's clock for local times (given as ``clock``); the shared entries'
lifetimes are on the database server's clock, turned into local times at each read.
Settings read: ``queue.backend`` (``host_status``); the lifetime comes from the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailwright.config.schema import QueueSection
from mailwright.core.reply import Reply
from mailwright.queue.store import StoreError

REFRESH = 5.0  # seconds between two reads of the shared entries
log = logging.getLogger("mailwright.manager")


@dataclass(slots=True)
class DeadHost:
    reply: Reply
    remote_mta: str
    until: float


class HostStatus(Protocol):
    ttl: float

    def dead(self, key: str, now: float) -> DeadHost | None: ...

    def mark_dead(self, key: str, reply: Reply, remote_mta: str, now: float) -> None: ...

    def mark_alive(self, key: str) -> None: ...

    def clear(self) -> None: ...

    def snapshot(self, now: float) -> dict[str, DeadHost]: ...


class HostStatusCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._dead: dict[str, DeadHost] = {}

    def dead(self, key: str, now: float) -> DeadHost | None:
        entry = self._dead.get(key)
        if entry is None:
            return None
        if entry.until <= now:
            del self._dead[key]
            return None
        return entry

    def mark_dead(self, key: str, reply: Reply, remote_mta: str, now: float) -> None:
        if self.ttl > 0:
            self._dead[key] = DeadHost(reply, remote_mta, now + self.ttl)

    def mark_alive(self, key: str) -> None:
        self._dead.pop(key, None)

    def clear(self) -> None:
        self._dead.clear()

    def snapshot(self, now: float) -> dict[str, DeadHost]:
        return {k: v for k, v in self._dead.items() if v.until > now}

    def replace(self, entries: dict[str, DeadHost]) -> None:
        """All entries at once (what the shared table holds)."""
        self._dead = entries

    def __contains__(self, key: str) -> bool:
        return key in self._dead


@dataclass(frozen=True, slots=True)
class SharedEntry:
    """A dead hop as the shared table has it: ``left`` seconds still to go."""

    key: str
    reply: Reply
    remote_mta: str
    left: float


class HostStatusTable(Protocol):
    """The shared entries (``manager.hoststatus_postgres``); blocking calls, errors are
    ``StoreError``."""

    def load(self) -> list[SharedEntry]: ...

    def save(self, key: str, reply: Reply, remote_mta: str, ttl: float) -> None: ...

    def delete(self, key: str) -> None: ...

    def delete_all(self) -> None: ...


class SharedHostStatus:
    """``HostStatus`` in memory, written through to a shared table and refreshed from it."""

    def __init__(
        self,
        table: HostStatusTable,
        ttl: float,
        clock: Callable[[], float] = time.time,
        refresh: float = REFRESH,
    ) -> None:
        self.table = table
        self.refresh = refresh
        self.cache = HostStatusCache(ttl)
        self.clock = clock  # the clock of the scheduler's times (``core.clock``)
        self._loaded = float("-inf")
        self._tasks: set[asyncio.Task[None]] = set()
        self._warned = float("-inf")

    @property
    def ttl(self) -> float:
        return self.cache.ttl

    @ttl.setter
    def ttl(self, value: float) -> None:
        self.cache.ttl = value

    def dead(self, key: str, now: float) -> DeadHost | None:
        if time.monotonic() - self._loaded >= self.refresh:
            self._loaded = time.monotonic()
            self._background("read", self._refresh)
        return self.cache.dead(key, now)

    def mark_dead(self, key: str, reply: Reply, remote_mta: str, now: float) -> None:
        if self.cache.ttl <= 0:
            return
        self.cache.mark_dead(key, reply, remote_mta, now)
        ttl = self.cache.ttl
        self._background("write", lambda: self.table.save(key, reply, remote_mta, ttl))

    def mark_alive(self, key: str) -> None:
        if key in self.cache:  # only a change costs a write: most deliveries find none
            self.cache.mark_alive(key)
            self._background("write", lambda: self.table.delete(key))

    def clear(self) -> None:
        """A flush: every hop is tried again, on every node."""
        self.cache.clear()
        self._background("clear", self.table.delete_all)

    def snapshot(self, now: float) -> dict[str, DeadHost]:
        return self.cache.snapshot(now)

    async def settle(self) -> None:
        """Wait for the background work started so far (tests, a clean stop)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _refresh(self) -> None:
        entries = self.table.load()
        now = self.clock()
        self.cache.replace({e.key: DeadHost(e.reply, e.remote_mta, now + e.left) for e in entries})

    def _background(self, what: str, work: Callable[[], None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a command): memory only
        task = loop.create_task(self._run(what, work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, what: str, work: Callable[[], None]) -> None:
        try:
            await asyncio.to_thread(work)
        except StoreError as exc:
            now = time.monotonic()
            if now - self._warned >= 60.0:  # the database is away: say so once a minute
                self._warned = now
                log.warning("host status: cannot %s the shared entries: %s", what, exc)


def host_status(queue: QueueSection, ttl: float) -> HostStatus:
    """The cache for the configured queue: this process's, or the nodes' shared one."""
    if queue.backend != "postgresql":
        return HostStatusCache(ttl)
    from mailwright.manager.hoststatus_postgres import PostgresHostStatusTable
    from mailwright.queue.postgres_state import state_database

    return SharedHostStatus(PostgresHostStatusTable(state_database(queue)), ttl)
