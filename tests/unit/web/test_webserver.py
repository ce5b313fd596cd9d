"""The small HTTP server: request parsing (sans-I/O) and a real server on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from mailwright.web.webserver import (
    MAX_BODY,
    HttpError,
    Request,
    Response,
    WebServer,
    parse_head,
)


def test_parse_head() -> None:
    method, path, query, headers = parse_head(
        b"GET /message/A%2FB?id=1&id=2&x=%3C HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a:  2 "
    )
    assert (method, path) == ("GET", "/message/A/B")
    assert query == {"id": "1", "x": "<"}
    assert headers == {"host": "h", "x-a": "1, 2"}


@pytest.mark.parametrize(
    "head",
    [
        b"GET /",
        b"GET / HTTP/2.0",
        b"GET http://evil/ HTTP/1.1",
        b"G(T / HTTP/1.1",
        b"GET / HTTP/1.1\r\nno colon here",
        b"GET / HTTP/1.1\r\nBad Name: x",
        b"GET / HTTP/1.1\r\n folded: continuation",
    ],
)
def test_malformed_heads_are_400(head: bytes) -> None:
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status == 400


def test_cookies_and_forms() -> None:
    request = Request(
        "POST",
        "/action",
        {},
        {
            "cookie": "a=1; mailwright_session=v1.x; b=",
            "content-type": "application/x-www-form-urlencoded; charset=utf-8",
        },
        b"id=A&id=B&reason=%3Cb%3E+x&empty=",
    )
    assert request.cookie("mailwright_session") == "v1.x"
    assert request.cookie("missing") is None
    assert request.form() == {"id": ["A", "B"], "reason": ["<b> x"], "empty": [""]}
    other = Request("POST", "/", {}, {"content-type": "text/plain"}, b"id=A")
    assert other.form() == {}


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_real_server_answers_and_logs_no_query(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.path == "/boom":
            raise RuntimeError("bug")
        return Response(200, b"hello " + request.body, "text/plain", [("X-Test", "1")])

    async def main() -> list[bytes]:
        server = WebServer("127.0.0.1", 0, handler)
        await server.start()
        port = server.port
        try:
            requests = [
                b"GET /x?secret=hunter2 HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
                b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n",
                b"GET /boom HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1),
                b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
                b"GET /x HTTP/1.1\r\nHost: a\r\n",  # the client gave up
                b"",  # a spare connection, closed unused
            ]
            return [await asyncio.to_thread(exchange, port, r) for r in requests]
        finally:
            await server.stop()

    with caplog.at_level(logging.DEBUG, logger="mailwright.http"):
        answers = asyncio.run(main())
    ok, posted, head, boom, big, chunked, huge, cut, spare = answers
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and ok.endswith(b"\r\n\r\nhello ")
    assert b"Connection: close\r\nX-Test: 1\r\n" in ok
    assert posted.endswith(b"hello abc")
    assert head.startswith(b"HTTP/1.1 200 OK") and head.endswith(b"\r\n\r\n")
    assert boom.startswith(b"HTTP/1.1 500 ")
    assert big.startswith(b"HTTP/1.1 413 ")
    assert chunked.startswith(b"HTTP/1.1 501 ")
    assert huge.startswith(b"HTTP/1.1 431 ")
    assert cut.startswith(b"HTTP/1.1 400 ")
    assert spare == b""
    assert seen[0].query == {"secret": "hunter2"} and seen[0].peer == "127.0.0.1"
    assert "hunter2" not in caplog.text
    assert "http: GET /x 200" in caplog.text
