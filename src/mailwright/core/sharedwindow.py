"""Events per key over a sliding time window (connection rate, AUTH failures), counted by
every worker in its own row of a ``SlotTable`` and summed over the rows.

A slot is ``[key, cleared, last, then BUCKETS x (epoch, count, stamp)]``, times in
microseconds of the caller's clock (``time.monotonic``: one clock for every process of
the host). The window is cut in ``BUCKETS`` buckets; an event goes into the bucket of
its epoch (``now // width``), a bucket of an older epoch starts again at 0, and a
bucket counts while its latest event (``stamp``) is inside the window: an event is
forgotten between ``window`` and ``window + window / BUCKETS`` after it happened (the
safe side for a limit). The window is given with each call, so a reload that changes it
keeps the counts.

``clear`` (a successful AUTH) cannot reset the other workers' rows (each writes only its
own, see ``core.sharedtable``): it records the time in the clearing worker's slot, and
readers ignore buckets whose latest event is not later; a worker adding to a bucket
older than the clear empties that bucket first. When a key's slots are all taken, the
least recently used key of the row is forgotten. Trusts its callers to write only their
own row and to share one clock; reads no settings.
"""

from __future__ import annotations

from mailwright.core.sharedtable import SlotTable

BUCKETS = 6
CLEARED, LAST = 1, 2  # word offsets in a slot
FIRST_BUCKET = 3
SLOT_WORDS = FIRST_BUCKET + 3 * BUCKETS  # epoch, count, stamp per bucket
MICRO = 1_000_000


def table_size(rows: int, slots: int) -> int:
    return SlotTable.size(rows=rows, slots=slots, slot_words=SLOT_WORDS)


class SharedWindow:
    """Per-key event counts over a window, for each worker's row of ``table``."""

    def __init__(self, table: SlotTable) -> None:
        if table.slot_words != SLOT_WORDS or table.header_words:
            raise ValueError(f"a window needs slots of {SLOT_WORDS} words and no header")
        self.table = table

    @classmethod
    def make(cls, words: memoryview, offset: int, *, rows: int, slots: int) -> SharedWindow:
        return cls(SlotTable(words, offset, rows=rows, slots=slots, slot_words=SLOT_WORDS))

    def add(self, row: int, key: int, window: float, now: float) -> int:
        """Count one event of ``key`` in ``row`` (the caller's) at ``now``; returns the
        count over every row, this event included."""
        table, words = self.table, self.table.words
        slots = table.rows_with(key)
        cleared = max((words[index + CLEARED] for index in slots), default=0)
        own = table.claim(row, key, score=LAST, evict=True)
        now_us = max(int(now * MICRO), cleared + 1)  # after a clear at the same instant
        width = max(int(window * MICRO) // BUCKETS, 1)
        epoch = now_us // width
        bucket = own + FIRST_BUCKET + 3 * (epoch % BUCKETS)
        if words[bucket] != epoch or words[bucket + 2] <= cleared:
            words[bucket + 1] = 0  # an older epoch, or events older than a clear
            words[bucket] = epoch
        words[bucket + 1] += 1
        words[bucket + 2] = now_us
        words[own + LAST] = now_us
        if own not in slots:
            slots.append(own)
        return self._sum(slots, cleared, now_us - int(window * MICRO))

    def count(self, key: int, window: float, now: float) -> int:
        words = self.table.words
        slots = self.table.rows_with(key)
        cleared = max((words[index + CLEARED] for index in slots), default=0)
        return self._sum(slots, cleared, int(now * MICRO) - int(window * MICRO))

    def clear(self, row: int, key: int, now: float) -> None:
        """Forget ``key``'s events so far, in every row."""
        table, words = self.table, self.table.words
        slots = table.rows_with(key)
        if not slots:
            return  # nothing to forget
        latest = int(now * MICRO)
        for index in slots:
            latest = max(latest, words[index + CLEARED], words[index + LAST])
        own = table.claim(row, key, score=LAST, evict=True)
        words[own + CLEARED] = latest
        words[own + LAST] = latest

    def clear_row(self, row: int) -> None:
        self.table.clear_row(row)

    def _sum(self, slots: list[int], cleared: int, horizon: int) -> int:
        words = self.table.words
        after = max(cleared, horizon)
        total = 0
        for index in slots:
            for bucket in range(index + FIRST_BUCKET, index + SLOT_WORDS, 3):
                if words[bucket + 2] > after:
                    total += words[bucket + 1]
        return total
