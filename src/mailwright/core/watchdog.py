"""A deadline for a connection's reads, kept with one timer that is moved lazily.

``asyncio.timeout()`` around every read allocates a timer, puts it on the loop's heap and
cancels it, several times per message. A ``ReadWatchdog`` keeps one timer per connection
and moves it only when a read's deadline comes before it; when it fires while a read is
under way and past its deadline, it cancels the reading task the way ``asyncio.timeout``
does, and ``expired()`` (in that task's ``except CancelledError``) tells that cancellation
from anybody else's. The reading task may change from read to read (a pooled client
connection). Trusts its caller to bracket each read with ``start`` and ``stop``. Reads no
settings.
"""

from __future__ import annotations

import asyncio


class ReadWatchdog:
    __slots__ = ("_deadline", "_expired", "_loop", "_reader", "_timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._deadline = 0.0
        self._reader: asyncio.Task[object] | None = None  # the task reading now, if any
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    def start(self, deadline: float, task: asyncio.Task[object] | None = None) -> None:
        """A read by ``task`` (default: the current one) must end by ``deadline`` (loop time)."""
        self._reader = task or asyncio.current_task()
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._fired)

    def start_in(self, seconds: float) -> None:
        """A read by the current task must end within ``seconds`` from now."""
        self.start(self._loop.time() + seconds)

    def stop(self) -> None:
        """The read is over (whatever its outcome)."""
        self._reader = None

    def expired(self) -> bool:
        """In the reading task's ``except CancelledError``: the cancellation was this
        watchdog's (and no one else's), so the read timed out."""
        task = self._reader
        if not self._expired or task is None:
            return False
        self._expired = False
        return task.uncancel() == 0

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reader = None

    def _fired(self) -> None:
        self._timer = None
        task = self._reader
        if task is None:
            return  # no read now: the next one arms the timer again
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._fired)
            return
        self._expired = True
        task.cancel()
