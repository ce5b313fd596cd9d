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

import os
import stat
from pathlib import Path

from mailwright.daemon.lockfile import LockFile

LOCK_NAME = "master.lock"


class QueueBusyError(Exception):
    """Another daemon holds the queue's master lock; ``str()`` names its pid."""


class QueueLock(LockFile):
    """Lock the queue for this process (``acquire``, writing its pid), or ``QueueBusyError``."""

    def __init__(self, queue_dir: Path) -> None:
        super().__init__(queue_dir / LOCK_NAME)

    def busy(self, pid: str) -> Exception:
        return QueueBusyError(
            f"{self.path.parent}: a daemon is already running on this queue"
            f" (pid {pid}); not starting a second one"
        )

    def check(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise OSError(f"{self.path}: not a plain file; remove it and start again")

    def release(self) -> None:
        """Drop the lock (the file stays, see above)."""
        self.forget()
