"""The queue runs a queue-only daemon owes: full runs and selective ones, merged.

In queue-only mode (``delivery.mode = "queue"``, Sendmail's ``-odq`` daemon) nothing is
delivered except in a queue run. A full run (``sendmail -q``, ``mailwright queue flush``,
the status page's "flush all", every ``delivery.queue_run_interval``) delivers everything
due; a selective run (``-qI``/``-qR``/``-qS``, ``queue flush ID``, the status page's
"flush" of ticked messages) only the messages it names. Requests that arrive while a run
is going on are merged into the next one: any full request makes it full, otherwise it
covers the union of the named messages. Trusts its callers (the control socket, which
only the daemon's user and root can open). Reads no settings; the daemon passes the
interval.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class QueueRun:
    """One run to do: ``queue_ids`` None for every due recipient, else those messages."""

    __slots__ = ("queue_ids",)

    def __init__(self, queue_ids: tuple[str, ...] | None) -> None:
        self.queue_ids = queue_ids

    @property
    def full(self) -> bool:
        return self.queue_ids is None


class QueueRuns:
    def __init__(self) -> None:
        self._asked = asyncio.Event()
        self._full = False
        self._ids: set[str] = set()

    def ask(self, queue_ids: Iterable[str] | None = None) -> None:
        """Ask for a run: of everything (None), or of these messages."""
        if queue_ids is None:
            self._full = True
        else:
            self._ids.update(queue_ids)
        self._asked.set()

    def interrupt(self) -> None:
        """Wake ``next`` without asking for a run (the daemon is stopping)."""
        self._asked.set()

    async def next(self, interval: float | None) -> QueueRun | None:
        """Wait for a request, or ``interval`` seconds (then: a full run). None when woken
        by ``interrupt`` with nothing asked for."""
        try:
            async with asyncio.timeout(interval):
                await self._asked.wait()
        except TimeoutError:
            self._full = True
        self._asked.clear()
        full, ids = self._full, self._ids
        self._full, self._ids = False, set()
        if full:
            return QueueRun(None)
        return QueueRun(tuple(sorted(ids))) if ids else None
