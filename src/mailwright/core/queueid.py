"""Queue ids: unique, sortable by creation time, safe in file names, logs and shells.

An id is 10 characters of millisecond time in Crockford base32 followed by
5 characters of per-process sequence and randomness, e.g. ``01JD3K7Q2M4XK9A``.
Ids from one process are strictly increasing. Reads no settings.
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
    """Monotonic id source; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        # seeded once: os.urandom per id releases the GIL, and getting it back behind the
        # queue writer thread cost ~60 us per id in the daemon
        self._random = random.Random(os.urandom(16))
        self._tail = self._random.getrandbits(32) % _TAIL_SPACE

    def next(self) -> str:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms <= self._last_ms:
                ms = self._last_ms
                self._tail += 1
                if self._tail >= _TAIL_SPACE:
                    ms += 1
                    self._tail = 0
            else:
                # random start in the lower half leaves room for a burst in this millisecond
                self._tail = self._random.getrandbits(32) % (_TAIL_SPACE // 2)
            self._last_ms = ms
            return _encode(ms, _TIME_CHARS) + _encode(self._tail, _TAIL_CHARS)


_default = QueueIdGenerator()


def new_queue_id() -> str:
    return _default.next()


def is_queue_id(text: str) -> bool:
    return bool(QUEUE_ID_RE.match(text))
