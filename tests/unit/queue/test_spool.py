"""Spool: bounded memory, spill to an anonymous file, chunked reads, replace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.queue.spool import Spool


def test_small_body_stays_in_memory(tmp_path: Path) -> None:
    with Spool(tmp_path, memory_limit=1024) as spool:
        spool.write(b"hello ")
        spool.write(b"world")
        assert spool.in_memory
        assert spool.size == 11
        assert b"".join(spool.chunks(4)) == b"hello world"
        assert [len(c) for c in spool.chunks(4)] == [4, 4, 3]


def test_large_body_spills_to_an_unlinked_file(tmp_path: Path) -> None:
    with Spool(tmp_path, memory_limit=100) as spool:
        spool.write(b"a" * 60)
        assert spool.in_memory
        spool.write(b"b" * 60)
        assert not spool.in_memory
        spool.write(b"c" * 10)
        assert spool.size == 130
        assert b"".join(spool.chunks(7)) == b"a" * 60 + b"b" * 60 + b"c" * 10
        assert os.listdir(tmp_path) == []  # nothing to clean up after a crash


def test_reading_does_not_disturb_later_writes(tmp_path: Path) -> None:
    with Spool(tmp_path, memory_limit=4) as spool:
        spool.write(b"12345")
        assert b"".join(spool.chunks()) == b"12345"
        spool.write(b"678")
        assert b"".join(spool.chunks()) == b"12345678"


def test_chunks_yields_only_what_was_written_before_it_started(tmp_path: Path) -> None:
    with Spool(tmp_path, memory_limit=4) as spool:
        spool.write(b"12345")
        pieces = spool.chunks(2)
        first = next(pieces)
        spool.write(b"67")
        assert first + b"".join(pieces) == b"12345"


def test_replace_can_read_the_old_body(tmp_path: Path) -> None:
    with Spool(tmp_path, memory_limit=8) as spool:
        spool.write(b"line one\r\nline two\r\n")
        spool.replace(chunk.upper() for chunk in spool.chunks(5))
        assert b"".join(spool.chunks()) == b"LINE ONE\r\nLINE TWO\r\n"
        spool.replace([b"short"])
        assert spool.in_memory
        assert spool.size == 5
        assert b"".join(spool.chunks()) == b"short"


def test_failed_replace_keeps_the_old_body(tmp_path: Path) -> None:
    def failing_filter() -> Iterator[bytes]:
        yield b"new start"
        raise RuntimeError("filter failed")

    with Spool(tmp_path, memory_limit=8) as spool:
        spool.write(b"original body")
        with pytest.raises(RuntimeError):
            spool.replace(failing_filter())
        assert b"".join(spool.chunks()) == b"original body"


def test_closed_spool_refuses_use(tmp_path: Path) -> None:
    spool = Spool.from_bytes(b"x" * 100, tmp_path, memory_limit=10)
    spool.close()
    spool.close()  # idempotent
    with pytest.raises(ValueError):
        spool.write(b"more")
    with pytest.raises(ValueError):
        list(spool.chunks())


def test_empty_spool_has_no_chunks() -> None:
    with Spool() as spool:
        assert spool.size == 0
        assert list(spool.chunks()) == []


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=300), max_size=20),
    limit=st.integers(min_value=0, max_value=1000),
    chunk_size=st.integers(min_value=1, max_value=700),
)
def test_any_sequence_of_writes_reads_back_exactly(
    pieces: list[bytes], limit: int, chunk_size: int
) -> None:
    with Spool(memory_limit=limit) as spool:
        for piece in pieces:
            spool.write(piece)
        expected = b"".join(pieces)
        chunks = list(spool.chunks(chunk_size))
        assert b"".join(chunks) == expected
        assert spool.size == len(expected)
        assert all(0 < len(c) <= chunk_size for c in chunks)
        assert spool.in_memory == (len(expected) <= limit)
