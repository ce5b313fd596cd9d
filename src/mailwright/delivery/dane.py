"""DANE for the SMTP agent (RFC 7672): which MX hosts of a next hop are DANE-protected.

``DaneGate.hosts`` takes the hosts the resolver gave for an MX route and, for each
one whose MX RRset and address records were DNSSEC-validated (``MailHost.secure``,
from the trusted resolver's AD bit), looks up ``_25._tcp.<host>`` TLSA:

- secure records, some usable: a ``DaneHost`` whose ``TlsPolicy`` requires TLS and
  checks the server's chain against them (``routing.dane.check_chain``, the MX host
  name as reference identifier for DANE-TA); a mismatch or a server without
  STARTTLS defers that host with 4.7.5, never plaintext;
- an MX host name that is an alias (CNAME, its expansion validated with the addresses:
  ``Endpoint.canonical``): TLSA records are looked up first at the expanded name, and
  when there are no secure ones there, at the MX host name (RFC 7672 2.2.2); records
  found at the expanded name accept either name as reference identifier (3.2.2);
- secure records, none usable (RFC 7672 2.2): TLS required, not authenticated;
- no records, or insecure ones: not DANE-protected (opportunistic TLS, MTA-STS);
- the lookup failed (SERVFAIL, as a validating resolver answers a bogus record, or a
  timeout): a 4.7.5 deferral for that host (RFC 7672 2.2: never a downgrade).

The port in the TLSA name is always 25, the SMTP port of MX hosts (``delivery.smtp_port``
is for tests). DANE applies to MX routes only, implicit MX included (a secure NODATA
for MX), not to transport-table or smarthost routes, and not where ``tls_policy`` has an
explicit entry for the destination (the administrator's choice wins, as in Postfix),
unless that entry is itself ``dane`` (DANE for this destination, ``everywhere`` or not)
or ``dane-only``: then an MX host that is not DANE-protected (records not validated, or
no validated TLSA records) is deferred with 4.7.5 "... (dane-only)", never tried.
Where DANE applies it takes precedence over MTA-STS (RFC 8461 2; ``delivery.smtp``).

Trusts the AD bit of the resolver given (``delivery.dane_nameservers``), nothing else.
Settings (via the daemon's builder): ``delivery.dane``, ``delivery.dane_nameservers``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from mailwright.config.schema import TlsLevel
from mailwright.core.reply import Reply
from mailwright.delivery.session import Endpoint, TlsPolicy
from mailwright.delivery.tlspolicy import TlsPolicyTable
from mailwright.observability import metrics
from mailwright.routing.dane import TlsaRecord, check_chain, usable_records
from mailwright.routing.mx import Answer
from mailwright.routing.nexthop import NextHop
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError

SMTP_PORT = 25
VERIFIED = "dane-verified"
REQUIRED = "(dane-only)"  # ends the text of a dane-only destination's host without records


class TlsaSource(Protocol):
    async def tlsa(self, host: str, port: int = SMTP_PORT) -> Answer: ...


@dataclass(frozen=True, slots=True)
class DaneHost:
    """A DANE-protected MX host and its usable TLSA records (none: TLS, unauthenticated)."""

    name: str
    records: tuple[TlsaRecord, ...]
    aliases: tuple[str, ...] = ()  # more reference identifiers: the CNAME-expanded name

    def policy(self) -> TlsPolicy:
        if not self.records:
            return TlsPolicy(require=True)
        return TlsPolicy(check=self.check, check_name=VERIFIED)

    def check(self, chain: list[bytes]) -> str | None:
        names = [self.name, *self.aliases]
        problem = check_chain(chain, self.records, names, datetime.now(UTC))
        return None if problem is None else f"DANE verification failed: {problem}"


class DaneGate:
    """The SMTP agent's ``dane`` source."""

    def __init__(
        self, resolver: TlsaSource, table: TlsPolicyTable | None = None, everywhere: bool = True
    ) -> None:
        self.resolver = resolver
        self.table = table
        self.everywhere = everywhere  # delivery.dane on: every MX route without an entry

    async def hosts(
        self, hop: NextHop, endpoints: Sequence[Endpoint]
    ) -> dict[str, DaneHost | Reply]:
        """Host name -> its DANE state; hosts not DANE-protected are left out (under
        ``dane-only``: a deferral each, its text ending in ``REQUIRED``)."""
        if not hop.mx or hop.host.startswith("["):
            return {}
        entry = self.table.entry(hop) if self.table is not None else None
        if entry is None and not self.everywhere:
            return {}
        if entry is not None and not entry.dane:
            return {}  # the admin's explicit choice for this destination
        secure = {e.name: e.canonical for e in endpoints if e.dnssec}
        for _ in dict.fromkeys(e.name for e in endpoints if not e.dnssec):
            metrics.dane("insecure")
        names = list(secure)
        states = await asyncio.gather(*(self._host(name, secure[name]) for name in names))
        found = {name: state for name, state in zip(names, states, strict=True) if state}
        if entry is TlsLevel.DANE_ONLY:
            for name in dict.fromkeys(e.name for e in endpoints):
                if name not in found:
                    text = f"No DNSSEC-validated TLSA records for {name} {REQUIRED}"
                    found[name] = Reply.of(451, "4.7.5", text)
        return found

    async def _host(self, name: str, canonical: str = "") -> DaneHost | Reply | None:
        """The DANE state of MX host ``name``; TLSA records at the name its CNAMEs lead
        to (``canonical``) come first (RFC 7672 2.2.2)."""
        for base in [canonical, name] if canonical else [name]:
            try:
                answer = await self.resolver.tlsa(base, SMTP_PORT)
            except (DnsTemporaryError, DnsPermanentError) as exc:
                metrics.dane("lookup_failed")
                text = f"TLSA lookup for _{SMTP_PORT}._tcp.{base} failed (DANE): {exc}"
                return Reply.of(451, "4.7.5", text)
            if answer.secure and answer.records:
                aliases = (base,) if base != name else ()
                return DaneHost(name, tuple(usable_records(answer.records)), aliases)
        metrics.dane("no_tlsa")
        return None
