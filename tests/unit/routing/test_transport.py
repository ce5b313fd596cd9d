"""The transport table: value and key syntax, lookup order, error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.core.reply import Reply
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.table import TableError
from mailwright.routing.transport import (
    TransportTable,
    load_transport_table,
    parse_error,
    parse_key,
    parse_smarthost,
    parse_transport,
    parse_transport_table,
)

SMTP, LMTP = Transport.SMTP, Transport.LMTP


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("smtp:[mx.example.org]:2525", NextHop(SMTP, "mx.example.org", 2525, mx=False)),
        ("smtp:[mx.example.org]", NextHop(SMTP, "mx.example.org", None, mx=False)),
        ("smtp:relay.example.org", NextHop(SMTP, "relay.example.org", None, mx=True)),
        ("smtp:relay.example.org:587", NextHop(SMTP, "relay.example.org", 587, mx=True)),
        ("smtp:Relay.Example.ORG.", NextHop(SMTP, "relay.example.org", None, mx=True)),
        ("esmtp:[192.0.2.1]", NextHop(SMTP, "192.0.2.1", None, mx=False)),
        ("relay:192.0.2.1:26", NextHop(SMTP, "192.0.2.1", 26, mx=False)),
        ("smtp:[2001:db8::1]:25", NextHop(SMTP, "2001:db8::1", 25, mx=False)),
        ("smtp:[IPv6:2001:DB8:0::1]", NextHop(SMTP, "2001:db8::1", None, mx=False)),
        ("SMTP:[mx.example.org]", NextHop(SMTP, "mx.example.org", None, mx=False)),
        ("lmtp:unix:/run/dovecot/lmtp", NextHop(LMTP, mx=False, socket_path="/run/dovecot/lmtp")),
        ("lmtp:[127.0.0.1]:24", NextHop(LMTP, "127.0.0.1", 24, mx=False)),
        ("lmtp:mailstore.example.org:24", NextHop(LMTP, "mailstore.example.org", 24, mx=False)),
        (
            "lmtp:inet:mailstore.example.org:2424",
            NextHop(LMTP, "mailstore.example.org", 2424, mx=False),
        ),
        ("smtp:", NextHop(SMTP)),
        ("smtp", NextHop(SMTP)),
        ("smtp::2525", NextHop(SMTP, port=2525)),
        ("local", NextHop(Transport.LOCAL)),
        ("local:", NextHop(Transport.LOCAL)),
    ],
)
def test_values(value: str, expected: NextHop) -> None:
    assert parse_transport(value) == expected


def test_keys_show_the_destination() -> None:
    assert parse_transport("smtp:[mx.example.org]:2525").key == "smtp:[mx.example.org]:2525"
    assert parse_transport("smtp:relay.example.org").key == "smtp:relay.example.org"
    assert parse_transport("lmtp:unix:/run/lmtp").key == "lmtp:unix:/run/lmtp"


@pytest.mark.parametrize(
    ("text", "code", "status", "line"),
    [
        ("5.1.2 No such domain", 550, "5.1.2", "No such domain"),
        ("5.7.1:550 Relaying denied", 550, "5.7.1", "Relaying denied"),  # Sendmail
        ("4.3.2:421 Come back later", 421, "4.3.2", "Come back later"),
        ("550 5.1.2 No such domain", 550, "5.1.2", "No such domain"),
        ("554 Go away", 554, "5.0.0", "Go away"),
        ("4.4.1 Busy", 450, "4.4.1", "Busy"),
        ("Nobody here", 550, "5.0.0", "Nobody here"),
        ("", 550, "5.0.0", "Delivery to this domain is refused"),
        ("5.1.2", 550, "5.1.2", "Delivery to this domain is refused"),
        ("5.1.2 text with # and : in it", 550, "5.1.2", "text with # and : in it"),
    ],
)
def test_error_values(text: str, code: int, status: str, line: str) -> None:
    assert parse_error(text) == Reply.of(code, status, line)
    hop = parse_transport(f"error:{text}")
    assert hop.transport is Transport.ERROR and hop.error == Reply.of(code, status, line)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("smtp:[mx.example.org", "missing ']'"),
        ("smtp:[mx.example.org]x", "expected ':port'"),
        ("smtp:mx.example.org:0", "port from 1 to 65535"),
        ("smtp:mx.example.org:99999", "port from 1 to 65535"),
        ("smtp:mx.example.org:smtp", "port from 1 to 65535"),
        ("smtp:2001:db8::1", "must be in brackets"),
        ("smtp:[IPv6:192.0.2.1]", "not an IPv6 address"),
        ("smtp:bad_host!", "not a host name"),
        ("smtp:two words", "not a host name"),
        ("lmtp:", "needs a destination"),
        ("lmtp:unix:relative/path", "absolute path"),
        ("local:bob", "takes no argument"),
        ("uucp:host", "unknown transport 'uucp'"),
        ("error:5.1.2:450 text", "does not match"),
        ("error:5.1.2:abc text", "reply code after"),
        ("error:450 5.1.2 text", "does not match"),
    ],
)
def test_bad_values(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"^value .*" + problem.replace("[", r"\[")) as info:
        parse_transport(value)
    assert repr(value) in str(info.value)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("example.org", "example.org"),
        ("Example.ORG.", "example.org"),
        (".example.org", ".example.org"),
        ("*", "*"),
        (".", "*"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:DB8::1]", "[ipv6:2001:db8::1]"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_keys(key: str, expected: str) -> None:
    assert parse_key(key) == expected


@pytest.mark.parametrize(
    "key", ["user@example.org", "exa mple.org", "a..b", ".[192.0.2.1]", "-x.org"]
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(ValueError, match=r"^key "):
        parse_key(key)


TABLE = b"""\
# the transport table
example.org        smtp:[mx.example.org]:2525
.example.org       smtp:relay.example.org
deep.a.example.org lmtp:[127.0.0.1]:24

   # indented comment; blank lines above and below

