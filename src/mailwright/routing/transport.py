"""The transport table: which next hop a recipient domain goes to, when it is not MX.

In the spirit of Sendmail's mailertable and Postfix's transport(5). One
``key value`` per line (see ``routing.table``). Keys: ``example.org`` (that
domain only), ``.example.org`` (its subdomains), ``*`` or ``.`` (every other
domain). Values:

    smtp:[host]:port  smtp:[host]     connect to host's addresses (no MX lookup)
    smtp:host:port    smtp:host       MX lookup of host
    smtp:  (or smtp)  smtp::port      SMTP to the recipient domain's MX
    lmtp:unix:/path   lmtp:[host]:port   lmtp:host:port   (LMTP never uses MX)
    error:5.1.2 text  error:5.7.1:550 text (Sendmail)   error:550 5.1.2 text
    local                             deliver on this host

``esmtp`` and ``relay`` (Sendmail mailer names) mean ``smtp``. IPv6 addresses go in
brackets: ``smtp:[2001:db8::1]:25`` (``[IPv6:...]`` also works). Lookup order:
the exact domain, then ``.parent`` keys from the most specific, then the default.

Also parses the ``routing.smarthost`` setting (``[host]:port``, ``host``...).
Trusts nothing in the file: bad lines become ``TableError`` entries and are
skipped. Reads no settings itself (``routing.router`` passes the path).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import replace

from mailwright.core.address import AddressError, parse_domain
from mailwright.core.hostport import normalize_domain, parse_host_port, parse_port, smarthost_parts
from mailwright.core.reply import Reply
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.table import (
    TableError,
    TableLine,
    keyed_entries,
    read_table,
    split_table,
)

DEFAULT_KEY = "*"
SMTP_NAMES = frozenset({"smtp", "esmtp", "relay"})
DEFAULT_ERROR_TEXT = "Delivery to this domain is refused"

_STATUS = re.compile(r"^([45])\.(\d{1,3})\.(\d{1,3})(?=$|[\s:])")
_CODE = re.compile(r"^([45])\d\d(?=$|\s)")


def destination_hop(domain: str, transport: Transport = Transport.SMTP) -> NextHop:
    """The recipient domain itself as next hop: MX lookup, or an address literal's IP."""
    domain = normalize_domain(domain)
    if domain.startswith("["):
        return NextHop(transport, host=_literal_ip(domain), mx=False)
    return NextHop(transport, host=domain, mx=True)


class TransportTable:
    """Parsed entries (normalised key → next hop) and the lookup order."""

    def __init__(self, entries: Mapping[str, NextHop] | None = None) -> None:
        self.entries: dict[str, NextHop] = dict(entries or {})

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, domain: str) -> NextHop | None:
        """The next hop for ``domain``, or None when no entry (not even a default) matches."""
        domain = normalize_domain(domain)
        for key in _candidate_keys(domain):
            hop = self.entries.get(key)
            if hop is not None:
                return _fill_destination(hop, domain)
        return None


def _candidate_keys(domain: str) -> list[str]:
    keys = [domain]
    if not domain.startswith("["):
        labels = domain.split(".")
        keys += ["." + ".".join(labels[i:]) for i in range(1, len(labels))]
    keys.append(DEFAULT_KEY)
    return keys


def _fill_destination(hop: NextHop, domain: str) -> NextHop:
    """``smtp:`` with no host means the recipient domain (keeping any port)."""
    if hop.transport is not Transport.SMTP or hop.host:
        return hop
    return replace(destination_hop(domain), port=hop.port)


def load_transport_table(path: str | os.PathLike[str]) -> tuple[TransportTable, list[TableError]]:
    """Read and parse a transport table file; bad lines are reported and skipped."""
    lines, errors = read_table(path)
    return _build(lines, errors, str(path))


def parse_transport_table(
    data: bytes, name: str = "<transport>"
) -> tuple[TransportTable, list[TableError]]:
    lines, errors = split_table(data, name)
    return _build(lines, errors, name)


def _build(
    lines: list[TableLine], errors: list[TableError], name: str
) -> tuple[TransportTable, list[TableError]]:
    entries = keyed_entries(lines, errors, name, parse_key, parse_transport)
    return TransportTable(entries), errors


