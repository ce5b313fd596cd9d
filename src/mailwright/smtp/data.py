"""Framing of message content: DATA (dot-terminated, dot-stuffed) and BDAT (counted).

``DataReader`` consumes raw bytes after a ``354`` and yields unstuffed content
until the exact sequence CRLF "." CRLF. A bare LF or bare CR is never a line end
(SMTP smuggling, CVE-2023-51764 class): it is flagged, and with the ``reject``
policy the message is refused once its end has been read. Dot-unstuffing
follows RFC 5321 4.5.2: the first character of a line is deleted if it is ".".
Work is done on whole buffers with ``bytes`` methods, not line by line.

``DataProblem`` tells the caller why the content must be refused; the reader
always consumes to the end of the content first, so the dialogue stays in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mailwright.core.reply import Reply


class BareLinePolicy(Enum):
    REJECT = "reject"
    NORMALIZE = "normalize"  # turn bare CR/LF into CRLF inside the content


@dataclass(frozen=True, slots=True)
class DataLimits:
    max_size: int = 0  # octets of content; 0 = unlimited
    max_line: int = 1000  # octets per line including CRLF; 0 = unlimited
    bare_lines: BareLinePolicy = BareLinePolicy.REJECT


TOO_BIG = Reply.of(552, "5.3.4", "Message size exceeds fixed maximum message size")
BARE_LINE = Reply.of(
    550, "5.6.0", "Message contains a bare <CR> or <LF>; lines must end with CRLF (RFC 5321 2.3.8)"
)


def too_long_line(limit: int) -> Reply:
    return Reply.of(
        550, "5.6.0", f"Message contains a line longer than {limit} octets (RFC 5322 2.1.1)"
    )


class ContentChecks:
    """Size, bare line ending and line length checks shared by DATA and BDAT.

    Chunks may split a CRLF (BDAT does), so a trailing CR is carried over.
    """

    def __init__(self, limits: DataLimits) -> None:
        self.limits = limits
        self.size = 0
        self.too_big = False
        self.bare_line = False
        self.long_line = False
        self._line_len = 0  # length of the current, unfinished line
        self._prev_cr = False  # the previous chunk ended with CR

    def check(self, data: bytes) -> bytes:
        """Account for ``data``; returns what to keep (normalised when asked)."""
        self.size += len(data)
        limits = self.limits
        if self.too_big or (limits.max_size and self.size > limits.max_size):
            self.too_big = True
            return b""
        if not data:
            return data
        if self._has_bare(data):
            if limits.bare_lines is BareLinePolicy.REJECT:
                self.bare_line = True
            else:
                data = self._normalize(data)
        if limits.max_line and not self.long_line:
            self._lines(data)
        return data

    def _has_bare(self, data: bytes) -> bool:
        crlf = data.count(b"\r\n")
        lf = data.count(b"\n")
        cr = data.count(b"\r")
        bare = False
        if self._prev_cr:
            if data.startswith(b"\n"):
                lf -= 1
            else:
                bare = True
        trailing = data.endswith(b"\r")
        if trailing:
            cr -= 1
        self._prev_cr = trailing
        return bare or lf != crlf or cr != crlf

    def _normalize(self, data: bytes) -> bytes:
        if data.startswith(b"\n") and self._carried_cr:
            data = data[1:]  # its CR was already turned into CRLF
        self._carried_cr = data.endswith(b"\r")
        return normalize_line_endings(data)

    _carried_cr = False

    def _lines(self, data: bytes) -> None:
        limit = self.limits.max_line
        last = data.rfind(b"\n")
        if last < 0:
            self._line_len += len(data)
        else:
            first = data.find(b"\n")
            if self._line_len + first + 1 > limit:
                self.long_line = True
            elif last - first > limit:
                inner = data[first + 1 : last].split(b"\n")
                self.long_line = max(map(len, inner)) + 1 > limit
            self._line_len = len(data) - last - 1
        if self._line_len >= limit:
            self.long_line = True

    def finish(self) -> None:
        """End of content: a CR left hanging at the very end is a bare CR."""
        if self._prev_cr and self.limits.bare_lines is BareLinePolicy.REJECT:
            self.bare_line = True

    def problem(self) -> Reply | None:
        if self.too_big:
            return TOO_BIG
        if self.bare_line:
            return BARE_LINE
        if self.long_line:
            return too_long_line(self.limits.max_line)
        return None


def normalize_line_endings(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


_END = b"\r\n.\r\n"


class DataReader:
    """Incremental parser of dot-terminated content."""

    def __init__(self, limits: DataLimits) -> None:
        self.checks = ContentChecks(limits)
        self.done = False
        self._buf = bytearray()
        self._at_line_start = True

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Consume ``data``; returns (content, leftover after the end marker).

        ``content`` is unstuffed and may be empty; ``leftover`` is only non-empty
        once ``done`` is set (it holds the commands pipelined after the dot).
        """
        buf = self._buf
        buf += data
        if self._at_line_start and buf.startswith(b".\r\n"):
            return self._finish(0, 3)
        end = buf.find(_END)
        if end >= 0:
            return self._finish(end + 2, end + 5)
        cut = buf.rfind(b"\r\n")
        if cut >= 0:
            content = self._take(cut + 2)
            self._at_line_start = True
            return content, b""
        max_line = self.checks.limits.max_line or 1 << 20
        if len(buf) > max_line + 2:
            # an overlong line without CRLF: account for it but do not keep it
            keep = 1 if buf.endswith(b"\r") else 0
            chunk = bytes(buf[: len(buf) - keep])
            del buf[: len(buf) - keep]
            content = self._unstuff(chunk)
            self._at_line_start = False
            return self.checks.check(content), b""
        return b"", b""

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return self.checks.check(self._unstuff(chunk))

    def _unstuff(self, chunk: bytes) -> bytes:
        if self._at_line_start and chunk.startswith(b"."):
            chunk = chunk[1:]
        return chunk.replace(b"\r\n.", b"\r\n")

    def _finish(self, content_end: int, marker_end: int) -> tuple[bytes, bytes]:
        content = self._take(content_end) if content_end else b""
        leftover = bytes(self._buf[marker_end - content_end :])
        self._buf.clear()
        self.done = True
        return content, leftover


class BdatReader:
    """Reads exactly ``size`` octets of one BDAT chunk (no dot processing)."""

    def __init__(self, size: int, checks: ContentChecks) -> None:
        self.remaining = size
        self.checks = checks

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        take = data[: self.remaining]
        self.remaining -= len(take)
        return self.checks.check(take), data[len(take) :]


def dot_stuff(content: bytes) -> bytes:
    """Encode content for DATA (RFC 5321 4.5.2): double leading dots, add the end marker.

    Content is expected to use CRLF line endings; a missing final CRLF is added.
    """
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"
