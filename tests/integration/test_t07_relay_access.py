"""Relay control and the access table over SMTP, the way an open-relay tester probes a server:
the classic tricks against the default configuration and against an access table, every
access value, reload without restart, and ``mailwright access test`` / ``check``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.daemon import Mailwright, running, wait_until
from tests.support.security import Client
from tests.unit.policy.test_relay_tricks import TRICKS

BASE: dict[str, Any] = {
    "relay": {"networks": [], "domains": ["partner.test", ".partner.test"]},
    "routing": {"local_domains": ["mx.test"]},
    "server": {"max_bad_commands": 100},
}
MSG = b"From: a@x.test\r\nSubject: s\r\n\r\nbody\r\n.\r\n"

TABLE = """\
# test access table
Connect:127.0.0.2           RELAY
Connect:127.0.0.8           TEMPFAIL:Go away for a while
Connect:127.0.0.9           REJECT
To:friend.test              RELAY
To:blocked@mx.test          ERROR:5.7.1:Mailbox disabled
To:later@mx.test            TEMPFAIL:Try again later
To:other.test               OK
From:spammer@bad.test       REJECT
From:bad.test               ERROR:550 5.7.0 Your domain is not welcome
From:discard.test           DISCARD
"""


def probe(port: int, source: str, paths: list[str]) -> dict[str, str]:
    """The reply to RCPT TO for each path, in one transaction."""
    c = Client(port, source)
    c.ehlo()
    assert c.cmd("MAIL FROM:<tester@x.test>").startswith("250")
    replies = {path: c.cmd(f"RCPT TO:{path}") for path in paths}
    c.cmd("QUIT")
    c.close()
    return replies


# the daemon listens on 127.0.0.1: that literal names it, so mail to it is local mail
# ("user" is a test alias), as in Sendmail and Postfix (issue 12 item 13)
OWN_LITERAL = "<user@[127.0.0.1]>"


def check_tricks(replies: dict[str, str]) -> None:
    for path, allowed in TRICKS:
        reply = replies[path]
        if allowed or path == OWN_LITERAL:
            assert reply.startswith("250 2.1.5"), (path, reply)
        elif "@mx.test>" in path.lower():  # a local domain: "unknown user" may answer first
            assert reply.startswith(("550 5.7.1", "550 5.1.1", "553 5.1.3")), (path, reply)
        else:
            assert reply.startswith(("550 5.7.1", "553 5.1.3")), (path, reply)
            if reply.startswith("550"):
                assert reply.endswith("... Relaying denied"), (path, reply)


def test_relay_tricks_against_the_default_configuration(tmp_path: Path) -> None:
    with running(tmp_path, BASE) as mw:
        check_tricks(probe(mw.port, "127.0.0.1", [p for p, _ in TRICKS]))
        line = mw.wait_log("reject=550 5.7.1 <user@other.test>... Relaying denied")
        assert "ruleset=check_rcpt" in line


def access_daemon(tmp_path: Path, text: str = TABLE) -> tuple[Mailwright, Path]:
    table = tmp_path / "access"
    table.write_text(text)
    config = {**BASE, "access": {"table": str(table)}}
    return Mailwright(tmp_path / "mw", config), table


def test_relay_tricks_against_an_access_table(tmp_path: Path) -> None:
    mw, _ = access_daemon(tmp_path)
    mw.start()
    try:
        paths = [p for p, _ in TRICKS]
        extra = [
            "<user@friend.test>",
            "<user@mail.friend.test>",
            "<user%other.test@friend.test>",
            '<"user@other.test"@friend.test>',
            "<user@friend.test.other.test>",
            "<user@other.test>",
        ]
        replies = probe(mw.port, "127.0.0.3", paths + extra)
        check_tricks(replies)
        assert replies["<user@friend.test>"].startswith("250")
        assert replies["<user@mail.friend.test>"].startswith("250")
        for path in extra[2:]:  # To:other.test OK accepts, but does not relay
            assert replies[path].endswith("Relaying denied"), (path, replies[path])
        trusted = probe(mw.port, "127.0.0.2", paths)  # Connect: RELAY may send anywhere
        assert not [r for r in trusted.values() if "Relaying denied" in r]
        assert trusted["<user@other.test>"].startswith("250")
    finally:
        mw.stop()


def test_every_access_value(tmp_path: Path) -> None:
    mw, _ = access_daemon(tmp_path)
    mw.start()
    try:
        assert Client(mw.port, "127.0.0.9").greeting == "554 mx.test Access denied"
        assert Client(mw.port, "127.0.0.8").greeting == "421 mx.test Go away for a while"
        c = Client(mw.port, "127.0.0.3")
        c.ehlo()
        assert c.cmd("MAIL FROM:<spammer@bad.test>") == (
            "550 5.7.1 <spammer@bad.test>... Access denied"
        )
        assert c.cmd("MAIL FROM:<other@bad.test>") == "550 5.7.0 Your domain is not welcome"
        assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
        assert c.cmd("RCPT TO:<blocked@mx.test>") == "550 5.7.1 Mailbox disabled"
        assert c.cmd("RCPT TO:<later@mx.test>") == "451 4.7.1 Try again later"
        assert c.cmd("RSET").startswith("250")
        assert c.cmd("MAIL FROM:<x@discard.test>").startswith("250")
        assert c.cmd("RCPT TO:<postmaster@mx.test>").startswith("250")
        assert c.cmd("DATA").startswith("354")
        c.send(MSG)
        reply = c.reply()
        assert reply.startswith("250 2.0.0")  # accepted, then dropped
        qid = reply.split()[2]
        assert "event=discarded" in mw.wait_log(f"{qid}: event=discarded")
        listing = mw.cli("queue", "list", "--json")
        assert listing.returncode == 0 and listing.stdout.strip() == b"[]"
    finally:
        mw.stop()


def test_table_reread_without_restart_and_errors_logged(tmp_path: Path) -> None:
    mw, table = access_daemon(tmp_path, TABLE + "To:broken ERROR\n")
    mw.start()
    try:
        mw.wait_log(f"{table}:12: ERROR needs a reply")
        assert probe(mw.port, "127.0.0.3", ["<a@new.test>"])["<a@new.test>"].startswith("550")
        table.write_text(TABLE + "To:new.test RELAY\n")
        wait_until(
            lambda: probe(mw.port, "127.0.0.3", ["<a@new.test>"])["<a@new.test>"].startswith("250"),
            what="the new table entry to take effect",
        )
    finally:
        mw.stop()


def test_access_test_and_check_commands(tmp_path: Path) -> None:
    mw, table = access_daemon(tmp_path)
    mw.write_config()
    out = mw.cli(
        "access", "test", "--connect", "127.0.0.2", "--from", "spammer@bad.test",
        "--to", "user@mail.friend.test", "--to", "user@nowhere.test",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().splitlines() == [
        "Connect:127.0.0.2: line 2: Connect:127.0.0.2 RELAY => RELAY",
        "From:<spammer@bad.test>: line 9: From:spammer@bad.test REJECT => "
        "550 5.7.1 <spammer@bad.test>... Access denied",
        "To:<user@mail.friend.test>: line 5: To:friend.test RELAY => RELAY",
        "To:<user@nowhere.test>: no entry matches (the defaults apply)",
    ]
    assert mw.cli("access", "check").stdout.decode().endswith("10 entries, OK\n")
    table.write_text(TABLE + "Helo:x.test REJECT\nTo:y.test MAYBE\n")
    bad = mw.cli("access", "check")
    assert bad.returncode == 78
    errors = bad.stderr.decode().splitlines()
    assert errors[0].startswith(f"{table}:12: 'Helo:x.test': a key starts with Connect:")
    assert errors[1].startswith(f"{table}:13: 'MAYBE': use OK, RELAY, REJECT")
