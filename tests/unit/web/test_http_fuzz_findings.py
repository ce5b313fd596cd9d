"""Regressions for what ``fuzz/http_framing.py`` found, against a real server on loopback."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mailwright.web.webserver import Request, Response, WebServer


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def serve(data: bytes) -> tuple[bytes, list[Request]]:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, b"ok", "text/plain")

    async def main() -> bytes:
        server = WebServer("127.0.0.1", 0, handler)
        await server.start()
        try:
            return await asyncio.to_thread(exchange, server.port, data)
        finally:
            await server.stop()

    return asyncio.run(main()), seen


@pytest.mark.parametrize(
    "request_bytes",
    [
        # a bare LF inside a field: a proxy that ends lines there sees Content-Length: 5
        b"GET / HTTP/1.1\r\nX-A: 1\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
        # Content-Length is 1*DIGIT; int() also took a sign and underscores
        b"POST /action HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST /action HTTP/1.1\r\nContent-Length: 0_3\r\n\r\nabc",
        b"POST /action HTTP/1.1\r\nContent-Length: -0\r\n\r\n",
    ],
)
def test_malformed_framing_is_400(request_bytes: bytes) -> None:
    answer, seen = serve(request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 ") and not seen


@pytest.mark.parametrize("target", ["//", "//evil.example/action", "/a//b"])
def test_an_origin_form_path_is_kept_whole(target: str) -> None:
    # urlsplit read "//evil.example/action" as a host and the path "/action"
    answer, seen = serve(f"GET {target}?x=1 HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert seen[0].path == target and seen[0].query == {"x": "1"}
