"""Outbound TLS policy per destination: which ``TlsPolicy`` the SMTP agent uses for a next hop.

Levels (Postfix's names): ``none`` (never STARTTLS), ``may`` (opportunistic, the
default), ``encrypt`` (TLS required, certificate not checked), ``verify`` (TLS
with a certificate that verifies for the mail host's name), ``dane`` and
``dane-only`` (DANE for that destination: ``delivery.dane``). A key is a domain,
matching a next hop routed by MX for that domain (``.example.com`` matches its
subdomains only; ``example.com`` matches the domain and its subdomains), or
``[host]``, matching a transport-table or smarthost route to that host. The
most specific key wins. A required level the peer cannot meet defers the mail
(4.7.5, see ``delivery.session``).

``MtaStsGate`` hands the SMTP agent a domain's MTA-STS policy (``routing.mtasts``)
for MX routes only, and only where ``tls_policy`` has no entry for the
destination: an explicit entry wins over MTA-STS. Settings: ``delivery.tls_default``,
``delivery.tls_policy``, ``delivery.tls_ca_file`` (also for the policy fetch).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path

from mailwright.config.schema import TlsLevel
from mailwright.delivery.session import TlsPolicy
from mailwright.routing.mtasts import MtaStsPolicies, StsPolicy
from mailwright.routing.nexthop import NextHop

POLICIES = {
    TlsLevel.NONE: TlsPolicy(starttls=False),
    TlsLevel.MAY: TlsPolicy(),
    TlsLevel.ENCRYPT: TlsPolicy(require=True),
    TlsLevel.VERIFY: TlsPolicy(verify=True),
    # DANE levels (delivery.dane's DaneGate decides per MX host); where DANE does not
    # apply: opportunistic, and TLS required for dane-only (hosts without records are
    # deferred before, but a message with TLS-Required: No skips DANE)
    TlsLevel.DANE: TlsPolicy(),
    TlsLevel.DANE_ONLY: TlsPolicy(require=True),
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
        entry = self.entry(hop)
        return self.default if entry is None else entry

    def entry(self, hop: NextHop) -> TlsLevel | None:
        """The level of the most specific key for ``hop``; None when no key matches."""
        host = hop.host.lower().rstrip(".").strip("[]")
        if not hop.mx:
            return self.hosts.get(host)
        labels = host.split(".")
        for i in range(len(labels)):
            name = ".".join(labels[i:])
            if i == 0 and name in self.domains:
                return self.domains[name]
            if i > 0 and name in self.below:
                return self.below[name]
            if i > 0 and name in self.domains:
                return self.domains[name]
        return None

    def __call__(self, hop: NextHop) -> TlsPolicy:
        return POLICIES[self.level(hop)]


class MtaStsGate:
    """Callable as the SMTP agent's ``mta_sts`` source: the policy for an MX route."""

    def __init__(self, policies: MtaStsPolicies, table: TlsPolicyTable | None = None) -> None:
        self.policies = policies
        self.table = table

    async def __call__(self, hop: NextHop) -> StsPolicy | None:
        if not hop.mx or hop.host.startswith("["):
            return None  # transport-table and smarthost routes, address literals
        if self.table is not None and self.table.entry(hop) is not None:
            return None  # the admin's explicit choice for this destination
        return await self.policies.policy(hop.host)

    def problem(self, hop: NextHop) -> tuple[str, str] | None:
        """Why the destination, which publishes an MTA-STS record, has no policy (an
        RFC 8460 result type and a short reason), for TLS reports; asked after
        ``__call__``."""
        if not hop.mx or hop.host.startswith("["):
            return None
        if self.table is not None and self.table.entry(hop) is not None:
            return None
        return self.policies.problem(hop.host)


def verify_context(ca_file: Path | None) -> ssl.SSLContext:
    """Certificate checks for ``verify``: the given CAs, else the system's."""
    if ca_file is None:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=str(ca_file))
