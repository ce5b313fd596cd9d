"""Telling the service manager how the daemon is: systemd's sd_notify, and a parent's pipe.

Under systemd (``Type=notify``) the daemon says ``READY=1`` once it accepts mail,
``RELOADING=1`` (with ``MONOTONIC_USEC``) when SIGHUP starts a reload and ``READY=1``
again when it is done (or refused), ``STOPPING=1`` when it begins to shut down, and a
one-line ``STATUS=`` with each. The messages are datagrams to ``$NOTIFY_SOCKET``: a
path, or an abstract socket name written ``@name``. The variable is removed from the
environment at start so that programs run by deliveries cannot speak for the daemon.

A daemon started with ``--daemon`` also tells its waiting parent (``daemon.launch``)
through a pipe: ``ready`` once, or nothing (the child exited: its status explains).

Trusts the environment's socket address. Reads no settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time

log = logging.getLogger("mailwright.daemon")

ENV = "NOTIFY_SOCKET"


def socket_address(value: str) -> str | None:
    """The ``sendto`` address of ``$NOTIFY_SOCKET`` (None: not a Unix socket we can use)."""
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock: and other forms are not for us


class Notifier:
    """Readiness reports; every method is a no-op when nobody listens."""

    def __init__(self, address: str | None = None, parent_fd: int | None = None) -> None:
        self.address = address
        self.parent_fd = parent_fd  # --daemon: the pipe the waiting parent reads
        self._sock: socket.socket | None = None
        if address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._warned = False

    @classmethod
    def from_environment(cls, parent_fd: int | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET`` (then unset, as ``sd_notify(unset_environment=1)`` does)."""
        value = os.environ.pop(ENV, "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("%s=%s: not a Unix socket address; not notifying", ENV, value)
        return cls(address, parent_fd)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of ``KEY=value`` lines; False when it could not be sent."""
        if self._sock is None or self.address is None:
            return False
        text = "\n".join(a.replace("\n", " ") for a in assignments) + "\n"
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager at %s: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")
        self._tell_parent()

    def reloading(self, status: str = "reloading the configuration") -> None:
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def _tell_parent(self) -> None:
        if self.parent_fd is None:
            return
        fd, self.parent_fd = self.parent_fd, None
        with contextlib.suppress(OSError):
            os.write(fd, b"ready\n")
        with contextlib.suppress(OSError):
            os.close(fd)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.parent_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.parent_fd)
            self.parent_fd = None
