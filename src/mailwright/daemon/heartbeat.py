"""This daemon as a node of a shared queue: its heartbeat in the database.

With ``queue.backend = "postgresql"`` every process of the daemon records itself as one
of the node's (so that its leases count as the node's deliveries), and the process that
runs what exists once (worker 0, or the only process) registers the node, renews its
heartbeat every ``cluster.heartbeat`` seconds and marks it stopped at a clean stop
(``queue.postgres_nodes``). At each beat that process also looks for nodes whose
heartbeat stopped without a clean stop (killed, hung, cut off: no beat for three of
their intervals) and gives back the leases of their processes (``release``, through the
queue writer), so their recipients are delivered by the live nodes within seconds rather
than when the leases expire (``delivery.lease``). Should such a node still be delivering
(a long pause, not a death), a recipient may be delivered twice: at-least-once. A failed
write (the database is away) is logged and tried again at the next beat: the heartbeat
never stops the daemon. With SQLite there is no cluster and nothing is written.

Settings read: ``queue.backend``, ``cluster.node``, ``cluster.heartbeat``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailwright.config.schema import Settings
from mailwright.queue.store import QueueStore, StoreError

if TYPE_CHECKING:
    from mailwright.queue.postgres_nodes import NodeRegistry

log = logging.getLogger("mailwright.daemon")


class Heartbeat:
    """Started after the store is open, stopped before it closes."""

    def __init__(
        self,
        settings: Settings,
        store: QueueStore,
        *,
        first: bool,
        workers: int,
        release: Callable[[tuple[str, ...]], Awaitable[int]] | None = None,
    ) -> None:
        self.registry: NodeRegistry | None = None
        self.release = release  # gives back the leases of a stale node's processes
        self.first = first  # this process registers the node and beats for it
        self.workers = workers
        self._task: asyncio.Task[None] | None = None
        if settings.queue.backend == "postgresql":
            from mailwright.queue.postgres import PostgresQueueStore  # psycopg when used
            from mailwright.queue.postgres_nodes import NodeRegistry

            if isinstance(store, PostgresQueueStore):
                self.registry = NodeRegistry(
                    store, settings.cluster.node, settings.cluster.heartbeat
                )

    async def start(self, listeners: Callable[[], str]) -> None:
        registry = self.registry
        if registry is None:
            return
        await self._try("join the node", registry.join)
        if self.first:
            await self._try("register the node", registry.register, self.workers, listeners())
            self._task = asyncio.create_task(self._beats(registry, listeners), name="heartbeat")

    async def stop(self) -> None:
        """A clean stop: the node is marked stopped (by its first process)."""
        registry = self.registry
        if registry is None:
            return
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            await self._try("mark the node stopped", registry.stop)
        await self._try("leave the node", registry.leave)

    async def _beats(self, registry: NodeRegistry, listeners: Callable[[], str]) -> None:
        while True:
            await asyncio.sleep(registry.heartbeat)
            await self._try("write the heartbeat", registry.beat, listeners())
            await self._release_stale(registry)

    async def _release_stale(self, registry: NodeRegistry) -> None:
        if self.release is None:
            return
        try:
            stale = await asyncio.to_thread(registry.stale)
            for node, (age, processes) in stale.items():
                released = await self.release(processes)
                if released:
                    log.warning(
                        "cluster: node %s has not beaten for %.0f s: gave back %d leases of"
                        " its deliveries, due again now",
                        node,
                        age,
                        released,
                    )
        except StoreError as exc:
            log.warning("cluster: cannot give back the leases of stale nodes: %s", exc)

    @staticmethod
    async def _try(what: str, call: Callable[..., None], *args: object) -> None:
        try:
            await asyncio.to_thread(call, *args)
        except StoreError as exc:
            log.warning("cluster: cannot %s: %s", what, exc)