def parse_key(text: str) -> str:
    """A table key in normal form: ``*``, ``.suffix``, a domain or an address literal."""
    if text in ("*", "."):
        return DEFAULT_KEY
    if "@" in text:
        raise ValueError(f"key {text!r}: address keys are not supported, only domains")
    suffix = text.startswith(".")
    domain = text[1:] if suffix else text
    try:
        domain = parse_domain(domain.rstrip("."), utf8=True)
    except AddressError as exc:
        raise ValueError(f"key {text!r}: {exc}") from None
    if suffix and domain.startswith("["):
        raise ValueError(f"key {text!r}: an address literal has no subdomains")
    return ("." if suffix else "") + normalize_domain(domain)


def parse_transport(text: str) -> NextHop:
    """One table value (``smtp:[host]:25``, ``lmtp:unix:/path``, ``error:...``, ``local``)."""
    try:
        return _transport(text)
    except ValueError as exc:
        raise ValueError(f"value {text!r}: {exc}") from None


def _transport(text: str) -> NextHop:
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name in SMTP_NAMES:
        return _smtp(rest.strip())
    if name == "lmtp":
        return _lmtp(rest.strip())
    if name == "local":
        if rest.strip():
            raise ValueError("'local' takes no argument (use aliases to redirect a user)")
        return NextHop(Transport.LOCAL)
    if name == "error":
        return NextHop(Transport.ERROR, error=parse_error(rest))
    raise ValueError(f"unknown transport {name!r} (expected smtp, lmtp, local or error)")


def parse_smarthost(text: str) -> NextHop:
    """The ``routing.smarthost`` setting: ``[host]:port``, ``[host]``, ``host:port`` or ``host``."""
    host, port, mx = smarthost_parts(text)
    return NextHop(Transport.SMTP, host=host, port=port, mx=mx)


def _smtp(rest: str) -> NextHop:
    if not rest or rest.startswith(":"):  # the recipient domain, filled in at lookup
        return NextHop(Transport.SMTP, port=parse_port(rest))
    host, port, mx = parse_host_port(rest)
    return NextHop(Transport.SMTP, host=host, port=port, mx=mx)


def _lmtp(rest: str) -> NextHop:
    if rest.startswith("unix:"):
        path = rest[len("unix:") :]
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValueError("the socket must be an absolute path without spaces")
        return NextHop(Transport.LMTP, socket_path=path, mx=False)
    rest = rest.removeprefix("inet:")
    if not rest:
        raise ValueError("lmtp: needs a destination (unix:/path, [host]:port or host:port)")
    host, port, _ = parse_host_port(rest)
    return NextHop(Transport.LMTP, host=host, port=port, mx=False)


def _literal_ip(literal: str) -> str:
    inner = literal.strip("[]")
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
    return ipaddress.ip_address(inner).compressed


def parse_error(text: str) -> Reply:
    """``error:`` argument: ``D.S.N[:code] [text]``, ``code [D.S.N] [text]`` or ``[text]``.

    A missing code follows the status class (550/450); a missing status follows the
    code (5.0.0/4.0.0); neither means 550 5.0.0.
    """
    rest = text.strip()
    status, code = None, None
    if match := _STATUS.match(rest):
        status, rest = match.group(0), rest[match.end() :]
        if rest.startswith(":"):
            rest = rest[1:]
            if not (code_match := _CODE.match(rest)):
                raise ValueError(f"expected a 4xx or 5xx reply code after '{status}:'")
            code, rest = int(code_match.group(0)), rest[code_match.end() :]
    elif match := _CODE.match(rest):
        code, rest = int(match.group(0)), rest[match.end() :].strip()
        if status_match := _STATUS.match(rest):
            status, rest = status_match.group(0), rest[status_match.end() :]
    if status and code and status[0] != str(code)[0]:
        raise ValueError(f"status {status} does not match reply code {code}")
    klass = status[0] if status else str(code)[0] if code else "5"
    return Reply.of(
        code or int(klass + "50"),
        status or f"{klass}.0.0",
        rest.strip() or DEFAULT_ERROR_TEXT,
    )