lmtp.test          lmtp:unix:/run/lmtp
refused.test       error:5.7.1:550 We do not take mail for refused.test
later.test         error:4.3.2 Try again later
here.test          local
sub.test           smtp:
port.test          smtp::2525
[192.0.2.9]        smtp:[10.0.0.1]
*                  smtp:[smart.example.net]:587
"""


def table(data: bytes = TABLE) -> TransportTable:
    parsed, errors = parse_transport_table(data, "transport")
    assert errors == []
    return parsed


@pytest.mark.parametrize(
    ("domain", "key"),
    [
        ("example.org", "smtp:[mx.example.org]:2525"),
        ("EXAMPLE.org.", "smtp:[mx.example.org]:2525"),
        ("a.example.org", "smtp:relay.example.org"),  # .example.org, not example.org
        ("x.y.example.org", "smtp:relay.example.org"),
        ("deep.a.example.org", "lmtp:[127.0.0.1]:24"),  # exact beats the parent
        ("z.deep.a.example.org", "smtp:relay.example.org"),  # no .deep.a key
        ("lmtp.test", "lmtp:unix:/run/lmtp"),
        ("here.test", "local:"),
        ("sub.test", "smtp:sub.test"),  # empty next hop: the recipient domain's MX
        ("port.test", "smtp:port.test:2525"),
        ("[192.0.2.9]", "smtp:[10.0.0.1]"),
        ("[192.0.2.8]", "smtp:[smart.example.net]:587"),
        ("example.com", "smtp:[smart.example.net]:587"),
        ("org", "smtp:[smart.example.net]:587"),
    ],
)
def test_lookup_order(domain: str, key: str) -> None:
    hop = table().lookup(domain)
    assert hop is not None and hop.key == key


def test_error_entries() -> None:
    hop = table().lookup("refused.test")
    assert hop == NextHop(
        Transport.ERROR, error=Reply.of(550, "5.7.1", "We do not take mail for refused.test")
    )
    later = table().lookup("later.test")
    assert later is not None and later.error is not None and later.error.transient


def test_no_default_means_no_match() -> None:
    parsed = table(b"example.org local\n.example.org local\n")
    assert parsed.lookup("example.net") is None
    assert parsed.lookup("notexample.org") is None  # a suffix match is per label
    assert parsed.lookup("xexample.org") is None


def test_dot_is_the_default_key() -> None:
    hop = table(b". smtp:[hub.test]\n").lookup("anything.test")
    assert hop is not None and hop.key == "smtp:[hub.test]"


def test_empty_next_hop_keeps_address_literals_literal() -> None:
    hop = table(b"* smtp:\n").lookup("[192.0.2.1]")
    assert hop == NextHop(SMTP, "192.0.2.1", mx=False)
    hop = table(b"* smtp:\n").lookup("[IPv6:2001:db8::1]")
    assert hop == NextHop(SMTP, "2001:db8::1", mx=False)


def test_international_domains_match_in_either_form() -> None:
    parsed = table("bücher.example smtp:[books.test]\n".encode())
    for domain in ("bücher.example", "xn--bcher-kva.example", "BÜCHER.example"):
        hop = parsed.lookup(domain)
        assert hop is not None and hop.host == "books.test"


def test_errors_name_file_and_line_and_skip_the_line() -> None:
    data = b"""\
