"""Queue ids: unique, sortable by creation time, safe in file names, logs and shells.

An id is 10 characters of millisecond time in Crockford base32 followed by
5 characters of per-process sequence and randomness, e.g. ``01JD3K7Q2M4XK9A``.
Ids from one process are strictly increasing (until its partition changes); processes
that write one queue take disjoint parts of the tail (``use_partition``), so their ids
never collide, even within one millisecond:

- on SQLite (one host), worker ``index`` of ``count`` takes the ``index``-th part;
- on a shared PostgreSQL database (several nodes), every writing process, whatever its
  node, claims a slot of 1024 in the database itself (a session advisory lock held by its
  write connection, ``queue.postgres_schema.claim_id_slot``) and takes that slot's part:
  32768 tails per millisecond. No two live processes hold one slot, so the ids of two
  nodes differ by construction, with no setting to keep unique and no schema change.
  A random salt per node would only have made collisions rarer; a node number in the
  database would have needed a table and the release of numbers of dead nodes, which
  the session lock does by itself. ``queue_id`` is UNIQUE in the database as well: the
  one remaining case (a process cut off from the database keeps its old slot's ids
  until it reconnects, while another process took the slot) fails an insert (451,
  the client tries again), never mixes two messages.

Reads no settings.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 10
_TAIL_CHARS = 5
_TAIL_SPACE = 32**_TAIL_CHARS
QUEUE_ID_RE = re.compile(rf"^[{ALPHABET}]{{{_TIME_CHARS + _TAIL_CHARS}}}$")


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


class QueueIdGenerator:
    """Monotonic id source; thread-safe.

    Processes that share one queue (the daemon's workers) each take a partition of the
    tail space (``partition``), so their ids never collide even within one millisecond.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._time_part = _encode(0, _TIME_CHARS)  # _last_ms encoded
        # seeded once: os.urandom per id releases the GIL, and getting it back behind the
        # queue writer thread cost ~60 us per id in the daemon
        self._random = random.Random(os.urandom(16))
        self._base, self._span = 0, _TAIL_SPACE
        self._tail = self._random.getrandbits(32) % _TAIL_SPACE

    def partition(self, index: int, count: int) -> None:
        """Use only the ``index``-th of ``count`` equal parts of the tail space (in a
        forked worker: reseeded too, so that siblings do not share a random sequence)."""
        if not 0 <= index < count <= _TAIL_SPACE:
            raise ValueError(f"no partition {index} of {count}")
        with self._lock:
            self._random = random.Random(os.urandom(16))
            self._span = _TAIL_SPACE // count
            self._base = index * self._span
            self._tail = 0
            self._last_ms = 0
            self._time_part = _encode(0, _TIME_CHARS)

    def next(self) -> str:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                self._tail += 1
                if self._tail >= self._span:
                    ms += 1
                    self._tail = 0
            else:
                # random start in the lower half leaves room for a burst in this millisecond
                self._tail = self._random.getrandbits(32) % max(1, self._span // 2)
            if ms != self._last_ms:
                self._time_part = _encode(ms, _TIME_CHARS)
            self._last_ms = ms
            return self._time_part + _encode(self._base + self._tail, _TAIL_CHARS)


_default = QueueIdGenerator()


def new_queue_id() -> str:
    return _default.next()


def use_partition(index: int, count: int) -> None:
    """This process takes part ``index`` of ``count`` of the id space: worker ``index`` of
    ``count`` sharing one queue file, or the holder of id slot ``index`` of a database."""
    _default.partition(index, count)


def is_queue_id(text: str) -> bool:
    return bool(QUEUE_ID_RE.match(text))
