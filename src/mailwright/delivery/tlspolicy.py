"""Outbound TLS policy per destination: which ``TlsPolicy`` the SMTP agent uses for a next hop.

Levels (Postfix's names): ``none`` (never STARTTLS), ``may`` (opportunistic, the
default), ``encrypt`` (TLS required, certificate not checked), ``verify`` (TLS
with a certificate that verifies for the mail host's name). A key is a domain,
matching a next hop routed by MX for that domain (``.example.com`` matches its
subdomains only; ``example.com`` matches the domain and its subdomains), or
``[host]``, matching a transport-table or smarthost route to that host. The
most specific key wins. A required level the peer cannot meet defers the mail
(4.7.5, see ``delivery.session``). Settings: ``delivery.tls_default``,
``delivery.tls_policy``, ``delivery.tls_ca_file``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

from mailwright.config.schema import TlsLevel
from mailwright.delivery.session import TlsPolicy
from mailwright.routing.nexthop import NextHop

POLICIES = {
    TlsLevel.NONE: TlsPolicy(starttls=False),
    TlsLevel.MAY: TlsPolicy(),
    TlsLevel.ENCRYPT: TlsPolicy(require=True),
    TlsLevel.VERIFY: TlsPolicy(verify=True),
}


class TlsPolicyTable:
    """Callable as the SMTP agent's ``tls`` source."""

    def __init__(self, entries: Mapping[str, TlsLevel], default: TlsLevel = TlsLevel.MAY):
        self.default = default
        self.hosts: dict[str, TlsLevel] = {}
        self.domains: dict[str, TlsLevel] = {}  # "example.com": itself and below
        self.below: dict[str, TlsLevel] = {}  # ".example.com": below only
        for raw, level in entries.items():
            key = raw.strip().lower().rstrip(".")
            if key.startswith("["):
                self.hosts[key.strip("[]")] = level
            elif key.startswith("."):
                self.below[key[1:]] = level
            else:
                self.domains[key] = level

    def level(self, hop: NextHop) -> TlsLevel:
        host = hop.host.lower().rstrip(".").strip("[]")
        if not hop.mx:
            return self.hosts.get(host, self.default)
        labels = host.split(".")
        for i in range(len(labels)):
            name = ".".join(labels[i:])
            if i == 0 and name in self.domains:
                return self.domains[name]
            if i > 0 and name in self.below:
                return self.below[name]
            if i > 0 and name in self.domains:
                return self.domains[name]
        return self.default

    def __call__(self, hop: NextHop) -> TlsPolicy:
        return POLICIES[self.level(hop)]


def verify_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate checks for ``verify``: the given CAs, else the system's."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))
