"""``sendmail -oem``: errors are mailed back to the submitter, and sendmail exits 0.

A real daemon (queue only) takes both the submission and the returned mail over its
local socket; the test reads the queue to see who got what. ``-oep``/``-oeq`` keep
printing / staying quiet, and a temporary failure is never mailed.
"""

from __future__ import annotations

import email
import email.policy
import os
import pwd
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailwright.queue import maildrop
from tests.support.daemon import Mailwright
from tests.support.sendmail import Tools, daemon_tools, envelope_of, short_tmp

ME = pwd.getpwuid(os.getuid()).pw_name
LOST = b"Subject: lost\n\nthe body\n"


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with daemon_tools() as tools:
        yield tools


def returned(tools: Tools, *args: str, input: bytes = LOST) -> tuple[list[str], EmailMessage]:
    """Run sendmail; it must exit 0 quietly and queue one returned mail: (its rcpts, it)."""
    before = tools.queue_ids()
    proc = tools.run(*args, input=input)
    assert (proc.returncode, proc.stderr) == (0, b""), proc.stderr
    reports = []
    for qid in tools.queue_ids() - before:
        stored, msg, _ = tools.read(qid)
        if stored.envelope.sender_text == "":
            reports.append((envelope_of(stored)[1], msg))
    assert len(reports) == 1, reports
    return reports[0]


def parts(msg: EmailMessage) -> tuple[str, EmailMessage | None]:
    """The report's text and the attached original message (None when not attached)."""
    assert msg.get_content_type() == "multipart/mixed"
    text_part, *rest = msg.iter_parts()
    text = text_part.get_content()
    if not rest:
        return text, None
    (attached,) = rest
    if attached.get_content_type() == "message/rfc822":
        (inner,) = attached.iter_parts()
        return text, inner  # type: ignore[return-value]
    return text, None


@pytest.mark.parametrize("mode", [("-oem",), ("-o", "em"), ("-O", "ErrorMode=m"), ("-oee",)])
def test_unknown_local_user_is_mailed_back_to_the_caller(
    tools: Tools, mode: tuple[str, ...]
) -> None:
    rcpts, msg = returned(tools, *mode, "nosuch", input=LOST)
    assert rcpts == [f"{ME}@mx.test"]
    assert msg["From"] == "Mail Delivery Subsystem <MAILER-DAEMON@mx.test>"
    assert msg["Subject"] == "Returned mail: see transcript for details"
    assert msg["Auto-Submitted"] == "auto-generated (failure)"
    assert msg["Date"] and msg["Message-ID"]
    text, original = parts(msg)
    assert "<nosuch@mx.test>: 550 5.1.1" in text
    assert original is not None and original["Subject"] == "lost"
    assert original.get_content().replace("\r\n", "\n") == "the body\n"


def test_cron_with_no_recipient_in_the_header_mails_the_f_sender(tools: Tools) -> None:
    args = ("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")
    rcpts, msg = returned(tools, *args, input=b"Subject: Cron <root@h> job\n\noutput\n")
    assert rcpts == ["root@mx.test"]
    text, original = parts(msg)
    assert "no recipient addresses found in the header" in text
    assert original is not None and original["Subject"] == "Cron <root@h> job"


def test_an_unknown_f_sender_falls_back_to_the_caller(tools: Tools) -> None:
    rcpts, _ = returned(tools, "-oem", "-f", "nobody-here@mx.test", "nosuch")
    assert rcpts == [f"{ME}@mx.test"]


def test_malformed_address(tools: Tools) -> None:
    rcpts, msg = returned(tools, "-oem", "bad address@@x.test")
    assert rcpts == [f"{ME}@mx.test"]
    assert "<bad address@@x.test>: 553 5.1.3" in parts(msg)[0]


def test_message_data_error_a_mail_loop(tools: Tools) -> None:
    hops = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\n" * 60
    rcpts, msg = returned(tools, "-oem", "user", input=hops + LOST)
    assert rcpts == [f"{ME}@mx.test"]
    text, original = parts(msg)
    assert "too many hops" in text
    assert original is not None and original["Subject"] == "lost"
    assert msg["Received"] is not None and len(msg.get_all("Received") or []) == 1


def test_some_recipients_refused_the_rest_is_queued_and_the_errors_mailed(tools: Tools) -> None:
    before = tools.queue_ids()
    proc = tools.run("-oem", "user", "nosuch", input=LOST)
    assert (proc.returncode, proc.stderr) == (0, b"")
    envelopes = sorted(envelope_of(tools.read(q)[0]) for q in tools.queue_ids() - before)
    assert envelopes == [("", [f"{ME}@mx.test"]), (f"{ME}@mx.test", ["user@mx.test"])]


@pytest.mark.parametrize(("mode", "printed"), [("-oep", True), ("-oew", True), ("-oeq", False)])
def test_other_error_modes_do_not_mail(tools: Tools, mode: str, printed: bool) -> None:
    before = tools.queue_ids()
    proc = tools.run(mode, "nosuch", input=LOST)
    assert proc.returncode == 67
    assert (b"<nosuch@mx.test>: 550 5.1.1" in proc.stderr) is printed
    assert tools.queue_ids() == before


def test_a_temporary_failure_is_not_mailed(tools: Tools, tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'[queue]\ndirectory = "{tmp_path / "nowhere"}"\n')
    proc = tools.run("-C", str(path), "-oem", "u", input=LOST)
    assert proc.returncode == 75
    assert b"the daemon is unavailable and the maildrop" in proc.stderr


def test_daemon_down_the_returned_mail_waits_in_the_maildrop(tmp_path: Path) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    maildrop.prepare(str(queue / "maildrop"))
    with short_tmp() as root:
        mw = Mailwright(root, {"hostname": "mx.test", "queue": {"directory": str(queue)}})
        tools = Tools(mw, root / "bin")  # not started: the daemon is down
        proc = tools.run("-oem", "bad address@@x.test", input=LOST)
        assert (proc.returncode, proc.stderr) == (0, b"")
        (path,) = maildrop.pending(str(queue / "maildrop"))
        with maildrop.open_entry(path) as entry:
            envelope = entry.envelope
            raw = b"".join(entry.chunks())
        assert envelope.sender == ""
        assert [r.address for r in envelope.recipients] == [f"{ME}@mx.test"]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert "<bad address@@x.test>: invalid address" in parts(msg)[0]  # type: ignore[arg-type]
