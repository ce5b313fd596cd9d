"""Issue 13 section 4: every table follows its file. A transport table edit takes effect
without SIGHUP, and a bad edit keeps the routes in use with a log line. Real daemon,
real smtp-sinks, smtplib."""

from __future__ import annotations

import os
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import smtp_sink
from tests.support.daemon import Mailwright
from tests.support.peers import peer
from tests.support.smtp_sink import SmtpSink

pytestmark = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")


def write(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[tuple[SmtpSink, SmtpSink]]:
    with SmtpSink(tmp_path / "one") as one, SmtpSink(tmp_path / "two") as two:
        yield one, two


class Sender:
    """Sends one message at a time to far.test and waits for its delivery."""

    def __init__(self, mw: Mailwright) -> None:
        self.mw = mw
        self.sent = 0

    def send(self) -> None:
        self.sent += 1
        rcpt = f"m{self.sent}@far.test"
        with smtplib.SMTP("127.0.0.1", self.mw.port, timeout=30) as client:
            client.sendmail("a@x.test", [rcpt], f"Subject: {self.sent}\r\n\r\nx\r\n".encode())
        line = self.mw.wait_log(f"to=<{rcpt}>")
        assert "stat=Sent" in line, line

    def until(self, done: Callable[[], bool], seconds: float = 30) -> None:
        """Send until ``done()``: the daemon looks at the file at most once a second, so
        some messages may still take the old route (each is delivered either way). The
        bound is time, not a count of messages: a loaded machine sends fewer per second."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.send()
            if done():
                return
        raise AssertionError("the table edit was not noticed")


def test_a_transport_table_edit_takes_effect_without_sighup(
    tmp_path: Path, sinks: tuple[SmtpSink, SmtpSink]
) -> None:
    one, two = sinks
    table = tmp_path / "transport"
    write(table, f"far.test smtp:[127.0.0.1]:{one.port}\n")
    mw = Mailwright(
        tmp_path / "mw",
        {"delivery": {"mode": "background"}, "routing": {"transport_table": str(table)}},
    ).start()
    try:
        sender = Sender(mw)
        sender.send()
        assert len(one.messages()) == 1

        write(table, f"far.test smtp:[127.0.0.1]:{two.port}\n")
        sender.until(lambda: len(two.messages()) == 1)
        assert len(one.messages()) + len(two.messages()) == sender.sent
        mw.wait_log(f"transport table: {table}: loaded")

        write(table, f"far.test smtp:[127.0.0.1]:{one.port}\nbroken.test smtp:[oops\n")
        sender.until(lambda: any("keeping the table in use" in line for line in mw.log))
        problem = mw.wait_log(f"transport table: {table}:2: value 'smtp:[oops'")
        assert "missing ']' after the host" in problem
        before = len(two.messages())
        sender.send()  # the bad edit did not take effect: still the second sink
        assert len(two.messages()) == before + 1
        assert not any("SIGHUP" in line for line in mw.log)
    finally:
        mw.stop()
