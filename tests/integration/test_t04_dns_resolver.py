"""T04: MX resolution against a real DNS server (dnsmasq on a loopback port, test zones).

MX preference order and shuffling among equals, null MX, implicit MX, NXDOMAIN,
SERVFAIL, REFUSED, timeouts, CNAMEs, MX targets without addresses, address
family order, the answer cache, and the settings path.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.config.schema import AddressOrder, Settings
from mailwright.routing.mx import DnsResolver, resolver_from_settings
from mailwright.routing.resolver import (
    DnsPermanentError,
    DnsTemporaryError,
    MailHost,
    NullMxError,
)
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")


def zones(server: DnsServer) -> DnsServer:
    server.zone("example.test")
    server.mx("example.test", "mx1.example.test", 10).mx("example.test", "mx2.example.test", 20)
    server.host("mx1.example.test", "127.0.0.1").host("mx2.example.test", "127.0.0.2", "::2")
    for host in "abc":
        server.mx("equal.test", f"{host}.equal.test", 10)
    server.mx("equal.test", "d.equal.test", 20)
    for number, host in enumerate("abcd", start=1):
        server.host(f"{host}.equal.test", f"127.0.1.{number}")
    server.mx("dual.test", "p.dual.test", 10).mx("dual.test", "q.dual.test", 10)
    server.host("p.dual.test", "127.0.2.1", "::21").host("q.dual.test", "127.0.2.2", "::22")
    server.null_mx("nullmx.test")
    server.host("nomx.test", "127.0.0.9", "::9")
    server.txt("empty.test", "exists, but has neither MX nor address")
    server.cname("alias.test", "example.test")
    server.cname("cnamehost.test", "mx1.example.test")
    server.mx("noaddr.test", "ghost.noaddr.test", 10).mx("noaddr.test", "txt.noaddr.test", 20)
    server.txt("txt.noaddr.test", "no address here")
    server.mx("partial.test", "ghost.partial.test", 10).mx("partial.test", "mx1.example.test", 20)
    server.mx("mixed.test", "ghost.mixed.test", 10).mx("mixed.test", "mx.servfail.test", 20)
    server.mx("same.test", "one.same.test", 10).mx("same.test", "two.same.test", 20)
    server.host("one.same.test", "127.0.3.1").host("two.same.test", "127.0.3.1")
    for pref in range(1, 6):
        server.mx("many.test", f"h{pref}.many.test", pref * 10).host(
            f"h{pref}.many.test", f"127.0.4.{pref}"
        )
    return server.servfail("servfail.test").timeout("timeout.test")


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    with zones(DnsServer(tmp_path_factory.mktemp("dns"))) as server:
        yield server


def make(dns: DnsServer, timeout: float = 2.0, lifetime: float = 3.0, **kwargs: Any) -> DnsResolver:
    return DnsResolver(["127.0.0.1"], dns.port, timeout, lifetime, **kwargs)


def hosts(resolver: DnsResolver, domain: str) -> list[MailHost]:
    return asyncio.run(resolver.mail_hosts(domain))


def test_mx_in_preference_order(dns: DnsServer) -> None:
    resolver = make(dns, cache_size=0)
    for _ in range(10):
        assert hosts(resolver, "example.test") == [
            MailHost("mx1.example.test", "127.0.0.1", 10),
            MailHost("mx2.example.test", "127.0.0.2", 20),
            MailHost("mx2.example.test", "::2", 20),
        ]


def test_equal_preferences_are_shuffled_on_every_lookup(dns: DnsServer) -> None:
    resolver = make(dns)  # with the cache: the shuffle must not be cached
    orders: Counter[tuple[str, ...]] = Counter()
    for _ in range(300):
        found = hosts(resolver, "equal.test")
        assert [h.preference for h in found] == [10, 10, 10, 20]
        assert found[-1].name == "d.equal.test"
        orders[tuple(h.name[0] for h in found[:3])] += 1
    assert set(orders) == set(itertools.permutations("abc"))
    assert min(orders.values()) >= 20, orders  # about 50 each; 20 is far out in the tail


def test_null_mx(dns: DnsServer) -> None:
    with pytest.raises(NullMxError, match=r"nullmx\.test does not accept mail"):
        hosts(make(dns), "nullmx.test")


def test_no_mx_means_the_domains_own_addresses(dns: DnsServer) -> None:
    assert hosts(make(dns), "nomx.test") == [
        MailHost("nomx.test", "127.0.0.9", 0),
        MailHost("nomx.test", "::9", 0),
    ]


def test_no_mx_and_no_address_is_permanent(dns: DnsServer) -> None:
    with pytest.raises(DnsPermanentError, match="no data record") as info:
        hosts(make(dns), "empty.test")
    assert not isinstance(info.value, NullMxError)


def test_nxdomain_is_permanent(dns: DnsServer) -> None:
    resolver = make(dns)
    with pytest.raises(
        DnsPermanentError, match=r"name=nosuch\.example\.test type=MX: Host not found$"
    ):
        hosts(resolver, "nosuch.example.test")
    with pytest.raises(DnsPermanentError, match="type=A: Host not found"):
        asyncio.run(resolver.host_addresses("nosuch.example.test"))


def test_servfail_is_temporary(dns: DnsServer) -> None:
    resolver = make(dns)
    with pytest.raises(DnsTemporaryError, match=r"try again .*SERVFAIL"):
        hosts(resolver, "servfail.test")
    with pytest.raises(DnsTemporaryError):
        asyncio.run(resolver.host_addresses("smtp.servfail.test"))


def test_refused_is_temporary(dns: DnsServer) -> None:
    with pytest.raises(DnsTemporaryError, match="REFUSED"):
        hosts(make(dns), "unknown-zone.test")


def test_timeout_is_temporary(dns: DnsServer) -> None:
    resolver = make(dns, timeout=0.3, lifetime=0.5)
    started = time.monotonic()
    with pytest.raises(DnsTemporaryError, match=r"no answer within 0.5 s"):
        hosts(resolver, "timeout.test")
    assert time.monotonic() - started < 2.0


def test_cname_to_a_domain_with_mx(dns: DnsServer) -> None:
    resolver = make(dns)
    assert hosts(resolver, "alias.test") == hosts(resolver, "example.test")


def test_cname_to_a_host_without_mx_is_an_implicit_mx(dns: DnsServer) -> None:
    # where the alias led is kept (the TLSA base domain for DANE, RFC 7672 2.2.2)
    assert hosts(make(dns), "cnamehost.test") == [
        MailHost("cnamehost.test", "127.0.0.1", 0, canonical="mx1.example.test")
    ]


def test_mx_targets_without_addresses(dns: DnsServer) -> None:
    resolver = make(dns)
    # every target lacks an address (one NXDOMAIN, one NODATA): bounce
    with pytest.raises(DnsPermanentError, match=r"No MX host for noaddr\.test has an address"):
        hosts(resolver, "noaddr.test")
    # a target without address is skipped; the others are used
    assert hosts(resolver, "partial.test") == [MailHost("mx1.example.test", "127.0.0.1", 20)]
    # the rest failed temporarily: defer, the address may come back
    with pytest.raises(DnsTemporaryError, match=r"mx\.servfail\.test"):
        hosts(resolver, "mixed.test")


def test_address_family_order(dns: DnsServer) -> None:
    v6_first = hosts(make(dns, address_order=AddressOrder.IPV6_FIRST), "example.test")
    assert [h.address for h in v6_first] == ["127.0.0.1", "::2", "127.0.0.2"]
    v4_only = hosts(make(dns, address_order=AddressOrder.IPV4_ONLY), "example.test")
    assert [h.address for h in v4_only] == ["127.0.0.1", "127.0.0.2"]
    v6_only = hosts(make(dns, address_order=AddressOrder.IPV6_ONLY), "example.test")
    assert [h.address for h in v6_only] == ["::2"]  # mx1 has no AAAA: skipped
    with pytest.raises(DnsPermanentError, match="type=AAAA"):
        asyncio.run(
            make(dns, address_order=AddressOrder.IPV6_ONLY).host_addresses("mx1.example.test")
        )


def test_within_a_preference_every_ipv4_address_comes_first(dns: DnsServer) -> None:
    for _ in range(10):
        found = hosts(make(dns), "dual.test")
        assert [h.address.count(":") == 0 for h in found] == [True, True, False, False]
        assert {h.name for h in found[:2]} == {"p.dual.test", "q.dual.test"}


def test_host_addresses(dns: DnsServer) -> None:
    found = asyncio.run(make(dns).host_addresses("MX2.example.test."))
    assert found == [MailHost("mx2.example.test", "127.0.0.2"), MailHost("mx2.example.test", "::2")]


def test_duplicate_addresses_are_tried_once(dns: DnsServer) -> None:
    assert hosts(make(dns), "same.test") == [MailHost("one.same.test", "127.0.3.1", 10)]


def test_only_the_best_mx_hosts_are_looked_up(dns: DnsServer) -> None:
    found = hosts(make(dns, max_mx_hosts=2), "many.test")
    assert [h.name for h in found] == ["h1.many.test", "h2.many.test"]
    assert len(hosts(make(dns), "many.test")) == 5


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_answers_until_the_ttl_runs_out(tmp_path: Path) -> None:
    clock = FakeClock()
    with zones(DnsServer(tmp_path, ttl=60)) as server:
        resolver = make(server, clock=clock, timeout=0.2, lifetime=0.2, negative_ttl=30)
        expected = hosts(resolver, "example.test")
        with pytest.raises(DnsPermanentError):
            hosts(resolver, "nosuch.example.test")  # NXDOMAIN
        with pytest.raises(DnsPermanentError):
            hosts(resolver, "empty.test")  # NODATA for MX, A and AAAA
        with pytest.raises(DnsTemporaryError):
            hosts(resolver, "servfail.test")  # failures are not cached
    assert not server.running
    clock.now = 29.0
    assert hosts(resolver, "example.test") == expected  # no server any more: from the cache
    with pytest.raises(DnsPermanentError):
        hosts(resolver, "nosuch.example.test")
    with pytest.raises(DnsPermanentError):
        hosts(resolver, "empty.test")
    clock.now = 30.0
    with pytest.raises(DnsTemporaryError):
        hosts(resolver, "nosuch.example.test")  # negative answers keep negative_ttl
    with pytest.raises(DnsTemporaryError):
        hosts(resolver, "empty.test")
    clock.now = 59.0
    assert hosts(resolver, "example.test") == expected
    clock.now = 60.0
    with pytest.raises(DnsTemporaryError, match="no answer"):
        hosts(resolver, "example.test")


def test_resolver_from_settings(dns: DnsServer) -> None:
    resolver, errors = resolver_from_settings(Settings.model_validate({"dns": dns.settings()}))
    assert errors == []
    found = asyncio.run(resolver.mail_hosts("example.test"))
    assert found[0].name == "mx1.example.test"
