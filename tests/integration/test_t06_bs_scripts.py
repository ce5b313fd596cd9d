"""``sendmail -bs`` driven by a script on stdin (``printf ... | sendmail -bs``), end to end.

LF or CRLF line ends, a batch of commands written at once (no PIPELINING needed after
HELO), the exit status (0 after QUIT, 76 when the input stops inside a transaction);
through the running daemon, and with the daemon down (into the maildrop). The network
listener keeps its RFC 2920 strictness.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue import maildrop
from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools, daemon_tools, envelope_of, short_tmp
from tests.support.smtp import RawClient

ENVELOPE = b"MAIL FROM:<a@x.test>\nRCPT TO:<user@mx.test>\n"
MESSAGE = b"DATA\nSubject: scripted\n\nline one\n..dotted\n.\n"


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with daemon_tools() as tools:
        yield tools


def replies(stdout: bytes) -> list[str]:
    return [line[:3] for line in stdout.decode().split("\r\n") if line and line[3:4] != "-"]


def test_ehlo_with_lf(tools: Tools) -> None:
    proc = tools.run("-bs", input=b"EHLO x\n")
    assert proc.returncode == 0
    assert replies(proc.stdout) == ["220", "250"]
    assert b"250-PIPELINING" in proc.stdout


@pytest.mark.parametrize(
    ("hello", "crlf"), [(b"HELO x\n", False), (b"HELO x\n", True), (b"EHLO x\n", False)]
)
def test_a_scripted_batch_is_queued(tools: Tools, hello: bytes, crlf: bool) -> None:
    script = hello + ENVELOPE + MESSAGE + b"QUIT\n"
    if crlf:
        script = script.replace(b"\n", b"\r\n")
    before = tools.queue_ids()
    proc = tools.run("-bs", input=script)
    assert proc.returncode == 0, proc.stdout
    assert replies(proc.stdout) == ["220", "250", "250", "250", "354", "250", "221"]
    (qid,) = tools.queue_ids() - before
    stored, msg, raw = tools.read(qid)
    assert envelope_of(stored) == ("a@x.test", ["user@mx.test"])
    assert msg["Subject"] == "scripted"
    assert raw.endswith(b"\r\n\r\nline one\r\n.dotted\r\n")


def test_input_ending_mid_transaction_is_76_and_nothing_is_queued(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = tools.run("-bs", input=b"HELO x\n" + ENVELOPE + b"DATA\nSubject: cut\n\nhalf")
    assert proc.returncode == 76
    assert tools.queue_ids() == before


def test_input_ending_between_messages_is_0(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = tools.run("-bs", input=b"HELO x\n" + ENVELOPE + MESSAGE)
    assert proc.returncode == 0
    assert len(tools.queue_ids() - before) == 1


def test_bdat_chunks_are_counted_as_written(tools: Tools) -> None:
    payload = b"Subject: chunked\n\nbody\n"
    script = b"EHLO x\n" + ENVELOPE + b"BDAT %d LAST\n" % len(payload) + payload + b"QUIT\n"
    before = tools.queue_ids()
    proc = tools.run("-bs", input=script)
    assert proc.returncode == 0
    assert replies(proc.stdout)[-2:] == ["250", "221"]
    (qid,) = tools.queue_ids() - before
    assert tools.read(qid)[1]["Subject"] == "chunked"


def test_the_network_listener_stays_strict(tools: Tools) -> None:
    client = RawClient(tools.mw.port)
    try:
        client.send(b"HELO x\r\nMAIL FROM:<a@x.test>\r\n")
        assert client.reply().startswith("554 5.5.0 Improper command pipelining after HELO")
    finally:
        client.close()


def test_daemon_down_a_scripted_batch_goes_to_the_maildrop(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    maildrop.prepare(str(queue / "maildrop"))
    with short_tmp() as root:
        mw = Mailwright(root, {"hostname": "mx.test", "queue": {"directory": str(queue)}})
        tools = Tools(mw, root / "bin")  # not started
        proc = tools.run("-bs", input=b"HELO x\n" + ENVELOPE + MESSAGE + b"QUIT\n")
        assert proc.returncode == 0, proc.stdout
        assert replies(proc.stdout) == ["220", "250", "250", "250", "354", "250", "221"]
        (path,) = maildrop.pending(str(queue / "maildrop"))
        with maildrop.open_entry(path) as entry:
            assert entry.envelope.sender == "a@x.test"
            assert b"".join(entry.chunks()).endswith(b"line one\r\n.dotted\r\n")
        proc = tools.run("-bs", input=b"HELO x\n" + ENVELOPE)
        assert proc.returncode == 76
        assert len(maildrop.pending(str(queue / "maildrop"))) == 1
