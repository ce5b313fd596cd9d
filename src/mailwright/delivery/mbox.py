"""mbox mailboxes the way mail.local writes them: format, locking, and all-or-nothing appends.

Format: each message starts with ``From <sender> <ctime date>`` (the null sender is
``MAILER-DAEMON``), lines end in LF, every line that starts with ``From `` gets a
``>`` in front (so Python's ``mailbox``, mutt and mailutils all split correctly), and
a blank line follows each message. ``MboxEncoder`` does the conversion from the
queue's CRLF text as a stream, a chunk at a time.

Appending (``append``) holds two locks, as mail.local does: ``flock`` on the
mailbox and the dot-lock file ``<mailbox>.lock``. The dot-lock records the holder
(pid, host) and the mailbox size before its append; it is made with that content in
one step, as liblockfile does (``.<mailbox>.lk.<host>`` is written, then linked to
the lock's name), so a delivery killed at any moment never leaves an empty
lock behind (a file system without hard links gets create-then-write). Then: write,
``fsync``; on any failure (disk full, a body that cannot be read, a size limit)
the mailbox is truncated back to that size before the locks are released. A
delivery killed in the middle of its write cannot do that itself: the next
delivery to the mailbox finds the dot-lock of a dead process on this host and
truncates the mailbox back to the size it recorded (it holds the ``flock``, so no
other Mailwright delivery is writing). Any dot-lock whose holder is a process of this
host that is gone (ours, or liblockfile's and mail.local's bare pid) is broken at
once; one older than ``stale_lock_age`` whose holder is unknown is simply removed
(mail.local's rule). A ``stop`` event set during the wait for the locks (shutdown)
ends the wait with 4.2.0.

A mailbox opened for a user (``owner`` set, i.e. we are root) must not be a
symbolic link, must have one hard link and belong to that user; a new one is
created 0600 and given to the user. Failures are ``MailboxError`` with the reply to
report: lock timeout 4.2.0, quota or size limit 4.2.2 (mailbox full), disk full
4.3.1, an unsafe mailbox 4.3.0; all temporary. Reads no settings (``MboxOptions``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailwright.core.reply import Reply

log = logging.getLogger("mailwright.delivery")

_FROM = b"From "
_LOCK_TAG = "mailwright"


class MailboxError(Exception):
    """A delivery into a mailbox or file that did not happen; ``reply`` says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class MailboxLockedError(MailboxError):
    """The locks were not free within ``lock_timeout`` (451 4.2.0)."""


@dataclass(frozen=True, slots=True)
class MboxOptions:
    lock_timeout: float = 60.0
    stale_lock_age: float = 300.0
    dotlock: bool = True  # take <path>.lock
    dotlock_required: bool = True  # False: go on with flock alone if the directory is not ours
    owner: tuple[int, int] | None = None  # create as / require this uid, gid (root only)
    size_limit: int = 0  # refuse to grow the file beyond this many octets; 0 = no limit
    refuse_executable: bool = False  # file deliveries never write to programs
    denied_is_permanent: bool = False  # files: a file we may not open bounces (5.2.0)


# ---- format ---------------------------------------------------------------------------------


def from_line(sender: str, when: float | None = None) -> bytes:
    """``From sender Thu Nov 26 01:07:00 2020`` and a new line (mail.local's separator)."""
    who = "".join(c if c.isprintable() and not c.isspace() else "_" for c in sender)
    return f"From {who or 'MAILER-DAEMON'} {time.ctime(when)}\n".encode()


