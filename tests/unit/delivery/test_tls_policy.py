"""The outbound TLS policy table: which level for which next hop."""

from __future__ import annotations

import asyncio

from mailwright.config.schema import TlsLevel
from mailwright.delivery.session import TlsPolicy
from mailwright.delivery.tlspolicy import MtaStsGate, TlsPolicyTable
from mailwright.routing.mtasts import MtaStsPolicies
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolver import MailHost


def hop(host: str, mx: bool = True) -> NextHop:
    return NextHop(Transport.SMTP, host, mx=mx)


TABLE = TlsPolicyTable(
    {
        "bank.test": TlsLevel.VERIFY,
        ".partner.test": TlsLevel.ENCRYPT,
        "partner.test": TlsLevel.MAY,
        "[relay.isp.test]": TlsLevel.VERIFY,
        "Legacy.Test.": TlsLevel.NONE,
    },
    TlsLevel.MAY,
)


def test_levels() -> None:
    assert TABLE.level(hop("bank.test")) is TlsLevel.VERIFY
    assert TABLE.level(hop("mail.bank.test")) is TlsLevel.VERIFY  # and below
    assert TABLE.level(hop("notbank.test")) is TlsLevel.MAY
    assert TABLE.level(hop("partner.test")) is TlsLevel.MAY
    assert TABLE.level(hop("a.partner.test")) is TlsLevel.ENCRYPT  # ".x" only below
    assert TABLE.level(hop("legacy.test")) is TlsLevel.NONE
    assert TABLE.level(hop("relay.isp.test", mx=False)) is TlsLevel.VERIFY
    assert TABLE.level(hop("relay.isp.test")) is TlsLevel.MAY  # an MX route is another key
    assert TABLE.level(hop("bank.test", mx=False)) is TlsLevel.MAY


def test_policies() -> None:
    assert TABLE(hop("bank.test")) == TlsPolicy(verify=True)
    assert TABLE(hop("a.partner.test")).required
    assert TABLE(hop("legacy.test")) == TlsPolicy(starttls=False)
    assert TABLE(hop("other.test")) == TlsPolicy()
    strict = TlsPolicyTable({}, TlsLevel.ENCRYPT)
    assert strict(hop("other.test")).required


def test_entry_is_none_without_a_matching_key() -> None:
    assert TABLE.entry(hop("bank.test")) is TlsLevel.VERIFY
    assert TABLE.entry(hop("notbank.test")) is None
    assert TABLE.entry(hop("relay.isp.test", mx=False)) is TlsLevel.VERIFY
    assert TABLE.entry(hop("other.isp.test", mx=False)) is None


class RecordingResolver:
    """Answers no TXT record and remembers what was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def records(self, name: str, rdtype: str) -> list[str]:
        self.asked.append(f"{name}/{rdtype}")
        return []

    async def host_addresses(self, host: str) -> list[MailHost]:
        self.asked.append(f"{host}/A")
        return []


def test_mta_sts_only_for_mx_routes_without_an_explicit_entry() -> None:
    resolver = RecordingResolver()
    gate = MtaStsGate(MtaStsPolicies(resolver), TABLE)
    for skipped in (
        hop("relay.isp.test", mx=False),  # smarthost / transport table
        hop("[192.0.2.1]"),  # address literal
        hop("bank.test"),  # explicit entry: verify
        hop("mx.partner.test"),  # explicit entry for the subdomains
        hop("legacy.test"),  # explicit entry: none
    ):
        assert asyncio.run(gate(skipped)) is None
    assert resolver.asked == []
    assert asyncio.run(gate(hop("example.test"))) is None
    assert resolver.asked == ["_mta-sts.example.test/TXT"]
