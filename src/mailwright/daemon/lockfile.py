"""A file locked with ``flock`` by the process whose pid it holds: what the pid file and the
queue's master lock have in common.

``acquire`` opens (creating, never through a symbolic link) the file, takes an exclusive
``flock`` without waiting and writes this process's pid; when another process holds the
lock, the pid it wrote goes into the error the subclass makes (``busy``). The lock belongs
to the open file: it survives giving up root, and the kernel drops it when the process
dies, even by SIGKILL. ``forget`` closes this process's descriptor (in a forked child
that must not keep the lock). Trusts nothing in the file but its first 32 bytes as text
for a message. Reads no settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class LockFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def busy(self, pid: str) -> Exception:
        """The error for a file another process holds; ``pid`` is what it wrote."""
        raise NotImplementedError

    def check(self, fd: int) -> None:
        """Refuse a file unfit for locking before it is locked (raise ``OSError``)."""

    def acquire(self) -> None:
        """Lock the file for this process and write its pid, or raise ``busy``."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            self.check(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise self.busy(text or "unknown") from None
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

    def forget(self) -> None:
        """Close this process's descriptor: in a forked child that must not keep the lock
        (the privileged helper), and at the end of the daemon."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