class MboxEncoder:
    """CRLF to LF and ``>From `` quoting for a stream of chunks (``feed`` ... ``finish``)."""

    def __init__(self, escape_from: bool = True) -> None:
        self.escape_from = escape_from
        self.at_line_start = True  # the output so far ends with a new line (or is empty)
        self._carry = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        self._carry = b""
        if data.endswith(b"\r"):  # maybe half of a CRLF
            data, self._carry = data[:-1], b"\r"
        data = data.replace(b"\r\n", b"\n")
        if self.escape_from:
            data = self._escape(data)
        if data:
            self.at_line_start = data.endswith(b"\n")
        return data

    def finish(self) -> bytes:
        rest, self._carry = self._carry, b""
        if rest:
            self.at_line_start = rest.endswith(b"\n")
        return rest

    def _escape(self, data: bytes) -> bytes:
        start = data.rfind(b"\n") + 1
        if start or self.at_line_start:
            tail = data[start:]
            if tail and len(tail) < len(_FROM) and _FROM.startswith(tail):
                self._carry = tail + self._carry  # cannot tell yet whether it is "From "
                data = data[:start]
        if not data:
            return data
        if self.at_line_start and data.startswith(_FROM):
            data = b">" + data
        return data.replace(b"\n" + _FROM, b"\n>" + _FROM)


def mbox_message(head: bytes, chunks: Iterable[bytes], sender: str) -> Iterable[bytes]:
    """One mbox entry: From_ line, ``head`` (LF header lines we add), the converted
    message from ``chunks`` (CRLF), a final new line if missing, and the blank line."""
    yield from_line(sender)
    encoder = MboxEncoder()
    yield encoder.feed(head)
    for chunk in chunks:
        out = encoder.feed(chunk)
        if out:
            yield out
    last = encoder.finish()
    yield last + (b"" if encoder.at_line_start else b"\n") + b"\n"


# ---- appending ------------------------------------------------------------------------------


def append(
    path: Path,
    pieces: Iterable[bytes],
    options: MboxOptions,
    stop: threading.Event | None = None,
) -> int:
    """Append ``pieces`` to the mbox file at ``path`` atomically; returns octets written.

    ``stop`` set while waiting for the locks (shutdown) gives up the wait (4.2.0)."""
    fd = _open(path, options)
    try:
        lock = _Lock(fd, path, options, stop)
        lock.acquire()
        try:
            return _append_locked(fd, path, pieces, options, lock)
        finally:
            lock.release()
    finally:
        os.close(fd)


def _append_locked(
    fd: int, path: Path, pieces: Iterable[bytes], options: MboxOptions, lock: _Lock
) -> int:
    size = os.fstat(fd).st_size
    lock.record(size)
    limit = options.size_limit
    if limit and size >= limit:
        raise MailboxError(Reply.of(452, "4.2.2", f"Mailbox {path} full"))
    written = 0
    try:
        for piece in pieces:
            _write_all(fd, piece)
            written += len(piece)
            if limit and size + written > limit:
                raise MailboxError(Reply.of(452, "4.2.2", f"Mailbox {path} full"))
        os.fsync(fd)
    except BaseException as exc:
        _truncate(fd, path, size)
        if isinstance(exc, OSError):
            raise MailboxError(os_error_reply(exc, path)) from exc
        raise
    return written


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _truncate(fd: int, path: Path, size: int) -> None:
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        log.error("%s: cannot truncate back to %d octets after a failure: %s", path, size, exc)


def _open(path: Path, options: MboxOptions) -> int:
    # O_NONBLOCK: a FIFO planted as a mailbox must fail (ENXIO), not hang the delivery
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MailboxError(_unsafe(path, "is a symbolic link")) from exc
        if exc.errno == errno.ENXIO:
            raise MailboxError(_unsafe(path, "is not a regular file")) from exc
        if options.denied_is_permanent and exc.errno in (errno.EACCES, errno.EPERM):
            # Postfix's and Sendmail's file delivery: it will not become writable by itself,
            # and a program that cannot write fails at once too
            raise MailboxError(
                Reply.of(550, "5.2.0", f"Cannot open {path}: {exc.strerror}")
            ) from exc
        raise MailboxError(os_error_reply(exc, path)) from exc
    try:
        if created and options.owner is not None:
            os.fchown(fd, *options.owner)
        _check(fd, path, options)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check(fd: int, path: Path, options: MboxOptions) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MailboxError(_unsafe(path, "is not a regular file"))
    if options.refuse_executable and st.st_mode & 0o111:
        raise MailboxError(Reply.of(550, "5.7.1", f"{path}: cannot write to an executable file"))
    if options.owner is not None:
        if st.st_nlink != 1:
            raise MailboxError(_unsafe(path, f"has {st.st_nlink} hard links"))
        if st.st_uid != options.owner[0]:
            raise MailboxError(_unsafe(path, f"belongs to uid {st.st_uid}, not {options.owner[0]}"))


