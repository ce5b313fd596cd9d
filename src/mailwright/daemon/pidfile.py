"""The pid file of a detached daemon, locked for as long as the daemon lives.

``acquire`` opens (creating) the file, takes an exclusive ``flock`` on it and writes
the pid; a file whose lock is held belongs to a running daemon, which is refused
(``AlreadyRunningError`` names its pid). A file left by a daemon that died is not
locked and simply reused. ``release`` removes the file if it is still ours (a daemon
that gave up root may not be allowed to: the next start reuses it). Reads no settings.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class AlreadyRunningError(Exception):
    """Another daemon holds the pid file."""


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise AlreadyRunningError(
                f"{self.path}: a daemon is already running (pid {text or 'unknown'})"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.write(os.getpid())

    def write(self, pid: int) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{pid}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            mine = os.fstat(self.fd)
            there = os.lstat(self.path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                os.unlink(self.path)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = None

    def forget(self) -> None:
        """In a forked child that must not hold the lock (the privileged helper)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
