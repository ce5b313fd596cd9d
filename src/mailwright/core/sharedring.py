"""Rings of short byte records in memory shared by forked processes, one ring per worker.

For what one process records and another reads on request (the recent bounces and
warnings of every worker, read by the worker that serves the status page): each worker
appends to its own row, any process reads every row. The memory is ``core.sharedtable``'s
(``shared_words``: anonymous, ``MAP_SHARED``, made before ``fork()``).

A row is one header word (how many records were ever appended) and ``entries`` records of
``size`` bytes: ``[sequence, length, payload...]``. No lock (why: ``core.sharedtable``):
a writer marks a record 0 (being written), writes the payload, then its sequence number
(appends counted from 1), then the header. A reader copies a record between two reads of
its sequence and keeps it only when both are that record's number, so it never returns a
torn record; one being written while it reads is left out. A worker that dies in the
middle of an append leaves one record marked 0, which its replacement overwrites in turn.
The row is kept when its worker dies: what it recorded is still true. Bounded: a payload
longer than the record fails to append (``append`` says so) and the oldest records are
overwritten. Reads no settings; trusts its callers to append only to their own row.
"""

from __future__ import annotations

from mailwright.core.sharedtable import WORD, shared_words

RECORD_HEADER = 2 * WORD  # sequence, length


class SharedRing:
    """``rows`` rings of ``entries`` records of ``size`` bytes from word ``offset`` of
    ``words``."""

    def __init__(self, words: memoryview, offset: int, *, rows: int, entries: int, size: int):
        if size % WORD or size <= RECORD_HEADER or entries < 1 or rows < 1:
            raise ValueError("records are whole words, longer than their header")
        self.words = words
        self.bytes = words.cast("B")
        self.offset = offset
        self.rows = rows
        self.entries = entries
        self.size = size
        self.capacity = size - RECORD_HEADER  # payload bytes a record holds
        self.row_words = 1 + entries * size // WORD
        if offset + rows * self.row_words > len(words):
            raise ValueError("the ring does not fit in the shared memory")

    @staticmethod
    def table_size(*, rows: int, entries: int, size: int) -> int:
        """How many words such rings take."""
        return rows * (1 + entries * size // WORD)

    @classmethod
    def create(cls, *, rows: int, entries: int, size: int) -> SharedRing:
        """Rings in memory of their own (before the fork that shares them)."""
        words = shared_words(cls.table_size(rows=rows, entries=entries, size=size))
        return cls(words, 0, rows=rows, entries=entries, size=size)

    def _header(self, row: int) -> int:
        return self.offset + row * self.row_words

    def _record(self, row: int, number: int) -> int:
        """The word index of the record that holds append ``number`` (from 0)."""
        return self._header(row) + 1 + (number % self.entries) * (self.size // WORD)

    def append(self, row: int, payload: bytes) -> bool:
        """Add ``payload`` to ``row`` (the caller's), overwriting its oldest record; False
        when it is longer than a record holds."""
        if len(payload) > self.capacity:
            return False
        words, header = self.words, self._header(row)
        number = words[header]
        at = self._record(row, number)
        words[at] = 0  # being written: readers leave it out
        words[at + 1] = len(payload)
        start = (at + 2) * WORD
        self.bytes[start : start + len(payload)] = payload
        words[at] = number + 1
        words[header] = number + 1
        return True

    def read(self, row: int) -> list[bytes]:
        """The records of ``row`` still held, oldest first."""
        words, header = self.words, self._header(row)
        count = words[header]
        out = []
        for number in range(max(0, count - self.entries), count):
            at = self._record(row, number)
            if words[at] != number + 1:
                continue  # being written, or already overwritten
            length = min(max(0, words[at + 1]), self.capacity)
            start = (at + 2) * WORD
            payload = bytes(self.bytes[start : start + length])
            if words[at] == number + 1:
                out.append(payload)
        return out

    def read_all(self) -> list[bytes]:
        """Every row's records (each row oldest first)."""
        return [payload for row in range(self.rows) for payload in self.read(row)]
