"""The message ``sendmail`` reads on stdin, made ready to submit.

Reading follows Sendmail (src: collect.c): without ``-i`` a line holding only ``.`` ends
the input (so a person at a terminal can end a message) and a leading ``..`` loses one
dot; with ``-i`` every line is data. A leading mbox ``From `` line is dropped. Line
endings become CRLF (a bare CR or LF is a line end, as a Unix program means it). The
header section ends at the first empty line or at the first line that is not a header
field; the message always leaves with an empty line after its header section.

Then, as a submission server does (RFC 6409 section 8), missing ``From:``, ``Date:`` and
``Message-ID:`` are added; with ``-t`` the recipients come from ``To:``, ``Cc:`` and
``Bcc:`` and ``Bcc:`` is removed. Unqualified addresses in the address fields
(``To: alice``, ``Cc: Ops <root>``) get ``@`` and the local domain, as Sendmail writes
them. Standard library only: this runs on every ``sendmail`` call. Reads no settings;
the caller passes names and limits.
"""

from __future__ import annotations

import os
import re

from mailwright.core import submission

_FIELD = re.compile(rb"^[\x21-\x39\x3b-\x7e]+[ \t]*:")
_CHUNK = 65536
RECIPIENT_FIELDS = ("To", "Cc", "Bcc")
# the fields whose addresses Sendmail qualifies in local mail (its H_FROM and H_RCPT ones)
ADDRESS_FIELDS = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "resent-")
    for name in ("from", "sender", "reply-to", "to", "cc", "bcc")
)


class MessageTooBigError(Exception):
    """The input is larger than ``server.max_message_size``."""


def read_input(fd: int, ignore_dots: bool, limit: int = 0) -> bytes:
    """Read the message from ``fd`` by Sendmail's rules; returns it with CRLF line ends.

    ``limit`` (octets, 0 = none) stops reading early rather than filling memory.
    """
    data = bytearray()
    searched = 0
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            break
        data += chunk
        if limit and len(data) > limit:
            raise MessageTooBigError(f"message larger than {limit} octets")
        if not ignore_dots:
            end = _lone_dot(data, searched)
            if end >= 0:
                del data[end:]
                break
            searched = max(0, len(data) - 3)  # a marker may span two reads
    raw = bytes(data)
    if not ignore_dots:
        if raw == b"." or raw.endswith(b"\n."):  # a dot line ended by EOF, not newline
            raw = raw[:-1]
        raw = _unstuff(raw)
    return to_crlf(_drop_mbox_line(raw))


def _lone_dot(data: bytearray, start: int) -> int:
    """Offset where a line holding only "." starts, or -1."""
    if start == 0 and (data.startswith(b".\n") or data.startswith(b".\r\n")):
        return 0
    hits = [data.find(marker, start) for marker in (b"\n.\n", b"\n.\r\n")]
    found = [h for h in hits if h >= 0]
    return min(found) + 1 if found else -1


def _unstuff(raw: bytes) -> bytes:
    raw = raw.replace(b"\n..", b"\n.")
    return raw[1:] if raw.startswith(b"..") else raw


def _drop_mbox_line(raw: bytes) -> bytes:
    if raw.startswith(b"From "):
        end = raw.find(b"\n")
        return raw[end + 1 :] if end >= 0 else b""
    return raw


