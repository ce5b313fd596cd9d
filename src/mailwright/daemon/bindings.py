"""The daemon's listening sockets, bound before anything else (and before root is given up).

Ports below 1024 need root, so the launcher binds every configured listener and the
local submission socket first; the daemon, by then possibly without root, only
starts accepting on them (``edge.listener.Edge``, ``edge.local.LocalSubmission``).
TCP sockets get ``SO_REUSEADDR`` (and ``IPV6_V6ONLY`` for IPv6), as asyncio's own
``start_server`` would; a Unix socket left by a previous run is replaced, anything
else in its place is an error. With several workers each TCP listener is a group of
``SO_REUSEPORT`` sockets, one per worker (``Bindings.for_worker``): the kernel queues
each connection on one of them, where one shared socket woke every worker for each
connection and all but one found nothing to accept. The supervisor keeps the whole
group, so a worker's connections wait in its socket's backlog while it restarts. The
local submission socket is mode 0666 (every user may submit; the kernel tells who
they are). Errors name the address. Settings:
``listeners``, ``server.listen_backlog``, ``server.workers``, ``local.socket`` /
``queue.directory``.
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
    # with several workers: worker i's own TCP listening sockets (an SO_REUSEPORT group
    # per listener, so that the kernel gives each connection to one worker)
    shards: list[dict[tuple[str, int], socket.socket]] = field(default_factory=list)

    def sockets(self) -> list[socket.socket]:
        extra = [sock for shard in self.shards[1:] for sock in shard.values()]
        return [*self.listeners.values(), *extra, *([self.local] if self.local is not None else [])]

    def for_worker(self, index: int) -> Bindings:
        """Worker ``index``'s view: its own TCP sockets, the shared Unix ones."""
        if not self.shards:
            return self
        return Bindings({**self.listeners, **self.shards[index]}, self.local)

    def close(self) -> None:
        for sock in self.sockets():
            sock.close()


def bind_all(settings: Settings, local: bool = True, workers: int = 1) -> Bindings:
    """Bind every listener (and the local submission socket); all or nothing."""
    out = Bindings()
    backlog = settings.server.listen_backlog
    try:
        if workers > 1:
            out.shards = [{} for _ in range(workers)]
        for listener in settings.listeners:
            key = (listener.address, listener.port)
            if workers > 1 and not listener.address.startswith("unix:"):
                group = bind_group(listener, backlog, workers)
                for shard, sock in zip(out.shards, group, strict=True):
                    shard[key] = sock
                out.listeners[key] = group[0]
            else:
                out.listeners[key] = bind_listener(listener, backlog)
        if local:
            out.local = bind_unix(settings.local_socket, backlog, LOCAL_SOCKET_MODE)
    except BaseException:
        out.close()
        raise
    return out


def bind_group(listener: Listener, backlog: int, count: int) -> list[socket.socket]:
    """``count`` sockets on one TCP address, an ``SO_REUSEPORT`` group.

    A shared socket wakes every worker for each connection (one wins the accept, the
    others find nothing); in a group the kernel hands each connection to one socket.
    A plain socket is bound first, as a probe: another program on the address is an
    error, as with one socket, not a silent share of its connections.
    """
    bind_listener(listener, backlog, listen=False).close()
    group: list[socket.socket] = []
    try:
        for _ in range(count):
            group.append(bind_listener(listener, backlog, reuse_port=True))
    except BaseException:
        for sock in group:
            sock.close()
        raise
    return group


def bind_listener(
    listener: Listener,
    backlog: int,
    reuse_port: bool = False,
    listen: bool = True,
) -> socket.socket:
    if listener.address.startswith("unix:"):
        return bind_unix(Path(listener.address[5:]), backlog)
    family = socket.AF_INET6 if ":" in listener.address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listener.address, listener.port))
        if listen:
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
