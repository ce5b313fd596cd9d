"""Fixed-size tables of keyed slots in memory shared by forked processes, one row per
worker.

``shared_words`` maps anonymous shared memory (``mmap`` of no file, ``MAP_SHARED``):
made before ``fork()``, the children inherit the same pages; no file, no extra process.
It is seen as 64-bit words. A ``SlotTable`` is a region of it: one row per worker, each
row an optional header and ``slots`` slots of ``slot_words`` words, the first word of a
slot its key. Keys are 64-bit salted hashes of the key strings (``KeyHash``: a random
salt per boot, so a client cannot choose addresses that collide).

Atomicity without locks: a worker writes only its own row; readers sum the rows of all
workers. A lock shared by processes (fcntl, a semaphore) would be held by a worker
killed in the middle of an update, and every other worker would wait for ever; rows need
no lock, and what a dead worker counted can go with its row (``clear_row``, called by
the supervisor before it starts the replacement) or be kept for it. A word is written as
one aligned 8-byte store, so a reader sees the old or the new value of each word; a
reader racing a writer may count the event being written or not: counts are right to
within the events in flight, which is what a limit needs.

Bounded: a key is looked for in at most ``PROBES`` slots from its hash (open addressing;
a never-used slot ends the search). When they are all taken, ``claim`` takes the one of
lowest score (the least recently used, or one whose count is 0) or gives up, and the
caller degrades (forgets the oldest key, or counts in its own memory). Nothing grows and
nothing raises on a full table. Reads no settings; trusts its callers to pass their own
row to the writing methods.
"""

from __future__ import annotations

import hashlib
import mmap
import os

WORD = 8  # bytes: one signed 64-bit integer
PROBES = 8  # slots a key may live in: bounds every lookup


def shared_words(count: int) -> memoryview:
    """``count`` zeroed 64-bit words of anonymous memory shared with the children forked
    after this call (a private copy is never made: the mapping is ``MAP_SHARED``)."""
    memory = mmap.mmap(-1, max(count, 1) * WORD, flags=mmap.MAP_SHARED)
    return memoryview(memory).cast("q")


class KeyHash:
    """A key string's 64-bit hash (never 0: 0 marks an unused slot), salted per boot."""

    def __init__(self, salt: bytes | None = None) -> None:
        self.salt = salt if salt is not None else os.urandom(16)

    def __call__(self, key: str) -> int:
        digest = hashlib.blake2b(
            key.encode("utf-8", "surrogatepass"), digest_size=8, key=self.salt
        ).digest()
        return int.from_bytes(digest, "little", signed=True) or 1


class SlotTable:
    """``rows`` rows of ``header_words`` words then ``slots`` slots of ``slot_words`` words,
    from word ``offset`` of ``words``."""

    def __init__(
        self,
        words: memoryview,
        offset: int,
        *,
        rows: int,
        slots: int,
        slot_words: int,
        header_words: int = 0,
    ) -> None:
        self.words = words
        self.offset = offset
        self.rows = rows
        self.slots = slots
        self.slot_words = slot_words
        self.header_words = header_words
        self.row_words = header_words + slots * slot_words
        self.end = offset + rows * self.row_words
        if self.end > len(words):
            raise ValueError("the table does not fit in the shared memory")
        self.bases = [self.header(row) + header_words for row in range(rows)]  # first slots
        self.headers = [self.header(row) for row in range(rows)]
        self._zeros = memoryview(bytes(self.row_words * WORD)).cast("q")

    @staticmethod
    def size(*, rows: int, slots: int, slot_words: int, header_words: int = 0) -> int:
        """How many words such a table takes."""
        return rows * (header_words + slots * slot_words)

    def header(self, row: int) -> int:
        """The index of the first header word of ``row``."""
        return self.offset + row * self.row_words

    def find(self, row: int, key: int) -> int:
        """The index of ``key``'s slot in ``row``, or -1."""
        words, slot_words, slots = self.words, self.slot_words, self.slots
        base = self.bases[row]
        start = key % slots
        index = base + start * slot_words
        found = words[index]
        if found == key:  # the usual case: the first slot probed
            return index
        if found == 0:
            return -1
        for probe in range(1, PROBES):
            index = base + ((start + probe) % slots) * slot_words
            found = words[index]
            if found == key:
                return index
            if found == 0:
                return -1
        return -1

    def claim(self, row: int, key: int, *, score: int, evict: bool) -> int:
        """``key``'s slot in ``row`` (the caller's own), taking one if it has none: a
        never-used slot, else the probed slot whose word ``score`` is lowest, when that
        is 0 or ``evict`` allows dropping its key. -1 when none may be taken."""
        words, slot_words, slots = self.words, self.slot_words, self.slots
        base = self.bases[row]
        start = key % slots
        victim, lowest = -1, 0
        for probe in range(PROBES):
            index = base + ((start + probe) % slots) * slot_words
            found = words[index]
            if found == key:
                return index
            if found == 0:
                victim = index
                break
            value = words[index + score]
            if victim < 0 or value < lowest:
                victim, lowest = index, value
        else:
            if lowest != 0 and not evict:
                return -1
        # the old key's words go first, the new key last: a reader never sees the new
        # key with the old key's counts
        words[victim + 1 : victim + slot_words] = self._zeros[: slot_words - 1]
        words[victim] = key
        return victim

    def rows_with(self, key: int) -> list[int]:
        """The index of ``key``'s slot in every row that has one."""
        find = self.find
        return [index for index in map(find, range(self.rows), [key] * self.rows) if index >= 0]

    def clear_row(self, row: int) -> None:
        """Forget everything ``row`` holds (its worker is gone)."""
        start = self.header(row)
        self.words[start : start + self.row_words] = self._zeros
