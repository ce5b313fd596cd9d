"""The status page's HTTP framing (h11) against malformed, oversized, slow and pipelined
requests, over real sockets to a real ``WebServer`` on loopback.

Every refusal must come with a status line and ``Connection: close``, and the server
must close the connection itself: the client here keeps its sending side open.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from mailwright.web import webserver
from mailwright.web.webserver import MAX_BODY, MAX_HEAD, Request, Response, WebServer

HOST = b"Host: status.test\r\n"


@contextmanager
def serving() -> Iterator[tuple[int, list[Request]]]:
    """A WebServer on a free loopback port in a thread of its own; yields its port and
    the requests its handler saw."""
    seen: list[Request] = []
    ready = threading.Event()
    port: list[int] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"seen " + request.body, "text/plain")

    async def main() -> None:
        server = WebServer("127.0.0.1", 0, handler)
        await server.start()
        port.append(server.port)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        stopper.append(lambda: loop.call_soon_threadsafe(stop.set))
        ready.set()
        try:
            await stop.wait()
        finally:
            await server.stop()

    stopper: list[Callable[[], object]] = []
    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    assert ready.wait(10)
    try:
        yield port[0], seen
    finally:
        stopper[0]()
        thread.join(10)


def read_to_close(sock: socket.socket) -> bytes:
    """All the server sends until it closes (the client's sending side stays open)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def exchange(port: int, data: bytes, shut: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        return read_to_close(sock)


def status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:80]
    assert b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n")[0] + b"\r\n"
    return int(answer[9:12])


BAD_FRAMING = [
    b"GET /\r\n" + HOST + b"\r\n",  # no version
    b"GET / HTTP/2.0\r\n" + HOST + b"\r\n",
    b"GET / HTTP/1.1 extra\r\n" + HOST + b"\r\n",
    b"GET http://evil/ HTTP/1.1\r\n" + HOST + b"\r\n",  # absolute form
    b"G(T / HTTP/1.1\r\n" + HOST + b"\r\n",
    b"GET / HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host (RFC 9112 section 3.2)
    b"GET / HTTP/1.1\r\n" + HOST + HOST + b"\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"no colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"Bad Name: x\r\n\r\n",
    b"GET / HTTP/1.1\r\n folded: x\r\n" + HOST + b"\r\n",
    b"GET / HTTP/1.1\r\n" + HOST + b"X: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\nHost: a\n\rX: y\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
]


def test_bad_framing_gets_400_and_a_close() -> None:
    with serving() as (port, seen):
        answers = [exchange(port, data) for data in BAD_FRAMING]
    assert [status(a) for a in answers] == [400] * len(BAD_FRAMING)
    assert seen == []


def test_requests_cut_short_get_400() -> None:
    cut = [
        b"GET / HTTP/1.1\r\n" + HOST,
        b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 10\r\n\r\nabc",
    ]
    with serving() as (port, seen):
        answers = [exchange(port, data, shut=True) for data in cut]
        spare = exchange(port, b"", shut=True)
    assert [status(a) for a in answers] == [400, 400]
    assert b"incomplete request" in answers[0]
    assert spare == b"" and seen == []


def post_head(length: int) -> bytes:
    return b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % length


def test_bodies_over_the_limit_get_413_without_being_read() -> None:
    at_limit = b"x" * MAX_BODY
    with serving() as (port, seen):
        # The head alone: the server answers without waiting for the body.
        over = exchange(port, post_head(MAX_BODY + 1))
        # The body too: the server drops it after the answer, so no reset destroys the 413.
        sent = exchange(port, post_head(4 * MAX_BODY) + b"x" * 4 * MAX_BODY)
        ok = exchange(port, post_head(MAX_BODY) + at_limit)
    assert status(over) == status(sent) == 413
    assert status(ok) == 200 and ok.endswith(b"seen " + at_limit)
    assert len(seen) == 1


def test_unsupported_transfer_codings_get_501() -> None:
    codings = [b"chunked", b"gzip", b"gzip, chunked"]
    with serving() as (port, seen):
        answers = [
            exchange(port, b"POST / HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: " + c + b"\r\n\r\n")
            for c in codings
        ]
    assert [status(a) for a in answers] == [501] * len(codings)
    assert seen == []


@pytest.mark.parametrize("piece", [1, 1000, 1 << 20])
def test_heads_over_16_kib_get_431_however_they_arrive(piece: int) -> None:
    filler = MAX_HEAD - 200
    fits = b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"y" * filler + b"\r\n\r\n"
    too_big = b"GET / HTTP/1.1\r\n" + HOST + b"X: " + b"y" * MAX_HEAD + b"\r\n\r\n"

    def send_in_pieces(port: int, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            try:
                for start in range(0, len(data), piece):
                    sock.sendall(data[start : start + piece])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered and closed before the rest
            return read_to_close(sock)

    with serving() as (port, seen):
        small, big = send_in_pieces(port, fits), send_in_pieces(port, too_big)
    assert status(small) == 200
    assert status(big) == 431
    assert len(seen) == 1


def test_slow_clients_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(webserver, "REQUEST_TIMEOUT", 0.5)
    with serving() as (port, seen):
        # One byte at a time, never finishing: the limit is for the whole request,
        # not for each read.
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.setblocking(True)
            trickled = b""
            for byte in b"GET / HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"z" * 100:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    break
                trickled += bytes([byte])
                time.sleep(0.05)  # the client's pace, not a synchronisation
            answer = read_to_close(sock)
        elapsed = time.monotonic() - started
        # A head sent at once, then a body that never comes.
        stalled = exchange(port, b"POST / HTTP/1.1\r\n" + HOST + b"Content-Length: 5\r\n\r\nab")
    assert status(answer) == 408 and elapsed < 4
    assert status(stalled) == 408
    assert seen == []


def test_pipelined_requests_get_one_answer_and_a_close() -> None:
    first = b"GET /one HTTP/1.1\r\n" + HOST + b"\r\n"
    second = b"POST /action HTTP/1.1\r\n" + HOST + b"Content-Length: 7\r\n\r\nid=A&x="
    with serving() as (port, seen):
        answer = exchange(port, first + second)
        body_then_more = exchange(
            port, b"POST /two HTTP/1.1\r\n" + HOST + b"Content-Length: 3\r\n\r\nabc" + first
        )
        # More than the server reads with the first request: dropped, not reset.
        big = post_head(MAX_BODY) + b"x" * MAX_BODY
        before_big = [exchange(port, first + big * 4) for _ in range(5)]
    assert [status(a) for a in before_big] == [200] * 5
    assert status(answer) == 200 and answer.count(b"HTTP/1.1 ") == 1
    assert status(body_then_more) == 200 and body_then_more.endswith(b"seen abc")
    assert body_then_more.count(b"HTTP/1.1 ") == 1
    assert [(r.method, r.path) for r in seen] == [("GET", "/one"), ("POST", "/two")] + [
        ("GET", "/one")
    ] * 5


def test_http_1_0_and_head_requests() -> None:
    with serving() as (port, seen):
        old = exchange(port, b"GET /old HTTP/1.0\r\n\r\n")
        head = exchange(port, b"HEAD /h HTTP/1.1\r\n" + HOST + b"\r\n")
    assert status(old) == 200 and old.endswith(b"\r\n\r\nseen ")
    assert status(head) == 200
    assert head.endswith(b"\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
    assert [r.path for r in seen] == ["/old", "/h"]