good.test smtp:[ok.test]
bad.test smtp:[x
onlykey
user@x.test local
good.test smtp:[second.test]
bin.test smtp:\xff
also.test lmtp:[127.0.0.1]:24
"""
    parsed, errors = parse_transport_table(data, "/etc/mailwright/transport")
    assert [str(e) for e in errors] == [
        "/etc/mailwright/transport:2: value 'smtp:[x': missing ']' after the host",
        "/etc/mailwright/transport:3: 'onlykey' has no value (expected 'key value')",
        "/etc/mailwright/transport:4: key 'user@x.test': address keys are not supported, "
        "only domains",
        "/etc/mailwright/transport:5: duplicate key 'good.test' (first on line 1), ignored",
        "/etc/mailwright/transport:6: not valid UTF-8",
    ]
    assert set(parsed.entries) == {"good.test", "also.test"}
    hop = parsed.lookup("good.test")
    assert hop is not None and hop.host == "ok.test"  # the first entry stays


def test_file(tmp_path: Path) -> None:
    path = tmp_path / "transport"
    path.write_bytes(TABLE + b"broken.test frob:\n")
    parsed, errors = load_transport_table(path)
    assert len(parsed) == 11
    assert [(e.path, e.line) for e in errors] == [(str(path), 16)]


def test_unreadable_file(tmp_path: Path) -> None:
    parsed, errors = load_transport_table(tmp_path / "missing")
    assert len(parsed) == 0
    assert errors == [
        TableError(str(tmp_path / "missing"), 0, "cannot read: No such file or directory")
    ]
    assert str(errors[0]) == f"{tmp_path / 'missing'}: cannot read: No such file or directory"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[relay.example.net]:587", NextHop(SMTP, "relay.example.net", 587, mx=False)),
        ("[relay.example.net]", NextHop(SMTP, "relay.example.net", None, mx=False)),
        ("relay.example.net", NextHop(SMTP, "relay.example.net", None, mx=True)),
        ("relay.example.net:2525", NextHop(SMTP, "relay.example.net", 2525, mx=True)),
        ("[::1]:2525", NextHop(SMTP, "::1", 2525, mx=False)),
    ],
)
def test_smarthost(text: str, expected: NextHop) -> None:
    assert parse_smarthost(text) == expected


@pytest.mark.parametrize("text", ["", "[relay", "relay:x", "a b", "2001:db8::1"])
def test_bad_smarthost(text: str) -> None:
    with pytest.raises(ValueError, match="smarthost"):
        parse_smarthost(text)
