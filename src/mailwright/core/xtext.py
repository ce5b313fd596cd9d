"""RFC 3461 section 4 ``xtext``: the encoding of DSN ENVID and ORCPT values.

``decode`` rejects anything malformed (callers answer 501 5.5.4); ``encode``
is its exact inverse for any string of printable ASCII. Reads no settings.
"""

from __future__ import annotations

import functools
import re

_HEX = "0123456789ABCDEF"
# matched with fullmatch: "$" would also match before a final newline ("abc\n")
_VALID = r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*"
_VALID_UTF8 = r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e\u0080-\U0010ffff]|\+[0-9A-F]{2})*"


@functools.cache
def _valid(utf8: bool) -> re.Pattern[str]:
    """Compiled on first use: only ``decode`` needs it, while ``sendmail -V`` and the
    SMTP client import this module just to encode."""
    return re.compile(_VALID_UTF8 if utf8 else _VALID)


class XtextError(ValueError):
    pass


def decode(text: str, utf8: bool = False) -> str:
    if not _valid(utf8).fullmatch(text):
        raise XtextError("malformed xtext")
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def encode(text: str) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if 33 <= code <= 126 and ch not in "+=":
            out.append(ch)
        elif code < 128:
            out.append(f"+{_HEX[code >> 4]}{_HEX[code & 15]}")
        else:
            out.append(ch)  # UTF-8 passes as is (RFC 6533 utf-8-xtext)
    return "".join(out)
