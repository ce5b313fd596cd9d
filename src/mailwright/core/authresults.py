"""The one ``Authentication-Results`` field (RFC 8601) our checks write per authserv-id.

Several checks (SPF at MAIL, DKIM at end of message) report into one field: each
adds its results (``spf=pass smtp.mailfrom=...``, ``dkim=pass header.d=...``) to the
transaction's list for the authserv-id and calls ``write``, which removes every
field carrying that authserv-id (a forgery, RFC 8601 section 5, or the one an earlier
check of ours wrote) and puts one field with all of them at the top. Pure data;
reads no settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mailwright.core.headers import Header, HeaderList

_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 2045 token
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def value(text: str) -> str:
    """A property value: a token as is, anything else quoted (RFC 8601 / RFC 2045)."""
    if _TOKEN.match(text):
        return text
    text = _UNPRINTABLE.sub("?", text)  # DNS and client text must not break the header
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_PVALUE_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*@[A-Za-z0-9.-]+$")


def address_value(address: str) -> str:
    """An address as a property value: ``[local-part] "@" domain`` as is (RFC 8601 2.2
    pvalue), anything else as ``value`` makes it."""
    return address if _PVALUE_ADDRESS.match(address) else value(address)


def authserv_id(h: Header) -> str:
    """The authserv-id an ``Authentication-Results`` field starts with (comments dropped)."""
    text = re.sub(r"\([^()]*\)", " ", h.text)
    first = text.split(";", 1)[0].split()
    return first[0].lower() if first else ""


def field(authserv: str, results: Sequence[str]) -> Header:
    """The field: the authserv-id, then one result a line."""
    lines = [authserv, *results]
    return Header("Authentication-Results", (" " + ";\r\n\t".join(lines)).encode("ascii"))


def write(headers: HeaderList, authserv: str, results: Sequence[str]) -> int:
    """Replace the fields carrying ``authserv`` with one listing ``results``, at the top;
    the number of fields removed."""
    ours = authserv.lower()
    found = [h for h in headers if h.is_("Authentication-Results") and authserv_id(h) == ours]
    for h in found:
        headers.remove(h)
    headers.insert(0, field(authserv, results))
    return len(found)
