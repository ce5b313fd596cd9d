"""The host's own address literals (issue 12 item 13)."""

from __future__ import annotations

import ipaddress

from mailwright.core.hostaddresses import interface_addresses, literal, own_literals


def test_literals_are_written_as_the_address_parser_writes_them() -> None:
    assert literal(ipaddress.ip_address("127.0.0.1")) == "[127.0.0.1]"
    assert literal(ipaddress.ip_address("0:0::1")) == "[IPv6:::1]"


def test_a_bound_address_stands_for_itself_and_unix_sockets_for_nothing() -> None:
    assert own_literals(["192.0.2.7", "unix:/run/x.sock", "192.0.2.7", "::1"]) == [
        "[192.0.2.7]",
        "[IPv6:::1]",
    ]


def test_a_wildcard_stands_for_every_interface_address() -> None:
    found = own_literals(["0.0.0.0"])
    assert "[127.0.0.1]" in found
    assert found == [literal(ip) for ip in dict.fromkeys(interface_addresses())]
