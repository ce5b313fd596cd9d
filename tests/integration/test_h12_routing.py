"""Issue 12, routing items: bare postmaster, our own address literals, headers added for
trusted clients, ``sendmail -t`` header qualification, the local ``Received:`` form,
and the alias table reload. Real daemons, real sockets, real clients."""

from __future__ import annotations

import mailbox
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, deep_merge, wait_until
from tests.support.opentmp import open_tmp


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
