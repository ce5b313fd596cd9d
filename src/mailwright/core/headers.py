"""RFC 5322 header fields: parsing a header section from a byte stream, and editing it.

``HeaderParser`` is sans-I/O: feed it message bytes (CRLF lines, already
unstuffed) and it returns the header fields once the section is complete, and
whatever bytes follow as the body. Header values are kept as raw bytes so 8-bit
and UTF-8 headers pass through unchanged. A section larger than ``max_size``
ends early and the rest becomes body (Postfix's header_size_limit behaviour).
``add_missing_origin_fields`` completes the section of a trusted client's message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mailwright.core import submission

_FIELD_NAME = re.compile(rb"^[\x21-\x39\x3b-\x7e]+$")
_FOLD = re.compile(r"\r\n(?=[ \t])")


@dataclass(slots=True)
class Header:
    """One header field: ``name`` as written, ``value`` the raw bytes after the colon.

    ``value`` keeps folding (CRLF followed by white space) and the leading space,
    but not the final CRLF.
    """

    name: str
    value: bytes

    @classmethod
    def make(cls, name: str, value: str) -> Header:
        return cls(name, b" " + value.encode("utf-8"))

    def encode(self) -> bytes:
        return self.name.encode("ascii") + b":" + self.value + b"\r\n"

    @property
    def text(self) -> str:
        """The unfolded value, without leading white space."""
        raw = self.value.decode("utf-8", "replace")
        return (_FOLD.sub("", raw) if "\r\n" in raw else raw).strip()

    def is_(self, name: str) -> bool:
        return self.name.lower() == name.lower()


class HeaderList(list[Header]):
    """The header section of a message, in order, with milter-style edits."""

    def get(self, name: str) -> Header | None:
        lname = name.lower()
        for h in self:
            if h.name.lower() == lname:
                return h
        return None

    def all(self, name: str) -> Iterator[Header]:
        lname = name.lower()
        return (h for h in self if h.name.lower() == lname)

    def count_of(self, name: str) -> int:
        lname = name.lower()
        count = 0
        for h in self:
            if h.name.lower() == lname:
                count += 1
        return count

    def nth_index(self, name: str, n: int) -> int | None:
        """Index in the list of the ``n``-th (1-based) field called ``name``."""
        lname = name.lower()
        seen = 0
        for i, h in enumerate(self):
            if h.name.lower() == lname:
                seen += 1
                if seen == n:
                    return i
        return None

    def encode(self) -> bytes:
        return b"".join(h.encode() for h in self)


def encode_headers(headers: Iterable[Header]) -> bytes:
    return b"".join(h.encode() for h in headers)


def add_missing_origin_fields(headers: HeaderList, sender: str, hostname: str) -> None:
    """Append ``From:`` (the envelope sender; ``MAILER-DAEMON@hostname`` for ``<>``),
    ``Date:`` (now) and ``Message-ID:`` (``<unique@hostname>``) when ``headers`` lacks
    them, as Postfix's cleanup does for ``local_header_rewrite_clients``."""
    present = {h.name.lower() for h in headers}
    if "from" not in present:
        address = sender or f"MAILER-DAEMON@{hostname}"
        headers.append(Header.make("From", submission.from_value(address)))
    if "date" not in present:
        headers.append(Header.make("Date", submission.date_value()))
    if "message-id" not in present:
        headers.append(Header.make("Message-ID", submission.message_id_value(hostname)))


class HeaderParser:
    """Splits a message stream into header fields and body bytes."""

    def __init__(self, max_size: int = 1024 * 1024) -> None:
        self.headers = HeaderList()
        self.done = False
        self.separator_seen = False  # an empty line separated headers from body
        self._max_size = max_size
        self._size = 0
        self._buf = bytearray()
        self._field: bytearray | None = None

    def feed(self, data: bytes) -> bytes:
        """Consume ``data``; returns body bytes (only once the header section is done)."""
        if self.done:
            return data
        buf = self._buf
        buf += data
        pos = 0  # lines before it are consumed; removed from the buffer once, at the end
        while not self.done:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                if len(buf) - pos + self._size > self._max_size:
                    del buf[:pos]
                    pos = 0
                    self._finish_oversize()
                break
            line = bytes(buf[pos : end + 2])
            self._size += len(line)
            if self._size > self._max_size:
                del buf[:pos]
                pos = 0
                self._finish_oversize()
                break
            if self._line(line):
                break  # this line is the body's first: it stays in the buffer
            pos = end + 2
        del buf[:pos]
        if self.done:
            body = bytes(buf)
            buf.clear()
            return body
        return b""

    def close(self) -> bytes:
        """End of message: whatever is pending becomes headers or body."""
        if self.done:
            return b""
        self._flush_field()
        rest = bytes(self._buf)
        self._buf.clear()
        self.done = True
        if rest and (rest[:1] in (b" ", b"\t") or b":" in rest):
            # a last header line without CRLF
            name, _, value = rest.partition(b":")
            if _FIELD_NAME.match(name):
                self.headers.append(Header(name.decode("ascii"), value))
                return b""
        return rest

    def _line(self, line: bytes) -> bool:
        """Take one line of the header section; True when it is not one (the body
        starts with it, without a separating empty line)."""
        if line[:1] in (b" ", b"\t") and self._field is not None:
            self._field += line
            return False
        self._flush_field()
        if line == b"\r\n":
            self.separator_seen = True
            self.done = True
            return False
        name, colon, _ = line.partition(b":")
        if colon and _FIELD_NAME.match(name.rstrip(b" \t")):
            self._field = bytearray(line)
            return False
        self.done = True
        return True

    def _flush_field(self) -> None:
        if self._field is None:
            return
        raw = bytes(self._field[:-2]) if self._field.endswith(b"\r\n") else bytes(self._field)
        name, _, value = raw.partition(b":")
        self.headers.append(Header(name.rstrip(b" \t").decode("ascii"), value))
        self._field = None

    def _finish_oversize(self) -> None:
        if self._field is not None:
            if bytes(self._buf[:1]) in (
                b" ",
                b"\t",
            ):  # its continuation was cut: keep it whole, as body
                self._buf[0:0] = self._field
                self._field = None
            else:
                self._flush_field()
        self.done = True
