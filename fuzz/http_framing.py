"""Fuzz target: the status page's HTTP framing (``web/webserver.py``).

The input is what a client sends on one connection. A real ``WebServer`` listens on
127.0.0.1 (one for the whole run); each input is written to a new connection, whose
sending side is then closed, and the answer is read to the end. The handler behind it
records the request it is given and answers 200. Only the public entry points are
used (``WebServer``, ``Request``, ``Response``), so the target holds whichever parser
frames the requests. Checks:

- every connection ends with one well-formed HTTP/1.1 response (status line, header
  fields, ``Content-Length`` matching the body, or no body for HEAD; a refused request
  whose request line is a HEAD's may have either) within the request timeout, or with
  nothing when the client sent nothing but white space;
- never a 500: the framing raises nothing;
- 200 exactly when the handler was called, and then the request is sound: a method
  that is an RFC 9110 token, a path that starts with ``/``, header names that are
  tokens in lower case, no CR, LF or NUL in a field value (RFC 9110 5.5), a
  ``Content-Length`` of ASCII digits only (RFC 9110 8.6), a body of exactly that many
  octets (at most 64 KiB), and no ``Transfer-Encoding``.
"""

from __future__ import annotations

import asyncio
import atexit
import re
import string
import sys

from _harness import fuzz, instrumented

with instrumented(__name__):
    from mailwright.web.webserver import Request, Response, WebServer

TOKEN = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
MAX_BODY = 64 * 1024
ANSWER_TIMEOUT = 15.0  # the server's own request timeout is 10 s
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*")
_FIELD = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ([^\r\n]*)")
_HEAD_LINE = re.compile(rb"HEAD [^ \r\n]+ HTTP/[0-9.]+\r?\n")


class _Target:
    """One server and one event loop for the whole run; a connection per input."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.requests: list[Request] = []
        self.server = WebServer("127.0.0.1", 0, self._handle)
        self.loop.run_until_complete(self.server.start())
        atexit.register(self.close)

    def close(self) -> None:
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    async def _handle(self, request: Request) -> Response:
        self.requests.append(request)
        return Response(200, b"fuzz handler\n", "text/plain")

    def exchange(self, data: bytes) -> tuple[bytes, list[Request]]:
        self.requests = []
        answer = self.loop.run_until_complete(self._exchange(data))
        return answer, self.requests

    async def _exchange(self, data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.server.port)
        try:
            writer.write(data)
            writer.write_eof()
            async with asyncio.timeout(ANSWER_TIMEOUT):
                await writer.drain()
                return await reader.read()
        except TimeoutError:
            raise AssertionError("no answer within the timeout") from None
        except ConnectionResetError:
            return b"reset"  # the server closed before reading all: checked below
        finally:
            writer.close()


_target: _Target | None = None


def _response(answer: bytes, head_request: bool, body_optional: bool = False) -> int:
    """The status of a well-formed response (the only thing on the connection).

    ``head_request``: the answer to a HEAD has no body (RFC 9110 9.3.2), whatever its
    Content-Length says; ``body_optional``: either is right (an error for a request
    that may have been read as a HEAD before it failed).
    """
    head, sep, body = answer.partition(b"\r\n\r\n")
    assert sep, f"unterminated response head {answer[:80]!r}"
    status_line, *lines = head.split(b"\r\n")
    status = _STATUS_LINE.fullmatch(status_line)
    assert status is not None, f"bad status line {status_line!r}"
    fields = {}
    for line in lines:
        field = _FIELD.fullmatch(line)
        assert field is not None, f"bad response field {line!r}"
        fields[field.group(1).lower()] = field.group(2)
    length = int(fields[b"content-length"])
    allowed = {0} if head_request else {0, length} if body_optional else {length}
    assert len(body) in allowed, "body and Content-Length differ"
    return int(status.group(1))


def _check_request(request: Request) -> None:
    assert request.method and set(request.method) <= TOKEN, f"method {request.method!r}"
    assert request.path.startswith("/"), f"path {request.path!r}"
    for name, value in request.headers.items():
        assert name and set(name) <= TOKEN and name == name.lower(), f"field name {name!r}"
        assert not any(c in value for c in "\r\n\0"), f"{name} value {value!r}"
    assert "transfer-encoding" not in request.headers
    length = request.headers.get("content-length")
    if length is None:
        assert request.body == b""
        return
    assert length.isascii() and length.isdigit(), f"Content-Length {length!r}"
    assert len(request.body) == int(length) <= MAX_BODY


def check(data: bytes) -> None:
    global _target
    if _target is None:
        _target = _Target()
    answer, requests = _target.exchange(data)
    if not answer:
        assert b"\r\n\r\n" not in data and not data.strip(), "no answer to a request"
        return
    if answer == b"reset":
        assert not requests, "a handled request was reset"
        return
    # a HEAD the server refused (say, its body ended short) may be answered without a
    # body: the server read its request line, and a HEAD's answer never carries one
    head_line = _HEAD_LINE.match(data.lstrip(b"\r\n")) is not None
    status = _response(
        answer,
        head_request=bool(requests) and requests[0].method == "HEAD",
        body_optional=head_line and not requests,
    )
    assert status != 500, "the framing failed"
    assert (status == 200) == bool(requests), f"status {status} with {len(requests)} requests"
    for request in requests:
        _check_request(request)


if __name__ == "__main__":
    fuzz(check)
    sys.exit(0)
