"""DNS blocklists against a real DNS server (dnsmasq on loopback) and a real daemon: a
listed client is refused at RCPT with the configured reply and a Sendmail-style log line,
postmaster stays reachable, answer filters, Spamhaus' "refused" codes, a zone whose
servers fail (SERVFAIL: not counted), the exemptions
(relay networks, AUTH, ``dnsbl.allow``, an access ``Connect:`` OK), an IPv6 client, and a
name server that never answers (the mail goes, within the timeout)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, free_port, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer, require_peer
from tests.support.security import Client, plain, secure_config

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

REPLY = "554 5.7.1 Service unavailable; client [{ip}] blocked using {zone}; {txt}"
LISTED = "127.0.0.2"
IPV6_NAME = "1." + "0." * 31 + "bl.test"  # ::1 in nibble form


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.zone("bl.test", "filtered.test")
    server.host("2.0.0.127.bl.test", "127.0.0.2").txt("2.0.0.127.bl.test", "See bl.test/2")
    server.host("3.0.0.127.filtered.test", "127.0.0.3")  # not in the zone's answer list
    server.host("4.0.0.127.filtered.test", "127.0.0.4")  # in it
    server.host("6.0.0.127.bl.test", "127.255.255.254")  # Spamhaus: query refused
    server.host("8.0.0.127.bl.test", "127.0.0.2")  # listed, but logs in
    server.host("9.0.0.127.bl.test", "127.0.0.2")  # listed, but in dnsbl.allow
    server.host("10.0.0.127.bl.test", "127.0.0.2")  # listed, but access Connect: OK
    server.host("11.0.0.127.bl.test", "127.0.0.2")  # listed, but in relay.networks
    server.host("12.0.0.127.bl.test", "127.0.0.1")  # RFC 5782: not a listing
    server.host(IPV6_NAME, "127.0.0.2")
    server.servfail("broken.test")  # a zone whose servers fail
    with server:
        yield server


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def mw(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    root = tmp_path_factory.mktemp("mw")
    (root / "access").write_text("Connect:127.0.0.10  OK\n")
    config: dict[str, Any] = secure_config(
        root,
        dns=dns.settings(),
        dnsbl={
            "zones": ["bl.test", "filtered.test=127.0.0.2,127.0.0.4", "broken.test"],
            "reply": REPLY,
            "allow": ["127.0.0.9/32"],
        },
        access={"table": str(root / "access")},
        relay={"networks": ["127.0.0.11/32"]},
    )
    config["auth"]["plaintext_on_loopback"] = True
    daemon = Mailwright(root, config)
    if ipv6_loopback():
        daemon.config["listeners"].append({"address": "::1", "port": free_port(), "kind": "smtp"})
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


def session(mw: Mailwright, source: str) -> Client:
    c = Client(mw.port, source)
    assert c.greeting.startswith("220"), c.greeting
    c.ehlo("client.test")
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    return c


def test_a_listed_client_is_refused_at_rcpt_and_logged(mw: Mailwright) -> None:
    c = session(mw, LISTED)
    reply = c.cmd("RCPT TO:<user@mx.test>")
    assert reply == (
        "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test; See bl.test/2"
    )
    assert c.cmd("RCPT TO:<u@mx.test>").startswith("554 5.7.1"), "every RCPT"
    c.close()
    line = mw.wait_log("arg1=<user@mx.test>, relay=[127.0.0.2]")
    assert "ruleset=check_rcpt" in line
    assert "reject=554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test" in line


def test_postmaster_is_still_reachable(mw: Mailwright) -> None:
    c = session(mw, LISTED)
    assert c.cmd("RCPT TO:<Postmaster@mx.test>").startswith("250")
    assert c.cmd("RCPT TO:<postmaster>").startswith("250")
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("554")
    assert c.cmd("DATA").startswith("354")
    assert c.cmd("Subject: why\r\n\r\nplease unlist me\r\n.").startswith("250")
    c.close()


def test_a_client_not_listed_is_accepted(mw: Mailwright) -> None:
    for source in ("127.0.0.5", "127.0.0.12"):  # NXDOMAIN; 127.0.0.1 answer
        c = session(mw, source)
        assert c.cmd("RCPT TO:<user@mx.test>").startswith("250"), source
        c.close()


def test_a_failing_zone_never_refuses(mw: Mailwright) -> None:
    c = session(mw, "127.0.0.13")
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("250")
    c.close()
    mw.wait_log("dnsbl: broken.test: lookup failed, not counted")
    c = session(mw, LISTED)  # the other zones still count
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("554 5.7.1")
    c.close()


def test_the_answer_list_decides(mw: Mailwright) -> None:
    c = session(mw, "127.0.0.3")
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("250")
    c.close()
    c = session(mw, "127.0.0.4")
    assert c.cmd("RCPT TO:<user@mx.test>") == (
        "554 5.7.1 Service unavailable; client [127.0.0.4] blocked using filtered.test; "
    )
    c.close()


def test_a_refused_query_is_logged_and_not_counted(mw: Mailwright) -> None:
    c = session(mw, "127.0.0.6")
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("250")
    c.close()
    mw.wait_log("dnsbl: bl.test refused the query for [127.0.0.6] (127.255.255.254)")


@pytest.mark.parametrize(
    "source", ["127.0.0.9", "127.0.0.10", "127.0.0.11"], ids=["allow", "access-ok", "relay-net"]
)
def test_exempt_clients_are_accepted(mw: Mailwright, source: str) -> None:
    c = session(mw, source)
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("250"), source
    c.close()


def test_an_authenticated_client_is_accepted(mw: Mailwright) -> None:
    c = Client(mw.port, "127.0.0.8")
    c.ehlo("client.test")
    assert c.cmd(f"AUTH PLAIN {plain('alice', 'correct horse')}").startswith("235")
    assert c.cmd("MAIL FROM:<alice@mx.test>").startswith("250")
    assert c.cmd("RCPT TO:<user@mx.test>").startswith("250")
    c.close()


def test_an_ipv6_client_is_looked_up_by_nibbles(mw: Mailwright, dns: DnsServer) -> None:
    require_peer("an IPv6 loopback (::1)", len(mw.config["listeners"]) == 2, "IPv6 is off here")
    port = mw.config["listeners"][1]["port"]
    with socket.create_connection(("::1", port), timeout=20) as sock:
        c = Client.__new__(Client)
        c.sock, c.buf = sock, b""
        c.greeting = c.reply()
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
        assert c.cmd("RCPT TO:<user@mx.test>").startswith(
            "554 5.7.1 Service unavailable; client [::1]"
        )
    assert IPV6_NAME in dns.log()


def test_a_silent_name_server_lets_the_mail_in_within_the_timeout(tmp_path: Path) -> None:
    silent = DnsServer(tmp_path / "dns").timeout("slow.test")
    with silent:
        config = {
            "dns": silent.settings(),
            "dnsbl": {"zones": ["slow.test"], "timeout": 1},
            "relay": {"networks": []},
            "routing": {"local_domains": ["mx.test"]},
        }
        with running(tmp_path / "mw", config) as mw:
            started = time.monotonic()
            c = session(mw, LISTED)
            assert c.cmd("RCPT TO:<user@mx.test>").startswith("250")
            assert time.monotonic() - started < 4
            c.close()
            mw.wait_log("dnsbl: no answer from slow.test for [127.0.0.2] within 1s")
