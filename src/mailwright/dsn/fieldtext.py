"""Text for the header-style lines a report generates: made safe, then folded.

Values that end up in a report come partly from strangers (remote server replies,
ENVID, ORCPT, addresses), so every value is cleaned before it is written: control
characters (CR and LF above all) become spaces, so no value can start a new field,
and outside RFC 6533 (UTF-8) reports non-ASCII characters become ``?``. Lines are
folded at spaces near 78 octets and never exceed 998 octets (RFC 5322 2.1.1); a
word too long for one line is cut, which adds a space where it was cut.

Dates are RFC 5322 date-times. Reads no settings.
"""

from __future__ import annotations

import email.utils
import re

FOLD_AT = 78  # preferred line length, in octets
_MAX_PIECE = 900  # longest unbroken run; leaves room for "Name: " within 998 octets
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(text: str, *, utf8: bool) -> str:
    """``text`` with control characters made spaces (and non-ASCII made ``?`` unless utf8)."""
    text = _CONTROL.sub(" ", text)
    if not utf8:
        text = text.encode("ascii", "replace").decode("ascii")
    # spaces only: str.strip() would also take U+0085 or U+3000 off a UTF-8 value's ends,
    # which no xtext can protect, so an ENVID or ORCPT would not read back
    return text.strip(" ")


def has_unsafe(text: str, *, utf8: bool) -> bool:
    """Would ``clean`` change anything inside ``text`` (ignoring the ends)?"""
    return bool(_CONTROL.search(text)) or (not utf8 and not text.isascii())


def field(name: str, value: str, *, utf8: bool) -> bytes:
    """``Name: value`` as CRLF-terminated, folded lines; ``value`` is cleaned first."""
    lines: list[str] = []
    current = f"{name}:"
    for sep, piece in _tokens(clean(value, utf8=utf8)):
        fits = _octets(current) + len(sep) + _octets(piece) <= FOLD_AT
        if piece and not fits and current.strip() != f"{name}:":
            lines.append(current)
            current = " " + piece  # the folding white space stands for the separator
        else:
            current += sep + piece
    lines.append(current)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def date(timestamp: float) -> str:
    """An RFC 5322 date-time in local time, e.g. ``Tue, 14 Nov 2023 22:13:20 +0000``."""
    return email.utils.formatdate(timestamp, localtime=True)


def wrap_pieces(word: str, limit: int = _MAX_PIECE) -> list[str]:
    """``word`` cut into pieces of at most ``limit`` octets (whole characters)."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for ch in word:
        width = _octets(ch)
        if size + width > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += width
    pieces.append("".join(current))
    return pieces


def _tokens(value: str) -> list[tuple[str, str]]:
    """(separator, piece) pairs: a space before each word, nothing between cut pieces."""
    tokens: list[tuple[str, str]] = []
    for word in value.split(" "):
        for i, piece in enumerate(wrap_pieces(word)):
            tokens.append((" " if i == 0 else "", piece))
    return tokens


def _octets(text: str) -> int:
    return len(text.encode("utf-8"))
