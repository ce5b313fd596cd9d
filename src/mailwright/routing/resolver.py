"""The DNS seam: what delivery needs to know about a destination domain.

``Resolver`` is the interface the SMTP delivery agent calls; the dnspython
implementation (``routing.mx.DnsResolver``) and the static table used by
tests and DNS-less hosts (``routing.mx.StaticResolver``) implement it.
Failures are exceptions that say whether to defer or to bounce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class MailHost:
    """One host to try, in order: its name (for logs, TLS and HELO checks) and address."""

    name: str  # e.g. "mx1.example.org"
    address: str  # IPv4 or IPv6 address as text
    preference: int = 0
    # DANE (RFC 7672 2.2): the MX RRset (or its secure denial, for an implicit MX) and this
    # host's address records were validated, as a trusted validating resolver said (AD bit)
    secure: bool = False
    # the name the address records were found at when ``name`` is an alias (CNAME), its
    # expansion validated too; "" otherwise (RFC 7672 2.2.2: a TLSA base domain)
    canonical: str = ""


class DnsTemporaryError(Exception):
    """SERVFAIL, timeout, no reachable name server: defer (4.4.3)."""


class DnsPermanentError(Exception):
    """The domain does not exist (NXDOMAIN) or has no usable host: bounce (5.1.2)."""


class NullMxError(DnsPermanentError):
    """RFC 7505 null MX: the domain accepts no mail: bounce at once (5.1.10)."""


class Resolver(Protocol):
    async def mail_hosts(self, domain: str) -> list[MailHost]:
        """Hosts to try for ``domain``: MX targets in preference order (equal preferences
        shuffled), or the domain's own A/AAAA when it has no MX (implicit MX)."""
        ...

    async def host_addresses(self, host: str) -> list[MailHost]:
        """Addresses of one host (``[host]`` next hops, no MX lookup)."""
        ...