def to_crlf(raw: bytes) -> bytes:
    """Every CR, LF or CRLF becomes CRLF; a last line without one gets one."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    out = raw.replace(b"\n", b"\r\n")
    if out and not out.endswith(b"\r\n"):
        out += b"\r\n"
    return out


class Draft:
    """Header fields (raw, with their folding) and the body of the message."""

    __slots__ = ("body", "fields")

    def __init__(self, fields: list[tuple[str, bytes]], body: bytes) -> None:
        self.fields = fields  # (name, whole field including continuation lines and CRLF)
        self.body = body

    @classmethod
    def parse(cls, message: bytes) -> Draft:
        """Split CRLF text into header fields and body."""
        fields: list[tuple[str, bytes]] = []
        pos = 0
        while pos < len(message):
            end = message.find(b"\r\n", pos)
            end = len(message) if end < 0 else end + 2
            line = message[pos:end]
            if line == b"\r\n":
                pos = end
                break
            if line[:1] in (b" ", b"\t") and fields:
                name, raw = fields[-1]
                fields[-1] = (name, raw + line)
            elif _FIELD.match(line):
                name = line.split(b":", 1)[0].rstrip(b" \t").decode("ascii")
                fields.append((name, line))
            else:
                break  # not a header field: the body starts here
            pos = end
        return cls(fields, message[pos:])

    def has(self, name: str) -> bool:
        lname = name.lower()
        return any(n.lower() == lname for n, _ in self.fields)

    def count(self, name: str) -> int:
        lname = name.lower()
        return sum(1 for n, _ in self.fields if n.lower() == lname)

    def values(self, name: str) -> list[str]:
        """Unfolded values of every ``name`` field, decoded as UTF-8."""
        lname = name.lower()
        out = []
        for n, raw in self.fields:
            if n.lower() == lname:
                value = raw.split(b":", 1)[1].replace(b"\r\n", b"")
                out.append(value.decode("utf-8", "replace").strip())
        return out

    def remove(self, name: str) -> None:
        lname = name.lower()
        self.fields = [(n, raw) for n, raw in self.fields if n.lower() != lname]

    def add(self, name: str, value: str) -> None:
        self.fields.append((name, f"{name}: {value}\r\n".encode()))

    def encode(self) -> bytes:
        return b"".join(raw for _, raw in self.fields) + b"\r\n" + self.body

    def header_recipients(self) -> list[str]:
        """Addresses in ``To:``, ``Cc:`` and ``Bcc:`` (``sendmail -t``), in order."""
        values = [v for name in RECIPIENT_FIELDS for v in self.values(name)]
        return parse_address_list(values) if values else []

    def qualify_addresses(self, domain: str) -> None:
        """Append ``@domain`` to every unqualified address of the address fields
        (``To: alice`` becomes ``To: alice@domain``), as Sendmail rewrites the header of
        local mail; names, comments, groups and folding are kept as written."""
        for i, (name, raw) in enumerate(self.fields):
            if name.lower() not in ADDRESS_FIELDS:
                continue
            head, _, value = raw.decode("utf-8", "surrogateescape").partition(":")
            qualified = qualify_address_list(value, domain)
            if qualified != value:
                text = f"{head}:{qualified}"
                self.fields[i] = (name, text.encode("utf-8", "surrogateescape"))

    def complete(self, *, sender: str, full_name: str, hostname: str) -> None:
        """Add what RFC 6409 lets a submission server add: From, Date, Message-ID."""
        if not self.has("From"):
            self.add("From", submission.from_value(sender, full_name))
        if not self.has("Date"):
            self.add("Date", submission.date_value())
        if not self.has("Message-ID"):
            self.add("Message-ID", submission.message_id_value(hostname))


def parse_address_list(values: list[str]) -> list[str]:
    """The addresses of RFC 5322 address lists (names, comments and groups dropped)."""
    from email.utils import getaddresses  # only -t and full-form arguments need it

    return [addr for _, addr in getaddresses(values) if addr]


def split_argument(word: str) -> list[str]:
    """A recipient argument: ``user``, ``a@b``, or a list such as ``"Ann <a@b>, c@d"``."""
    if any(c in word for c in '<>(),"'):
        return parse_address_list([word])
    word = word.strip()
    return [word] if word else []


# ---- qualifying the addresses of a header field ------------------------------------------------
def qualify_address_list(value: str, domain: str) -> str:
    """``value`` (an RFC 5322 address list, as written) with ``@domain`` after each address
    that has none: in ``<...>``, or a lone word (``alice``, ``first.last``, ``"a b"``).
    Display names, comments, groups and anything unparsable are left alone."""
    out: list[str] = []
    segment: list[tuple[str, str]] = []  # (kind, text): "word", "space", "angle", "other"
    pos = 0
    while pos < len(value):
        kind, end = _token(value, pos)
        text = value[pos:end]
        if kind == "separator":
            # before ":" stands a group's name, not an address
            shown = _joined(segment) if text == ":" else _qualified_segment(segment, domain)
            out.append(shown + text)
            segment = []
        else:
            segment.append((kind, text))
        pos = end
    out.append(_qualified_segment(segment, domain))
    return "".join(out)


def _token(value: str, pos: int) -> tuple[str, int]:
    """The kind of the token at ``pos`` and where it ends."""
    char = value[pos]
    if char in ",:;":
        return "separator", pos + 1
    if char in " \t\r\n":
        end = pos
        while end < len(value) and value[end] in " \t\r\n":
            end += 1
        return "space", end
    if char == "(":
        return "other", _comment_end(value, pos)
    if char == "<":
        end = value.find(">", pos)
        return ("angle", end + 1) if end >= 0 else ("other", len(value))
    end = pos
    while end < len(value) and value[end] not in ",:;()<> \t\r\n":
        if value[end] == '"':
            end = _quoted_end(value, end)
        else:
            end += 1
    return "word", end


def _comment_end(value: str, pos: int) -> int:
    depth = 0
    while pos < len(value):
        char = value[pos]
        if char == "\\":
            pos += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        pos += 1
        if depth == 0:
            break
    return min(pos, len(value))


def _quoted_end(value: str, pos: int) -> int:
    pos += 1
    while pos < len(value) and value[pos] != '"':
        pos += 2 if value[pos] == "\\" else 1
    return min(pos + 1, len(value))


def _qualified_segment(segment: list[tuple[str, str]], domain: str) -> str:
    angles = [i for i, (kind, _) in enumerate(segment) if kind == "angle"]
    words = [i for i, (kind, _) in enumerate(segment) if kind == "word"]
    if len(angles) == 1:
        inner = segment[angles[0]][1][1:-1].strip()
        if inner and "@" not in inner:
            segment[angles[0]] = ("angle", f"<{inner}@{domain}>")
    elif not angles and len(words) == 1 and "@" not in segment[words[0]][1]:
        segment[words[0]] = ("word", f"{segment[words[0]][1]}@{domain}")
    return _joined(segment)


def _joined(segment: list[tuple[str, str]]) -> str:
    return "".join(text for _, text in segment)
