"""The body of a report, streamed: fixed leading bytes, the original message, fixed trailing bytes.

``ReportBody`` satisfies ``queue.store.BodySource``: the queue store reads it in
chunks of at most ``chunk_size`` octets, and may read it again (a re-run batch), so
each ``chunks`` call starts over and reads the original afresh through its callable.
Memory stays bounded by the chunk size whatever the original's size.

The middle part's size is given or, if unknown, counted by reading it once. If the
original reads back with another length than its size, ``chunks`` raises
``ValueError`` rather than yield a body of the wrong length. Reads no settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

DEFAULT_CHUNK = 1 << 20


class ReportBody:
    def __init__(
        self,
        head: bytes,
        middle: Callable[[], Iterable[bytes]],
        tail: bytes,
        middle_size: int | None = None,
    ) -> None:
        self._head = head
        self._middle = middle
        self._tail = tail
        self._middle_size = middle_size

    @property
    def size(self) -> int:
        if self._middle_size is None:
            self._middle_size = sum(len(piece) for piece in self._middle())
        return len(self._head) + self._middle_size + len(self._tail)

    def chunks(self, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        expected = self.size - len(self._head) - len(self._tail)
        return _rechunk(self._pieces(expected), chunk_size)

    def _pieces(self, expected: int) -> Iterator[bytes]:
        yield self._head
        seen = 0
        for piece in self._middle():
            seen += len(piece)
            yield piece
        if seen != expected:
            raise ValueError(f"the original message read {seen} octets, expected {expected}")
        yield self._tail


def _rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Pieces of exactly ``size`` octets (the last may be shorter), buffering at most that."""
    buffer = bytearray()
    for piece in pieces:
        view = memoryview(piece)
        while view:
            if not buffer and len(view) >= size:
                yield bytes(view[:size])
                view = view[size:]
                continue
            take = min(size - len(buffer), len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) == size:
                yield bytes(buffer)
                buffer.clear()
    if buffer:
        yield bytes(buffer)
