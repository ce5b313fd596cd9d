"""T08 local delivery end to end: a real daemon (with its queue manager), SMTP in, alias
and list expansion, mailboxes, a program, a file and a remote member (Postfix's
smtp-sink); and two Mailwright hosts in network namespaces exchanging mail."""

from __future__ import annotations

import mailbox
import os
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, deep_merge, wait_until
from tests.support.opentmp import open_tmp
from tests.support.peers import peer, require_peer
from tests.support.smtp_sink import SmtpSink, available

pytestmark = peer("smtp-sink", available(), "postfix (smtp-sink) is not installed")


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


def received(path: Path) -> list[mailbox.Message]:
    """The messages in an mbox file or a Maildir directory (a Maildir appears whole)."""
    if path.is_dir():
        return list(mailbox.Maildir(path, create=False))
    return list(mbox_messages(path))


@pytest.fixture
def shared() -> Iterator[Path]:
    with open_tmp("mw-t06-") as path:
        yield path


def test_list_to_users_program_file_and_remote_member(shared: Path) -> None:
    out = shared / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # programs and files run as the default user (nobody) when we are root
    (shared / "mailboxes").write_text(
        "alice alice\nbob bob\ncarol carol/\nlistowner listowner\nroot root\n"  # carol: Maildir
    )
    (shared / "aliases").write_text(
        "postmaster: root\n"
        "list: alice, bob, carol,\n"
        f'  "|cat >> {out}/pipe.out",\n'
        f"  {out}/list.mbox,\n"
        "  member@remote.test,\n"
        "  nosuch\n"
        "owner-list: listowner\n"
    )
    with SmtpSink(shared / "sink") as sink:
        (shared / "transport").write_text(
            f"remote.test smtp:[127.0.0.1]:{sink.port}\nexample.com smtp:[127.0.0.1]:{sink.port}\n"
        )
        config: dict[str, Any] = {
            "routing": {
                "local_domains": ["mx.test"],
                "alias_file": str(shared / "aliases"),
                "transport_table": str(shared / "transport"),
            },
            "local_delivery": {
                "mail_spool": str(shared / "mail"),
                "virtual_mailbox_table": str(shared / "mailboxes"),
            },
        }
        (shared / "mail").mkdir()
        mw = DeliveringMailwright(shared / "mw", config)
        mw.start()
        try:
            with smtplib.SMTP("127.0.0.1", mw.port) as s:
                refused = s.sendmail(
                    "sender@example.com",
                    ["list@mx.test", "alice@mx.test"],
                    b"From: sender@example.com\r\nTo: list@mx.test\r\nSubject: to the list\r\n"
                    b"\r\nHello, list.\r\nFrom me.\r\n",
                )
                assert refused == {}
            mail = shared / "mail"
            wait_until(
                lambda: all(received(mail / u) for u in ("alice", "bob", "carol")),
                what="mailboxes",
            )
            wait_until(
                lambda: (out / "pipe.out").exists() and (out / "list.mbox").exists(),
                what="program and file",
            )
            wait_until(lambda: len(sink.messages()) >= 1, what="remote member")
            wait_until(
                lambda: len(mbox_messages(mail / "listowner")) >= 1,
                what="bounce to the list owner",
            )
            mw.stop()  # everything has happened: a clean stop, then count
        finally:
            mw.kill()
        for user, quoted in (("alice", ">"), ("bob", ">"), ("carol", "")):  # carol: Maildir
            (msg,) = received(mail / user)
            assert msg["Subject"] == "to the list" and msg["Delivered-To"] == f"{user}@mx.test"
            assert msg.get_payload() == f"Hello, list.\n{quoted}From me.\n"
        # alice got the copy addressed to her directly (original sender), not a second one
        assert mbox_messages(mail / "alice")[0]["Return-Path"] == "<sender@example.com>"
        assert mbox_messages(mail / "bob")[0]["Return-Path"] == "<listowner@mx.test>"
        pipe_copy = (out / "pipe.out").read_text()
        assert pipe_copy.count("Subject: to the list") == 1
        assert "Return-Path: <listowner@mx.test>\nDelivered-To: list@mx.test\n" in pipe_copy
        (archived,) = mbox_messages(out / "list.mbox")
        assert archived["Subject"] == "to the list"
        (remote,) = sink.messages()
        assert remote.mail_args.startswith("<listowner@mx.test>")
        assert remote.rcpt_args == ["<member@remote.test>"]
        (bounce,) = mbox_messages(mail / "listowner")
        text = bounce.as_string()
        assert bounce["Return-Path"] == "<>" and "nosuch@mx.test" in text and "5.1.1" in text
        assert mbox_messages(mail / "root") == []  # no double bounce, nothing to postmaster


