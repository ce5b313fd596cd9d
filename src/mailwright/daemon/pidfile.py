"""The pid file of a detached daemon, locked for as long as the daemon lives.

``acquire`` opens (creating) the file, takes an exclusive ``flock`` on it and writes
the pid; a file whose lock is held belongs to a running daemon, which is refused
(``AlreadyRunningError`` names its pid). A file left by a daemon that died is not
locked and simply reused. ``release`` removes the file if it is still ours (a daemon
that gave up root may not be allowed to: the next start reuses it). Reads no settings.
"""

from __future__ import annotations

import contextlib
import os

from mailwright.daemon.lockfile import LockFile


class AlreadyRunningError(Exception):
    """Another daemon holds the pid file."""


class PidFile(LockFile):
    def busy(self, pid: str) -> Exception:
        return AlreadyRunningError(f"{self.path}: a daemon is already running (pid {pid})")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().acquire()

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            mine = os.fstat(self.fd)
            there = os.lstat(self.path)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                os.unlink(self.path)
        self.forget()
