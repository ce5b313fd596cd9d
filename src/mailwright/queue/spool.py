"""The body of a message while it is being received, before the queue commit.

A ``Spool`` keeps the first ``memory_limit`` bytes in memory and moves everything
to an anonymous temporary file once the body grows past that, so the memory a
message costs stays bounded whatever its size. The file is unlinked at creation
(``tempfile.TemporaryFile``): a crash leaves nothing behind to clean up. Nothing
here is fsynced: a message is durable only once the queue store has committed it.

Reading (``chunks``) uses positional reads, so it neither disturbs further writes
nor needs a rewind; ``replace`` swaps in a new body (a filter's rewrite) built from
an iterator that may itself read the old body. ``crlf_lines`` is the writer's word
that every line break in it is CRLF; ``replace`` drops it.

Trusts its caller to hold one spool per message and not to write while the queue
writer reads it. Settings read: none (the caller passes ``queue.spool_dir`` and
``queue.spool_memory_limit``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO

DEFAULT_MEMORY_LIMIT = 256 * 1024
_READ_CHUNK = 1 << 20
_PIECE = 16 << 10  # smaller writes are gathered into pieces of this size


class Spool:
    """A write-once-then-read body buffer; satisfies ``queue.store.BodySource``."""

    def __init__(
        self, spool_dir: Path | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT
    ) -> None:
        self._dir = spool_dir
        self._memory_limit = memory_limit
        # in memory: large writes kept as they are (bytes are immutable, so a reference is
        # as good as a copy, and cheaper), small ones gathered (a list of tiny objects would
        # cost many times their size); joined once, when first read
        self._pieces: list[bytes] = []
        self._small = bytearray()
        self._file: IO[bytes] | None = None
        self._size = 0
        self._closed = False
        # every line break written is CRLF: said by the writer that checked or normalised
        # them (an SMTP session's content); the first delivery then skips its own check
        self.crlf_lines = False

    @classmethod
    def from_bytes(
        cls, data: bytes, spool_dir: Path | None = None, memory_limit: int = DEFAULT_MEMORY_LIMIT
    ) -> Spool:
        spool = cls(spool_dir, memory_limit)
        spool.write(data)
        return spool

    @property
    def size(self) -> int:
        return self._size

    @property
    def in_memory(self) -> bool:
        return self._file is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise ValueError("write to a closed spool")
        if self._file is None and self._size + len(data) > self._memory_limit:
            self._spill()
        if self._file is None:
            self._keep(data)
        else:
            self._file.write(data)
        self._size += len(data)

    def chunks(self, chunk_size: int = _READ_CHUNK) -> Iterator[bytes]:
        """The body from the start, in pieces of at most ``chunk_size`` bytes.

        Yields what was written before the iteration started.
        """
        if self._closed:
            raise ValueError("read from a closed spool")
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        return self._file_chunks(chunk_size) if self._file else self._memory_chunks(chunk_size)

    def replace(self, data: Iterable[bytes]) -> None:
        """Make ``data`` the new body. ``data`` may read this spool's old body."""
        new = Spool(self._dir, self._memory_limit)
        try:
            for piece in data:
                new.write(piece)
        except BaseException:
            new.close()
            raise
        self._release()
        self._pieces, self._small = new._pieces, new._small
        self._file, self._size = new._file, new._size
        self.crlf_lines = False  # new content: nobody has said so of it

    def close(self) -> None:
        """Free the memory and the temporary file; idempotent."""
        self._release()
        self._closed = True

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _keep(self, data: bytes | bytearray | memoryview) -> None:
        small = self._small
        if len(data) < _PIECE:
            small += data
            if len(small) < _PIECE:
                return
            data = b""
        if small:
            self._pieces.append(bytes(small))
            small.clear()
        if data:
            self._pieces.append(bytes(data))  # no copy when data is already bytes

    def _spill(self) -> None:
        # lives as long as the spool, closed by close() or replace()
        self._file = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115
        self._file.writelines(self._pieces)
        self._file.write(self._small)
        self._pieces = []
        self._small = bytearray()

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._pieces = []
        self._small = bytearray()
        self._size = 0

    def _memory_chunks(self, chunk_size: int) -> Iterator[bytes]:
        # immutable bytes: later writes or a replace cannot change what we yield
        if self._small:
            self._pieces.append(bytes(self._small))
            self._small = bytearray()
        if len(self._pieces) > 1:
            self._pieces = [b"".join(self._pieces)]  # join once; a second reading reuses it
        data = self._pieces[0] if self._pieces else b""
        if len(data) <= chunk_size:
            if data:
                yield data
            return
        view = memoryview(data)
        for start in range(0, len(data), chunk_size):
            yield bytes(view[start : start + chunk_size])

    def _file_chunks(self, chunk_size: int) -> Iterator[bytes]:
        file = self._file
        assert file is not None
        file.flush()
        end, offset = self._size, 0
        while offset < end:
            # fileno() each time: a replaced (closed) file raises instead of reading a reused fd
            piece = os.pread(file.fileno(), min(chunk_size, end - offset), offset)
            if not piece:
                raise OSError(f"spool file ended at {offset} of {end} bytes")
            offset += len(piece)
            yield piece