def _unsafe(path: Path, why: str) -> Reply:
    return Reply.of(451, "4.3.0", f"Mailbox {path} {why}; not delivering")


def os_error_reply(exc: OSError, path: Path) -> Reply:
    """A delivery's OSError as the (temporary) reply to report."""
    if exc.errno == errno.EDQUOT:
        return Reply.of(452, "4.2.2", f"Mailbox {path} full (quota exceeded)")
    if exc.errno in (errno.ENOSPC, errno.EFBIG):
        return Reply.of(452, "4.3.1", f"Insufficient system storage writing {path}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Reply.of(450, "4.2.0", f"Cannot write {path}: {exc.strerror}")
    return Reply.of(451, "4.3.0", f"Cannot write {path}: {exc.strerror or exc}")


# ---- locks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Holder:
    pid: int
    host: str
    size: int | None


def _holder(text: str, host: str) -> _Holder | None:
    """Who holds a dot-lock: ours (``PID HOST [SIZE] mailwright``), or liblockfile's and
    mail.local's bare ``PID`` (a process on this host); None when it does not say."""
    parts = text.split()
    if len(parts) == 1 and parts[0].isascii() and parts[0].isdigit():
        return _Holder(int(parts[0]), host, None)
    if len(parts) < 3 or parts[-1] != _LOCK_TAG or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    size = int(parts[2]) if len(parts) == 4 and parts[2].isascii() and parts[2].isdigit() else None
    return _Holder(int(parts[0]), parts[1], size)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


FIRST_PAUSE = 0.005  # between attempts to lock; doubled up to 0.2 s
_NO_HARD_LINKS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)


