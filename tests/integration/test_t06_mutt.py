"""mutt (Debian's), sending through our ``sendmail`` as it does by default, end to end.

mutt sends in batch mode when stdin is not a terminal; with its default ``$sendmail``
(``/usr/sbin/sendmail -oem -oi``) it calls ``sendmail -oem -oi -f sender -- rcpt1 rcpt2``
with the composed message on stdin. The first test lets the daemon deliver (local
delivery into mbox files under the test directory) and reads the mailboxes; the second
looks at what was queued.
"""

from __future__ import annotations

import mailbox
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, wait_until
from tests.support.peers import have_programs, peer
from tests.support.sendmail import Tools, envelope_of, short_tmp

pytestmark = peer("mutt", have_programs("mutt"), "package mutt")


def started(root: Path, config: dict[str, Any]) -> Iterator[Tools]:
    mw = Mailwright(root, {"hostname": "mx.test", **config})
    mw.start()
    try:
        yield Tools(mw, root / "bin")
    finally:
        mw.stop()


@pytest.fixture
def tools() -> Iterator[Tools]:
    with short_tmp() as root:
        yield from started(root, {})


@pytest.fixture
def delivering() -> Iterator[Tools]:
    """A daemon that delivers at once to rcpt1 and rcpt2's mbox files in <root>/mail."""
    with short_tmp() as root:
        (root / "mail").mkdir()
        (root / "mailboxes").write_text("rcpt1 rcpt1\nrcpt2 rcpt2\n")
        (root / "aliases").write_text("postmaster: rcpt1\n")
        config = {
            "delivery": {"mode": "background"},
            "routing": {"local_domains": ["mx.test"], "alias_file": str(root / "aliases")},
            "local_delivery": {
                "mail_spool": str(root / "mail"),
                "virtual_mailbox_table": str(root / "mailboxes"),
            },
        }
        yield from started(root, config)


def mutt(tools: Tools, *extra: str, body: bytes = b"Hello from mutt.\n"):
    home = tools.mw.root / "home"
    home.mkdir(exist_ok=True)
    command = [
        "mutt",
        "-n",
        "-F",
        "/dev/null",
        "-e",
        f"set sendmail='{tools.bindir / 'sendmail'} -oem -oi'",  # mutt's default, our path
        "-e",
        'set from=sender@x.test realname="Test Sender" use_from=yes',
        "-e",
        'set use_envelope_from=yes record="" copy=no',
        *extra,
    ]
    env = tools.env(HOME=str(home), TERM="dumb")
    return subprocess.run(command, input=body, capture_output=True, env=env, timeout=60)


def mbox(path: Path) -> list[mailbox.mboxMessage]:
    if not path.exists():
        return []
    box = mailbox.mbox(path, create=False)
    try:
        return list(box)
    finally:
        box.close()


def test_mutt_sends_through_sendmail_into_local_mailboxes(delivering: Tools) -> None:
    proc = mutt(delivering, "-s", "mutt subject", "rcpt1@mx.test", "rcpt2@mx.test")
    assert (proc.returncode, proc.stderr) == (0, b"")
    mail = delivering.mw.root / "mail"
    wait_until(lambda: all(mbox(mail / u) for u in ("rcpt1", "rcpt2")), what="both mailboxes")
    for user in ("rcpt1", "rcpt2"):
        (msg,) = mbox(mail / user)
        assert msg["Return-Path"] == "<sender@x.test>"
        assert msg["Delivered-To"] == f"{user}@mx.test"
        assert msg["From"] == "Test Sender <sender@x.test>"
        assert msg["To"] == "rcpt1@mx.test, rcpt2@mx.test"
        assert msg["Subject"] == "mutt subject"
        assert msg["Message-ID"] and msg["Date"]  # mutt's own, kept
        assert msg["Received"].startswith("(from root@localhost)")
        assert msg["X-Authentication-Warning"] is None  # root is trusted
        assert msg.get_payload().strip() == "Hello from mutt."
    wait_until(lambda: not delivering.queue_ids(), what="an empty queue")


def test_mutt_with_cc_and_bcc(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = mutt(tools, "-s", "copies", "-c", "cc@y.test", "-b", "hidden@y.test", "to@y.test")
    assert proc.returncode == 0, proc.stderr
    (qid,) = tools.queue_ids() - before
    stored, msg, raw = tools.read(qid)
    assert envelope_of(stored)[0] == "sender@x.test"
    assert sorted(envelope_of(stored)[1]) == ["cc@y.test", "hidden@y.test", "to@y.test"]
    assert msg["Cc"] == "cc@y.test"
    assert b"hidden@y.test" not in raw  # mutt leaves Bcc out of what it hands sendmail
