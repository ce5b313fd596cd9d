"""Mail addresses as RFC 5321 defines them (section 4.1.2), with RFC 6531 UTF-8.

Parses the ``<path>`` of MAIL FROM / RCPT TO, ignoring any source route as
RFC 5321 section C asks, and renders addresses back in canonical form. Trusts
nothing: every failure is an ``AddressError`` with a reason fit for a reply.
Reads no settings.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_UTF8 = "\u0080-\U0010ffff"
# compiled on first use (``_pattern``): the UTF-8 classes make compiling slow, and
# every process that handles envelopes imports this module (``sendmail`` too, for the maildrop)
_PATTERNS = {
    "dot_atom": rf"^[{_ATEXT}]+(?:\.[{_ATEXT}]+)*$",
    "dot_atom_utf8": rf"^[{_ATEXT}{_UTF8}]+(?:\.[{_ATEXT}{_UTF8}]+)*$",
    "label": r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$",
    "label_utf8": rf"^[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9{_UTF8}-]*[A-Za-z0-9{_UTF8}])?$",
    "qtext": r"^(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*$",
    "qtext_utf8": rf"^(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*$",
}


@functools.cache
def _pattern(name: str) -> re.Pattern[str]:  # use fullmatch: "$" also matches before a final LF
    return re.compile(_PATTERNS[name])


class AddressError(ValueError):
    """An address that does not parse; ``str()`` is a reason for an SMTP reply."""


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox ``local@domain``; ``domain`` is empty only for bare ``postmaster``."""

    local: str
    domain: str

    def __str__(self) -> str:
        plain = _pattern("dot_atom_utf8").fullmatch(self.local)
        local = self.local if plain else _quote(self.local)
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def is_postmaster(self) -> bool:
        return self.local.lower() == "postmaster"

    @property
    def needs_smtputf8(self) -> bool:
        return not str(self).isascii()

    def with_domain(self, domain: str) -> Address:
        return Address(self.local, domain)


def _quote(local: str) -> str:
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _unquote(quoted: str, utf8: bool) -> str:
    inner = quoted[1:-1]
    pattern = _pattern("qtext_utf8" if utf8 else "qtext")
    if not pattern.fullmatch(inner):
        raise AddressError("invalid character in quoted local part")
    return re.sub(r"\\(.)", r"\1", inner)


def parse_domain(text: str, utf8: bool = False) -> str:
    """Validate a domain or address literal; returns it lower-cased."""
    if not text:
        raise AddressError("empty domain")
    if len(text) > MAX_DOMAIN:
        raise AddressError("domain too long")
    if text.startswith("["):
        return _parse_literal(text)
    label = _pattern("label_utf8" if utf8 else "label")
    parts = text.split(".")
    for part in parts:
        if not part:
            raise AddressError("empty label in domain")
        if len(part) > 63 or not label.fullmatch(part):
            raise AddressError("invalid domain")
    return text.lower()


def _parse_literal(text: str) -> str:
    if not text.endswith("]"):
        raise AddressError("unterminated address literal")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise AddressError("invalid address literal") from None


def _split_mailbox(text: str) -> tuple[str, str]:
    if text.startswith('"'):
        end = 1
        while end < len(text):
            if text[end] == "\\":
                end += 2
                continue
            if text[end] == '"':
                break
            end += 1
        else:
            raise AddressError("unterminated quoted local part")
        local, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith("@"):
            raise AddressError("text after quoted local part")
        return local, rest[1:] if rest else ""
    local, at, domain = text.rpartition("@")
    if not at:
        return text, ""
    return local, domain


def parse_mailbox(text: str, utf8: bool = False, allow_bare_postmaster: bool = False) -> Address:
    """Parse ``local@domain`` (no angle brackets)."""
    if not utf8 and not text.isascii():
        raise AddressError("non-ASCII address requires SMTPUTF8")
    raw_local, raw_domain = _split_mailbox(text)
    if raw_local.startswith('"'):
        local = _unquote(raw_local, utf8)
    else:
        local = raw_local
        pattern = _pattern("dot_atom_utf8" if utf8 else "dot_atom")
        if not pattern.fullmatch(local):
            raise AddressError("invalid local part")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    if not raw_domain:
        if allow_bare_postmaster and local.lower() == "postmaster" and "@" not in text:
            return Address("postmaster", "")
        raise AddressError("address must include a domain")
    return Address(local, parse_domain(raw_domain, utf8))


def parse_path(text: str, utf8: bool = False, allow_null: bool = False) -> Address | None:
    """Parse an SMTP ``<path>``; returns None for the null path ``<>`` when allowed.

    A source route (``<@a,@b:user@c>``) is accepted and ignored (RFC 5321 section C).
    """
    if len(text.encode()) > MAX_PATH + 2:
        raise AddressError("path too long")
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError("address must be enclosed in <>")
    inner = text[1:-1]
    if not inner:
        if allow_null:
            return None
        raise AddressError("null address not allowed here")
    if inner.startswith("@"):
        route, colon, mailbox = inner.partition(":")
        if not colon:
            raise AddressError("invalid source route")
        for hop in route.split(","):
            if not hop.startswith("@"):
                raise AddressError("invalid source route")
            parse_domain(hop[1:], utf8)
        inner = mailbox
    return parse_mailbox(inner, utf8, allow_bare_postmaster=not allow_null)
