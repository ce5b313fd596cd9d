"""Relay control against the classic open-relay tricks, as a relay tester would send them.

Each trick is parsed as the server parses RCPT TO and then judged by ``RelayControl``;
a path the parser refuses (501) is refused too. The daemon-level test
(``tests/integration/test_t07_relay_access.py``) sends the same list over SMTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailwright.core.address import AddressError, parse_path
from mailwright.core.domains import DomainSet
from mailwright.core.envelope import Recipient
from mailwright.policy import access
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.relay import RelayControl

LOCAL = "mx.test"

# (path as sent in RCPT TO, may an untrusted client send it?)
TRICKS = [
    ("<postmaster@mx.test>", True),  # a local user every server has
    ("<POSTMASTER@MX.TEST>", True),
    ("<Postmaster>", True),
    ("<user@other.test>", False),
    ("<USER@OTHER.TEST>", False),
    ("<user%other.test@mx.test>", False),
    ("<user%other.test@MX.TEST>", False),
    ('<"user@other.test"@mx.test>', False),
    ('<"user%other.test"@mx.test>', False),
    ("<other.test!user@mx.test>", False),
    ("<@mx.test:user@other.test>", False),
    ("<@mx.test,@mx.test:user@other.test>", False),
    ("<@other.test:postmaster@mx.test>", True),  # the route is ignored: it is local mail
    ("<user@other.test@mx.test>", False),
    ("<user@[127.0.0.1]>", False),
    ("<user%other.test@[127.0.0.1]>", False),
    ("<user@[IPv6:::1]>", False),
    ("<user@other.test.>", False),
    ("<user@mx.test.>", False),  # refused as syntax (553 5.1.3), never relayed
    ("<user@other.test.mx.test>", False),  # a subdomain is not the local domain
    ("<user@mx.test.other.test>", False),
    ("<user@partner.test>", True),  # relay.domains
    ("<user@sub.partner.test>", True),  # ".partner.test"
    ("<user%other.test@partner.test>", False),
    ("<user@notpartner.test>", False),
]


def judge(relay: RelayControl, session: SessionInfo, path: str) -> bool:
    try:
        address = parse_path(path, utf8=False)
    except AddressError:
        return False
    assert address is not None
    return relay.may_relay(session, Recipient(address))


def stranger() -> SessionInfo:
    return SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, "192.0.2.9", 1000)


def control(access_table: Path | None = None) -> RelayControl:
    table = access.watch(access_table) if access_table else None
    return RelayControl(
        DomainSet([LOCAL]),
        DomainSet(["partner.test", ".partner.test"]),
        [],
        table.current if table else None,
    )


@pytest.mark.parametrize(("path", "allowed"), TRICKS)
def test_default_configuration(path: str, allowed: bool) -> None:
    assert judge(control(), stranger(), path) is allowed


@pytest.mark.parametrize(("path", "allowed"), TRICKS)
def test_with_an_access_table(tmp_path: Path, path: str, allowed: bool) -> None:
    table = tmp_path / "access"
    table.write_text(
        "To:friend.test RELAY\nTo:other.test OK\nConnect:192.0.2.0/24 OK\nTo:mx.test OK\n"
    )
    relay = control(table)
    assert judge(relay, stranger(), path) is allowed  # OK is not RELAY
    assert judge(relay, stranger(), "<user@friend.test>")
    assert judge(relay, stranger(), "<user@a.friend.test>")
    assert not judge(relay, stranger(), "<user%other.test@friend.test>")
    assert not judge(relay, stranger(), "<user@friend.test.other.test>")


def test_trusted_and_authenticated_clients_relay() -> None:
    relay = control()
    trusted = stranger()
    trusted.trusted_relay = True
    authed = stranger()
    authed.auth_user = "alice"
    for session in (trusted, authed):
        assert judge(relay, session, "<user@other.test>")
        assert judge(relay, session, "<user%other.test@mx.test>")
