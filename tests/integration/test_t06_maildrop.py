"""The daemon is down: ``sendmail`` still exits 0, nothing is lost, the daemon picks it up.

Also ``sendmail -bs``, driven by Python's smtplib over a pipe, with and without the daemon.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.submission import Rcpt, SubmissionEnvelope
from mailwright.queue import maildrop
from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools, envelope_of, short_tmp, smtp_over_pipe


@pytest.fixture
def tools() -> Iterator[Tools]:
    """A daemon that ran once (so the directories exist) and is now stopped."""
    with short_tmp() as root:
        mw = Mailwright(root, {"hostname": "mx.test", "local": {"pickup_interval": 3600}})
        mw.start()
        mw.stop()
        yield Tools(mw, root / "bin")
        mw.stop()


def dropped(tools: Tools) -> list[str]:
    return maildrop.pending(str(tools.maildrop))


def test_daemon_down_message_waits_in_the_maildrop_then_is_queued(tools: Tools) -> None:
    proc = tools.run("-f", "root@mx.test", "a@x.test", "b@x.test", input=b"Subject: md\n\nbody\n")
    assert proc.returncode == 0 and proc.stderr == b""
    (path,) = dropped(tools)
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.getuid()
    assert stat.S_IMODE(tools.maildrop.stat().st_mode) == 0o1733
    assert tools.queue_ids() == set()
    listing = tools.run(program="mailq").stdout.decode()
    assert f"{tools.maildrop} (1 request)" in listing and "<a@x.test>" in listing

    tools.mw.start()
    name = os.path.basename(path)
    line = tools.mw.wait_log(f"maildrop {name}: queued as ")
    qid = line.split("queued as ")[1].split()[0]
    stored, msg, raw = tools.read(qid)
    assert envelope_of(stored) == ("root@mx.test", ["a@x.test", "b@x.test"])
    assert msg["Subject"] == "md" and raw.endswith(b"\r\n\r\nbody\r\n")
    assert msg["Received"].startswith("(from root@localhost)")
    assert stored.origin.local_user == "root"
    assert dropped(tools) == []


def test_several_messages_and_dsn_parameters_survive_the_maildrop(tools: Tools) -> None:
    for i in range(5):
        proc = tools.run(
            "-N",
            "success",
            "-R",
            "full",
            "-V",
            f"env{i}",
            f"r{i}@x.test",
            input=f"Subject: n{i}\n\nx\n".encode(),
        )
        assert proc.returncode == 0, proc.stderr
    names = [os.path.basename(p) for p in dropped(tools)]
    assert len(names) == 5
    tools.mw.start()
    queued = set()
    for name in names:
        line = tools.mw.wait_log(f"maildrop {name}: queued as ")
        queued.add(line.split("queued as ")[1].split()[0])
    assert queued == tools.queue_ids()
    envids = set()
    for qid in queued:
        stored, _, _ = tools.read(qid)
        assert stored.envelope.params.ret == "FULL"
        assert stored.recipients[0].notify == "SUCCESS"
        envids.add(stored.envelope.params.envid)
    assert envids == {f"env{i}" for i in range(5)}
    assert dropped(tools) == []


def test_a_running_daemon_picks_up_at_once_when_sendmail_knocks(tools: Tools) -> None:
    # a file left by an earlier outage, found when the next local client connects
    envelope = SubmissionEnvelope("root@mx.test", [Rcpt("late@x.test")])
    path = maildrop.write(str(tools.maildrop), envelope, b"Subject: late\r\n\r\nx\r\n")
    tools.mw.start()
    name = os.path.basename(path)
    tools.mw.wait_log(f"maildrop {name}: queued as ")  # the start-up scan
    path = maildrop.write(str(tools.maildrop), envelope, b"Subject: later\r\n\r\nx\r\n")
    proc = tools.run("now@x.test", input=b"x\n")  # pickup interval is an hour: this wakes it
    assert proc.returncode == 0
    tools.mw.wait_log(f"maildrop {os.path.basename(path)}: queued as ")
    assert dropped(tools) == []


def test_bad_files_are_set_aside_good_ones_queued(tools: Tools) -> None:
    md = tools.maildrop
    (md / "garbage").write_bytes(b"not a maildrop file\n")
    good = maildrop.write(str(md), SubmissionEnvelope("", [Rcpt("ok@x.test")]), b"\r\nx\r\n")
    os.symlink(good, md / "alias")
    envelope = SubmissionEnvelope("root@mx.test", [Rcpt("loop@x.test")])
    looping = b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n" * 60 + b"\r\nx\r\n"
    loop = maildrop.write(str(md), envelope, looping)
    partial = Path(maildrop.write(str(md), envelope, b"\r\nwhole\r\n"))
    partial.write_bytes(partial.read_bytes()[:-3])  # still being written, as far as we know
    tools.mw.start()
    tools.mw.wait_log("maildrop garbage: moved to")
    tools.mw.wait_log("maildrop alias: moved to")
    tools.mw.wait_log(f"maildrop {os.path.basename(loop)}: moved to {tools.queue_dir}/rejected")
    tools.mw.wait_log(f"maildrop {os.path.basename(good)}: queued as")
    assert (tools.queue_dir / "corrupt" / "garbage").exists()
    assert (tools.queue_dir / "rejected" / os.path.basename(loop)).exists()
    assert dropped(tools) == [str(partial)]
    stored = [tools.read(q)[0] for q in tools.queue_ids()]
    # the good message, and the bounce telling root its looping message was refused
    assert sorted(envelope_of(s) for s in stored) == [("", ["ok@x.test"]), ("", ["root@mx.test"])]


# ---- -bs ----------------------------------------------------------------------------------
def bs_session(tools: Tools) -> tuple[str, Any]:
    client, proc = smtp_over_pipe(tools)
    client.ehlo("client.test")
    assert client.does_esmtp and client.has_extn("pipelining") and client.has_extn("dsn")
    client.mail("alice@x.test", ["RET=HDRS"])
    client.rcpt("bob@y.test", ["NOTIFY=FAILURE"])
    code, text = client.data(b"Subject: bs\r\n\r\n.dotted\r\nline\r\n")
    assert code == 250, text
    client.quit()
    assert proc.wait(10) == 0
    return text.decode(), proc


def test_bs_without_the_daemon_uses_the_same_core_and_the_maildrop(tools: Tools) -> None:
    text, _ = bs_session(tools)
    (path,) = dropped(tools)
    assert text.startswith(f"2.0.0 {os.path.basename(path)} Message accepted")
    with maildrop.open_entry(path) as entry:
        assert entry.envelope.sender == "alice@x.test"
        assert entry.envelope.ret == "HDRS"
        assert [(r.address, r.notify) for r in entry.envelope.recipients] == [
            ("bob@y.test", "FAILURE")
        ]
        assert b"".join(entry.chunks()) == b"Subject: bs\r\n\r\n.dotted\r\nline\r\n"
    tools.mw.start()
    tools.mw.wait_log(f"maildrop {os.path.basename(path)}: queued as")
    (qid,) = tools.queue_ids()
    stored, msg, _ = tools.read(qid)
    assert envelope_of(stored) == ("alice@x.test", ["bob@y.test"])
    assert msg["Date"] and msg["Message-ID"] and msg["From"] == "alice@x.test"


def test_bs_with_the_daemon_is_the_daemons_dialogue(tools: Tools) -> None:
    tools.mw.start()
    text, _ = bs_session(tools)
    qid = text.split()[1]
    stored, msg, raw = tools.read(qid)
    assert envelope_of(stored) == ("alice@x.test", ["bob@y.test"])
    assert msg["Received"].startswith("(from root@localhost)")
    assert raw.endswith(b"\r\n\r\n.dotted\r\nline\r\n")
    assert dropped(tools) == []


def test_bs_speaks_smtp_errors_like_the_daemon(tools: Tools) -> None:
    for running in (False, True):
        if running:
            tools.mw.start()
        client, proc = smtp_over_pipe(tools)
        assert client.docmd("MAIL FROM:<a@x.test>")[0] == 503  # no EHLO yet
        client.ehlo("c")
        assert client.docmd("RCPT TO:<b@x.test>")[0] == 503
        assert client.docmd("BOGUS")[0] == 500
        client.quit()
        assert proc.wait(10) == 0


def test_recipient_refused_at_pickup_gets_a_bounce(tools: Tools) -> None:
    # the daemon is down: an unknown local user cannot be refused at submission time
    proc = tools.run(
        "-f",
        "root@mx.test",
        "nosuchuser@mx.test",
        "a@x.test",
        input=b"Subject: pickup bounce\n\nbody\n",
    )
    assert proc.returncode == 0
    (path,) = dropped(tools)
    tools.mw.start()
    name = os.path.basename(path)
    tools.mw.wait_log(f"maildrop {name}: queued as ")
    bounces = []
    for qid in tools.queue_ids():
        stored, _msg, raw = tools.read(qid)
        if stored.envelope.sender is None:
            bounces.append((stored, raw))
    assert len(bounces) == 1
    stored, raw = bounces[0]
    assert [str(r.address) for r in stored.envelope.recipients] == ["root@mx.test"]
    assert b"Final-Recipient: rfc822; nosuchuser@mx.test" in raw
    assert b"5.1.1" in raw and b"a@x.test" not in raw.split(b"delivery-status")[1][:400]
