"""One asyncio connection to one filter, for one SMTP session (or several, with QUIT_NC).

Opens the socket within the connect timeout (C), negotiates options, then
sends commands (each write bounded by S) and reads replies (each read bounded
by R; a PROGRESS restarts it). At end of message the modifications and the
final reply must come within the end-of-message timeout (E), counted from
sending ``E`` and restarted by each PROGRESS (libmilter's ``smfi_progress``
"causes the MTA to re-start its timeouts"; Postfix does the same). Any socket
error, timeout, EOF or malformed packet becomes a ``MilterError``; the caller
then drops the connection (no QUIT) and applies the filter's failure policy.

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

from mailwright.config.schema import MilterTimeouts
from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import Modification, Response, Simple, Stage
from mailwright.policy.milter.endpoint import Endpoint
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
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, timeouts)

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
    async def send(self, *packets: bytes) -> None:
        if self.closed:
            raise MilterError("connection already closed")
        try:
            self._writer.write(b"".join(packets))
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

    async def verdict(self) -> Response:
        """The next reply that is not PROGRESS (each PROGRESS restarts the read timeout)."""
        while True:
            reply = await self.read()
            if reply != Simple(codec.PROGRESS):
                return reply

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
