"""Local submission: the daemon's Unix socket for ``sendmail``, and the maildrop pickup.

The socket (``local.socket``, default ``<queue dir>/submit.sock``, mode 0666 so every
local user can submit) speaks the same SMTP as the TCP listeners, through the same
``edge.session.Session`` and protocol core: size limit, hop count (loop detection), the
policy pipeline (milters included when they apply to local mail), the queue commit
before ``250``. The caller's uid comes from the kernel (``SO_PEERCRED``), never from
what the client says; it becomes ``SessionInfo.local_user`` (its login name), which the
``Received:`` header, the queue's origin and ``LocalSubmissionPolicy`` use. The client
address is empty, so the session is local and may relay.

Local mail differs from network mail in three points only: no line-length limit, bare
CR/LF normalised rather than refused, since ``sendmail`` accepted such messages from
scripts for decades (the delivery side encodes what the next hop cannot take), and no
RFC 2920 strictness about what follows EHLO/HELO/DATA (``sendmail -bs`` scripts send
their commands in one batch).

The queue directory gets search permission for others (0711, not listable) so users can
reach the socket and the maildrop; everything private in it is mode 0600/0700.
Settings: ``local.*``, ``server.max_connections``, ``server.max_connections_per_ip``
(here: per uid), ``server.listen_backlog``, ``server.timeouts.shutdown_grace``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import pwd
import socket
import stat
import struct
from collections import Counter

from mailwright.config.schema import Listener, ListenerKind
from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt
from mailwright.edge.context import EdgeContext
from mailwright.edge.dropbounce import failure_report
from mailwright.edge.listener import refuse_connection
from mailwright.edge.pickup import MaildropAccess, Pickup
from mailwright.edge.session import Session
from mailwright.edge.stream import SessionStream
from mailwright.observability import metrics
from mailwright.policy.hooks import Pipeline, SessionInfo
from mailwright.policy.local_submission import LOCAL_KIND, LocalSubmissionPolicy
from mailwright.queue import maildrop
from mailwright.smtp.data import BareLinePolicy
from mailwright.smtp.server import ServerSettings

log = logging.getLogger("mailwright.edge")

SOCKET_MODE = 0o666
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclasses.dataclass(slots=True)
class LocalContext(EdgeContext):
    """The daemon's context with the local listener's relaxed limits."""

    def _settings_for(self, listener: Listener) -> ServerSettings:
        base = EdgeContext._settings_for(self, listener)
        limits = base.data_limits.replace(max_line=0, bare_lines=BareLinePolicy.NORMALIZE)
        return dataclasses.replace(base, data_limits=limits, strict_pipelining=False)


def login_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid{uid}"


def peer_uid(writer: SessionStream) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    except OSError:
        return None
    _, uid, _ = _PEERCRED.unpack(raw)
    return int(uid)


class LocalSubmission:
    """The local socket, its sessions, and the maildrop pickup that feeds the same path."""

    async def _bounce(self, entry: maildrop.Entry, refused: list[tuple[Rcpt, Reply]]) -> None:
        report = failure_report(entry, refused, self.settings.hostname)
        if report is not None:
            await self.ctx.enqueue(report)

    def __init__(
        self,
        ctx: EdgeContext,
        sock: socket.socket | None = None,
        maildrop_access: MaildropAccess | None = None,
    ) -> None:
        settings = ctx.settings
        self.settings = settings
        self.ctx = self._context(ctx)
        self.path = settings.local_socket
        self._bound = sock  # bound (and made 0666) by the launcher, before it gave up root
        self.listener = Listener(
            address=f"unix:{self.path}", kind=ListenerKind.SUBMISSION, name=LOCAL_KIND
        )
        self.sessions: dict[asyncio.Task[None], Session] = {}
        self.per_user: Counter[int] = Counter()
        self.pickup = Pickup(
            settings.maildrop_dir,
            settings.queue.directory,
            self.serve,
            interval=settings.local.pickup_interval,
            report=self._bounce,
            access=maildrop_access,
        )
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)

    @staticmethod
    def _context(ctx: EdgeContext) -> LocalContext:
        policy = LocalSubmissionPolicy.from_settings(ctx.settings)
        return LocalContext(
            settings=ctx.settings,
            pipeline=Pipeline([policy, *ctx.pipeline.hooks]),
            enqueue=ctx.enqueue,
            spool_dir=ctx.spool_dir,
        )

    def use(self, ctx: EdgeContext) -> None:
        """A reloaded configuration: new sessions get it, the ones running keep theirs."""
        self.settings = ctx.settings
        self.ctx = self._context(ctx)
        self.pickup.interval = ctx.settings.local.pickup_interval

    # ---- start and stop ---------------------------------------------------------------------
    async def start(self) -> None:
        self.prepare()
        backlog = self.settings.server.listen_backlog
        loop = asyncio.get_running_loop()

        def stream() -> SessionStream:
            return SessionStream(loop, self._accept)

        if self._bound is not None:
            sock, self._bound = self._bound, None
            self._server = await loop.create_unix_server(stream, sock=sock, backlog=backlog)
        else:
            self._remove_stale_socket()
            self._server = await loop.create_unix_server(
                stream, path=str(self.path), backlog=backlog
            )
            os.chmod(self.path, SOCKET_MODE)
        log.info("listening on %s (local submission)", self.path)
        self.pickup.start()

    def prepare(self) -> None:
        """Directories: the maildrop (1733), and search permission on the queue directory."""
        queue_dir = self.settings.queue.directory
        maildrop.prepare(str(self.settings.maildrop_dir))
        for public in (self.path, self.settings.maildrop_dir):
            if public.parent == queue_dir:
                mode = stat.S_IMODE(os.stat(queue_dir).st_mode)
                if mode & 0o011 != 0o011:
                    os.chmod(queue_dir, mode | 0o011)

    def _remove_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(f"{self.path} exists and is not a socket; not removing it")
        os.unlink(self.path)

    async def stop(self) -> None:
        """Stop the pickup, stop accepting, let sessions finish within the grace period."""
        await self.pickup.stop()
        if self._server is not None:
            self._server.close()
        for task, session in list(self.sessions.items()):
            if session.stop():
                task.cancel()
        if self.sessions:
            grace = self.settings.server.timeouts.shutdown_grace
            _, pending = await asyncio.wait(list(self.sessions), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    # ---- sessions -----------------------------------------------------------------------------
    async def _accept(self, reader: SessionStream, writer: SessionStream) -> None:
        uid = peer_uid(writer)
        try:
            if uid is None:
                await self._refuse(writer, Reply.of(421, "4.7.0", "Cannot identify the caller"))
                return
            refusal = self._admit(uid)
            if refusal is not None:
                await self._refuse(writer, refusal)
                return
            await self.serve(reader, writer, uid)
        finally:
            self.pickup.wake()  # sendmail knocks here after writing to the maildrop

    def _admit(self, uid: int) -> Reply | None:
        s = self.settings.server
        host = self.settings.hostname
        if len(self.sessions) >= s.max_connections:
            return Reply.of(421, "4.7.0", f"{host} Too many connections, try again later")
        if self.per_user[uid] >= s.max_connections_per_ip:
            return Reply.of(421, "4.7.0", f"{host} Too many connections from your user")
        return None

    async def _refuse(self, writer: SessionStream, reply: Reply) -> None:
        await refuse_connection(writer, reply, "localhost")

    async def serve(self, reader: SessionStream, writer: SessionStream, uid: int) -> None:
        """One local session for ``uid`` (from SO_PEERCRED, or a maildrop file's owner)."""
        user = login_name(uid)
        info = SessionInfo(
            session_id=f"local-{next(self._ids)}",
            listener_name=self.listener.display_name,
            listener_kind=LOCAL_KIND,
            local_address="",
            local_port=0,
            client_address="",  # local: SessionInfo.is_local, may relay
            client_port=0,
            client_name=f"{user}@localhost",
            local_user=user,
        )
        session = Session(reader, writer, self.ctx, self.listener, info)
        task = asyncio.current_task()
        assert task is not None
        self.sessions[task] = session
        self.per_user[uid] += 1
        metrics.session_started(self.listener.display_name)
        try:
            await session.run()
        finally:
            metrics.session_ended(self.listener.display_name)
            del self.sessions[task]
            self.per_user[uid] -= 1
            if self.per_user[uid] <= 0:
                del self.per_user[uid]
