"""Connection counts, the connection rate and event counters (AUTH failures, DMARC failure
reports) shared by the worker processes of one host, so that every limit holds across
workers (issue 14).

The supervisor calls ``SharedState.create(workers)`` before it forks: one anonymous
shared memory mapping (``core.sharedtable``) holds, for each worker, a row of open
connections per client address (``core.sharedgauge``) and rows of recent events per
key (``core.sharedwindow``): new connections per address, AUTH failures per address,
per (user, address) and per user, DMARC failure reports per organizational domain
(``policy.dmarc_failures``). A forked worker calls ``state.worker(index)`` and
hands the ``WorkerShare`` to the daemon (``Runtime.share``); the listener and the
limits of ``policy.limits`` then count in it instead of in their own memory. When a
worker dies, the supervisor calls ``state.reset_worker(index)`` before starting its
replacement: the dead worker's open connections are forgotten, its recent events (the
connection rate, AUTH failures) are not, and the replacement writes on in that row.

Each worker writes only its own rows and reads everybody's: no lock (why: see
``core.sharedtable``). Keys are hashed with a salt drawn at ``create``. The size is fixed
at ``create`` (``slots`` keys per worker and per counter); on a full table the oldest
event keys are forgotten and connection counts of the addresses that find no slot are
kept by their worker alone: nothing fails and nobody is refused for it. Trusts the
supervisor to give each live worker its own index and to reset a worker's rows only once
that worker has exited. Reads no settings: the windows come with each call
(``auth.failure_window``, the minute of ``server.max_connection_rate_per_ip``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

from mailwright.core import sharedgauge, sharedwindow
from mailwright.core.sharedgauge import SharedGauge
from mailwright.core.sharedtable import KeyHash, shared_words
from mailwright.core.sharedwindow import SharedWindow

Clock = Callable[[], float]
SLOTS = 4096  # keys per worker and per counter: 3.5 MB of shared memory per worker
WINDOWS = ("connection_rate", "auth_ip", "auth_user_ip", "auth_user", "dmarc_failure_reports")


class SharedState:
    """The shared memory of all workers; made before fork, inherited by the workers."""

    def __init__(
        self, workers: int, connections: SharedGauge, windows: dict[str, SharedWindow], salt: bytes
    ) -> None:
        self.workers = workers
        self.connections = connections
        self.windows = windows
        self.salt = salt

    @classmethod
    def create(cls, workers: int, slots: int = SLOTS) -> SharedState:
        if workers < 1 or slots < 1:
            raise ValueError("workers and slots must be at least 1")
        gauge_size = sharedgauge.table_size(workers, slots)
        window_size = sharedwindow.table_size(workers, slots)
        words = shared_words(gauge_size + len(WINDOWS) * window_size)
        connections = SharedGauge.make(words, 0, rows=workers, slots=slots)
        windows = {
            name: SharedWindow.make(
                words, gauge_size + number * window_size, rows=workers, slots=slots
            )
            for number, name in enumerate(WINDOWS)
        }
        return cls(workers, connections, windows, KeyHash().salt)

    def worker(self, index: int, clock: Clock = time.monotonic) -> WorkerShare:
        """What worker ``index`` counts in (called in the worker, after fork)."""
        self._check(index)
        return WorkerShare(self, index, clock)

    def reset_worker(self, index: int) -> None:
        """Worker ``index`` exited (reaped), its replacement is not started yet: its open
        connections died with it and are forgotten. Its recent events (connections made,
        AUTH failures) stay counted: they happened, and a client must not shed its AUTH
        failures because the worker that saw them died; the replacement takes the row
        over. A word torn by a SIGKILL mid-update can only miscount one key's events."""
        self._check(index)
        self.connections.clear_row(index)

    def _check(self, index: int) -> None:
        if not 0 <= index < self.workers:
            raise ValueError(f"worker {index} is not in 0..{self.workers - 1}")


class WorkerShare:
    """One worker's view: it writes its own rows, reads all of them."""

    def __init__(self, state: SharedState, index: int, clock: Clock = time.monotonic) -> None:
        self.state = state
        self.index = index
        self.clock = clock
        self.key = lru_cache(maxsize=1024)(KeyHash(state.salt))  # a client reconnects
        self.overflow: Counter[str] = Counter()  # addresses that found no shared slot

    # ---- open connections per client address (edge.listener) ------------------------------
    def opened(self, ip: str) -> None:
        connections = self.state.connections
        connections.change_total(self.index, 1)
        if not connections.change(self.index, self.key(ip), 1):
            self.overflow[ip] += 1

    def closed(self, ip: str) -> None:
        connections = self.state.connections
        connections.change_total(self.index, -1)
        if self.overflow.get(ip):
            self.overflow[ip] -= 1
            if not self.overflow[ip]:
                del self.overflow[ip]
            return
        connections.change(self.index, self.key(ip), -1)

    def total(self) -> int:
        return self.state.connections.total()

    def of_ip(self, ip: str) -> int:
        return self.state.connections.value(self.key(ip)) + self.overflow.get(ip, 0)

    # ---- events over a window (policy.limits) ----------------------------------------------
    def connection_rate(self) -> WindowCounter:
        """New connections per client address over the last minute."""
        return self.window("connection_rate", 60.0)

    def auth_failures(self, window: float) -> tuple[WindowCounter, WindowCounter, WindowCounter]:
        """AUTH failures per address, per (user, address) and per user over ``window``."""
        return (
            self.window("auth_ip", window),
            self.window("auth_user_ip", window),
            self.window("auth_user", window),
        )

    def window(self, name: str, window: float) -> WindowCounter:
        return WindowCounter(self, self.state.windows[name], window)


class WindowCounter:
    """The interface of ``policy.limits.SlidingCounter`` on a shared window."""

    def __init__(self, share: WorkerShare, table: SharedWindow, window: float) -> None:
        self.share = share
        self.table = table
        self.window = window

    def add(self, key: str) -> int:
        share = self.share
        return self.table.add(share.index, share.key(key), self.window, share.clock())

    def count(self, key: str) -> int:
        share = self.share
        return self.table.count(share.key(key), self.window, share.clock())

    def clear(self, key: str) -> None:
        share = self.share
        self.table.clear(share.index, share.key(key), share.clock())
