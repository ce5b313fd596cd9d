"""The queue's master lock: one daemon per queue directory, as Postfix's ``master.lock``.

``acquire`` opens (creating) ``<queue dir>/master.lock``, takes an exclusive ``flock``
without waiting and writes the daemon's pid in it. While a daemon lives its descriptor
holds the lock (a ``flock`` belongs to the open file, so it survives giving up root and
is shared with no one: the privileged helper closes its copy with ``forget``); a second
daemon is refused with ``QueueBusyError`` naming the running pid before it touches any
socket. The kernel drops the lock when the daemon dies, even by SIGKILL, so a stale
file never blocks a start. The file is never removed: removing a lock file lets two
processes lock two different files. Admin commands that write the queue without a
daemon (``cli.queue``) take the lock while they do, so no daemon starts beside them.

Trusts nothing in the queue directory: the file is opened without following a symbolic
link and must be a regular file with one link before root writes in it. Reads no settings
(the launcher passes ``queue.directory``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

LOCK_NAME = "master.lock"


class QueueBusyError(Exception):
    """Another daemon holds the queue's master lock; ``str()`` names its pid."""


class QueueLock:
    def __init__(self, queue_dir: Path) -> None:
        self.path = queue_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Lock the queue for this process (and write its pid), or ``QueueBusyError``."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise OSError(f"{self.path}: not a plain file; remove it and start again")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise QueueBusyError(
                f"{self.path.parent}: a daemon is already running on this queue"
                f" (pid {text or 'unknown'}); not starting a second one"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.write(os.getpid())

    def write(self, pid: int) -> None:
        """Record ``pid`` (a detached daemon's child, which inherited the lock)."""
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        """Drop the lock (the file stays, see above)."""
        self.forget()

    def forget(self) -> None:
        """Close this process's descriptor: in a forked child that must not keep the lock
        (the privileged helper), and at the end of the daemon."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
