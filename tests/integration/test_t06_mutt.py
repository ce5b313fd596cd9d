"""mutt (Debian's) configured to send through our ``sendmail`` gets its message queued.

mutt sends in batch mode when stdin is not a terminal; it calls
``sendmail -oi -f sender -- rcpt1 rcpt2`` with the composed message on stdin.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools, envelope_of, short_tmp

pytestmark = pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt is not installed")


@pytest.fixture
def tools() -> Iterator[Tools]:
    with short_tmp() as root:
        mw = Mailwright(root, {"hostname": "mx.test"})
        mw.start()
        try:
            yield Tools(mw, root / "bin")
        finally:
            mw.stop()


def mutt(tools: Tools, *extra: str, body: bytes = b"Hello from mutt.\n"):
    home = tools.mw.root / "home"
    home.mkdir(exist_ok=True)
    command = [
        "mutt",
        "-n",
        "-F",
        "/dev/null",
        "-e",
        f"set sendmail='{tools.bindir / 'sendmail'} -oi'",
        "-e",
        'set from=sender@x.test realname="Test Sender" use_from=yes',
        "-e",
        'set use_envelope_from=yes record="" copy=no',
        *extra,
    ]
    env = tools.env(HOME=str(home), TERM="dumb")
    return subprocess.run(command, input=body, capture_output=True, env=env, timeout=60)


def test_mutt_sends_through_sendmail_into_the_queue(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = mutt(tools, "-s", "mutt subject", "rcpt1@y.test", "rcpt2@y.test")
    assert proc.returncode == 0, proc.stderr
    (qid,) = tools.queue_ids() - before
    stored, msg, _ = tools.read(qid)
    assert envelope_of(stored) == ("sender@x.test", ["rcpt1@y.test", "rcpt2@y.test"])
    assert msg["From"] == "Test Sender <sender@x.test>"
    assert msg["To"] == "rcpt1@y.test, rcpt2@y.test"
    assert msg["Subject"] == "mutt subject"
    assert msg["Message-ID"] and msg["Date"]  # mutt's own, kept
    assert msg["Received"].startswith("from root@localhost")
    assert msg["X-Authentication-Warning"] is None  # root is trusted
    assert msg.get_content().strip() == "Hello from mutt."


def test_mutt_with_cc_and_bcc(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = mutt(tools, "-s", "copies", "-c", "cc@y.test", "-b", "hidden@y.test", "to@y.test")
    assert proc.returncode == 0, proc.stderr
    (qid,) = tools.queue_ids() - before
    stored, msg, raw = tools.read(qid)
    assert sorted(envelope_of(stored)[1]) == ["cc@y.test", "hidden@y.test", "to@y.test"]
    assert msg["Cc"] == "cc@y.test"
    assert b"hidden@y.test" not in raw  # mutt leaves Bcc out of what it hands sendmail
