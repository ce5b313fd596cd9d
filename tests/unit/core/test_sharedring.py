"""Rings of records in shared memory: appends from forked processes read by another, the
oldest overwritten, torn or oversized records never returned."""

from __future__ import annotations

import pytest

from mailwright.core.sharedring import RECORD_HEADER, SharedRing
from mailwright.core.sharedtable import WORD
from tests.support.forked import in_worker


def test_what_each_worker_appends_every_process_reads() -> None:
    ring = SharedRing.create(rows=3, entries=4, size=64)
    in_worker(lambda: [ring.append(1, f"one {n}".encode()) for n in range(2)] and None)
    in_worker(lambda: ring.append(2, b"two") and None)
    ring.append(0, b"zero")
    assert ring.read(0) == [b"zero"]
    assert ring.read(1) == [b"one 0", b"one 1"]
    assert sorted(ring.read_all()) == [b"one 0", b"one 1", b"two", b"zero"]


def test_the_oldest_records_are_overwritten_and_a_long_one_is_refused() -> None:
    ring = SharedRing.create(rows=1, entries=3, size=32)
    for n in range(7):
        assert ring.append(0, str(n).encode())
    assert ring.read(0) == [b"4", b"5", b"6"]
    assert ring.capacity == 32 - RECORD_HEADER
    assert not ring.append(0, b"x" * (ring.capacity + 1))
    assert ring.append(0, b"x" * ring.capacity)
    assert ring.read(0)[-1] == b"x" * ring.capacity


def test_a_record_being_written_is_left_out() -> None:
    """A writer killed between marking a record and finishing it leaves it marked 0."""
    ring = SharedRing.create(rows=1, entries=4, size=32)
    ring.append(0, b"kept")
    ring.append(0, b"torn")
    second = 1 + ring.size // WORD  # the word index of the second record's sequence
    ring.words[second] = 0
    assert ring.read(0) == [b"kept"]
    assert ring.append(0, b"next")  # the row goes on
    assert ring.read(0) == [b"kept", b"next"]


def test_records_must_be_whole_words() -> None:
    with pytest.raises(ValueError):
        SharedRing.create(rows=1, entries=1, size=30)