def test_unknown_local_user_is_refused_at_rcpt(shared: Path) -> None:
    (shared / "aliases").write_text("staff: root\n")
    config = {
        "routing": {"local_domains": ["mx.test"], "alias_file": str(shared / "aliases")},
        "local_delivery": {"mail_spool": str(shared / "mail")},
    }
    mw = DeliveringMailwright(shared / "mw", config)
    mw.start()
    try:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("a@x.test")
            assert s.rcpt("nosuch@mx.test") == (550, b"5.1.1 <nosuch@mx.test>... User unknown")
            assert s.rcpt("staff@mx.test")[0] == 250
            assert s.rcpt("root+tag@mx.test")[0] == 250
            assert s.rcpt("Postmaster@mx.test")[0] == 250
    finally:
        mw.stop()


# ---- two hosts in network namespaces -------------------------------------------------------------


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


class Namespaces:
    """Two network namespaces joined by a veth pair, 192.0.2.1 and 192.0.2.2."""

    def __init__(self, tag: str) -> None:
        self.a, self.b = f"mwA{tag}", f"mwB{tag}"
        self.created: list[str] = []

    def __enter__(self) -> Namespaces:
        try:
            for ns in (self.a, self.b):
                run("ip", "netns", "add", ns)
                self.created.append(ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            run(
                "ip",
                "link",
                "add",
                "vethA",
                "netns",
                self.a,
                "type",
                "veth",
                "peer",
                "name",
                "vethB",
                "netns",
                self.b,
            )
            run("ip", "-n", self.a, "addr", "add", "192.0.2.1/24", "dev", "vethA")
            run("ip", "-n", self.b, "addr", "add", "192.0.2.2/24", "dev", "vethB")
            run("ip", "-n", self.a, "link", "set", "vethA", "up")
            run("ip", "-n", self.b, "link", "set", "vethB", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in reversed(self.created):  # deleting a namespace removes its veth end too
            run("ip", "netns", "delete", ns, check=False)
        self.created.clear()


class NamespacedMailwright(DeliveringMailwright):
    def __init__(self, namespace: str, root: Path, config: dict[str, Any]) -> None:
        super().__init__(root, config)
        self.namespace = namespace

    def command(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *super().command(*args)]


def can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns)"
    probe = subprocess.run(["ip", "netns", "add", f"mwprobe{os.getpid()}"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "delete", f"mwprobe{os.getpid()}"], check=False)
    return None


def host_config(shared: Path, name: str, me: str, peer: str, peer_ip: str) -> dict[str, Any]:
    (shared / name).mkdir()
    (shared / name / "mail").mkdir()
    (shared / name / "aliases").write_text("postmaster: root\n")
    (shared / name / "transport").write_text(f"{peer} smtp:[{peer_ip}]:25\n")
    return {
        "hostname": me,
        "listeners": [
            {"address": "127.0.0.1", "port": 2525, "kind": "smtp"},
            {"address": "192.0.2.1" if name == "a" else "192.0.2.2", "port": 25, "kind": "smtp"},
        ],
        "relay": {"networks": ["127.0.0.0/8", "192.0.2.0/24"]},
        "routing": {
            "local_domains": [me],
            "alias_file": str(shared / name / "aliases"),
            "transport_table": str(shared / name / "transport"),
        },
        "local_delivery": {"mail_spool": str(shared / name / "mail")},
        "queue": {"directory": str(shared / name / "queue")},
    }


SUBMIT = """
import smtplib, sys
with smtplib.SMTP("127.0.0.1", 2525) as s:
    s.sendmail("root@hosta.test", sys.argv[1:], b"Subject: across\\r\\n\\r\\nHi B.\\r\\n")
"""


SENDMAIL = "import sys; from mailwright.cli.sendmail import main; sys.exit(main())"


def test_mail_between_two_hosts(shared: Path) -> None:
    reason = can_make_namespaces()
    require_peer("network namespaces", reason is None, str(reason))
    with Namespaces(str(os.getpid())) as ns:
        a = NamespacedMailwright(
            ns.a, shared / "mwa", host_config(shared, "a", "hosta.test", "hostb.test", "192.0.2.2")
        )
        b = NamespacedMailwright(
            ns.b, shared / "mwb", host_config(shared, "b", "hostb.test", "hosta.test", "192.0.2.1")
        )
        a.port = b.port = 2525
        b.start()
        try:
            a.start()
            try:
                submit = ["ip", "netns", "exec", ns.a, sys.executable, "-c", SUBMIT]
                run(*submit, "root@hostb.test")
                run(*submit, "nosuch@hostb.test")
                sendmail = subprocess.run(  # the command line, through A's local socket
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns.a,
                        sys.executable,
                        "-c",
                        SENDMAIL,
                        "root@hostb.test",
                    ],
                    input=b"Subject: by sendmail\n\nHi again.\n",
                    env=a.env(),
                    capture_output=True,
                )
                assert sendmail.returncode == 0, sendmail.stderr
                b_root = shared / "b" / "mail" / "root"
                a_root = shared / "a" / "mail" / "root"
                wait_until(lambda: len(mbox_messages(b_root)) == 2, what="root@hostb's mailbox")
                wait_until(
                    lambda: len(mbox_messages(a_root)) == 1, what="the bounce back on host A"
                )
            finally:
                a.stop()  # first: it closes its idle connection to B
        finally:
            b.stop()
    delivered, by_sendmail = sorted(
        mbox_messages(shared / "b" / "mail" / "root"), key=lambda m: str(m["Subject"])
    )
    assert delivered["Subject"] == "across" and delivered["Return-Path"] == "<root@hosta.test>"
    assert by_sendmail["Subject"] == "by sendmail"
    assert by_sendmail["Return-Path"] == "<root@hosta.test>"  # the caller (root), qualified
    assert "by hostb.test" in str(delivered.get_all("Received"))
    assert "from hosta.test" in str(delivered.get_all("Received"))
    (bounce,) = mbox_messages(shared / "a" / "mail" / "root")
    text = bounce.as_string()
    assert bounce["Return-Path"] == "<>" and "nosuch@hostb.test" in text
    assert "5.1.1" in text and "hostb.test" in text
    for ns_name in (ns.a, ns.b):
        assert ns_name not in run("ip", "netns", "list").stdout  # cleaned up


def test_rebuilt_alias_table_is_used_without_restart(shared: Path) -> None:
    (shared / "aliases").write_text("staff: root\n")
    config = {
        "routing": {"local_domains": ["mx.test"], "alias_file": str(shared / "aliases")},
        "local_delivery": {"mail_spool": str(shared / "mail")},
    }
    mw = DeliveringMailwright(shared / "mw", config)
    mw.start()  # compiles the alias file it finds uncompiled

    def rcpt(address: str) -> int:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("a@x.test")
            return s.rcpt(address)[0]

    try:
        assert (rcpt("staff@mx.test"), rcpt("team@mx.test")) == (250, 550)
        (shared / "aliases").write_text("team: root\n")
        built = mw.cli("aliases", "build")
        assert built.returncode == 0, built.stderr
        assert (
            built.stdout.decode()
            .strip()
            .endswith("aliases: 1 aliases, longest 4 bytes, 8 bytes total")
        )
        wait_until(lambda: rcpt("team@mx.test") == 250, what="the new table in use")
        assert rcpt("staff@mx.test") == 550
    finally:
        mw.stop()
