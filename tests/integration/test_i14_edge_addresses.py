"""Our end of an inbound connection, as sessions (and milters' ``{daemon_addr}``) see it.

The edge takes it from the listening socket when that is bound to one address, and asks
the kernel per connection when it listens on a wildcard address; either way every
accepted TCP socket has TCP_NODELAY, which the event loop sets (the edge no longer does).
Real sockets on loopback, an in-process ``Edge``.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from mailwright.config.schema import Listener, Settings
from mailwright.edge.context import EdgeContext
from mailwright.edge.listener import Edge
from mailwright.policy.hooks import Hook, Pipeline, SessionInfo
from mailwright.queue.store import NewMessage
from tests.support.daemon import free_port


class Seen(Hook):
    """Records the session of each connection and whether its socket has TCP_NODELAY."""

    name = "seen"

    def __init__(self) -> None:
        self.edge: Edge | None = None
        self.sessions: list[tuple[str, int, int]] = []

    async def connect(self, session: SessionInfo) -> None:
        assert self.edge is not None
        (live,) = self.edge.sessions.values()
        sock = live.writer.get_extra_info("socket")
        nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.sessions.append((session.local_address, session.local_port, nodelay))
        return None


async def _greeting(address: str, port: int) -> bytes:
    reader, writer = await asyncio.open_connection(address, port)
    line = await reader.readline()
    writer.write(b"QUIT\r\n")
    await reader.readline()
    writer.close()
    await writer.wait_closed()
    return line


async def _connect_to(
    listen_on: str, connect_to: str, tmp_path: Path
) -> list[tuple[str, int, int]]:
    settings = Settings(
        hostname="mx.test",
        listeners=[Listener(address=listen_on, port=free_port())],
        queue={"directory": tmp_path / "q"},  # type: ignore[arg-type]
    )

    async def enqueue(message: NewMessage) -> None:
        raise AssertionError("nothing is sent")

    seen = Seen()
    edge = Edge(EdgeContext(settings, Pipeline([seen]), enqueue, tmp_path))
    seen.edge = edge
    await edge.start()
    try:
        port = edge.addresses[0][1]
        for _ in range(2):
            assert (await _greeting(connect_to, port)).startswith(b"220 ")
    finally:
        await edge.stop()
    return [(address, got_port - port, nodelay) for address, got_port, nodelay in seen.sessions]


def test_an_address_of_its_own_is_taken_from_the_listening_socket(tmp_path: Path) -> None:
    seen = asyncio.run(asyncio.wait_for(_connect_to("127.0.0.1", "127.0.0.1", tmp_path), 20))
    assert seen == [("127.0.0.1", 0, 1), ("127.0.0.1", 0, 1)]


def test_a_wildcard_listener_asks_which_address_the_client_reached(tmp_path: Path) -> None:
    seen = asyncio.run(asyncio.wait_for(_connect_to("0.0.0.0", "127.0.0.2", tmp_path), 20))
    assert seen == [("127.0.0.2", 0, 1), ("127.0.0.2", 0, 1)]
