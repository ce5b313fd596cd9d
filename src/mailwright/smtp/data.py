"""Framing of message content: DATA (dot-terminated, dot-stuffed) and BDAT (counted).

``DataReader`` consumes raw bytes after a ``354`` and yields unstuffed content
until the exact sequence CRLF "." CRLF. A bare LF or bare CR is never a line end
(SMTP smuggling, CVE-2023-51764 class): it is flagged, and with the ``reject``
policy the message is refused once its end has been read. Dot-unstuffing
follows RFC 5321 4.5.2: the first character of a line is deleted if it is ".".
Work is done on whole buffers with ``bytes`` methods, not line by line.
Lines longer than ``DataLimits.max_line`` are refused only when that limit is set
(by default it is not: Sendmail and Postfix accept them, and the SMTP client folds
them on the way out); a long line is passed on in pieces, so memory stays bounded.

``DataProblem`` tells the caller why the content must be refused; the reader
always consumes to the end of the content first, so the dialogue stays in step.
"""

from __future__ import annotations

from enum import Enum

from mailwright.core.record import Value
from mailwright.core.reply import Reply
from mailwright.smtp.encoder import DOT_LINE, breaks_are_crlf, normalize_line_endings


class BareLinePolicy(Enum):
    REJECT = "reject"
    NORMALIZE = "normalize"  # turn bare CR/LF into CRLF inside the content


class DataLimits(Value):
    __slots__ = ("bare_lines", "max_line", "max_size")

    def __init__(
        self,
        max_size: int = 0,
        max_line: int = 0,
        bare_lines: BareLinePolicy = BareLinePolicy.REJECT,
    ) -> None:
        self.max_size = max_size  # octets of content; 0 = unlimited
        self.max_line = max_line  # octets per line including CRLF; 0 = unlimited (as Postfix)
        self.bare_lines = bare_lines


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

    Chunks may split a CRLF (BDAT does), so a trailing CR is carried over. A chunk that
    ends with LF and follows a complete line (every DATA chunk but the rare cut of an
    overlong line) takes a fast path: one ``splitlines`` decides both the bare line
    endings and the line lengths, instead of a scan per question.
    """

    def __init__(self, limits: DataLimits) -> None:
        self.limits = limits
        self.size = 0
        self.too_big = False
        self.bare_line = False
        self.long_line = False
        self._line_len = 0  # length of the current, unfinished line
        self._prev_cr = False  # the previous chunk ended with CR
        self._carried_cr = False  # normalize: the previous chunk's final CR became CRLF

    def check(self, data: bytes) -> bytes:
        """Account for ``data``; returns what to keep (normalised when asked)."""
        self.size += len(data)
        limits = self.limits
        if self.too_big or (limits.max_size and self.size > limits.max_size):
            self.too_big = True
            return b""
        if not data:
            return data
        if limits.bare_lines is BareLinePolicy.NORMALIZE:
            data = self._normalize(data)
            if limits.max_line and not self.long_line:
                self._lines(data)
        elif not self.bare_line:  # once refused for a bare line ending, nothing else matters
            self._scan(data)
        return data

    def _scan(self, data: bytes) -> None:
        """Bare line endings and line lengths of ``data`` (reject policy)."""
        if self._prev_cr or data[-1:] != b"\n":
            if self._has_bare(data):
                self.bare_line = True
            elif self.limits.max_line and not self.long_line:
                self._lines(data)
            return
        # (summing the lengths of the lines is cheaper than counting CRs and LFs)
        lengths = list(map(len, data.splitlines()))
        if not breaks_are_crlf(data, lengths):
            self.bare_line = True
            return
        limit = self.limits.max_line
        if (
            limit
            and not self.long_line
            and self._line_len + len(data) > limit
            and (self._line_len + lengths[0] + 2 > limit or max(lengths) + 2 > limit)
        ):
            self.long_line = True
        self._line_len = 0

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
        if self._carried_cr and data.startswith(b"\n"):
            data = data[1:]  # its CR was already turned into CRLF
        self._carried_cr = data.endswith(b"\r")
        if data.count(b"\r\n") == data.count(b"\r") == data.count(b"\n"):
            return data  # CRLF line endings only (a final CR would count as a CR)
        return normalize_line_endings(data)

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


_END = b"\r\n.\r\n"
# a line without CRLF is passed on in pieces once this much of it is held: long lines
# are accepted by default, and memory per session stays bounded whatever their length.
# Small, because the held part is copied again with every read that extends it; more
# than 3, so that a held "." is never mistaken for content before its CRLF arrives.
LINE_FLUSH = 4096


class DataReader:
    """Incremental parser of dot-terminated content.

    The common chunk (no line starting with a dot before the end marker) is handed on
    without copying or unstuffing; anything else takes the general path.
    """

    def __init__(self, limits: DataLimits) -> None:
        self.checks = ContentChecks(limits)
        self.done = False
        self._carry = b""  # an unfinished line (or CR) waiting for the next chunk
        self._at_line_start = True  # the carry (or the next chunk) starts a line

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """Consume ``data``; returns (content, leftover after the end marker).

        ``content`` is unstuffed and may be empty; ``leftover`` is only non-empty
        once ``done`` is set (it holds the commands pipelined after the dot).
        """
        if self._carry:
            data = self._carry + data
            self._carry = b""
        if not (self._at_line_start and data.startswith(b".")):
            dot = DOT_LINE.search(data)
            if dot is None:  # no dot-stuffing and no end marker in here
                cut = data.rfind(b"\r\n") + 2
                if cut >= 2:
                    if cut < len(data):
                        self._carry = data[cut:]
                        data = data[:cut]
                    self._at_line_start = True
                    return self.checks.check(data), b""
            elif data[dot.end() : dot.end() + 2] == b"\r\n":  # the end, nothing stuffed before
                return self._finish(data[: dot.start() + 2], data[dot.end() + 2 :], stuffed=False)
        return self._general(data)

    def _general(self, data: bytes) -> tuple[bytes, bytes]:
        if self._at_line_start and data.startswith(b".\r\n"):
            return self._finish(b"", data[3:])
        end = data.find(_END)
        if end >= 0:
            return self._finish(data[: end + 2], data[end + 5 :])
        cut = data.rfind(b"\r\n")
        if cut >= 0:
            self._carry = data[cut + 2 :]
            content = self._unstuff(data[: cut + 2])
            self._at_line_start = True
            return self.checks.check(content), b""
        if len(data) > LINE_FLUSH:
            # a long line without CRLF: account for it and pass it on, keep only a final CR
            keep = len(data) - 1 if data.endswith(b"\r") else len(data)
            self._carry = data[keep:]
            content = self._unstuff(data[:keep])
            self._at_line_start = False
            return self.checks.check(content), b""
        self._carry = data
        return b"", b""

    def _unstuff(self, chunk: bytes) -> bytes:
        if self._at_line_start and chunk.startswith(b"."):
            chunk = chunk[1:]
        return chunk.replace(b"\r\n.", b"\r\n")

    def _finish(self, raw: bytes, leftover: bytes, stuffed: bool = True) -> tuple[bytes, bytes]:
        """The end marker was found: ``raw`` is the content before it (``stuffed``: maybe)."""
        if stuffed:
            raw = self._unstuff(raw)
        content = self.checks.check(raw) if raw else b""
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
