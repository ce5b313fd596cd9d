"""Clients' host names from forward-confirmed reverse DNS, against a real DNS server
(dnsmasq on loopback): the name in ``Received:`` and the log, ``Connect:`` access rules by
host name and domain, a PTR that its name's A record does not confirm, a DNS server that
does not answer (the mail still goes), and loopback as ``localhost``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.routing.clientname import ClientNames
from mailwright.routing.mx import DnsResolver
from tests.support.daemon import Mailwright, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer
from tests.support.security import Client

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

ACCESS = """\
Connect:blocked.example.test        REJECT
Connect:spam.test                   ERROR:5.7.1:Your network is not welcome
"""


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.zone("in-addr.arpa", "example.test", "spam.test")
    server.host("good.example.test", "127.0.0.21")  # A and the matching PTR
    server.host("blocked.example.test", "127.0.0.22")
    server.host("host9.spam.test", "127.0.0.23")
    # a PTR claiming a name whose A record is another address: not confirmed
    server.host("victim.example.test", "127.0.0.99")
    server.option("--ptr-record=24.0.0.127.in-addr.arpa,victim.example.test")
    with server:
        yield server


@pytest.fixture(scope="module")
def mw(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    root = tmp_path_factory.mktemp("mw")
    (root / "access").write_text(ACCESS)
    config: dict[str, Any] = {
        "server": {"reverse_dns": True},
        "dns": dns.settings(),
        "access": {"table": str(root / "access")},
        "relay": {"networks": ["127.0.0.0/8"]},
    }
    with running(root, config) as daemon:
        yield daemon


def send(mw: Mailwright, source: str) -> str:
    """Send one message from ``source``; its queue id."""
    c = Client(mw.port, source)
    assert c.greeting.startswith("220"), c.greeting
    c.ehlo("client.test")
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    assert c.cmd("RCPT TO:<b@y.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd("Subject: hi\r\n\r\nbody\r\n.")
    c.close()
    assert reply.startswith("250"), reply
    return reply.split()[2]


def received(mw: Mailwright, queue_id: str) -> str:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        header = store.read_headers(queue_id).get("Received")
        assert header is not None
        return header.text
    finally:
        store.close()


def test_a_confirmed_name_is_in_received_and_the_log(mw: Mailwright) -> None:
    queue_id = send(mw, "127.0.0.21")
    assert "from client.test (good.example.test [127.0.0.21])" in received(mw, queue_id)
    mw.wait_log(f"{queue_id}: from=<a@x.test>")
    assert any(
        queue_id in line and "relay=good.example.test [127.0.0.21]" in line for line in mw.log
    )


def test_a_ptr_its_name_does_not_confirm_is_not_used(mw: Mailwright) -> None:
    queue_id = send(mw, "127.0.0.24")
    text = received(mw, queue_id)
    assert "from client.test ([127.0.0.24])" in text
    assert "victim" not in text


def test_no_ptr_at_all_means_the_address_only(mw: Mailwright) -> None:
    assert "([127.0.0.25])" in received(mw, send(mw, "127.0.0.25"))


def test_connect_rules_match_the_host_name_and_its_domain(mw: Mailwright) -> None:
    blocked = Client(mw.port, "127.0.0.22")
    assert blocked.greeting.startswith("554 mx.test Access denied"), blocked.greeting
    blocked.close()
    spam = Client(mw.port, "127.0.0.23")
    assert spam.greeting == "554 mx.test Your network is not welcome", spam.greeting
    spam.close()


def test_loopback_is_localhost_without_a_query(mw: Mailwright, dns: DnsServer) -> None:
    before = dns.log_path.read_text().count("1.0.0.127.in-addr.arpa")
    assert "(localhost [127.0.0.1])" in received(mw, send(mw, "127.0.0.1"))
    assert dns.log_path.read_text().count("1.0.0.127.in-addr.arpa") == before


def test_a_silent_name_server_gives_no_name_within_the_timeout(tmp_path: Path) -> None:
    silent = DnsServer(tmp_path / "dns").timeout("in-addr.arpa")
    with silent:
        resolver = DnsResolver([silent.address], silent.port, timeout=0.2, lifetime=5)
        names = ClientNames(resolver.ptr, resolver.host_addresses, timeout=0.5)
        assert asyncio.run(names.lookup("127.0.0.21")) == ""


def test_lookups_through_the_resolver(dns: DnsServer) -> None:
    resolver = DnsResolver([dns.address], dns.port, timeout=2, lifetime=3)
    names = ClientNames(resolver.ptr, resolver.host_addresses, timeout=5)

    async def main() -> list[str]:
        return [await names.lookup(ip) for ip in ("127.0.0.21", "127.0.0.24", "::1", "nonsense")]

    assert asyncio.run(main()) == ["good.example.test", "", "localhost", ""]
