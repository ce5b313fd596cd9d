"""A small HTTP/1.1 server for the daemon's metrics and status page (asyncio, no framework).

One request per connection (``Connection: close``): Prometheus and browsers cope,
and there is no keep-alive state to get wrong. Parsing is sans-I/O
(``parse_head``, ``Request.form``). Limits: a request head of 16 KiB, a body of
64 KiB (forms only; no chunked uploads), 10 seconds to send the request, 64
connections at once (more are closed at once). Trusts nothing the client sends:
a malformed request gets a 4xx and the connection is closed. Each request is
logged at DEBUG with its method, path and status only: never the query string,
a header or the body, so credentials stay out of the logs. Reads no settings
(the daemon passes address and port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

log = logging.getLogger("mailwright.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")  # RFC 9110


class _ClientGoneError(Exception):
    """The client went away without a request: nothing to answer or log."""


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # percent-decoded, without the query
    query: dict[str, str]  # first value of each parameter
    headers: dict[str, str]  # lower-case names
    body: bytes = b""
    peer: str = ""  # the client's IP address

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def cookie(self, name: str) -> str | None:
        for item in self.header("cookie").split(";"):
            key, eq, value = item.strip().partition("=")
            if eq and key == name:
                return value
        return None

    def form(self) -> dict[str, list[str]]:
        """An ``application/x-www-form-urlencoded`` body (any other body reads as empty)."""
        kind = self.header("content-type").split(";")[0].strip().lower()
        if kind != "application/x-www-form-urlencoded":
            return {}
        try:
            text = self.body.decode("utf-8")
            return parse_qs(text, keep_blank_values=True, max_num_fields=200)
        except (UnicodeDecodeError, ValueError):
            return {}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def encode(self, with_body: bool = True) -> bytes:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Status"
        lines = [
            f"HTTP/1.1 {self.status} {phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        return head + self.body if with_body else head


Handler = Callable[[Request], Awaitable[Response]]


def parse_head(data: bytes) -> tuple[str, str, dict[str, str], dict[str, str]]:
    """Method, decoded path, query and headers of a request head (without the blank line)."""
    try:
        text = data.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        raise HttpError(400, "bad encoding") from None
    request_line, *header_lines = text.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(400, "bad request line")
    method, target, _ = parts
    if not method or not set(method) <= _TOKEN_CHARS:
        raise HttpError(400, "bad method")
    if not target.startswith("/"):
        raise HttpError(400, "bad request target")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or not set(name) <= _TOKEN_CHARS:
            raise HttpError(400, "bad header line")
        key = name.lower()
        value = value.strip(" \t")
        if any(c in value for c in "\r\n\0"):  # RFC 9110 5.5: reject, or a proxy sees two
            raise HttpError(400, "bad header value")
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    # origin-form (RFC 9112 3.2.1): urlsplit would read "//host/x" as a host and "/x"
    path, _, query_text = target.partition("?")
    query = {k: v[0] for k, v in parse_qs(query_text, max_num_fields=50).items()}
    return method, unquote(path), query, headers


class WebServer:
    """Serves ``handler`` on ``address``:``port`` (port 0: any free port, see ``port``)."""

    def __init__(self, address: str, port: int, handler: Handler) -> None:
        self.address = address
        self.port = port
        self.handler = handler
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, host=self.address, port=self.port, limit=MAX_HEAD, reuse_address=True
        )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("http: listening on %s:%d", self.address, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._open):
            task.cancel()
        if self._open:
            await asyncio.wait(list(self._open), timeout=5)
        if self._server is not None:
            await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._open) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._open.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.CancelledError, _ClientGoneError):
            pass
        finally:
            self._open.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else ""
        method, path = "-", "-"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await self._read(reader, client)
            method, path = request.method, request.path
            response = await self._answer(request)
        except HttpError as exc:
            response = Response(exc.status, exc.message.encode() + b"\n", "text/plain")
        except TimeoutError:
            response = Response(408, b"request timeout\n", "text/plain")
        log.debug("http: %s %s %d", method, path[:200], response.status)
        writer.write(response.encode(with_body=method != "HEAD"))
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except HttpError:
            raise
        except Exception:
            log.exception("http: %s %s failed", request.method, request.path[:200])
            return Response(500, b"internal error\n", "text/plain")

    @staticmethod
    async def _read(reader: asyncio.StreamReader, client: str) -> Request:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, "request head too large") from None
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                raise _ClientGoneError from None  # a browser's spare connection, closed unused
            raise HttpError(400, "incomplete request") from None
        method, path, query, headers = parse_head(head[:-4])
        if "transfer-encoding" in headers:
            raise HttpError(501, "chunked requests are not supported")
        text = headers.get("content-length", "0")
        if not (text.isascii() and text.isdigit()):  # 1*DIGIT: int() takes "+5", "1_0"
            raise HttpError(400, "bad Content-Length")
        length = int(text)
        if length > MAX_BODY:
            raise HttpError(413, "request body too large")
        try:
            body = await reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise HttpError(400, "incomplete body") from None
        return Request(method, path, query, headers, body, client)
