"""Issue 12, routing items: bare postmaster, our own address literals, headers added for
trusted clients, ``sendmail -t`` header qualification, the local ``Received:`` form,
and the alias table reload. Real daemons, real sockets, real clients."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import mailbox
import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, deep_merge, running, wait_until
from tests.support.opentmp import open_tmp
from tests.support.sendmail import Tools, daemon_tools, envelope_of


class DeliveringMailwright(Mailwright):
    """The daemon delivering as soon as mail arrives (the test default is queue-only)."""

    def __init__(self, root: Path, config: dict[str, Any] | None = None) -> None:
        super().__init__(root, deep_merge({"delivery": {"mode": "background"}}, config or {}))


def mbox_messages(path: Path) -> list[mailbox.mboxMessage]:
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return list(box)
    finally:
        box.close()


@pytest.fixture
def shared() -> Iterator[Path]:
    with open_tmp("mw-h12r-") as path:
        yield path


def local_config(shared: Path, aliases: str = "postmaster: alice\n") -> dict[str, Any]:
    (shared / "aliases").write_text(aliases)
    (shared / "mailboxes").write_text("alice alice\nroot root\n")
    (shared / "mail").mkdir(exist_ok=True)
    return {
        "routing": {"local_domains": ["mx.test"], "alias_file": str(shared / "aliases")},
        "local_delivery": {
            "mail_spool": str(shared / "mail"),
            "virtual_mailbox_table": str(shared / "mailboxes"),
        },
    }


# ---- item 3: bare <postmaster> ------------------------------------------------------------------


@pytest.mark.parametrize("written", ["postmaster", "PostMaster"])
def test_bare_postmaster_is_delivered_to_its_alias(shared: Path, written: str) -> None:
    mw = DeliveringMailwright(shared / "mw", local_config(shared))
    mw.start()
    try:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("someone@remote.test")
            assert s.rcpt(f"<{written}>")[0] == 250
            code, _ = s.data(b"From: someone@remote.test\r\nSubject: to pm\r\n\r\nhello\r\n")
            assert code == 250
        wait_until(lambda: len(mbox_messages(shared / "mail" / "alice")) == 1, what="delivery")
        mw.stop()
    finally:
        mw.kill()
    (msg,) = mbox_messages(shared / "mail" / "alice")
    assert msg["Subject"] == "to pm"
    assert mbox_messages(shared / "mail" / "root") == []  # no bounce


# ---- item 13: our own address literals ----------------------------------------------------------


def test_own_address_literals_are_local(shared: Path) -> None:
    config = deep_merge(local_config(shared, "postmaster: root\n"), {"relay": {"networks": []}})
    mw = DeliveringMailwright(shared / "mw", config)  # loopback is a stranger here
    v6_port = free_port_v6()
    mw.config["listeners"].append({"address": "::1", "port": v6_port, "kind": "smtp"})
    mw.start()
    try:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("someone@remote.test")
            assert s.rcpt("<root@[127.0.0.1]>")[0] == 250
            assert s.rcpt("<alice@[IPv6:0::1]>")[0] == 250  # the other listener's address
            assert s.rcpt("<root@[127.0.0.2]>") == (
                550,
                b"5.7.1 <root@[127.0.0.2]>... Relaying denied",
            )
            assert s.rcpt("<nosuch@[127.0.0.1]>")[0] == 550  # local, and unknown
            assert s.data(b"Subject: literal\r\n\r\nhello\r\n")[0] == 250
        with smtplib.SMTP("::1", v6_port) as s:
            s.ehlo("client.test")
            s.mail("someone@remote.test")
            assert s.rcpt("<alice@[IPv6:::1]>")[0] == 250
            assert s.data(b"Subject: v6 literal\r\n\r\nhello\r\n")[0] == 250
        mail = shared / "mail"
        wait_until(
            lambda: (
                len(mbox_messages(mail / "root")) == 1 and len(mbox_messages(mail / "alice")) == 2
            ),
            what="local delivery",
        )
        mw.stop()
    finally:
        mw.kill()
    assert [m["Subject"] for m in mbox_messages(shared / "mail" / "root")] == ["literal"]
    assert sorted(m["Subject"] for m in mbox_messages(shared / "mail" / "alice")) == [
        "literal",
        "v6 literal",
    ]


def free_port_v6() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return int(s.getsockname()[1])


# ---- item 14: From/Date/Message-ID added for trusted clients, never for strangers --------------


def queued_message(mw: Mailwright, qid: str) -> email.message.EmailMessage:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        raw = store.read_headers(qid).encode() + b"\r\n" + b"".join(store.read_body(qid))
    finally:
        store.close()
    parsed = email.message_from_bytes(raw, policy=email.policy.SMTP)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def send_headerless(mw: Mailwright, sender: str) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail(sender)
        assert s.rcpt("root@mx.test")[0] == 250
        code, text = s.data(b"Subject: no origin fields\r\n\r\nhello\r\n")
        assert code == 250, text
    return text.decode().split()[1]


@pytest.mark.parametrize("trusted", [True, False])
def test_missing_origin_fields_are_added_for_trusted_clients_only(
    shared: Path, trusted: bool
) -> None:
    networks = ["127.0.0.0/8"] if trusted else []
    with running(shared / "mw", {"relay": {"networks": networks}}) as mw:
        qid = send_headerless(mw, "writer@remote.test")
        msg = queued_message(mw, qid)
    names = [name.lower() for name, _ in msg.items()]
    if not trusted:
        assert names == ["received", "subject"]
        return
    assert names == ["received", "subject", "from", "date", "message-id"]
    assert msg["From"] == "writer@remote.test"
    assert msg["Message-ID"].endswith("@mx.test>")
    when = email.utils.parsedate_to_datetime(str(msg["Date"]))
    assert abs(time.time() - when.timestamp()) < 600


def test_a_trusted_clients_own_fields_are_kept_and_null_sender_is_mailer_daemon(
    shared: Path,
) -> None:
    with running(shared / "mw") as mw:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("<>")
            assert s.rcpt("root@mx.test")[0] == 250
            code, text = s.data(
                b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m@b>\r\n\r\nz\r\n"
            )
            assert code == 250
        msg = queued_message(mw, text.decode().split()[1])
    assert [name.lower() for name, _ in msg.items()] == ["received", "date", "message-id", "from"]
    assert (msg["Date"], msg["Message-ID"]) == ("Mon, 01 Jan 2024 00:00:00 +0000", "<m@b>")
    assert msg["From"] == "MAILER-DAEMON@mx.test"


# ---- items 15 and 16: what sendmail's messages look like ----------------------------------------


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with daemon_tools({"local": {"pickup_interval": 3600}}) as found:
        yield found


def test_local_submission_gets_sendmails_received_form(tools: Tools) -> None:
    _, stored, _, raw = tools.submit("user", input=b"Subject: trace\n\nhi\n")
    qid = stored.queue_id
    first = raw.split(b"\r\n")[:3]
    assert first[0] == b"Received: (from root@localhost)"
    assert first[1] == f"\tby mx.test (Mailwright) id {qid}".encode()
    assert first[2].startswith(b"\tfor <user@mx.test>; ")
    email.utils.parsedate_to_datetime(first[2].split(b"; ", 1)[1].decode())  # a real date
    assert stored.origin.protocol == "local"


def test_sendmail_t_qualifies_the_header_addresses(tools: Tools) -> None:
    message = (
        b"From: Me <root>\nTo: user, U Person <u>\nCc: root (the admin), x@elsewhere.test\n"
        b"Reply-To: Team: user;\nSubject: qualify\n\nhi\n"
    )
    _, stored, _, raw = tools.submit("-t", "-i", input=message)
    assert envelope_of(stored)[1] == [
        "user@mx.test",
        "u@mx.test",
        "root@mx.test",
        "x@elsewhere.test",
    ]
    lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert b"From: Me <root@mx.test>" in lines
    assert b"To: user@mx.test, U Person <u@mx.test>" in lines
    assert b"Cc: root@mx.test (the admin), x@elsewhere.test" in lines
    assert b"Reply-To: Team: user@mx.test;" in lines


def test_sendmail_qualifies_header_addresses_without_t_too(tools: Tools) -> None:
    _, stored, msg, _ = tools.submit("u", input=b"To: user\nSubject: plain\n\nhi\n")
    assert envelope_of(stored)[1] == ["u@mx.test"]
    assert str(msg["To"]) == "user@mx.test"


# ---- item 24: the alias table follows routing.alias_file; item 23: newaliases = aliases build --


def rcpt_code(mw: Mailwright, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail("a@x.test")
        return s.rcpt(address)[0]


def test_sighup_follows_alias_file_to_an_older_file(shared: Path) -> None:
    config = local_config(shared, "team: alice\n")
    (shared / "aliases.new").write_text("other: root\n")
    os.utime(shared / "aliases.new", (1_000_000_000, 1_000_000_000))  # cp -p of an old file
    mw = Mailwright(shared / "mw", config)
    mw.start()
    try:
        assert (rcpt_code(mw, "team@mx.test"), rcpt_code(mw, "other@mx.test")) == (250, 550)
        mw.config["routing"]["alias_file"] = str(shared / "aliases.new")
        mw.write_config()
        assert mw.proc is not None
        mw.proc.send_signal(signal.SIGHUP)
        mw.wait_log("SIGHUP: configuration reloaded")
        wait_until(lambda: rcpt_code(mw, "other@mx.test") == 250, what="the new alias file")
        assert rcpt_code(mw, "team@mx.test") == 550
        # newaliases while running: the table is reopened during some message's RCPT,
        # and the line that says so belongs to no message (issue 12 item 23)
        (shared / "aliases.new").write_text("other: root\nthird: root\n")
        assert mw.cli("aliases", "build").returncode == 0
        wait_until(lambda: rcpt_code(mw, "third@mx.test") == 250, what="the rebuilt table")
        line = mw.wait_log("reloaded (2 aliases)")
        assert not re.search(r"[0-9A-Z]{15}: alias table", line), line
    finally:
        mw.stop()


def test_start_up_rebuilds_an_out_of_date_table(shared: Path) -> None:
    config = local_config(shared, "team: alice\n")
    mw = Mailwright(shared / "mw", config)
    mw.start()
    mw.stop()
    table_time = (Path(mw.config["queue"]["directory"]) / "aliases.db").stat().st_mtime
    (shared / "aliases").write_text("crew: alice\n")
    os.utime(shared / "aliases", (table_time - 3600, table_time - 3600))  # older than the table
    mw.start()
    try:
        assert (rcpt_code(mw, "crew@mx.test"), rcpt_code(mw, "team@mx.test")) == (250, 550)
    finally:
        mw.stop()


def test_newaliases_and_aliases_build_agree_on_a_bad_file(tools: Tools) -> None:
    path = Path(tools.mw.config["routing"]["alias_file"])
    good = path.read_text()
    path.write_text(good + "no colon here\n")
    try:
        for proc in (tools.run(program="newaliases"), tools.mw.cli("aliases", "build")):
            assert proc.returncode == 65, proc.stderr
            assert proc.stderr.decode() == f"{path}:5: missing colon\n"
            assert proc.stdout.decode().startswith(f"{path}: 4 aliases")
    finally:
        path.write_text(good)
