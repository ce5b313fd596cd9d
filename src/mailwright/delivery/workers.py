"""Where local delivery's blocking work runs, apart from the SMTP dialogue's.

Writing a mailbox waits for its locks, a program runs for as long as it likes: that
work runs here, in pools of its own (``WRITES``: mailboxes, files, reading the queue
for a writer; ``PROGRAMS``: commands), never in the event loop's default pool, which
the SMTP side uses for its lookups. A pool is bounded; ``Gates`` lets only one
delivery per mailbox (or file) into it at a time, and that one waits for the locks
mostly in the event loop (``delivery.lockwait``), so deliveries waiting for a locked
mailbox do not fill the pool, and mail for other mailboxes goes on.

``Interrupts`` ends lock waits at shutdown: every wait registers a stop callback
while it runs; ``interrupt()`` calls them all (and at once those registered later),
so the waits give up with a temporary failure and the recipients stay queued.
Trusts its callers. Reads no settings.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Pool:
    """A bounded thread pool, made when first used (a forked helper makes its own)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.size, f"mailwright-{self.name}")
            return self._executor

    async def run(self, func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``func(*args)`` in this pool, with the caller's context (its queue id for logs)."""
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
        return await loop.run_in_executor(self.executor(), call)


WRITES = Pool("delivery", 16)  # mailboxes, files, Maildirs; one thread per mailbox at most
PROGRAMS = Pool("programs", 32)  # |command deliveries, each waiting for its command


class Gates:
    """One delivery at a time per key (a mailbox or file path); the others wait here,
    in the event loop, holding no thread."""

    def __init__(self) -> None:
        self._gates: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._gates.get(key, (asyncio.Lock(), 0))
        self._gates[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._gates[key]
            if users == 1:
                del self._gates[key]
            else:
                self._gates[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._gates)


class Interrupts:
    """Stop callbacks of the lock waits in flight; ``interrupt`` calls them all."""

    def __init__(self) -> None:
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self.interrupted = False

    def interrupt(self) -> None:
        """Shutdown: stop every wait, and every wait that starts from now on."""
        with self._lock:
            self.interrupted = True
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            callback()

    @contextmanager
    def watch(self, callback: Callable[[], None]) -> Iterator[None]:
        """``callback`` is called on ``interrupt`` while the block runs."""
        with self._lock:
            key = next(self._ids)
            self._callbacks[key] = callback
            now = self.interrupted
        if now:
            callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)

    async def run(self, pool: Pool, func: Callable[..., T], *args: object) -> T:
        """``func(*args, stop)`` in ``pool``, where ``stop`` (a ``threading.Event``) is set
        on ``interrupt`` or when the caller is cancelled."""
        stop = threading.Event()
        with self.watch(stop.set):
            try:
                return await pool.run(func, *args, stop)
            except asyncio.CancelledError:
                stop.set()  # the thread gives up its wait; nobody waits for its result
                raise
