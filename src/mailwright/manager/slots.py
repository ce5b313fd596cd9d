"""Delivery slots shared by the worker processes: ``delivery.max_concurrency`` and
``max_per_destination`` hold for the whole daemon, exactly, whatever the number of workers.

One process limits its deliveries with two semaphores (``manager.scheduler``). Workers
cannot share an ``asyncio.Semaphore``, and giving each worker the limit divided by the
number of workers either exceeds a small limit (1 each for a limit of 1) or wastes part of
it. So each of ``workers`` processes owns ``limit // workers`` slots that it uses without
asking anyone (the usual case, no shared memory touched), and the rest (``limit %
workers``, fewer than the workers) is a pool that any worker may borrow from: the
borrowed slots per destination and in all are counted in a ``core.sharedgauge`` table
(``SharedSlots.create``, made by the supervisor before it forks; one row per worker, keys
are salted hashes of the next hop's key). A worker counts its borrow first and reads the
sum after, so two workers borrowing the last slot at once both see it taken and both let
go (then try again a few milliseconds apart, at random, so they do not meet again).
Deliveries in flight, per destination: at most ``workers x (limit // workers)`` own plus
``limit % workers`` borrowed, which is the limit; and never 0 for a worker, as the pool
is not empty when ``limit // workers`` is.

A worker waiting for a borrowed slot looks again when one of its own deliveries ends or
after ``POLL`` seconds (another worker's end cannot wake it; the pool is small, so few
wait this way). A dead worker's borrowed slots are freed by the supervisor
(``reset_worker``) before its replacement starts. The limits are those of the start
(a reload does not change them, as a one-process daemon keeps its global semaphore).
Reads no settings (the limits come from ``daemon.supervisor``); trusts each worker to
write only its own row.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from functools import lru_cache

from mailwright.core.sharedgauge import SharedGauge, table_size
from mailwright.core.sharedtable import KeyHash, shared_words

SLOTS = 1024  # destinations with borrowed slots per worker at once (16 KiB a worker)
POLL = 0.01  # seconds between looks at the pool while it is taken (randomised: ±50%)


class SharedSlots:
    """The pool of borrowed slots of every worker; made before fork, inherited."""

    def __init__(
        self, workers: int, gauge: SharedGauge, salt: bytes, concurrency: int, per_hop: int
    ) -> None:
        self.workers = workers
        self.gauge = gauge
        self.salt = salt
        self.max_concurrency = concurrency
        self.max_per_destination = per_hop

    @classmethod
    def create(
        cls, workers: int, max_concurrency: int, max_per_destination: int, slots: int = SLOTS
    ) -> SharedSlots:
        if workers < 1 or slots < 1 or max_concurrency < 1 or max_per_destination < 1:
            raise ValueError("workers, slots and limits must be at least 1")
        words = shared_words(table_size(workers, slots))
        gauge = SharedGauge.make(words, 0, rows=workers, slots=slots)
        return cls(workers, gauge, KeyHash().salt, max_concurrency, max_per_destination)

    def worker(self, index: int) -> WorkerSlots:
        """Worker ``index``'s slots (called in the worker, after fork)."""
        self._check(index)
        return WorkerSlots(self, index)

    def reset_worker(self, index: int) -> None:
        """Give back what worker ``index`` borrowed: after it exited, before its
        replacement starts."""
        self._check(index)
        self.gauge.clear_row(index)

    def borrowed(self, key: str | None = None) -> int:
        """Slots borrowed now by every worker, for ``key`` or in all (for tests)."""
        if key is None:
            return self.gauge.total()
        return self.gauge.value(KeyHash(self.salt)(key))

    def _check(self, index: int) -> None:
        if not 0 <= index < self.workers:
            raise ValueError(f"worker {index} is not in 0..{self.workers - 1}")


class WorkerSlots:
    """One worker's delivery slots: its own share, then borrowed ones (``hold``)."""

    def __init__(self, pool: SharedSlots, index: int) -> None:
        self.pool = pool
        self.index = index
        workers = pool.workers
        self.own_total, self.pool_total = divmod(pool.max_concurrency, workers)
        self.own_per_hop, self.pool_per_hop = divmod(pool.max_per_destination, workers)
        self._hash = lru_cache(maxsize=1024)(KeyHash(pool.salt))
        # at most this many of this worker's deliveries get as far as asking for a slot
        self._global = asyncio.Semaphore(self.own_total + self.pool_total)
        self._per_hop: dict[str, asyncio.Semaphore] = {}
        self._own_in_use = 0  # own slots (not borrowed) taken, in all and per next hop
        self._own_per_hop_in_use: dict[str, int] = {}
        self._freed = asyncio.Event()  # one of this worker's deliveries ended

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """A slot for one delivery to next hop ``key``, in all and for ``key``."""
        hop = self._per_hop.get(key)
        if hop is None:
            hop = self._per_hop[key] = asyncio.Semaphore(self.own_per_hop + self.pool_per_hop)
        async with self._global, hop:
            borrowed = await self._take(key)
            try:
                yield
            finally:
                self._give(key, borrowed)

    async def _take(self, key: str) -> tuple[bool, bool]:
        """Take a slot (own or borrowed, in all and for ``key``); which were borrowed."""
        while True:
            total = self._own_in_use >= self.own_total
            per_hop = self._own_per_hop_in_use.get(key, 0) >= self.own_per_hop
            if self._borrow(key, total, per_hop):
                if not total:
                    self._own_in_use += 1
                if not per_hop:
                    self._own_per_hop_in_use[key] = self._own_per_hop_in_use.get(key, 0) + 1
                return total, per_hop
            freed = self._freed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(freed.wait(), POLL * random.uniform(0.5, 1.5))

    def _borrow(self, key: str, total: bool, per_hop: bool) -> bool:
        """Count the borrows first, then read the sums: over the pool, give them back."""
        gauge, row = self.pool.gauge, self.index
        if total:
            gauge.change_total(row, 1)
        if per_hop and not gauge.change(row, self._hash(key), 1):
            if total:  # no slot in the table for this key: wait as if the pool were taken
                gauge.change_total(row, -1)
            return False
        if (not total or gauge.total() <= self.pool_total) and (
            not per_hop or gauge.value(self._hash(key)) <= self.pool_per_hop
        ):
            return True
        self._give_back(key, total, per_hop)
        return False

    def _give_back(self, key: str, total: bool, per_hop: bool) -> None:
        gauge, row = self.pool.gauge, self.index
        if per_hop:
            gauge.change(row, self._hash(key), -1)
        if total:
            gauge.change_total(row, -1)

    def _give(self, key: str, borrowed: tuple[bool, bool]) -> None:
        total, per_hop = borrowed
        self._give_back(key, total, per_hop)
        if not total:
            self._own_in_use -= 1
        if not per_hop:
            left = self._own_per_hop_in_use[key] - 1
            if left:
                self._own_per_hop_in_use[key] = left
            else:
                del self._own_per_hop_in_use[key]
        # wake every waiter of this worker: an own slot may be free now
        self._freed.set()
        self._freed = asyncio.Event()
