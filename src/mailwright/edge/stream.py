"""One accepted connection as a reader and a writer in one object, lighter than asyncio's streams.

``SessionStream`` is the protocol of a listener's transport and offers what a session uses of
``asyncio.StreamReader`` and ``asyncio.StreamWriter``: ``read``, ``write``, ``drain``,
``close``, ``is_closing``, ``get_extra_info``, ``transport`` and ``start_tls``. A session
reads and answers a command line at a time, so asyncio's streams cost it a chain of Python
calls per command (the protocol, ``feed_data``, waking the waiter, ``read`` and
``_wait_for_data``, a ``bytearray`` copied in and out); here arriving bytes are kept as they
came and handed to the waiting ``read`` whole.

Flow control as in asyncio: reading pauses while more than ``limit`` octets wait unread (a
client cannot make us buffer without bound) and resumes when they are read; ``drain`` waits
while the transport's write buffer is over its high-water mark.

Semantics kept from ``StreamReader``: ``read`` returns ``b""`` at the end of input and
raises the error the connection was lost with; after the client's end of input the
transport stays open for our replies (TCP half-close), except over TLS.

Trusts nothing it reads (it only buffers it). Settings read: none (the listener passes
``limit``).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

log = logging.getLogger("mailwright.edge")

LIMIT = 256 << 10  # octets waiting unread before reading pauses (a session reads as much)

Connected = Callable[["SessionStream", "SessionStream"], Coroutine[Any, Any, None]]


class SessionStream(asyncio.Protocol):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        connected: Connected,
        *,
        limit: int = LIMIT,
        over_ssl: bool = False,
    ) -> None:
        self._loop = loop
        self._connected = connected
        self._limit = limit
        self._over_ssl = over_ssl
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self._chunks: list[bytes] = []
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._lost = False
        self.task: asyncio.Task[None] | None = None

    # ---- protocol callbacks -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass
        if self.task is None:  # not again for the TLS transport of a STARTTLS
            self.task = self._loop.create_task(self._connected(self, self))
            self.task.add_done_callback(self._session_over)

    def _session_over(self, task: asyncio.Task[None]) -> None:
        """A session that failed is logged and its connection closed, never left open."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("session failed: %r", error, exc_info=error)
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if self._size > self._limit and not self._reading_paused:
            try:
                self.transport.pause_reading()
            except NotImplementedError:  # a transport that cannot pause: keep reading
                return
            self._reading_paused = True

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return not self._over_ssl  # TCP: keep our half open for the replies

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if exc is not None:
            self._error = exc
        self._eof = True
        self._wake()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            if exc is None:
                drain.set_result(None)
            else:
                drain.set_exception(exc)
        self._drain_waiter = None

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        drain = self._drain_waiter
        self._drain_waiter = None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ---- reading ------------------------------------------------------------------------
    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` octets (all that waits if ``n`` < 0), waiting for some if none
        wait; ``b""`` at the end of input."""
        if not self._chunks:
            if self._error is not None:
                raise self._error
            if self._eof:
                return b""
            if self._reading_paused:
                self._resume_reading()
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
            if not self._chunks:
                if self._error is not None:
                    raise self._error
                return b""
        return self._take(n)

    def _take(self, n: int) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if 0 <= n < len(data):
            self._chunks = [data[n:]]
            data = data[:n]
        else:
            self._chunks = []
        self._size -= len(data)
        if self._reading_paused and self._size <= self._limit:
            self._resume_reading()
        return data

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if not self._lost:
            self.transport.resume_reading()

    def discard_buffered(self) -> int:
        """Drop what was read but not consumed (plaintext before a TLS handshake)."""
        dropped, self._chunks, self._size = self._size, [], 0
        return dropped

    # ---- writing ------------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.transport.write(data)

    async def drain(self) -> None:
        if self._error is not None:
            raise self._error
        if self.transport.is_closing():
            await asyncio.sleep(0)  # as StreamWriter: let connection_lost run first
            raise ConnectionResetError("Connection lost")
        if not self._writing_paused:
            return
        waiter = self._drain_waiter = self._loop.create_future()
        await waiter

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    async def start_tls(
        self, context: ssl.SSLContext, *, ssl_handshake_timeout: float | None = None
    ) -> None:
        """The server's side of a TLS handshake on this connection (STARTTLS)."""
        self._over_ssl = True
        transport = await self._loop.start_tls(
            self.transport,
            self,
            context,
            server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
        )
        assert transport is not None
        self.transport = transport


async def serve_socket(sock: socket.socket, connected: Connected) -> SessionStream:
    """A stream on a socket already connected (the maildrop's socket pair), its session
    started (``stream.task``)."""
    loop = asyncio.get_running_loop()
    _, stream = await loop.connect_accepted_socket(lambda: SessionStream(loop, connected), sock)
    return stream
