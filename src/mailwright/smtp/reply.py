"""Parsing the replies an SMTP/LMTP server sends (RFC 5321 4.2, RFC 2034), sans-I/O.

``ReplyParser`` takes received bytes in any split and returns complete replies,
multi-line ones joined, with the RFC 3463 enhanced status code taken out of the
text. It trusts nothing from the peer: a line that is not ``NNN[ -]text``, a
continuation line with another code, a line or reply beyond the size limits, or
a reply code outside 2xx-5xx makes the parser fail for good with a
``ReplyError`` (the caller treats that as a protocol error: a temporary
failure). Bare LF line ends are tolerated, as most clients do. Every reply it
returns is marked ``from_peer``. Reads no settings.
"""

from __future__ import annotations

import functools
import re

from mailwright.core.reply import Reply

MAX_LINE = 4096  # RFC 5321 says 512; be liberal, but bounded
MAX_REPLY = 64 * 1024  # all lines of one reply together
_STATUS = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: +|$)")  # \d: any script's digits


class ReplyError(Exception):
    """The peer sent something that is not an SMTP reply."""


# a peer says the same few things over and over ("2.1.0 Ok"): each split once
@functools.lru_cache(maxsize=256)
def split_status(code: int, text: str) -> tuple[str | None, str]:
    """``"5.1.1 No such user"`` -> ``("5.1.1", "No such user")``; the class must match the code."""
    match = _STATUS.match(text)
    if match is None or int(match.group(1)) != code // 100:
        return None, text
    return f"{match.group(1)}.{int(match.group(2))}.{int(match.group(3))}", text[match.end() :]


# a peer also says the same whole lines over and over: each one-line reply parsed once
@functools.lru_cache(maxsize=256)
def _one_line(raw: bytes) -> Reply | None:
    """``raw`` (``NNN text``, no line end) as a reply; None unless it is a well-formed
    reply of one line (the parser's own checks then take it and say what is wrong)."""
    head = raw[:3]
    if len(raw) > MAX_LINE or raw[3:4] not in (b" ", b"") or not head.isdigit():
        return None
    code = int(head)
    if not 200 <= code < 600 or code % 100 // 10 > 5:
        return None
    status, text = split_status(code, raw[4:].decode("utf-8", "replace"))
    return Reply.of(code, status, text, from_peer=True)


def status_or_default(reply: Reply) -> str:
    """The enhanced status of a reply, or ``X.0.0`` from its class when the peer sent none."""
    return reply.status or f"{reply.code // 100}.0.0"


class ReplyParser:
    """Incremental reply framing: ``feed`` bytes, then ``next_reply`` until it returns None."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[str] = []
        self._code = 0
        self._size = 0
        self.error: str | None = None

    def feed(self, data: bytes) -> None:
        if self.error is None:
            self._buf += data

    @property
    def pending(self) -> bool:
        """Bytes received that are not yet part of a complete reply."""
        return bool(self._buf) or bool(self._lines)

    def clear(self) -> None:
        """Forget buffered input (after STARTTLS nothing said before may be used)."""
        self._buf.clear()
        self._lines.clear()
        self._size = 0

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None when more data is needed.

        Raises ``ReplyError`` (now and on every later call) for malformed input.
        """
        if self.error is not None:
            raise ReplyError(self.error)
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._fail("reply line too long")
                return None
            raw = bytes(self._buf[:end])
            del self._buf[: end + 1]
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not self._lines and (reply := _one_line(line)) is not None:
                return reply
            reply = self._line(line)
            if reply is not None:
                return reply

    def _fail(self, why: str) -> None:
        self.error = why
        self._buf.clear()
        self._lines.clear()
        raise ReplyError(why)

    def _line(self, raw: bytes) -> Reply | None:
        if len(raw) > MAX_LINE:
            self._fail("reply line too long")
        self._size += len(raw)
        if self._size > MAX_REPLY:
            self._fail("reply too long")
        head = raw[:3]
        sep = raw[3:4]
        if len(head) != 3 or not head.isdigit() or sep not in (b"", b" ", b"-"):
            self._fail(f"malformed reply line {raw[:80]!r}")
        code = int(head)
        if not 200 <= code < 600 or code % 100 // 10 > 5:
            self._fail(f"reply code {code} out of range")
        if self._lines and code != self._code:
            self._fail(f"continuation line with code {code} after {self._code}")
        self._code = code
        self._lines.append(raw[4:].decode("utf-8", "replace"))
        if sep == b"-":
            return None
        return self._finish()

    def _finish(self) -> Reply:
        code, lines = self._code, self._lines
        self._lines = []
        self._size = 0
        status, first = split_status(code, lines[0])
        texts = [first]
        for line in lines[1:]:
            line_status, text = split_status(code, line)
            texts.append(text if line_status == status else line)
        return Reply.of(code, status, *texts, from_peer=True)
