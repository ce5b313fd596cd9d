"""The access table: parsing, errors as file:line, most specific match, reload on change."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.policy.access import AccessControl, AccessTable, Action, read_access, watch
from mailwright.policy.hooks import SessionInfo, Transaction

TABLE = """\
# clients
Connect:192.0.2.7          REJECT
Connect:192.0.2.0/24       RELAY
Connect:192.0           TEMPFAIL:slow down
Connect:198.51.100         OK
Connect:2001:db8::/32      DISCARD
Connect:bad.example        ERROR:5.7.1:You are not welcome
Connect:good.bad.example   OK
# senders
From:spammer@example.com   REJECT
From:example.com           OK
From:example.net           DISCARD
From:postmaster@           OK
From:<>                    ERROR:550 5.7.0 No bounces here
# recipients
To:partner.test            RELAY
To:sales@partner.test      ERROR:"451 4.2.1 Try later"
To:abuse@                  OK
To:CLOSED.example.         REJECT
"""


def table(tmp_path: Path, text: str = TABLE) -> AccessTable:
    path = tmp_path / "access"
    path.write_text(text)
    parsed, errors = read_access(path)
    assert errors == []
    return parsed


def action(rule: object) -> str | None:
    return getattr(rule, "action", None) and rule.action.value  # type: ignore[attr-defined]


def test_connect_most_specific_wins(tmp_path: Path) -> None:
    t = table(tmp_path)
    assert action(t.connect("192.0.2.7")) == "REJECT"  # exact address beats its /24
    assert action(t.connect("192.0.2.8")) == "RELAY"  # /24 beats 192.0 (/16)
    assert action(t.connect("192.0.3.1")) == "TEMPFAIL"
    assert action(t.connect("198.51.100.200")) == "OK"
    assert action(t.connect("2001:db8:1::5")) == "DISCARD"
    assert action(t.connect("::ffff:192.0.2.7")) == "REJECT"  # IPv4-mapped
    assert t.connect("203.0.113.1") is None
    assert action(t.connect("203.0.113.1", "mx.bad.example")) == "ERROR"  # parent domain
    assert action(t.connect("203.0.113.1", "good.bad.example.")) == "OK"  # exact host
    assert action(t.connect("203.0.113.1", "BAD.EXAMPLE")) == "ERROR"
    assert t.connect("203.0.113.1", "notbad.example") is None  # labels, not strings


def test_addresses_most_specific_wins(tmp_path: Path) -> None:
    t = table(tmp_path)
    frm = lambda local, domain: action(t.address("from", Address(local, domain)))  # noqa: E731
    assert frm("spammer", "example.com") == "REJECT"
    assert frm("Spammer", "EXAMPLE.COM") == "REJECT"  # keys are case-insensitive
    assert frm("other", "example.com") == "OK"
    assert frm("a", "mail.example.net") == "DISCARD"  # subdomain
    assert frm("postmaster", "anywhere.test") == "OK"  # user@
    assert frm("a", "example.org") is None
    assert action(t.address("from", None)) == "ERROR"
    to = lambda local, domain: action(t.address("to", Address(local, domain)))  # noqa: E731
    assert to("x", "partner.test") == "RELAY"
    assert to("sales", "partner.test") == "ERROR"  # the address beats its domain
    assert to("abuse", "closed.example") == "REJECT"  # domain beats user@
    assert to("abuse", "other.test") == "OK"


def test_error_and_tempfail_replies(tmp_path: Path) -> None:
    t = table(tmp_path)
    rule = t.connect("203.0.113.1", "bad.example")
    assert rule is not None and str(rule.reply) == "550 5.7.1 You are not welcome"
    rule = t.address("from", None)
    assert rule is not None and str(rule.reply) == "550 5.7.0 No bounces here"
    rule = t.address("to", Address("sales", "partner.test"))
    assert rule is not None and str(rule.reply) == "451 4.2.1 Try later"
    rule = t.connect("192.0.9.9")
    assert rule is not None and str(rule.reply) == "421 4.7.1 slow down"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("example.com REJECT", "a key starts with Connect:, From: or To:"),
        ("Helo:x.test REJECT", "a key starts with Connect:, From: or To:"),
        ("To:x.test PERMIT", "use OK, RELAY, REJECT"),
        ("To:x.test ERROR", "ERROR needs a reply"),
        ("To:x.test ERROR:250 fine", "start with a status"),
        ("To:x.test ERROR:550 4.7.1 mixed", "the code and the status disagree"),
        ("To:x.test OK:why", "OK takes no text"),
        ("Connect:192.0.2.0/33 REJECT", "is not a network"),
        ("Connect:300.1 REJECT", "is not an address prefix"),
        ("To:@x.test REJECT", "write a domain without @"),
        ("To:<> REJECT", "a From: key only"),
        ("From:a@b..c REJECT", "empty label"),
        ("To:x.test", "has no value"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "access"
    path.write_text(f"# comment\nTo:ok.test OK\n{line}\n")
    parsed, errors = read_access(path)
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{path}:3: ") and problem in str(errors[0])
    assert len(parsed) == 1  # the good line still counts


def test_duplicate_key_reported_first_one_kept(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text("To:x.test OK\nto:X.TEST. REJECT\n")
    parsed, errors = read_access(path)
    assert [str(e) for e in errors] == [f"{path}:2: 'to:X.TEST.' again (first on line 1); ignored"]
    assert action(parsed.address("to", Address("a", "x.test"))) == "OK"


def test_unreadable_file(tmp_path: Path) -> None:
    parsed, errors = read_access(tmp_path / "missing")
    assert len(parsed) == 0 and "cannot read" in str(errors[0])


def test_reread_when_changed_and_kept_when_it_vanishes(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text("To:x.test REJECT\n")
    watched = watch(path)
    watched.interval = 0
    assert action(watched.current().address("to", Address("a", "x.test"))) == "REJECT"
    path.write_text("To:x.test RELAY\n# longer now\n")
    assert action(watched.current().address("to", Address("a", "x.test"))) == "RELAY"
    os.unlink(path)  # an editor's rename in progress: keep what we had
    assert action(watched.current().address("to", Address("a", "x.test"))) == "RELAY"
    assert "cannot read" in str(watched.errors[0])


def info(ip: str = "192.0.2.7", name: str = "") -> SessionInfo:
    return SessionInfo("s1", "smtp-25", "smtp", "127.0.0.1", 25, ip, 4000, client_name=name)


def test_hook_applies_each_stage(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text(TABLE)
    hook = AccessControl(watch(path), "mx.test")

    async def main() -> None:
        assert str(await hook.connect(info())) == "554 5.7.1 mx.test Access denied"
        assert str(await hook.connect(info("192.0.5.5"))) == "421 4.7.1 mx.test slow down"
        relayed = info("192.0.2.9")
        assert await hook.connect(relayed) is None and relayed.trusted_relay
        discarded = info("2001:db8::1")
        assert await hook.connect(discarded) is None
        txn = Transaction("Q", Address("a", "x.test"), MailParams())
        assert await hook.mail(discarded, txn) is None and txn.discard
        txn = Transaction("Q", Address("spammer", "example.com"), MailParams())
        reply = await hook.mail(relayed, txn)
        assert str(reply) == "550 5.7.1 <spammer@example.com>... Access denied"
        txn = Transaction("Q", Address("a", "x.test"), MailParams())
        reply = await hook.rcpt(relayed, txn, Recipient(Address("z", "closed.example")), [])
        assert str(reply) == "550 5.7.1 <z@closed.example>... Access denied"
        assert await hook.rcpt(relayed, txn, Recipient(Address("z", "partner.test")), []) is None
        await hook.close(discarded)
        assert not hook._discarding

    asyncio.run(main())


def test_action_values_cover_the_documented_set() -> None:
    assert {a.value for a in Action} == {"OK", "RELAY", "REJECT", "DISCARD", "ERROR", "TEMPFAIL"}
