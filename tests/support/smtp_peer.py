"""A small real SMTP/LMTP server on loopback for client tests, built on Mailwright's server core.

It runs in the test's own event loop (``async with SmtpPeer(...) as peer``),
speaks through ``smtp.server.ServerConnection`` over real sockets, and can do
what the other peers here cannot: STARTTLS with a given certificate, a broken
TLS handshake (220, then plaintext garbage), a custom greeting, per-event
replies from a ``decide`` callback, and a byte-exact record of everything each
client sent (to prove that no bare LF ever went over the wire).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, ServerSettings, State

Decide = Callable[[ev.Event], "Reply | Sequence[Reply] | None"]


@dataclass
class PeerMessage:
    sender: str
    recipients: list[str]
    mail_params: list[str]
    content: bytes
    tls: bool


@dataclass
class Connection:
    raw: bytearray = field(
        default_factory=bytearray
    )  # every byte the client sent (after TLS: plaintext)
    tls: bool = False


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (EC, quick to make)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,DNS:mx.test,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


class SmtpPeer:
    def __init__(
        self,
        settings: ServerSettings | None = None,
        *,
        tls: ssl.SSLContext | None = None,
        broken_tls: bool = False,
        greeting: Reply | None = None,
        decide: Decide | None = None,
        address: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.settings = settings or ServerSettings(hostname="mx.test")
        self.tls = tls
        self.broken_tls = broken_tls
        self.greeting = greeting
        self.decide = decide or (lambda e: None)
        self.address = address
        self.port = port
        self.messages: list[PeerMessage] = []
        self.connections: list[Connection] = []
        self.starttls_seen = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SmtpPeer:
        self._server = await asyncio.start_server(self._accept, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._session(reader, writer)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(self.settings)
        conn.tls_available = self.tls is not None
        record = Connection()
        self.connections.append(record)
        conn.greet(self.greeting)
        sender, rcpts, params, content = "", [], [], bytearray()
        while True:
            event = conn.next_event()
            if event is None:
                writer.write(conn.data_to_send())
                await writer.drain()
                if conn.state is State.CLOSED:
                    return
                data = await reader.read(65536)
                if not data:
                    return
                record.raw += data
                conn.receive(data)
                continue
            if isinstance(event, ev.Closed):
                writer.write(conn.data_to_send())
                await writer.drain()
                return
            if isinstance(event, ev.StartTls):
                if not await self._starttls(conn, reader, writer, record):
                    return
                continue
            if isinstance(event, ev.MailFrom):
                sender = "" if event.sender is None else str(event.sender)
                params = list(event.raw_params)
                rcpts = []
                content.clear()
            elif isinstance(event, ev.RcptTo):
                rcpts.append(str(event.recipient.address))
            elif isinstance(event, ev.Content):
                content += event.data
                continue
            elif isinstance(event, ev.ContentEnd) and event.problem is None:
                reply = self.decide(event)
                if reply is None or (isinstance(reply, Reply) and reply.positive):
                    message = PeerMessage(sender, list(rcpts), params, bytes(content), conn.tls)
                    self.messages.append(message)
                conn.respond(reply)
                continue
            if isinstance(event, ev.Hello | ev.MailFrom | ev.RcptTo | ev.DataStart | ev.ContentEnd):
                reply = self.decide(event)
                conn.respond(reply)  # type: ignore[arg-type]
                if isinstance(event, ev.RcptTo) and reply is not None and not reply.positive:  # type: ignore[union-attr]
                    rcpts.pop()

    async def _starttls(
        self,
        conn: ServerConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: Connection,
    ) -> bool:
        self.starttls_seen += 1
        conn.respond(None)
        writer.write(conn.data_to_send())
        await writer.drain()
        if self.broken_tls or self.tls is None:
            await reader.read(65536)  # the client's TLS hello
            writer.write(b"this is not a TLS server hello\r\n" * 4)
            await writer.drain()
            return False
        await writer.start_tls(self.tls)
        conn.tls_started()
        record.tls = True
        return True
