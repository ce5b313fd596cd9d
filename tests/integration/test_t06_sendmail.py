"""End to end: ``sendmail`` as cron, PHP, mutt and scripts call it, into a real daemon's queue.

Each test runs the real program (an installed-style entry point) against a running
daemon over its local socket and checks the queued envelope and headers.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.submission import gecos_name
from tests.support.sendmail import Tools, daemon_tools, envelope_of

ME = pwd.getpwuid(os.getuid()).pw_name
MY_NAME = gecos_name(pwd.getpwuid(os.getuid()).pw_gecos, ME)


@pytest.fixture(scope="module")
def tools() -> Iterator[Tools]:
    with daemon_tools() as tools:
        yield tools


# ---- the real invocations -------------------------------------------------------------------
def test_echo_hi_pipe_sendmail_user(tools: Tools) -> None:
    proc, stored, msg, raw = tools.submit("user", input=b"hi\n")
    assert proc.stdout == b"" and proc.stderr == b""
    assert envelope_of(stored) == (f"{ME}@mx.test", ["user@mx.test"])
    assert msg["From"] == f"{MY_NAME} <{ME}@mx.test>" if MY_NAME else f"{ME}@mx.test"
    assert msg["Date"] and msg["Message-ID"].endswith("@mx.test>")
    received = msg["Received"]
    assert received.startswith(f"(from {ME}@localhost)") and "by mx.test (Mailwright)" in received
    assert f"id {stored.queue_id}" in received
    assert raw.endswith(b"\r\n\r\nhi\r\n")
    assert stored.origin.local_user == ME and stored.origin.client_address == ""
    assert msg["X-Authentication-Warning"] is None


CRON_MESSAGE = (
    b"From: root (Cron Daemon)\n"
    b"To: root\n"
    b"Subject: Cron <root@host> run-parts /etc/cron.hourly\n"
    b"MIME-Version: 1.0\n"
    b"Content-Type: text/plain; charset=UTF-8\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"X-Cron-Env: <SHELL=/bin/sh>\n"
    b"\n"
    b"output line\n"
    b".\n"
    b"..still data\n"
)


def test_cron_invocation(tools: Tools) -> None:
    # cron says -odi, which delivers before sendmail exits (test_t06_queue_runs.py runs it);
    # -odq keeps the message queued for this test to read
    args = ("-FCronDaemon", "-i", "-odq", "-oem", "-oi", "-t", "-f", "root")
    _, stored, msg, raw = tools.submit(*args, input=CRON_MESSAGE)
    assert envelope_of(stored) == ("root@mx.test", ["root@mx.test"])
    # kept (only a missing From is made up), qualified as Sendmail does (issue 12 item 15)
    assert b"\r\nFrom: root@mx.test (Cron Daemon)\r\nTo: root@mx.test\r\n" in raw
    assert msg["Subject"] == "Cron <root@host> run-parts /etc/cron.hourly"
    assert msg["Date"] and msg["Message-ID"]
    assert raw.endswith(b"output line\r\n.\r\n..still data\r\n")  # -i: dots are data


def test_cron_invocation_without_a_from_header_uses_the_full_name(tools: Tools) -> None:
    body = b"To: root\nSubject: s\n\nx\n"
    _, _, msg, _ = tools.submit("-FCronDaemon", "-i", "-oem", "-t", "-f", "root", input=body)
    assert msg["From"] == "CronDaemon <root@mx.test>"


PHP_MESSAGE = (
    b'To: a@x.test, "Doe, B" <b@y.test>\n'
    b"Cc: c@z.test\n"
    b"Bcc: secret@w.test\n"
    b"Subject: php\n"
    b"From: www@x.test\n"
    b"\n"
    b"body\n"
)


def test_php_invocation(tools: Tools) -> None:
    _, stored, msg, raw = tools.submit("-t", "-i", input=PHP_MESSAGE)
    assert envelope_of(stored) == (
        f"{ME}@mx.test",
        ["a@x.test", "b@y.test", "c@z.test", "secret@w.test"],
    )
    assert msg["Bcc"] is None and b"secret" not in raw
    assert msg["From"] == "www@x.test" and msg["To"] == 'a@x.test, "Doe, B" <b@y.test>'


def test_mutt_invocation(tools: Tools) -> None:
    _, stored, _, _ = tools.submit("-oi", "-oem", "--", "user", input=b"Subject: m\n\nx\n")
    assert envelope_of(stored) == (f"{ME}@mx.test", ["user@mx.test"])
    _, stored, _, _ = tools.submit(
        "-oi", "-f", "sender@x.test", "--", "rcpt1@y.test", "rcpt2@y.test", input=b"\nx\n"
    )
    assert envelope_of(stored) == ("sender@x.test", ["rcpt1@y.test", "rcpt2@y.test"])


# ---- each flag --------------------------------------------------------------------------------
def test_without_i_a_lone_dot_ends_the_message_and_double_dots_lose_one(tools: Tools) -> None:
    _, _, _, raw = tools.submit("u", input=b"Subject: d\n\n..a\n.b\n.\nnot read\n")
    assert raw.endswith(b"\r\n\r\n.a\r\n.b\r\n")
    for flags in (("-i",), ("-oi",), ("-O", "IgnoreDots=true")):
        _, _, _, raw = tools.submit(*flags, "u", input=b"Subject: d\n\n..a\n.\nread\n")
        assert raw.endswith(b"\r\n\r\n..a\r\n.\r\nread\r\n"), flags


def test_dots_survive_the_smtp_transparency(tools: Tools) -> None:
    body = b"Subject: d\n\n.\n..\n. x\n"
    _, _, _, raw = tools.submit("-i", "u", input=body)
    assert raw.endswith(b"\r\n\r\n.\r\n..\r\n. x\r\n")


def test_t_excludes_recipients_named_on_the_command_line(tools: Tools) -> None:
    body = b"To: a@x.test, b@x.test\nCc: A@X.test\n\nx\n"
    _, stored, _, _ = tools.submit("-t", "a@x.test", input=body)
    assert envelope_of(stored)[1] == ["b@x.test"]


def test_t_qualifies_bare_names(tools: Tools) -> None:
    _, stored, _, _ = tools.submit("-t", input=b"To: root, postmaster\n\nx\n")
    assert envelope_of(stored)[1] == ["root@mx.test", "postmaster@mx.test"]


@pytest.mark.parametrize("flag", ["-f", "-r"])
def test_null_sender(tools: Tools, flag: str) -> None:
    _, stored, msg, _ = tools.submit(flag, "<>", "u", input=b"x\n")
    assert stored.envelope.sender is None
    assert msg["From"].endswith(f"<{ME}@mx.test>") or msg["From"] == f"{ME}@mx.test"


def test_f_sets_the_envelope_sender_and_a_missing_from(tools: Tools) -> None:
    _, stored, msg, _ = tools.submit("-f", "robot@x.test", "-F", "", "u", input=b"x\n")
    assert stored.envelope.sender_text == "robot@x.test"
    assert msg["From"] == "robot@x.test"


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("Jane Doe", f"Jane Doe <{ME}@mx.test>"),
        ("Doe, Jane", f'"Doe, Jane" <{ME}@mx.test>'),
        ("Zoë", f"Zoë <{ME}@mx.test>"),
    ],
)
def test_F_full_name(tools: Tools, name: str, header: str) -> None:
    _, _, msg, _ = tools.submit("-F", name, "u", input=b"x\n")
    assert str(msg["From"]) == header


def test_dsn_flags_reach_the_envelope(tools: Tools) -> None:
    _, stored, _, _ = tools.submit(
        "-N",
        "success,delay",
        "-R",
        "hdrs",
        "-V",
        "env 42+",
        "a@x.test",
        "b@x.test",
        input=b"x\n",
    )
    env = stored.envelope
    assert env.params.ret == "HDRS" and env.params.envid == "env 42+"
    assert [set(r.notify.split(",")) for r in stored.recipients] == [{"SUCCESS", "DELAY"}] * 2
    _, stored, _, _ = tools.submit("-Nnever", "a@x.test", input=b"x\n")
    assert stored.recipients[0].notify == "NEVER"


def test_body_type_and_smtputf8(tools: Tools) -> None:
    _, stored, _, _ = tools.submit("-B", "8BITMIME", "u", input=b"plain\n")
    assert stored.envelope.params.body == "8BITMIME"
    _, stored, _, raw = tools.submit("u", input="Subject: é\n\ncafé\n".encode())
    assert stored.envelope.params.body == "8BITMIME"  # detected
    assert "café".encode() in raw
    _, stored, _, _ = tools.submit("-U", "ü@mx.test", input=b"x\n")
    assert stored.envelope.params.smtputf8
    assert envelope_of(stored)[1] == ["ü@mx.test"]


def test_hop_count_flag_and_received_headers(tools: Tools) -> None:
    received = b"Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\n" * 3
    _, _, msg, _ = tools.submit("-h", "40", "u", input=received + b"\nx\n")
    assert len(msg.get_all("Received")) == 4
    proc = tools.run("-h", "48", "u", input=received + b"\nx\n")
    assert proc.returncode == 65
    assert proc.stderr.decode() == (
        "mailwright: message refused: too many hops (51, limit 50): mail loop?\n"
    )


def test_verbose_shows_the_dialogue(tools: Tools) -> None:
    proc, stored, _, _ = tools.submit("-v", "u", input=b"x\n")
    out = proc.stdout.decode()
    assert ">>> MAIL FROM:<" in out and ">>> RCPT TO:<u@mx.test>" in out
    assert f"250 2.0.0 {stored.queue_id}" in out
    assert out.rstrip().endswith(f"queued in the queue as {stored.queue_id}")


def test_unknown_and_legacy_options_are_ignored(tools: Tools) -> None:
    flags = (
        "-oXfoo",
        "-O",
        "NoSuch=1",
        "-odq",
        "-odb",
        "-oQ/tmp",
        "-om",
        "-oL9",
        "-oeq",
        "-B8BITMIME",
        "-L",
        "tag",
        "-X",
        "/dev/null",
        "-d0.1",
        "-G",
        "-n",
        "-m",
        "-s",
        "-c",
        "-Am",
        "-pesmtp:host",
        "-bm",
    )
    _, stored, _, _ = tools.submit(*flags, "u", input=b"x\n")
    assert envelope_of(stored)[1] == ["u@mx.test"]


def test_C_names_the_configuration(tools: Tools, tmp_path: Path) -> None:
    env = tools.env()
    del env["MAILWRIGHT_CONFIG"]
    before = tools.queue_ids()
    proc = tools.run("-C", str(tools.mw.config_path), "u", input=b"x\n", env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(tools.queue_ids() - before) == 1


def test_line_endings_become_crlf(tools: Tools) -> None:
    _, _, _, raw = tools.submit("-i", "u", input=b"Subject: e\r\n\na\rb\r\nc\nno newline")
    assert raw.endswith(b"\r\n\r\na\r\nb\r\nc\r\nno newline\r\n")


def test_mbox_from_line_is_dropped(tools: Tools) -> None:
    _, _, msg, _ = tools.submit(
        "u", input=b"From me Thu Nov 26 01:00:00 2026\nSubject: mbox\n\nx\n"
    )
    assert msg["Subject"] == "mbox"


def test_comma_lists_and_full_addresses_on_the_command_line(tools: Tools) -> None:
    _, stored, _, _ = tools.submit("a@x.test, b@x.test", "Cee <c@x.test>", "a@x.test", input=b"x\n")
    assert envelope_of(stored)[1] == ["a@x.test", "b@x.test", "c@x.test"]


def test_a_large_message(tools: Tools) -> None:
    body = (b"0123456789" * 99 + b"\n") * 3000  # about 3 MB
    _, _, _, raw = tools.submit("u", input=b"Subject: big\n\n" + body)
    assert raw.endswith(body.replace(b"\n", b"\r\n"))


def test_long_lines_are_accepted_from_local_users(tools: Tools) -> None:
    line = b"x" * 5000
    _, _, _, raw = tools.submit("u", input=b"Subject: long\n\n" + line + b"\n")
    assert raw.endswith(line + b"\r\n")
