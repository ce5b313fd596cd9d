"""The outbound TLS policy table: which level for which next hop."""

from __future__ import annotations

from mailwright.config.schema import TlsLevel
from mailwright.delivery.session import TlsPolicy
from mailwright.delivery.tlspolicy import TlsPolicyTable
from mailwright.routing.nexthop import NextHop, Transport


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
