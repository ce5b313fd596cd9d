"""8BITMIME downgrade: 8-bit content for a next hop without 8BITMIME (RFC 6152 section 3).

``contains_8bit`` says whether a message really has octets above 127 (many
messages declare BODY=8BITMIME and are plain ASCII). ``downgrade`` converts a
message to 7-bit where that is safe without understanding its structure: a
single-part ``text/*`` body with Content-Transfer-Encoding absent, ``7bit`` or
``8bit`` and an ASCII header section is re-encoded as quoted-printable, streaming,
line by line. Anything else (8-bit header fields, multipart or non-text
bodies, ``binary``, no Content-Type at all, whose charset is then unknown) is
not converted: the caller bounces it with 5.6.3. Trusts nothing about the
content; reads no settings.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mailwright.core.headers import Header, HeaderList

_CONVERTIBLE_CTE = frozenset({"", "7bit", "8bit"})


def contains_8bit(chunks: Iterable[bytes]) -> bool:
    return any(not chunk.isascii() for chunk in chunks)


@dataclass(frozen=True, slots=True)
class Downgraded:
    headers: HeaderList
    body: Callable[[], Iterator[bytes]]  # a fresh iterator over the 7-bit body each call


def downgrade(headers: HeaderList, body: Callable[[], Iterator[bytes]]) -> Downgraded | None:
    """The 7-bit form of the message, or None when no safe conversion exists."""
    if not headers.encode().isascii():
        return None
    ctype = headers.get("Content-Type")
    if ctype is None or headers.count_of("Content-Type") != 1:
        return None
    if not ctype.text.split(";", 1)[0].strip().lower().startswith("text/"):
        return None
    cte = headers.get("Content-Transfer-Encoding")
    if headers.count_of("Content-Transfer-Encoding") > 1:
        return None
    if (cte.text.lower() if cte is not None else "") not in _CONVERTIBLE_CTE:
        return None
    return Downgraded(_qp_headers(headers), lambda: quoted_printable(body()))


def _qp_headers(headers: HeaderList) -> HeaderList:
    out = HeaderList()
    qp = Header.make("Content-Transfer-Encoding", "quoted-printable")
    placed = False
    for h in headers:
        if h.is_("Content-Transfer-Encoding"):
            out.append(qp)
            placed = True
        else:
            out.append(h)
    if not placed:
        index = next(i for i, h in enumerate(out) if h.is_("Content-Type"))
        out.insert(index + 1, qp)
    if out.get("MIME-Version") is None:
        out.insert(next(i for i, h in enumerate(out) if h.is_("Content-Type")), _MIME_VERSION)
    return out


_MIME_VERSION = Header.make("MIME-Version", "1.0")


def quoted_printable(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """RFC 2045 6.7 encoding of a body, whole lines at a time (lines end with CRLF)."""
    carry = b""
    for chunk in chunks:
        data = carry + chunk
        cut = data.rfind(b"\n") + 1
        carry = data[cut:]
        if cut:
            yield binascii.b2a_qp(data[:cut], istext=True)
    if carry:
        # with a CRLF to copy, b2a_qp breaks long lines with CRLF, not LF; then drop it
        yield binascii.b2a_qp(carry + b"\r\n", istext=True)[:-2]
