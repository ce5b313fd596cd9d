"""One asyncio connection to one filter, for one SMTP session (or several, with QUIT_NC).

Opens the socket within the connect timeout (C), negotiates options, then
sends commands (each write bounded by S) and reads replies (each read bounded
by R; a PROGRESS restarts it). At end of message the modifications and the
final reply must come within the end-of-message timeout (E), counted from
sending ``E`` and restarted by each PROGRESS (libmilter's ``smfi_progress``
"causes the MTA to re-start its timeouts"; Postfix does the same). Any socket
error, timeout, EOF or malformed packet becomes a ``MilterError``; the caller
then drops the connection (no QUIT) and applies the filter's failure policy.
Packets that get no reply can wait for the next command's write (``defer``). Over
TCP, what the filter sends at end of message (and after a PROGRESS) is acknowledged
at once (TCP_QUICKACK): libmilter writes each reply packet on its own with Nagle's
algorithm on, so a delayed ACK would hold its verdict back ~40 ms.

Trusts nothing the filter sends (the codec validates every packet). Settings:
the filter's ``timeouts`` (given as ``MilterTimeouts``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Mapping, Sequence

from mailwright.config.endpoint import Endpoint
from mailwright.config.schema import MilterTimeouts
from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import Modification, Response, Simple, Stage
from mailwright.policy.milter.negotiation import Offer, Options, negotiate


class MilterError(Exception):
    """The filter failed: unreachable, too slow, closed, or broke the protocol."""


class Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeouts: MilterTimeouts
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeouts = timeouts
        self.options: Options | None = None
        self.closed = False
        self._pending: list[bytes] = []  # no-reply packets that go out with the next write
        self._tcp = False

    @classmethod
    async def open(cls, endpoint: Endpoint, timeouts: MilterTimeouts) -> Connection:
        try:
            async with asyncio.timeout(timeouts.connect):
                if endpoint.family == "unix":
                    reader, writer = await asyncio.open_unix_connection(endpoint.path)
                else:
                    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
        except TimeoutError:
            raise MilterError(f"connect to {endpoint} timed out") from None
        except OSError as exc:
            raise MilterError(f"cannot connect to {endpoint}: {exc.strerror or exc}") from None
        sock = writer.get_extra_info("socket")
        tcp = sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        if tcp:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = cls(reader, writer, timeouts)
        conn._tcp = tcp
        return conn

    async def negotiate(self, offer: Offer, configured: Mapping[Stage, Sequence[str]]) -> Options:
        await self.send(codec.encode_optneg(offer.version, offer.actions, offer.protocol))
        reply = await self.read()
        if not isinstance(reply, codec.OptNegReply):
            raise MilterError(f"expected an OPTNEG reply, got {reply!r}")
        try:
            self.options = negotiate(offer, reply, configured)
        except codec.ProtocolError as exc:
            raise MilterError(str(exc)) from None
        return self.options

    # ---- I/O ----------------------------------------------------------------------------
    def defer(self, *packets: bytes) -> None:
        """Send ``packets``, which get no reply, in the same write as the next command.

        The filter reads its stream in order, so it sees them before that command, as
        if sent at once, and is woken once instead of twice.
        """
        if self.closed:
            raise MilterError("connection already closed")
        self._pending.extend(packets)

    async def send(self, *packets: bytes) -> None:
        if self.closed:
            raise MilterError("connection already closed")
        if self._pending:
            packets = (*self._pending, *packets)
            self._pending.clear()
        try:
            self._writer.write(b"".join(packets))
            if not self._writer.transport.get_write_buffer_size():
                await self._writer.drain()  # all written: returns at once (or raises)
                return
            async with asyncio.timeout(self.timeouts.send):
                await self._writer.drain()
        except TimeoutError:
            raise MilterError(f"write timed out after {self.timeouts.send:g}s") from None
        except OSError as exc:
            raise MilterError(f"write failed: {exc.strerror or exc}") from None

    async def read(self, timeout: float | None = None) -> Response:
        """One response packet (PROGRESS included) within ``timeout`` (default R)."""
        limit = self.timeouts.read if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                head = await self._reader.readexactly(4)
                (length,) = struct.unpack(">I", head)
                if length == 0 or length - 1 > codec.MAX_RESPONSE:
                    raise MilterError(f"reply packet of length {length}")
                body = await self._reader.readexactly(length)
        except TimeoutError:
            raise MilterError(f"no reply within {limit:g}s") from None
        except asyncio.IncompleteReadError:
            raise MilterError("filter closed the connection") from None
        except OSError as exc:
            raise MilterError(f"read failed: {exc.strerror or exc}") from None
        try:
            return codec.decode_response(codec.Packet(body[:1], body[1:]))
        except codec.ProtocolError as exc:
            raise MilterError(f"malformed reply: {exc}") from None

    def _quick_ack(self) -> None:
        """Acknowledge what the filter sends next at once, not after the delayed-ACK timer.

        A filter that answers with several packets (modifications, then the verdict; or
        PROGRESS, then the verdict) writes each on its own, and libmilter sockets keep
        Nagle's algorithm on: each packet after the first waits until the first is
        acknowledged, and our side, having nothing to send, delays that ACK by ~40 ms
        (Linux). OpenDKIM's end of message (INSHEADER, CONTINUE) took 42 ms instead of
        0.9 ms. Linux leaves quick-ACK mode when we send, so it is set after each send.
        """
        option = getattr(socket, "TCP_QUICKACK", None)
        sock = self._writer.get_extra_info("socket") if self._tcp else None
        if option is None or sock is None:
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, option, 1)

    async def verdict(self) -> Response:
        """The next reply that is not PROGRESS (each PROGRESS restarts the read timeout)."""
        while True:
            reply = await self.read()
            if reply != Simple(codec.PROGRESS):
                return reply
            self._quick_ack()

    async def verdict_for(self, *packets: bytes) -> Response:
        await self.send(*packets)
        return await self.verdict()

    async def command(self, *packets: bytes, wait: bool = True) -> Response | None:
        """Send ``packets`` (macros, then the command); return the verdict if ``wait``."""
        await self.send(*packets)
        return await self.verdict() if wait else None

    async def end_of_message(
        self, *packets: bytes, on_modification: Callable[[Modification], None]
    ) -> Response:
        """Send the EOM packets; pass on modifications until the final verdict, within E."""
        await self.send(*packets)
        deadline = time.monotonic() + self.timeouts.eom
        while True:
            self._quick_ack()  # modifications come first, each in its own packet
            left = deadline - time.monotonic()
            if left <= 0:
                raise MilterError(f"no final reply within {self.timeouts.eom:g}s of end of data")
            reply = await self.read(left)
            if reply == Simple(codec.PROGRESS):
                deadline = time.monotonic() + self.timeouts.eom  # still working: E starts again
                continue
            if isinstance(reply, codec.Simple | codec.ReplyCode | codec.OptNegReply):
                return reply
            on_modification(reply)

    # ---- ending -------------------------------------------------------------------------
    async def quit(self) -> None:
        """QUIT, then close; errors are irrelevant at this point."""
        with contextlib.suppress(MilterError):
            await self.send(codec.encode_quit())
        self.close()

    async def quit_keep(self) -> bool:
        """QUIT_NC: end the SMTP session but keep the socket for the next one (v6 only)."""
        try:
            await self.send(codec.encode_quit_nc())
        except MilterError:
            self.close()
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()

    @property
    def at_eof(self) -> bool:
        return self.closed or self._reader.at_eof()
