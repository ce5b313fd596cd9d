"""The maildrop: where ``sendmail`` leaves a message when the daemon is not running.

Layout: one directory (``local.maildrop``, default ``<queue dir>/maildrop``), mode 1733
like ``/tmp``: every local user may create files, nobody but the daemon may list, read
or remove other users' files. One file per message::

    MAILWRIGHT-MAILDROP 1\\n
    {"sender": ..., "recipients": [...], "size": N, ...}\\n      (one JSON line)
    <N octets: the message, CRLF line ends>

Writing (the ``sendmail`` side): the file is created under its final, unguessable name
with ``O_EXCL``, written, fsynced, and its directory fsynced where the writer may open it
(root can; other users cannot open a 1733 directory, so for them the entry's durability
rests on the file system's journal, as with Postfix's postdrop). A file is complete
when its length equals the length its first lines declare; no rename is needed, so a
crash at any point leaves either a complete file or one the reader knows is partial.

Reading (the daemon side) trusts nothing in the file but its length check and format:
the submitting user is the file's owner (``st_uid`` from ``fstat``), never what the
JSON says; symlinks (``O_NOFOLLOW``), hard links (``st_nlink`` > 1) and anything but a
regular file are refused. The daemon deletes a file only after the queue commit.
Settings read: none (callers pass ``local.maildrop`` and ``server.max_message_size``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from collections.abc import Iterator

from mailwright.core.queueid import new_queue_id
from mailwright.core.submission import SubmissionEnvelope

MAGIC = b"MAILWRIGHT-MAILDROP 1\n"
MAX_ENVELOPE = 4 * 1024 * 1024  # the JSON line: at most this many octets
DIR_MODE = 0o1733
_READ_CHUNK = 1 << 20


class MaildropError(Exception):
    """A file that is not (or not yet) a valid maildrop entry."""


class IncompleteError(MaildropError):
    """Shorter than it declares: still being written, or its writer died."""


# ---- writing ------------------------------------------------------------------------------
def write(directory: str, envelope: SubmissionEnvelope, message: bytes) -> str:
    """Store one message durably; returns the file's path. ``OSError`` when it cannot."""
    meta = envelope.to_json()
    meta.update(size=len(message), uid=os.getuid(), time=time.time())
    head = MAGIC + json.dumps(meta, separators=(",", ":")).encode() + b"\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    while True:
        path = os.path.join(directory, new_queue_id())
        try:
            fd = os.open(path, flags, 0o600)
            break
        except FileExistsError:
            continue  # another writer had this name (ids are unique per process only)
    try:
        _write_all(fd, head)
        _write_all(fd, message)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    os.close(fd)
    sync_directory(directory)
    return path


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def sync_directory(directory: str) -> bool:
    """fsync a directory if this user may open it; False when it may not (1733 for users)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


# ---- reading ------------------------------------------------------------------------------
class Entry:
    """One maildrop file opened for reading; close it (or use ``with``)."""

    __slots__ = ("envelope", "fd", "mtime", "name", "offset", "path", "size", "uid")

    def __init__(
        self,
        path: str,
        fd: int,
        uid: int,
        envelope: SubmissionEnvelope,
        offset: int,
        size: int,
        mtime: float,
    ) -> None:
        self.path = path
        self.name = os.path.basename(path)
        self.fd = fd
        self.uid = uid  # the file's owner: the user who submitted it
        self.envelope = envelope
        self.offset = offset  # where the message starts
        self.size = size  # octets of message
        self.mtime = mtime

    def chunks(self, chunk_size: int = _READ_CHUNK) -> Iterator[bytes]:
        pos, end = self.offset, self.offset + self.size
        while pos < end:
            data = os.pread(self.fd, min(chunk_size, end - pos), pos)
            if not data:
                raise MaildropError(f"{self.path}: shrank while being read")
            pos += len(data)
            yield data

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Entry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_entry(path: str) -> Entry:
    """Open and check one file; ``MaildropError`` (or ``IncompleteError``) when unusable."""
    # never even open what is not a regular file (a FIFO would block, a device could act);
    # fstat after the open checks again, against a swap in between
    mode = os.lstat(path).st_mode
    if stat.S_ISLNK(mode):
        raise MaildropError(f"{path}: is a symbolic link")
    if not stat.S_ISREG(mode):
        raise MaildropError(f"{path}: not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MaildropError(f"{path}: is a symbolic link") from None
        raise
    try:
        return _check(path, fd)
    except BaseException:
        os.close(fd)
        raise


def entry_from_descriptor(path: str, fd: int) -> Entry:
    """``open_entry`` for a file someone else opened (the privileged helper); takes ``fd``."""
    try:
        return _check(path, fd)
    except BaseException:
        os.close(fd)
        raise


def _check(path: str, fd: int) -> Entry:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MaildropError(f"{path}: not a regular file")
    if st.st_nlink != 1:
        raise MaildropError(f"{path}: has {st.st_nlink} links (a hard link to another file?)")
    head = os.pread(fd, len(MAGIC) + MAX_ENVELOPE + 1, 0)
    if not head.startswith(MAGIC[: len(head)]):
        raise MaildropError(f"{path}: not a maildrop file")
    end = head.find(b"\n", len(MAGIC))
    if len(head) < len(MAGIC) or end < 0:
        if len(head) > len(MAGIC) + MAX_ENVELOPE:
            raise MaildropError(f"{path}: envelope line too long")
        raise IncompleteError(f"{path}: envelope not complete")
    try:
        meta = json.loads(head[len(MAGIC) : end])
        envelope = SubmissionEnvelope.from_json(meta)
        size = meta["size"]
    except (ValueError, KeyError, TypeError) as exc:
        raise MaildropError(f"{path}: bad envelope: {exc}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MaildropError(f"{path}: bad size")
    offset = end + 1
    if st.st_size < offset + size:
        raise IncompleteError(f"{path}: {st.st_size - offset} of {size} octets")
    if st.st_size > offset + size:
        raise MaildropError(f"{path}: longer than it declares")
    return Entry(path, fd, st.st_uid, envelope, offset, size, st.st_mtime)


def pending(directory: str) -> list[str]:
    """Paths of candidate files, oldest first; names starting with "." are skipped."""
    entries = []
    try:
        with os.scandir(directory) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
                except FileNotFoundError:
                    continue  # taken away meanwhile
    except FileNotFoundError:
        return []
    return [path for _, path in sorted(entries)]


def prepare(directory: str) -> None:
    """Create the directory (1733, like /tmp) or put its mode right."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{directory}: not a directory")
    if stat.S_IMODE(st.st_mode) != DIR_MODE:
        os.chmod(directory, DIR_MODE)