class _Lock:
    """flock on the mailbox plus the ``<mailbox>.lock`` dot-lock."""

    def __init__(
        self, fd: int, path: Path, options: MboxOptions, stop: threading.Event | None = None
    ) -> None:
        self.fd = fd
        self.path = path
        self.options = options
        self.stop = stop
        self.lock_path = path.with_name(path.name + ".lock")
        self.host = socket.gethostname() or "localhost"
        self.size: int | None = None  # the mailbox size our dot-lock records
        self._lock_id: tuple[int, int] | None = None  # (st_dev, st_ino) of our dot-lock
        self._flocked = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.options.lock_timeout
        delay = FIRST_PAUSE
        while True:
            if self._try_flock():
                if not self.options.dotlock or self._take_dotlock():
                    return
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                self._flocked = False
            if time.monotonic() >= deadline:
                raise MailboxLockedError(
                    Reply.of(451, "4.2.0", f"Mailbox {self.path} is locked; try later")
                )
            if self._pause(min(delay, max(0.0, deadline - time.monotonic()))):
                raise MailboxError(
                    Reply.of(451, "4.2.0", f"Mailbox {self.path} is locked; stopped waiting")
                )
            delay = min(delay * 2, 0.2)

    def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` seconds; True when told to stop waiting instead."""
        if self.stop is None:
            time.sleep(delay)
            return False
        return self.stop.wait(delay)

    def _try_flock(self) -> bool:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._flocked = True
        return True

    def _take_dotlock(self) -> bool:
        size = os.fstat(self.fd).st_size
        for _ in range(2):
            try:
                self._lock_id = self._create(self._holder_text(size))
            except FileExistsError:
                if not self._break_stale():
                    return False
                continue
            except OSError as exc:
                if not self.options.dotlock_required and exc.errno in (errno.EACCES, errno.EROFS):
                    return True  # a file in a directory we may not write: flock alone
                raise MailboxError(os_error_reply(exc, self.lock_path)) from exc
            self.size = size
            return True
        return False

    def _holder_text(self, size: int) -> bytes:
        return f"{os.getpid()} {self.host} {size} {_LOCK_TAG}\n".encode()

    def _create(self, text: bytes) -> tuple[int, int]:
        """The dot-lock, with its content, in one step (liblockfile's way): a unique file
        is written, then linked to the lock's name, so no lock is ever seen empty, even
        when we are killed half-way. FileExistsError when it is held."""
        temp = self._write_temp(text)
        try:
            st = os.lstat(temp)
            try:
                os.link(temp, self.lock_path)
            except FileExistsError:
                raise
            except OSError as exc:
                if exc.errno in _NO_HARD_LINKS:
                    return self._create_in_place(text)
                if os.lstat(temp).st_nlink != 2:  # NFS: the link may be made, its reply lost
                    raise
            return st.st_dev, st.st_ino
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    def _write_temp(self, text: bytes) -> Path:
        """``.<mailbox>.lk.<host>`` with ``text``. One name per mailbox and host: we hold
        the flock, so no other delivery of ours writes it now, and one found there was
        left by a delivery killed while locking (it is replaced, never piles up)."""
        temp = self.lock_path.with_name(f".{self.path.name}.lk.{self.host}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(temp, flags, 0o600)
        except FileExistsError:
            os.unlink(temp)
            fd = os.open(temp, flags, 0o600)
        try:
            _write_all(fd, text)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        os.close(fd)
        return temp

    def _create_in_place(self, text: bytes) -> tuple[int, int]:
        """A file system without hard links: create, then write (the old way)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.lock_path, flags, 0o600)
        try:
            _write_all(fd, text)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        return st.st_dev, st.st_ino

    def record(self, size: int) -> None:
        """The mailbox size before our append, if it changed since the dot-lock was made
        (a writer that takes neither lock): the lock is replaced whole, never emptied."""
        if self._lock_id is None or size == self.size:
            return
        temp = self._write_temp(self._holder_text(size))
        st = os.lstat(temp)
        try:
            os.replace(temp, self.lock_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._lock_id, self.size = (st.st_dev, st.st_ino), size

    def _break_stale(self) -> bool:
        """Remove a dot-lock whose holder is gone; True if it was removed."""
        try:
            st = os.lstat(self.lock_path)
            with open(self.lock_path, "rb") as f:
                text = f.read(200).decode("ascii", "replace")
        except FileNotFoundError:
            return True
        except OSError:
            return False
        holder = _holder(text, self.host)
        if holder is not None and holder.host == self.host and not _alive(holder.pid):
            self._undo_partial_write(holder)
        elif time.time() - st.st_mtime < self.options.stale_lock_age:
            return False
        else:
            log.warning("%s: removing a stale lock (%s)", self.lock_path, text.strip() or "empty")
        try:
            os.unlink(self.lock_path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True

    def _undo_partial_write(self, holder: _Holder) -> None:
        size = os.fstat(self.fd).st_size
        if holder.size is not None and size > holder.size:
            log.warning(
                "%s: delivery by pid %d died while writing; truncating %d octets back to %d",
                self.path,
                holder.pid,
                size,
                holder.size,
            )
            _truncate(self.fd, self.path, holder.size)

    def release(self) -> None:
        if self._lock_id is not None:
            try:
                now = os.lstat(self.lock_path)
                if (now.st_dev, now.st_ino) == self._lock_id:
                    os.unlink(self.lock_path)
            except OSError as exc:
                log.warning("%s: cannot remove lock: %s", self.lock_path, exc)
            self._lock_id = None
        if self._flocked:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            self._flocked = False
