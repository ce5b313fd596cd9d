"""The milter client's socket behaviour against a filter on real loopback TCP.

The filter here answers like libmilter: each reply packet in its own write, Nagle's
algorithm left on. OpenDKIM's end of message (INSHEADER, then CONTINUE) took 42 ms per
message until the client acknowledged at once what it reads there.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mailwright.config.endpoint import parse_endpoint
from mailwright.config.schema import MilterTimeouts
from mailwright.policy.milter import codec
from mailwright.policy.milter.client import Connection
from mailwright.policy.milter.codec import InsertHeader, OptNegReply, PacketDecoder, Simple
from mailwright.policy.milter.macros import DEFAULTS
from mailwright.policy.milter.negotiation import Offer

ROUNDS = 10


class PacketByPacketFilter:
    """Answers EOM with INSHEADER and CONTINUE as two writes, anything else with CONTINUE."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(4)
        self.port = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self._sock.accept()
        decoder = PacketDecoder()
        with conn:
            while data := conn.recv(65536):
                decoder.feed(data)
                while (packet := decoder.next_packet()) is not None:
                    for reply in self._replies(packet.cmd):
                        conn.sendall(codec.encode_response(reply))  # one write each

    @staticmethod
    def _replies(cmd: bytes) -> list[codec.Response]:
        if cmd == b"O":
            return [OptNegReply(6, 0x1FF, 0)]
        if cmd == b"E":
            return [InsertHeader(0, b"X-Signed", b"yes"), Simple(codec.CONTINUE)]
        if cmd in (b"D", b"Q"):
            return []
        return [Simple(codec.CONTINUE)]

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def packet_filter() -> Iterator[PacketByPacketFilter]:
    f = PacketByPacketFilter()
    yield f
    f.close()


def test_end_of_message_replies_are_not_held_by_delayed_acks(
    packet_filter: PacketByPacketFilter,
) -> None:
    async def scenario() -> tuple[float, int]:
        endpoint = parse_endpoint(f"inet:{packet_filter.port}@127.0.0.1")
        conn = await Connection.open(endpoint, MilterTimeouts())
        await conn.negotiate(Offer.for_version(6), dict(DEFAULTS))
        mods: list[codec.Modification] = []
        started = time.perf_counter()
        for _ in range(ROUNDS):
            await conn.command(codec.encode_mail(b"<a@example.org>"))
            await conn.command(codec.encode_body(b"x\r\n"))
            reply = await conn.end_of_message(codec.encode_eom(), on_modification=mods.append)
            assert reply == Simple(codec.CONTINUE)
        elapsed = time.perf_counter() - started
        await conn.quit()
        return elapsed, len(mods)

    elapsed, modifications = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert modifications == ROUNDS
    # held by a delayed ACK, each end of message takes 40 ms or more (Linux): >= 0.4 s
    assert elapsed < 0.25, f"{ROUNDS} messages took {elapsed:.3f}s"


def test_packets_without_a_reply_go_out_with_the_next_command() -> None:
    # the filter's end is held here: what was written is readable from it at once
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    async def scenario() -> bytes:
        endpoint = parse_endpoint(f"inet:{server.getsockname()[1]}@127.0.0.1")
        conn = await Connection.open(endpoint, MilterTimeouts())
        peer, _ = server.accept()
        with peer:
            conn.defer(codec.encode_macros(codec.Stage.HELO, [(b"{tls_version}", b"")]))
            with pytest.raises(BlockingIOError):
                peer.recv(65536, socket.MSG_DONTWAIT)  # nothing was written
            peer.sendall(codec.encode_response(Simple(codec.CONTINUE)))
            assert await conn.command(codec.encode_mail(b"<a@example.org>")) == Simple(
                codec.CONTINUE
            )
            conn.close()
            return peer.recv(65536)

    try:
        written = asyncio.run(asyncio.wait_for(scenario(), 30))
    finally:
        server.close()
    decoder = PacketDecoder()
    decoder.feed(written)
    assert [p.cmd for p in iter(decoder.next_packet, None)] == [b"D", b"M"]
