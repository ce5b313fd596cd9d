"""Listening sockets and connection admission: total and per-client-IP limits, shutdown.

Accepts on every configured listener (TCP; IPv4 and IPv6), refuses a client
over a limit with ``421 4.7.0`` before any dialogue, and on shutdown stops
accepting, lets sessions finish within ``server.timeouts.shutdown_grace``, then
closes the rest with ``421 4.3.2``. Settings: ``listeners``,
``server.max_connections``, ``server.max_connections_per_ip``,
``server.listen_backlog``, ``server.timeouts.shutdown_grace``.

With several worker processes on the same sockets, both limits count every worker's
connections: the counts are kept in the memory the workers share (``share``, a
``policy.sharedlimits.WorkerShare``), and a connection is counted there before the
limits are read, so two workers admitting at once cannot both slip under a limit (both
may refuse). Without a share (one process) the counts are this process's own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from collections import Counter

from mailwright.config.schema import Listener
from mailwright.core.reply import Reply
from mailwright.edge.context import EdgeContext
from mailwright.edge.session import Session
from mailwright.edge.stream import Connected, SessionStream
from mailwright.observability import maillog, metrics
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.sharedlimits import WorkerShare

log = logging.getLogger("mailwright.edge")


async def refuse_connection(writer: SessionStream, reply: Reply, relay: str) -> None:
    """Answer a client we will not serve (over a limit) and hang up; logged and counted."""
    maillog.emit(None, event="connection refused", relay=relay, reject=str(reply))
    metrics.rejected("connect", reply)
    try:
        writer.write(reply.encode(enhanced=True))
        async with asyncio.timeout(5):
            await writer.drain()
    except (OSError, TimeoutError):
        pass
    finally:
        writer.close()


class Edge:
    """All listeners of the daemon and the sessions they carry."""

    def __init__(
        self,
        ctx: EdgeContext,
        bound: dict[tuple[str, int], socket.socket] | None = None,
        share: WorkerShare | None = None,
    ) -> None:
        self.ctx = ctx  # replaced on reload: new sessions get the new one
        self.bound = dict(bound or {})  # listening sockets the launcher bound (as root)
        self.servers: list[asyncio.Server] = []
        self.sessions: dict[asyncio.Task[None], Session] = {}
        self.per_ip: Counter[str] = Counter()  # this process's connections
        self.share = share  # every worker's connections, when there are several
        self._ids = itertools.count(1)

    async def start(self) -> None:
        for listener in self.ctx.settings.listeners:
            self.servers.append(await self._listen(listener))

    async def _listen(self, listener: Listener) -> asyncio.Server:
        # our end of every connection, when the socket is bound to one address: no
        # getsockname per connection then (a wildcard address asks the kernel each time)
        bound_to: list[tuple[str, int] | None] = [None]

        async def handle(reader: SessionStream, writer: SessionStream) -> None:
            await self._handle(listener, reader, writer, bound_to[0])

        server = await self._serve(listener, handle)
        bound_to[0] = _one_address(server)
        log.info("listening on %s:%s (%s)", listener.address, listener.port, listener.kind.value)
        return server

    async def _serve(self, listener: Listener, handle: Connected) -> asyncio.Server:
        backlog = self.ctx.settings.server.listen_backlog
        sock = self.bound.pop((listener.address, listener.port), None)
        loop = asyncio.get_running_loop()
        if listener.address.startswith("unix:"):
            if sock is not None:
                return await loop.create_unix_server(
                    lambda: SessionStream(loop, handle), sock=sock, backlog=backlog
                )
            return await loop.create_unix_server(
                lambda: SessionStream(loop, handle), path=listener.address[5:], backlog=backlog
            )
        security = self.ctx.security
        context, handshake = security.listen_tls(listener) if security else (None, None)
        over_ssl = context is not None

        def stream() -> SessionStream:
            return SessionStream(loop, handle, over_ssl=over_ssl)

        if sock is not None:
            return await loop.create_server(
                stream, sock=sock, backlog=backlog, ssl=context, ssl_handshake_timeout=handshake
            )
        return await loop.create_server(
            stream,
            host=listener.address,
            port=listener.port,
            backlog=backlog,
            reuse_address=True,
            ssl=context,  # implicit TLS (RFC 8314)
            ssl_handshake_timeout=handshake,
        )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        out = []
        for server in self.servers:
            for sock in server.sockets:
                name = sock.getsockname()
                if isinstance(name, tuple):
                    out.append((name[0], name[1]))
        return out

    async def _handle(
        self,
        listener: Listener,
        reader: SessionStream,
        writer: SessionStream,
        bound_to: tuple[str, int] | None = None,
    ) -> None:
        peer = writer.get_extra_info("peername")
        client_ip, client_port = (peer[0], peer[1]) if isinstance(peer, tuple) else ("", 0)
        if bound_to is None:
            sock_name = writer.get_extra_info("sockname")
            bound_to = (sock_name[0], sock_name[1]) if isinstance(sock_name, tuple) else ("", 0)
        local_ip, local_port = bound_to
        share = self.share
        refusal = self._admit(client_ip) if share is None else self._admit_shared(share, client_ip)
        if refusal is not None:
            await self._refuse(writer, refusal, client_ip)
            return
        name = listener.display_name
        try:
            # no TCP_NODELAY here: asyncio and uvloop set it on every accepted TCP socket
            info = SessionInfo(
                session_id=f"{next(self._ids)}",
                listener_name=name,
                listener_kind=listener.kind.value,
                local_address=local_ip,
                local_port=local_port,
                client_address=client_ip if client_ip else "127.0.0.1",
                client_port=client_port,
            )
            session = Session(reader, writer, self.ctx, listener, info)
        except BaseException:
            if share is not None:
                share.closed(client_ip)  # counted by _admit_shared: the other workers see it
            raise
        task = asyncio.current_task()
        assert task is not None
        self.per_ip[client_ip] += 1
        self.sessions[task] = session
        metrics.session_started(name)
        try:
            await session.run()
        finally:
            metrics.session_ended(name)
            del self.sessions[task]
            self.per_ip[client_ip] -= 1
            if self.per_ip[client_ip] <= 0:
                del self.per_ip[client_ip]
            if share is not None:
                share.closed(client_ip)

    def _admit(self, client_ip: str) -> Reply | None:
        s = self.ctx.settings.server
        host = self.ctx.settings.hostname
        if len(self.sessions) >= s.max_connections:
            return Reply.of(421, "4.7.0", f"{host} Too many connections, try again later")
        if self.per_ip[client_ip] >= s.max_connections_per_ip:
            return Reply.of(421, "4.7.0", f"{host} Too many connections from your address")
        return None

    def _admit_shared(self, share: WorkerShare, client_ip: str) -> Reply | None:
        """``_admit`` over every worker's connections; the connection is counted (in
        ``share``) unless refused."""
        share.opened(client_ip)
        s = self.ctx.settings.server
        host = self.ctx.settings.hostname
        reply = None
        if share.total() > s.max_connections:
            reply = Reply.of(421, "4.7.0", f"{host} Too many connections, try again later")
        elif share.of_ip(client_ip) > s.max_connections_per_ip:
            reply = Reply.of(421, "4.7.0", f"{host} Too many connections from your address")
        if reply is not None:
            share.closed(client_ip)
        return reply

    async def _refuse(self, writer: SessionStream, reply: Reply, client_ip: str) -> None:
        await refuse_connection(writer, reply, f"[{client_ip}]")

    async def stop(self) -> None:
        """Stop accepting, let sessions finish within the grace period, close the rest."""
        for server in self.servers:
            server.close()
        for task, session in list(self.sessions.items()):
            if session.stop():
                task.cancel()
        if self.sessions:
            grace = self.ctx.settings.server.timeouts.shutdown_grace
            _, pending = await asyncio.wait(list(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for server in self.servers:
            await server.wait_closed()


def _one_address(server: asyncio.Server) -> tuple[str, int] | None:
    """The (address, port) every connection to ``server`` arrives at, when it listens on
    one TCP socket bound to one address; None for a wildcard address or a Unix socket."""
    if len(server.sockets) != 1:
        return None
    name = server.sockets[0].getsockname()
    if not isinstance(name, tuple) or ipaddress.ip_address(name[0]).is_unspecified:
        return None
    return (name[0], name[1])
