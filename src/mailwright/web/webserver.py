"""A small HTTP/1.1 server for the daemon's metrics and status page (asyncio, no framework).

One request per connection (``Connection: close``): Prometheus and browsers cope,
and there is no keep-alive state to get wrong; bytes a client pipelines after its
first request are never read as a request. The framing is h11's (sans-I/O, the
same style as the SMTP core): ``RequestFraming`` turns bytes into one ``Request``
and a ``Response`` into bytes, and ``parse_head`` reads a head alone. Limits: a
request head of 16 KiB, a body of 64 KiB (forms only; no chunked uploads),
HTTP/1.x only, an origin-form target (``/...``), 10 seconds to send the request,
64 connections at once (more are closed at once). After the answer the server
half-closes and drops what the client still sends for up to 2 seconds (1 MiB),
so that the answer is not lost to a reset. Trusts nothing the client
sends: a malformed request gets a 4xx (or 501) and the connection is closed.
Each request is logged at DEBUG with its method, path and status only: never
the query string, a header or the body, so credentials stay out of the logs.
Reads no settings (the daemon passes address and port).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, unquote

import h11

log = logging.getLogger("mailwright.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
LINGER = 2.0  # seconds, after the answer: see WebServer._linger
LINGER_BYTES = 1 << 20
_READ_SIZE = 64 * 1024
# h11 quotes the offending bytes after the reason ("illegal header line: b'...'"):
# the reason alone goes back to the client.
_QUOTED_INPUT = re.compile(r":\s*b['\"].*", re.DOTALL)


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

    def h11_event(self) -> h11.Response:
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Status"
        headers = [
            ("Content-Type", self.content_type),
            ("Content-Length", str(len(self.body))),
            ("Connection", "close"),
            *self.headers,
        ]
        encoded = [(n.encode("latin-1"), v.encode("latin-1", "replace")) for n, v in headers]
        return h11.Response(status_code=self.status, reason=phrase.encode(), headers=encoded)


Handler = Callable[[Request], Awaitable[Response]]
Head = tuple[str, str, dict[str, str], dict[str, str]]


def _protocol_error(exc: h11.ProtocolError) -> HttpError:
    status = exc.error_status_hint
    if status == 431:
        return HttpError(431, "request head too large")
    if status == 501:
        return HttpError(501, "chunked requests are not supported")
    reason = _QUOTED_INPUT.sub("", str(exc)) or "bad request"
    if reason == "peer unexpectedly closed connection":
        reason = "incomplete request"
    return HttpError(status, reason)


def _head(event: h11.Request) -> Head:
    """Method, decoded path, query and headers of a request h11 has framed."""
    if not event.http_version.startswith(b"1."):
        raise HttpError(400, "bad request line")
    target = event.target.decode("latin-1")
    if not target.startswith("/"):
        raise HttpError(400, "bad request target")
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1"), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    # origin-form is path ["?" query]: urlsplit would read "//host/x" as a host and "/x"
    path, _, raw_query = target.partition("?")
    query = {k: v[0] for k, v in parse_qs(raw_query, max_num_fields=50).items()}
    return event.method.decode("latin-1"), unquote(path), query, headers


class RequestFraming:
    """One connection's framing, sans-I/O: ``feed`` bytes until it returns the
    ``Request``, then ``respond``. Raises ``HttpError`` for a request to refuse."""

    def __init__(self, peer: str = "") -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self._peer = peer
        self._fed = 0
        self.head: Head | None = None  # once h11 has framed it
        self._body = bytearray()
        self.method = "-"  # for HEAD (no body in the answer) and the log line
        self.path = "-"

    def read_size(self) -> int:
        """How many bytes to read next: until the head is framed, never so many that
        a head over ``MAX_HEAD`` could arrive whole and go unnoticed."""
        if self.head is None:
            return max(1, MAX_HEAD + 1 - self._fed)
        return _READ_SIZE

    def feed(self, data: bytes) -> Request | None:
        """Takes what the client sent (``b""`` at its end of file); the request once whole."""
        self._fed += len(data)
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _protocol_error(exc) from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.ConnectionClosed):
                raise _ClientGoneError
            if isinstance(event, h11.Request):
                self._start(event)
            elif isinstance(event, h11.Data):
                self._body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert self.head is not None
                method, path, query, headers = self.head
                return Request(method, path, query, headers, bytes(self._body), self._peer)

    def _start(self, event: h11.Request) -> None:
        self.method = event.method.decode("latin-1")
        self.head = _head(event)
        self.path = self.head[1]
        headers = self.head[3]
        if "transfer-encoding" in headers:
            raise HttpError(501, "chunked requests are not supported")
        if int(headers.get("content-length", "0")) > MAX_BODY:  # h11 checked the digits
            raise HttpError(413, "request body too large")

    def respond(self, response: Response) -> bytes:
        """The response's bytes (no body for HEAD); the connection is then done."""
        data = self._conn.send(response.h11_event()) or b""
        if self.method != "HEAD" and response.body:
            data += self._conn.send(h11.Data(data=response.body)) or b""
        return data + (self._conn.send(h11.EndOfMessage()) or b"")


def parse_head(data: bytes) -> Head:
    """Method, decoded path, query and headers of a request head (without the blank line)."""
    framing = RequestFraming()
    framing.feed(data + b"\r\n\r\n")
    if framing.head is None:
        raise HttpError(400, "incomplete request")
    return framing.head


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
        framing = RequestFraming(str(peer[0]) if isinstance(peer, tuple) else "")
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await self._read(reader, framing)
            response = await self._answer(request)
        except HttpError as exc:
            response = Response(exc.status, exc.message.encode() + b"\n", "text/plain")
        except TimeoutError:
            response = Response(408, b"request timeout\n", "text/plain")
        log.debug("http: %s %s %d", framing.method, framing.path[:200], response.status)
        try:
            writer.write(framing.respond(response))
        except h11.LocalProtocolError:  # a handler's header h11 will not send (a line break)
            log.exception("http: %s %s: bad response", framing.method, framing.path[:200])
            return
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await writer.drain()
            await self._linger(reader, writer)

    async def _answer(self, request: Request) -> Response:
        try:
            return await self.handler(request)
        except HttpError:
            raise
        except Exception:
            log.exception("http: %s %s failed", request.method, request.path[:200])
            return Response(500, b"internal error\n", "text/plain")

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Half-closes, then drops what the client still sends (a pipelined request, a
        body not read) for a moment: closing with unread data would send a reset, which
        can destroy the answer before the client has read it."""
        writer.write_eof()
        dropped = 0
        async with asyncio.timeout(LINGER):
            while dropped < LINGER_BYTES and (chunk := await reader.read(_READ_SIZE)):
                dropped += len(chunk)

    @staticmethod
    async def _read(reader: asyncio.StreamReader, framing: RequestFraming) -> Request:
        while True:
            request = framing.feed(await reader.read(framing.read_size()))
            if request is not None:
                return request
