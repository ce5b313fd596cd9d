"""DnsResolver without a DNS server: address literals, bad names, unreachable servers, the cache.

Lookups against zones are in tests/integration/test_t04_dns_resolver.py (real dnsmasq).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from mailwright.routing.mx import Answer, AnswerCache, DnsResolver, literal_address
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError, MailHost


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A UDP 'name server' on loopback that receives queries and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def resolver_at(sock: socket.socket, lifetime: float = 0.3) -> DnsResolver:
    return DnsResolver(["127.0.0.1"], sock.getsockname()[1], timeout=lifetime, lifetime=lifetime)


def queries_received(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(4096)
        except BlockingIOError:
            return count
        count += 1


@pytest.mark.parametrize(
    ("domain", "address"),
    [
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("[IPv6:2001:DB8:0:0::1]", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
    ],
)
def test_address_literals_need_no_lookup(
    silent_server: socket.socket, domain: str, address: str
) -> None:
    resolver = resolver_at(silent_server)
    assert asyncio.run(resolver.mail_hosts(domain)) == [MailHost(domain, address)]
    assert asyncio.run(resolver.host_addresses(domain)) == [MailHost(domain, address)]
    assert asyncio.run(resolver.host_addresses(address)) == [MailHost(address, address)]
    assert queries_received(silent_server) == 0


@pytest.mark.parametrize(
    ("domain", "problem"),
    [
        ("[192.0.2.300]", "invalid address literal"),
        ("[IPv6:192.0.2.1]", "invalid address literal"),
        ("[192.0.2.1", "invalid address literal"),
        ("a..example", "invalid domain name"),
        ("x" * 64 + ".example", "invalid domain name"),
        ("", "empty domain name"),
        (".", "empty domain name"),
    ],
)
def test_bad_names_fail_permanently_without_a_query(
    silent_server: socket.socket, domain: str, problem: str
) -> None:
    resolver = resolver_at(silent_server)
    with pytest.raises(DnsPermanentError, match=problem):
        asyncio.run(resolver.mail_hosts(domain))
    assert queries_received(silent_server) == 0


def test_a_server_that_never_answers_is_a_temporary_failure(silent_server: socket.socket) -> None:
    resolver = resolver_at(silent_server, lifetime=0.3)
    with pytest.raises(DnsTemporaryError, match=r"type=MX: .*try again \(no answer within 0.3 s\)"):
        asyncio.run(resolver.mail_hosts("example.test"))
    assert queries_received(silent_server) >= 1  # it was asked
    with pytest.raises(DnsTemporaryError, match="type=A"):
        asyncio.run(resolver.host_addresses("mx.example.test"))


def test_literal_address() -> None:
    assert literal_address("mx.example.test") is None
    assert literal_address("192.0.2.1") == "192.0.2.1"
    assert literal_address("[192.0.2.1]") == "192.0.2.1"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


KEY = ("example.test", "MX")
ANSWER = Answer(("10 mx.example.test.",))


def test_cache_keeps_an_answer_for_its_ttl() -> None:
    clock = FakeClock()
    cache = AnswerCache(size=10, max_ttl=3600, clock=clock)
    cache.put(KEY, ANSWER, ttl=60)
    clock.now += 59.9
    assert cache.get(KEY) == ANSWER
    clock.now += 0.1
    assert cache.get(KEY) is None
    assert len(cache) == 0


def test_cache_cuts_long_ttls() -> None:
    clock = FakeClock()
    cache = AnswerCache(size=10, max_ttl=5, clock=clock)
    cache.put(KEY, ANSWER, ttl=86400)
    clock.now += 5
    assert cache.get(KEY) is None


def test_cache_skips_zero_ttls_and_size_zero() -> None:
    clock = FakeClock()
    cache = AnswerCache(size=10, max_ttl=60, clock=clock)
    cache.put(KEY, ANSWER, ttl=0)
    assert cache.get(KEY) is None
    off = AnswerCache(size=0, max_ttl=60, clock=clock)
    off.put(KEY, ANSWER, ttl=60)
    assert off.get(KEY) is None


def test_cache_drops_the_least_recently_used() -> None:
    cache = AnswerCache(size=2, max_ttl=60, clock=FakeClock())
    a, b, c = ("a.test", "A"), ("b.test", "A"), ("c.test", "A")
    cache.put(a, Answer(("192.0.2.1",)), 60)
    cache.put(b, Answer(("192.0.2.2",)), 60)
    assert cache.get(a) is not None  # a is now more recent than b
    cache.put(c, Answer(("192.0.2.3",)), 60)
    assert cache.get(b) is None
    assert cache.get(a) is not None and cache.get(c) is not None
    assert len(cache) == 2


def test_negative_answers_are_cached_too() -> None:
    cache = AnswerCache(size=2, max_ttl=60, clock=FakeClock())
    cache.put(KEY, Answer(nxdomain=True), 30)
    assert cache.get(KEY) == Answer(nxdomain=True)
