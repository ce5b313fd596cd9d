"""Counts that go up and down per key (open connections per client address), summed over
the workers sharing a ``SlotTable``.

A row's header word is its worker's total; a slot is ``[key, count]``. A worker changes
only its own row, so no lock is needed (see ``core.sharedtable``); ``value`` and
``total`` add up every row. A key whose count fell to 0 keeps its slot until another
key needs it. When all the slots a key may use hold live counts, ``change`` says so
and the caller counts that key in its own memory: the total stays exact, the key's
count is then this worker's alone. Trusts its callers to write only their own row;
reads no settings.
"""

from __future__ import annotations

from mailwright.core.sharedtable import SlotTable

SLOT_WORDS = 2  # key, count
HEADER_WORDS = 1  # the row's total


def table_size(rows: int, slots: int) -> int:
    return SlotTable.size(rows=rows, slots=slots, slot_words=SLOT_WORDS, header_words=HEADER_WORDS)


class SharedGauge:
    """Per-key counts and a total for each worker's row of ``table``."""

    def __init__(self, table: SlotTable) -> None:
        if table.slot_words != SLOT_WORDS or table.header_words != HEADER_WORDS:
            raise ValueError("a gauge needs slots of 2 words and a header of 1")
        self.table = table

    @classmethod
    def make(cls, words: memoryview, offset: int, *, rows: int, slots: int) -> SharedGauge:
        return cls(
            SlotTable(
                words,
                offset,
                rows=rows,
                slots=slots,
                slot_words=SLOT_WORDS,
                header_words=HEADER_WORDS,
            )
        )

    def change(self, row: int, key: int, delta: int) -> bool:
        """Add ``delta`` to ``key`` in ``row`` (the caller's); False when there is no slot
        for it (the caller keeps that count itself). The total is not touched."""
        table = self.table
        index = table.claim(row, key, score=1, evict=False) if delta > 0 else table.find(row, key)
        if index < 0:
            return False
        words = table.words
        words[index + 1] += delta
        return True

    def change_total(self, row: int, delta: int) -> None:
        self.table.words[self.table.headers[row]] += delta

    def value(self, key: int) -> int:
        table = self.table
        words, find = table.words, table.find
        value = 0
        for row in range(table.rows):
            index = find(row, key)
            if index >= 0:
                value += words[index + 1]
        return value

    def total(self) -> int:
        words = self.table.words
        return sum([words[index] for index in self.table.headers])

    def clear_row(self, row: int) -> None:
        self.table.clear_row(row)
