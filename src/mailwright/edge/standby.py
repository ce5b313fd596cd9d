"""Which workers accept connections: while the daemon has one connection open or none,
worker 0 alone; from the second, every worker. The other workers stand by.

Why: one client at a time is served fastest by one process that stays put. When each
new connection went to whichever worker won the race for it, every other commit of a
lone client's messages found the queue database changed by the other process (SQLite
then reads the pages it needs again) and ran on a CPU whose caches held the other
worker's state; and with ``server.cpu_affinity`` the worker kept to its CPU shared it
with the client's process while the other CPU stood idle. A worker with no connection
still woke up for every new one only to lose the race. With several clients at once,
every worker accepts, each kept to its own CPU, as before.

Shared state: one word of memory shared by every worker (``core.sharedtable``), made by
the supervisor before it forks: 1 while every worker listens ("spread"), and one pipe per
worker, a byte written to it asks the worker to look at the word. Worker 0 sets the word
when a connection it admits makes two open in the daemon (``policy.sharedlimits`` counts
them) and clears it when one it closes leaves none. Only worker 0 changes the word in
a worker: while worker 0 is down (the supervisor sets the word when any worker dies),
the others keep listening until it is back and has seen the daemon idle.

The edge (``edge.listener``) follows the word: a worker standing by has its listening
sockets (a duplicate of each, kept) but no server on them, and every worker keeps to its
CPU only while the word is set (``core.process.keep_home`` and ``spread_out``).

Trusts the supervisor to give each worker its own index. Reads no settings.
"""

from __future__ import annotations

import contextlib
import os

from mailwright.core.sharedtable import shared_words

SPREAD = 0  # the word: 1 while every worker listens


class Standby:
    """The shared word and the workers' pipes; made before the fork, inherited by all."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.words = shared_words(1)
        # non-blocking both ways: a full pipe already holds a wake-up (the word says what)
        self.pipes = [os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC) for _ in range(workers)]

    @property
    def spread(self) -> bool:
        return bool(self.words[SPREAD])

    def set(self, spread: bool) -> None:
        """Set the word and wake every worker to look at it."""
        self.words[SPREAD] = int(spread)
        for _, write_end in self.pipes:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(write_end, b"!")

    def worker(self, index: int) -> WorkerStandby:
        if not 0 <= index < len(self.pipes):
            raise ValueError(f"worker {index} is not in 0..{len(self.pipes) - 1}")
        return WorkerStandby(self, index)

    def close(self) -> None:
        for pair in self.pipes:
            for fd in pair:
                with contextlib.suppress(OSError):
                    os.close(fd)


class WorkerStandby:
    """One worker's view: whether it listens now, its wake-up pipe, and (worker 0) the
    changes of the word as connections open and close."""

    def __init__(self, standby: Standby, index: int) -> None:
        self.standby = standby
        self.index = index
        self.fd = standby.pipes[index][0]  # readable: look at the word again

    @property
    def spread(self) -> bool:
        return self.standby.spread

    @property
    def decides(self) -> bool:
        """Worker 0 alone changes the word as connections open and close."""
        return self.index == 0

    def listens(self) -> bool:
        return self.decides or self.standby.spread

    def counted(self, open_connections: int) -> bool:
        """After a connection was counted in or out: ``open_connections`` are open in the
        whole daemon now. Worker 0 sets or clears the word (and wakes everyone); True when
        it did, so that the caller follows the word too."""
        if not self.decides:
            return False
        spread = self.standby.spread
        if not spread and open_connections >= 2:
            self.standby.set(True)
            return True
        if spread and open_connections <= 0:
            self.standby.set(False)
            return True
        return False

    def drain(self) -> None:
        """Empty the wake-up pipe (the word, not the bytes, says what to do)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.fd, 64):
                pass
