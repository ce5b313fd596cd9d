"""The daemon's listening sockets, bound before anything else (and before root is given up).

Ports below 1024 need root, so the launcher binds every configured listener and the
local submission socket first; the daemon, by then possibly without root, only
starts accepting on them (``edge.listener.Edge``, ``edge.local.LocalSubmission``).
TCP sockets get ``SO_REUSEADDR`` (and ``IPV6_V6ONLY`` for IPv6), as asyncio's own
``start_server`` would; a Unix socket left by a previous run is replaced, anything
else in its place is an error. The local submission socket is mode 0666 (every
user may submit; the kernel tells who they are). Errors name the address. Settings:
``listeners``, ``server.listen_backlog``, ``local.socket`` / ``queue.directory``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.config.schema import Listener, Settings

LOCAL_SOCKET_MODE = 0o666


class BindError(OSError):
    """A listener could not be bound; ``str()`` names it."""


@dataclass(slots=True)
class Bindings:
    listeners: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    local: socket.socket | None = None  # the local submission socket

    def sockets(self) -> list[socket.socket]:
        return [*self.listeners.values(), *([self.local] if self.local is not None else [])]

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


def bind_all(settings: Settings, local: bool = True) -> Bindings:
    """Bind every listener (and the local submission socket); all or nothing."""
    out = Bindings()
    backlog = settings.server.listen_backlog
    try:
        for listener in settings.listeners:
            out.listeners[(listener.address, listener.port)] = bind_listener(listener, backlog)
        if local:
            out.local = bind_unix(settings.local_socket, backlog, LOCAL_SOCKET_MODE)
    except BaseException:
        out.close()
        raise
    return out


def bind_listener(listener: Listener, backlog: int) -> socket.socket:
    if listener.address.startswith("unix:"):
        return bind_unix(Path(listener.address[5:]), backlog)
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.address, listener.port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        where = f"[{listener.address}]" if family == socket.AF_INET6 else listener.address
        raise BindError(exc.errno, f"{where}:{listener.port}: {exc.strerror}") from None
    return sock


def bind_unix(path: Path, backlog: int, mode: int | None = None) -> socket.socket:
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        if mode is not None:
            os.chmod(path, mode)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(exc.errno, f"{path}: {exc.strerror}") from None
    return sock


def _remove_stale(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(0, f"{path} exists and is not a socket; not removing it")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
