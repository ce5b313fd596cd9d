"""Large message bodies of the SQLite queue, in append-only segment files beside it.

A body inside the database is written twice (to the write-ahead log, then by the
checkpoint into the file) and all of it under the write lock that every worker waits
for: with 100 KiB messages the queue writer was the bottleneck. A ``BodyLog`` appends
each large body of a batch to its own current segment file and makes them durable with
one ``fdatasync``, before the batch's transaction and outside the write lock, so the
workers write their bodies in parallel and the transaction carries only a reference
(segment, offset). Once a segment has reached ``segment_bytes`` the next append starts a
new one: a segment is written by one store only, in order, and never changed after.

Names: ``<owner>+<seq>``, where ``owner`` is a lease owner of ``queue.lease`` (host, pid,
process start, a counter) with ``+`` for ``:``, so anyone can tell whose a segment is,
whether that process still runs, and which of its segments are sealed (every one but its
newest). ``removable`` decides which listed segments nothing refers to any more and
nobody writes: mine but not my current one, a dead writer's, or a sealed one. The caller
lists the directory first and reads what the queue refers to after, in a fresh snapshot:
a segment sealed at listing time has all its references committed by then (its writer
commits a batch before it appends the next one).

Spares: appending to a file makes every ``fdatasync`` commit the file system's journal
too (the new size, the new blocks), which doubled the sync of a lone 100 KiB body (0.26
against 0.12 ms here). So a new segment is, when one is ready, a *spare* renamed: a file
already written to ``segment_bytes``, whose blocks and size are on disk, so that writing
into it leaves only the data to sync. A spare is named with sequence number 0 (``<owner>
+00000000``) and is its owner's alone. The first one a log needs is written with zeros by
a background thread, once; after that ``remove`` recycles a segment nobody needs any
more into the spare instead of unlinking it (as PostgreSQL recycles its WAL segments), and
the caller sweeps every ``SPARE_SWEEP`` seconds while a spare is wanted (``wants_spare``).
A dead owner's spare is removable, or recycled, like a sealed segment. A recycled file
still holds old bodies beyond what its new writer has appended; nothing refers to them.
Unlinking left a reader that had the file open (a delivery of a message deleted, or
whose body moved to the database, meanwhile) reading the old bytes; writing into a
recycled file would change them under it. So ``read_segment`` holds a shared ``flock``
on the file while it reads, and takes the file only if its name still leads to it once
locked; ``remove`` recycles only a file it can lock exclusively at once (renamed under
the lock), and unlinks any other.

Durability: ``append`` returns after the data and the file's size are on disk
(``fdatasync``) and, for a new segment, its directory entry (an fsync of the directory);
only then may a transaction refer to it. A crash between the append and the commit
leaves unreferenced bytes, removed with their segment.

Trusts: its directory, which only queue stores write. Settings read: none (the store
passes the directory, its owner name and the segment size).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from mailwright.queue.lease import owner_is_dead
from mailwright.queue.store import BodySource

SEGMENT_BYTES = 16 << 20  # a segment is sealed once this much is in it
HOLD_BYTES = 1 << 20  # pieces held for one pwritev, at most (memory stays bounded)
HOLD_PIECES = 512  # below the system's IOV_MAX (1024 on Linux)
_SEP = "+"
SPARE_SEQ = 0  # the sequence number of a spare; segments count from 1
SPARE_SWEEP = 1.0  # seconds between sweeps while a spare is wanted
_FILL_PIECE = 1 << 20  # zeros written per call while filling a spare


class BodyLogError(OSError):
    """A body could not be appended (``errno`` ENOSPC: the disk is full)."""


def segment_name(owner: str, seq: int) -> str:
    return f"{owner.replace(':', _SEP)}{_SEP}{seq:08d}"


def parse_name(name: str) -> tuple[str, int] | None:
    """(owner, seq) of a segment name; None for anything else in the directory."""
    owner, sep, seq = name.rpartition(_SEP)
    if not sep or not seq.isdigit() or owner.count(_SEP) != 3:
        return None
    return owner.replace(_SEP, ":"), int(seq)


class BodyLog:
    """The segments one store appends to, and reading any segment of the directory."""

    def __init__(
        self,
        directory: Path,
        owner: str,
        segment_bytes: int = SEGMENT_BYTES,
        *,
        spares: bool = True,
    ) -> None:
        self.directory = directory
        self.owner = owner
        self.segment_bytes = segment_bytes
        self._spares = spares  # False: every segment is a new file, as before spares
        self._spare = directory / segment_name(owner, SPARE_SEQ)
        self._spare_ready = False  # the spare exists, written to segment_bytes, synced
        self._filler: threading.Thread | None = None  # writing the first spare's zeros
        self._filled = False  # a spare was written with zeros (done once per log)
        self._stop_filling = threading.Event()
        self._seq = 0
        self._current: str | None = None  # the segment appends go to, once opened
        self._fd: int | None = None
        self._end = 0  # bytes in the current segment, with those held
        self._held: list[bytes] = []  # pieces not written yet, from offset _held_at
        self._held_at = 0
        self._held_bytes = 0
        self.rotated = False  # a segment was sealed since the caller last looked

    def append(self, bodies: Sequence[BodySource]) -> list[tuple[str, int]]:
        """Write ``bodies`` and make them durable; (segment, offset) of each, in order.

        The pieces are written with as few ``pwritev`` calls as the memory bound allows:
        each system call lets go of the GIL, and taking it back may mean waiting for the
        event loop's thread."""
        placed: list[tuple[str, int]] = []
        try:
            for body in bodies:
                if self._fd is not None and self._end >= self.segment_bytes:
                    self._flush()  # before _writable seals the segment
                self._writable()
                start = self._end
                for chunk in body.chunks():
                    self._hold(chunk)
                if self._end - start != body.size:
                    raise BodyLogError(errno.EIO, f"body size changed ({body.size} expected)")
                assert self._current is not None
                placed.append((self._current, start))
            self._flush()
            if self._fd is not None and placed:
                os.fdatasync(self._fd)
        except OSError as exc:
            self._close_current()  # bytes of a failed append are never referred to
            if isinstance(exc, BodyLogError):
                raise
            raise BodyLogError(exc.errno or errno.EIO, f"body log {self.directory}: {exc}") from exc
        return placed

    def _hold(self, chunk: bytes) -> None:
        """Count ``chunk`` in, to be written by the next ``_flush``."""
        if not self._held:
            self._held_at = self._end
        self._held.append(chunk)
        self._held_bytes += len(chunk)
        self._end += len(chunk)
        if self._held_bytes >= HOLD_BYTES or len(self._held) >= HOLD_PIECES:
            self._flush()

    def _flush(self) -> None:
        """Write the held pieces at their offset (a short write continues where it ended)."""
        held, offset, left = self._held, self._held_at, self._held_bytes
        self._held, self._held_bytes = [], 0
        fd = self._fd
        if fd is None or not left:
            return
        views = [memoryview(piece) for piece in held if piece]
        while True:
            written = os.pwritev(fd, views, offset)
            left -= written
            if not left:  # the usual case: all of it in one call
                return
            offset += written
            views = _unwritten(views, written)

    def _writable(self) -> int:
        if self._fd is not None and self._end < self.segment_bytes:
            return self._fd
        if self._fd is not None:
            os.fdatasync(self._fd)  # bodies of this batch already in it must be durable too
            self._close_current()
            self.rotated = True
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._seq += 1
        name = segment_name(self.owner, self._seq)
        path = self.directory / name
        if self._take_spare(path):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fsync_directory(self.directory)  # the name must outlive a crash before the data
        self._fd, self._current, self._end = fd, name, 0
        self._fill_first_spare()
        return fd

    # ---- spares -------------------------------------------------------------------------

    @property
    def wants_spare(self) -> bool:
        """Segments are being written and no spare is ready or on its way: worth a sweep."""
        return self._seq > 0 and self._may_recycle()

    def _may_recycle(self) -> bool:
        return self._spares and not self._spare_ready and self._filler is None

    def _take_spare(self, path: Path) -> bool:
        """Rename the ready spare to ``path``; False when there is none."""
        if not self._spare_ready:
            return False
        self._spare_ready = False
        try:
            os.rename(self._spare, path)
        except FileNotFoundError:
            return False
        return True

    def _fill_first_spare(self) -> None:
        """Start writing the log's first spare in the background, once."""
        if not self.wants_spare or self._filled:
            return
        self._filled = True
        self._filler = threading.Thread(
            target=self._fill, name="mailwright-bodylog-spare", daemon=True
        )
        self._filler.start()

    def _fill(self) -> None:
        try:
            fd = os.open(self._spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:
            self._filler = None
            return
        try:
            zeros = bytes(min(_FILL_PIECE, self.segment_bytes))
            done = 0
            while done < self.segment_bytes and not self._stop_filling.is_set():
                done += os.pwrite(fd, zeros[: self.segment_bytes - done], done)
            if done >= self.segment_bytes:
                os.fdatasync(fd)  # the blocks and the size: later writes sync only data
                self._spare_ready = True
        except OSError:
            pass  # no spare (a full disk): segments are new files, as before spares
        finally:
            os.close(fd)
            if not self._spare_ready:
                with contextlib.suppress(OSError):
                    os.unlink(self._spare)  # a half-written spare takes room for nothing
            self._filler = None

    def settle(self) -> None:
        """Wait for the spare being written, if any (tests, and ``close``)."""
        filler = self._filler
        if filler is not None:
            filler.join()

    def _recycle(self, names: list[str]) -> list[str]:
        """Make one of ``names`` (removable segments) the spare; the names left to remove."""
        for i, name in enumerate(names):
            if self._renamed_unread(self.directory / name):
                self._spare_ready = True
                return names[:i] + names[i + 1 :]
        return names

    def _renamed_unread(self, path: Path) -> bool:
        """Rename ``path`` to the spare if it has the size of one and nobody reads it."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False  # another store removed it first
        try:
            size = os.fstat(fd).st_size
            if not self.segment_bytes <= size <= 2 * self.segment_bytes:
                return False  # too small to spare a sync, or holding a huge body
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a reader has it open: unlinked, its bytes stay as they are
            try:
                os.rename(path, self._spare)
            except FileNotFoundError:
                return False
            return True
        finally:
            os.close(fd)

    def _close_current(self) -> None:
        self._held, self._held_bytes = [], 0  # a failed append: never referred to
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
        self._current = None  # the next append starts a new segment

    def close(self) -> None:
        self._stop_filling.set()
        self.settle()
        self._close_current()  # a spare is left for the next store of this queue to take

    # ---- reading and removing ---------------------------------------------------------

    def listing(self) -> list[str]:
        """The segments in the directory now."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [name for name in names if parse_name(name) is not None]

    def removable(
        self, listed: Sequence[str], referenced: set[str], *, all_dead: bool
    ) -> list[str]:
        """Of ``listed`` (listed before ``referenced`` was read), the segments nobody
        refers to and nobody will append to. ``all_dead``: the caller holds the queue
        lock, so every other writer is gone."""
        newest: dict[str, int] = {}
        parsed = {}
        for name in listed:
            owner, seq = parse_name(name) or ("", 0)
            parsed[name] = (owner, seq)
            newest[owner] = max(seq, newest.get(owner, 0))
        out = []
        for name in listed:
            if name in referenced or name == self._current:
                continue
            owner, seq = parsed[name]
            if seq == SPARE_SEQ:  # nobody refers to a spare; only its owner may take it
                if owner != self.owner and (all_dead or owner_is_dead(owner)):
                    out.append(name)
                continue
            sealed = seq < newest[owner]
            if owner == self.owner or all_dead or sealed or owner_is_dead(owner):
                out.append(name)
        return out

    def remove(self, names: Sequence[str]) -> int:
        """Remove segments ``removable`` chose (one becomes the spare when one is wanted);
        how many are gone."""
        left = self._recycle(list(names)) if self._may_recycle() else list(names)
        removed = len(names) - len(left)
        for name in left:
            try:
                os.unlink(self.directory / name)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def age(self, name: str) -> float:
        """Seconds since segment ``name`` was last written (0: it is gone)."""
        try:
            return max(0.0, time.time() - os.stat(self.directory / name).st_mtime)
        except FileNotFoundError:
            return 0.0

    def disk_bytes(self) -> int:
        total = 0
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    total += entry.stat().st_size
        except FileNotFoundError:
            pass
        return total


def read_segment(
    directory: Path, name: str, offset: int, size: int, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """``size`` bytes at ``offset`` of segment ``name``, in pieces of ``chunk_size``.

    Opens the file at once (FileNotFoundError now, not at the first piece), then reads
    lazily; the file is closed at the end or when the iterator is dropped. The shared
    lock held meanwhile keeps the file from being recycled under the reader."""
    if chunk_size <= 0:
        raise ValueError("chunk_size must be positive")
    path = directory / name
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if os.stat(path).st_ino != os.fstat(fd).st_ino:  # recycled before the lock
            raise FileNotFoundError(errno.ENOENT, "segment recycled", str(path))
    except BaseException:
        os.close(fd)
        raise
    return _SegmentReader(fd, offset, size, chunk_size)


class _SegmentReader:
    def __init__(self, fd: int, offset: int, size: int, chunk_size: int) -> None:
        self._fd: int | None = fd
        self._offset = offset
        self._end = offset + size
        self._chunk = chunk_size

    def __iter__(self) -> _SegmentReader:
        return self

    def __next__(self) -> bytes:
        fd = self._fd
        if fd is None:
            raise StopIteration
        if self._offset >= self._end:
            self.close()
            raise StopIteration
        try:
            data = os.pread(fd, min(self._chunk, self._end - self._offset), self._offset)
        except BaseException:
            self.close()
            raise
        if not data:
            self.close()
            raise OSError(errno.EIO, "segment shorter than the body it holds")
        self._offset += len(data)
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.close()


def _unwritten(views: list[memoryview], written: int) -> list[memoryview]:
    """What is left of ``views`` after a write took their first ``written`` bytes."""
    for i, view in enumerate(views):
        if written < len(view):
            return [view[written:], *views[i + 1 :]]
        written -= len(view)
    return []


def fsync_directory(directory: Path) -> None:
    """Make the entries of ``directory`` (names made, renamed or removed) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
