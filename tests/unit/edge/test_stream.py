"""SessionStream on real loopback sockets, under uvloop as the daemon runs it."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from mailwright.edge import tls
from mailwright.edge.stream import SessionStream

WAIT = 30.0

Handler = Callable[[SessionStream, SessionStream], Coroutine[Any, Any, None]]


def serve(handler: Handler, client: Callable[[int], object], *, limit: int = 1 << 16) -> object:
    """Run ``handler`` for one connection while ``client(port)`` runs in a thread."""

    async def main() -> object:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SessionStream(loop, handler, limit=limit), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        try:
            async with asyncio.timeout(WAIT):
                return await asyncio.to_thread(client, port)
        finally:
            server.close()

    return uvloop.run(main())


def test_reads_what_arrives_and_the_end_of_input_while_replies_still_go_out() -> None:
    seen: list[bytes] = []

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        writer.write(b"220 hi\r\n")
        seen.append(await reader.read(100))
        seen.append(await reader.read(100))  # the client's half-close: b""
        writer.write(b"221 after your end\r\n")  # our half is still open
        await writer.drain()
        writer.close()

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.recv(100)
            s.sendall(b"QUIT\r\n")
            s.shutdown(socket.SHUT_WR)
            return recv_all(s)

    assert serve(handler, client) == b"221 after your end\r\n"
    assert seen == [b"QUIT\r\n", b""]


def test_a_read_returns_at_most_n_octets_and_keeps_the_rest() -> None:
    seen: list[bytes] = []

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        data = b""
        while len(data) < 10:
            data += await reader.read(4 - len(data) % 4)
            seen.append(data)
        writer.write(b"ok")
        writer.close()

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"0123456789ab")
            return recv_all(s)

    assert serve(handler, client) == b"ok"
    assert all(len(b) - len(a) <= 4 for a, b in zip([b"", *seen], seen, strict=False))
    assert seen[-1].startswith(b"0123456789")


def test_reading_pauses_over_the_limit_and_resumes_when_read() -> None:
    """A client that sends while the session does not read fills our buffer only up to
    the limit (then the kernel's buffers and its own send block); nothing is lost."""
    total = 8 << 20
    state: dict[str, object] = {}

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        first = await reader.read(1)  # the client is sending
        while not reader._reading_paused:  # the state under test
            await asyncio.sleep(0.01)
        state["buffered"] = reader._size
        got = len(first)
        while got < total:
            data = await reader.read(1 << 16)
            assert data
            got += len(data)
        state["got"] = got
        writer.write(b"done")
        writer.close()

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"x" * total)
            return recv_all(s)

    assert serve(handler, client, limit=1 << 16) == b"done"
    assert state["got"] == total
    assert isinstance(state["buffered"], int) and state["buffered"] <= (1 << 16) + (256 << 10)


def test_a_connection_reset_is_raised_by_read() -> None:
    errors: list[BaseException] = []

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        writer.write(b"220 hi\r\n")
        try:
            while await reader.read(100):
                pass
        except ConnectionError as exc:
            errors.append(exc)

    def client(port: int) -> None:
        s = socket.create_connection(("127.0.0.1", port))
        s.recv(100)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # linger 0: a reset

    async def main() -> None:
        loop = asyncio.get_running_loop()
        streams: list[SessionStream] = []

        def factory() -> SessionStream:
            streams.append(SessionStream(loop, handler))
            return streams[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with asyncio.timeout(WAIT):
            await asyncio.to_thread(client, port)
            while not streams or streams[0].task is None or not streams[0].task.done():
                await asyncio.sleep(0.01)
        server.close()

    uvloop.run(main())
    assert len(errors) == 1 and isinstance(errors[0], ConnectionResetError)


def test_drain_waits_while_the_client_does_not_read() -> None:
    state: dict[str, int] = {}

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        await reader.read(10)  # the client is there
        written = 0
        while not writer._writing_paused:  # the state under test
            writer.write(b"y" * 65536)
            written += 65536
        state["written"] = written
        await writer.drain()  # returns once the client has read enough
        state["after"] = writer.transport.get_write_buffer_size()
        writer.close()

    def client(port: int) -> int:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"go")
            return len(recv_all(s))

    assert serve(handler, client) == state["written"]
    assert state["after"] <= 65536  # under the high-water mark again


def test_starttls_drops_plaintext_sent_behind_it(tmp_path: Path) -> None:
    """CVE-2011-0411: a command pipelined behind STARTTLS is not read as if over TLS."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=mx.test", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    seen: list[bytes] = []

    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        # the command only; the injection, sent in the same segment, stays unread
        assert await reader.read(len(b"STARTTLS\r\n")) == b"STARTTLS\r\n"
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await tls.upgrade(writer, server_ctx, WAIT)
        seen.append(await reader.read(100))
        writer.write(b"250 over tls\r\n")
        await writer.drain()
        writer.close()

    def client(port: int) -> bytes:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", port)) as raw:
            raw.sendall(b"STARTTLS\r\nINJECTED\r\n")
            assert raw.recv(100) == b"220 go ahead\r\n"
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"NOOP\r\n")
                return s.recv(100)

    assert serve(handler, client) == b"250 over tls\r\n"
    assert seen == [b"NOOP\r\n"]


def test_a_failed_session_is_logged_and_its_connection_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(reader: SessionStream, writer: SessionStream) -> None:
        raise RuntimeError("broken session")

    def client(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as s:
            return recv_all(s)

    assert serve(handler, client) == b""  # closed, not left hanging
    assert "broken session" in caplog.text


def recv_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out
