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

With several workers, worker 0 alone listens while the daemon has one connection open or
none, and the others stand by (``standby``, an ``edge.standby.WorkerStandby``): a worker
keeps a duplicate of each listening socket it was given and starts or closes its servers
on them as the shared word says, and keeps to its CPU (``server.cpu_affinity``) only
while every worker listens. A server closed this way leaves its sessions running.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from collections import Counter

from mailwright.config.schema import Listener
from mailwright.core import process
from mailwright.core.reply import Reply
from mailwright.edge.context import EdgeContext
from mailwright.edge.session import Session
from mailwright.edge.standby import WorkerStandby
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
        standby: WorkerStandby | None = None,
    ) -> None:
        self.ctx = ctx  # replaced on reload: new sessions get the new one
        self.bound = dict(bound or {})  # listening sockets the launcher bound (as root)
        self.servers: list[asyncio.Server] = []
        # the listeners of the start: a reload does not change them (daemon.reload)
        self._listeners = list(ctx.settings.listeners)
        # standing by needs a bound socket for every listener, to listen on again
        keys = {(listener.address, listener.port) for listener in self._listeners}
        self.standby = standby if standby is not None and keys <= self.bound.keys() else None
        self._changing: asyncio.Task[None] | None = None  # servers being started or closed
        self._stopping = False
        self.sessions: dict[asyncio.Task[None], Session] = {}
        self.per_ip: Counter[str] = Counter()  # this process's connections
        self.share = share  # every worker's connections, when there are several
        self._ids = itertools.count(1)

    async def start(self) -> None:
        standby = self.standby
        if standby is not None:
            asyncio.get_running_loop().add_reader(standby.fd, self._standby_woken)
            _follow_cpu(standby.spread)
            if not standby.listens():
                log.info("standing by until worker 0 has company")
                return
        await self._start_servers()

    async def _start_servers(self, again: bool = False) -> None:
        for listener in self._listeners:
            self.servers.append(await self._listen(listener, again))

    # ---- standing by (several workers) --------------------------------------------------

    def _counted(self, share: WorkerShare, total: int | None = None) -> None:
        """A connection was counted in or out of ``share``: worker 0 may change the word
        (``total``: the daemon's open connections, when the caller has just read them)."""
        standby = self.standby
        if standby is None or not standby.decides:
            return  # the other workers only follow the word: no sum to read
        if standby.counted(share.total() if total is None else total):
            self._follow()

    def _standby_woken(self) -> None:
        assert self.standby is not None
        self.standby.drain()
        self._follow()

    def _follow(self) -> None:
        """Listen or stand by, keep to the CPU or not, as the shared word says now."""
        standby = self.standby
        assert standby is not None
        _follow_cpu(standby.spread)
        if self._stopping or self._changing is not None:
            return  # a change under way looks at the word again when it is done
        if standby.listens() != bool(self.servers):
            self._changing = asyncio.get_running_loop().create_task(self._change())

    async def _change(self) -> None:
        standby = self.standby
        assert standby is not None
        try:
            while not self._stopping and standby.listens() != bool(self.servers):
                if self.servers:
                    servers, self.servers = self.servers, []
                    for server in servers:
                        server.close()  # its sessions go on
                else:
                    await self._start_servers(again=True)
        except OSError as exc:  # no more descriptors, say: the others still listen
            log.error("cannot listen again: %s", exc)
        finally:
            self._changing = None

    async def _listen(self, listener: Listener, again: bool = False) -> asyncio.Server:
        # our end of every connection, when the socket is bound to one address: no
        # getsockname per connection then (a wildcard address asks the kernel each time)
        bound_to: list[tuple[str, int] | None] = [None]

        async def handle(reader: SessionStream, writer: SessionStream) -> None:
            await self._handle(listener, reader, writer, bound_to[0])

        server = await self._serve(listener, handle)
        bound_to[0] = _one_address(server)
        if not again:
            log.info(
                "listening on %s:%s (%s)", listener.address, listener.port, listener.kind.value
            )
        return server

    async def _serve(self, listener: Listener, handle: Connected) -> asyncio.Server:
        backlog = self.ctx.settings.server.listen_backlog
        key = (listener.address, listener.port)
        # a worker that may stand by keeps the socket, its servers close a duplicate
        sock = self.bound.pop(key, None) if self.standby is None else self.bound[key].dup()
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
        kept = self.bound.values() if self.standby is not None else []
        for sock in [s for server in self.servers for s in server.sockets] or kept:
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
                self._counted(share)
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
                self._counted(share)

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
        total = share.total()
        if total > s.max_connections:
            reply = Reply.of(421, "4.7.0", f"{host} Too many connections, try again later")
        elif share.of_ip(client_ip) > s.max_connections_per_ip:
            reply = Reply.of(421, "4.7.0", f"{host} Too many connections from your address")
        if reply is not None:
            share.closed(client_ip)
            total -= 1
        self._counted(share, total)
        return reply

    async def _refuse(self, writer: SessionStream, reply: Reply, client_ip: str) -> None:
        await refuse_connection(writer, reply, f"[{client_ip}]")

    async def stop(self) -> None:
        """Stop accepting, let sessions finish within the grace period, close the rest."""
        self._stopping = True
        if self.standby is not None:
            asyncio.get_running_loop().remove_reader(self.standby.fd)
            if self._changing is not None:
                await self._changing  # one round at most: it stops on _stopping
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
        if self.standby is not None:
            for sock in self.bound.values():
                sock.close()


def _follow_cpu(spread: bool) -> None:
    """Every worker keeps to its own CPU while all of them listen, not while one does."""
    if spread:
        process.keep_home()
    else:
        process.spread_out()


def _one_address(server: asyncio.Server) -> tuple[str, int] | None:
    """The (address, port) every connection to ``server`` arrives at, when it listens on
    one TCP socket bound to one address; None for a wildcard address or a Unix socket."""
    if len(server.sockets) != 1:
        return None
    name = server.sockets[0].getsockname()
    if not isinstance(name, tuple) or ipaddress.ip_address(name[0]).is_unspecified:
        return None
    return (name[0], name[1])
