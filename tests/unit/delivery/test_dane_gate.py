"""delivery.dane.DaneGate over a TLSA table in memory: which MX hosts are DANE-protected,
what a failed lookup becomes, what the explicit tls_policy and non-MX routes mean, and the
mailwright_dane_results_total counts."""

from __future__ import annotations

import asyncio

from mailwright.config.schema import TlsLevel
from mailwright.core.reply import Reply
from mailwright.delivery.dane import DaneGate, DaneHost
from mailwright.delivery.session import Endpoint
from mailwright.delivery.tlspolicy import TlsPolicyTable
from mailwright.observability import metrics
from mailwright.routing.dane import parse_tlsa
from mailwright.routing.mx import Answer
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolver import DnsTemporaryError

GOOD = "3 1 1 " + "ab" * 32
UNUSABLE = "1 1 1 " + "ab" * 32


class Tlsa:
    def __init__(self, table: dict[str, Answer | Exception]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def tlsa(self, host: str, port: int = 25) -> Answer:
        self.asked.append(f"_{port}._tcp.{host}")
        answer = self.table.get(host, Answer(secure=True))
        if isinstance(answer, Exception):
            raise answer
        return answer


def count(result: str) -> float:
    value = metrics.REGISTRY.get_sample_value("mailwright_dane_results_total", {"result": result})
    return value or 0.0


def hosts(gate: DaneGate, hop: NextHop, *endpoints: Endpoint) -> dict[str, DaneHost | Reply]:
    return asyncio.run(gate.hosts(hop, list(endpoints)))


HOP = NextHop(Transport.SMTP, "example.test")


def test_secure_hosts_with_records_are_protected() -> None:
    source = Tlsa(
        {
            "mx1.example.test": Answer((GOOD,), secure=True),
            "mx2.example.test": Answer((UNUSABLE,), secure=True),
            "mx3.example.test": Answer((GOOD,), secure=False),  # insecure TLSA RRset
        }
    )
    before = count("no_tlsa"), count("insecure")
    states = hosts(
        DaneGate(source),
        HOP,
        Endpoint("mx1.example.test", "192.0.2.1", dnssec=True),
        Endpoint("mx1.example.test", "2001:db8::1", dnssec=True),  # one lookup per name
        Endpoint("mx2.example.test", "192.0.2.2", dnssec=True),
        Endpoint("mx3.example.test", "192.0.2.3", dnssec=True),
        Endpoint("mx4.example.test", "192.0.2.4", dnssec=True),  # no TLSA records
        Endpoint("mx5.example.test", "192.0.2.5", dnssec=False),  # not looked up
    )
    assert states == {
        "mx1.example.test": DaneHost("mx1.example.test", (parse_tlsa(GOOD),)),
        "mx2.example.test": DaneHost("mx2.example.test", ()),
    }
    assert len(source.asked) == 4 and "_25._tcp.mx5.example.test" not in source.asked
    assert (count("no_tlsa"), count("insecure")) == (before[0] + 2, before[1] + 1)
    mx1, mx2 = states["mx1.example.test"], states["mx2.example.test"]
    assert isinstance(mx1, DaneHost) and isinstance(mx2, DaneHost)
    assert mx1.policy().check is not None and mx1.policy().required
    assert mx2.policy().check is None and mx2.policy().required  # RFC 7672 2.2: encrypt
    assert mx1.check([]) == "DANE verification failed: the server presented no certificate"


def test_a_failed_lookup_defers_that_host_with_4_7_5() -> None:
    source = Tlsa({"mx1.example.test": DnsTemporaryError("SERVFAIL")})
    before = count("lookup_failed")
    states = hosts(DaneGate(source), HOP, Endpoint("mx1.example.test", "192.0.2.1", dnssec=True))
    reply = states["mx1.example.test"]
    assert isinstance(reply, Reply) and reply.code == 451 and reply.status == "4.7.5"
    assert "TLSA lookup for _25._tcp.mx1.example.test failed (DANE): SERVFAIL" in reply.text
    assert count("lookup_failed") == before + 1


def test_explicit_tls_policy_and_non_mx_routes_have_no_dane() -> None:
    source = Tlsa({"mx1.example.test": Answer((GOOD,), secure=True)})
    endpoint = Endpoint("mx1.example.test", "192.0.2.1", dnssec=True)
    table = TlsPolicyTable({"example.test": TlsLevel.MAY})
    assert hosts(DaneGate(source, table), HOP, endpoint) == {}
    relay = NextHop(Transport.SMTP, "[mx1.example.test]", mx=False)
    assert hosts(DaneGate(source), relay, endpoint) == {}
    assert source.asked == []
    other = TlsPolicyTable({"other.test": TlsLevel.NONE})
    assert "mx1.example.test" in hosts(DaneGate(source, other), HOP, endpoint)


def test_an_alias_is_looked_up_at_its_expansion_first() -> None:
    # RFC 7672 2.2.2: mx1 is a CNAME for real1 (records there), mx2 for real2 (none there:
    # mx2's own), mx3 for real3 (a failed lookup: deferred, mx3 not asked)
    source = Tlsa(
        {
            "real1.example.test": Answer((GOOD,), secure=True),
            "mx2.example.test": Answer((GOOD,), secure=True),
            "real3.example.test": DnsTemporaryError("SERVFAIL"),
        }
    )
    states = hosts(
        DaneGate(source),
        HOP,
        Endpoint("mx1.example.test", "192.0.2.1", dnssec=True, canonical="real1.example.test"),
        Endpoint("mx2.example.test", "192.0.2.2", dnssec=True, canonical="real2.example.test"),
        Endpoint("mx3.example.test", "192.0.2.3", dnssec=True, canonical="real3.example.test"),
        Endpoint("mx4.example.test", "192.0.2.4", dnssec=False, canonical="real1.example.test"),
    )
    record = (parse_tlsa(GOOD),)
    assert states["mx1.example.test"] == DaneHost(
        "mx1.example.test", record, ("real1.example.test",)
    )
    assert states["mx2.example.test"] == DaneHost("mx2.example.test", record)
    reply = states["mx3.example.test"]
    assert isinstance(reply, Reply) and "_25._tcp.real3.example.test failed" in reply.text
    assert "mx4.example.test" not in states
    assert sorted(source.asked) == [  # mx1's and mx3's own names are never asked
        "_25._tcp.mx2.example.test",
        "_25._tcp.real1.example.test",
        "_25._tcp.real2.example.test",
        "_25._tcp.real3.example.test",
    ]


def test_dane_levels_of_the_tls_policy_table() -> None:
    source = Tlsa(
        {
            "mx1.example.test": Answer((GOOD,), secure=True),
            "mx2.example.test": Answer(secure=True),  # validated, no records
        }
    )
    protected = Endpoint("mx1.example.test", "192.0.2.1", dnssec=True)
    bare = Endpoint("mx2.example.test", "192.0.2.2", dnssec=True)
    insecure = Endpoint("mx3.example.test", "192.0.2.3", dnssec=False)
    record = DaneHost("mx1.example.test", (parse_tlsa(GOOD),))
    dane = TlsPolicyTable({"example.test": TlsLevel.DANE})
    only = TlsPolicyTable({"example.test": TlsLevel.DANE_ONLY})
    # "dane" for a destination: opportunistic DANE there even with delivery.dane off...
    assert hosts(DaneGate(source, dane, everywhere=False), HOP, protected, bare, insecure) == {
        "mx1.example.test": record
    }
    # ... and nowhere else
    other = NextHop(Transport.SMTP, "other.test", mx=True)
    assert hosts(DaneGate(source, dane, everywhere=False), other, protected) == {}
    # "dane-only": every MX host without validated records is deferred, never tried
    states = hosts(DaneGate(source, only, everywhere=False), HOP, protected, bare, insecure)
    assert states["mx1.example.test"] == record
    for name in ("mx2.example.test", "mx3.example.test"):
        reply = states[name]
        assert isinstance(reply, Reply) and (reply.code, reply.status) == (451, "4.7.5")
        assert reply.text == f"No DNSSEC-validated TLSA records for {name} (dane-only)"
