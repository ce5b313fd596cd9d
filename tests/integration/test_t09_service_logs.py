"""T09 mail log lines where the configuration sends them: text and JSON lines on stderr,
syslog datagrams to a socket the test binds (no system syslogd). Every line about a
message carries its queue id, so ``grep ID`` tells the message's story: accepted,
delivered, refused at MAIL or RCPT, connection lost in the middle."""

from __future__ import annotations

import json
import re
import smtplib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Mailwright, wait_until
from tests.support.service import DatagramSink, ServiceDaemon

QID = re.compile(r"\b([0-9A-HJKMNP-TV-Z]{15})\b")


def config(root: Path, **log: Any) -> dict[str, Any]:
    (root / "mail").mkdir(parents=True, exist_ok=True)
    (root / "access").write_text("From:spammer@bad.test REJECT\n")
    return {
        "delivery": {"mode": "background"},
        "local_delivery": {"mail_spool": str(root / "mail")},
        "access": {"table": str(root / "access")},
        "log": log,
    }


def exercise(port: int) -> str:
    """A delivered message, a sender refused at MAIL, a recipient refused at RCPT, a
    client gone after MAIL; returns the delivered message's queue id."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("spammer@bad.test")[0] == 550
        client.rset()
        assert client.mail("a@x.test")[0] == 250
        assert client.rcpt("nosuchuser@mx.test")[0] == 550
        assert client.rcpt("user@mx.test")[0] == 250
        code, text = client.data(b"Subject: story\r\n\r\nOnce upon a time.\r\n")
        assert code == 250
    match = QID.search(text.decode())
    assert match is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        stream = raw.makefile("rwb")
        stream.readline()
        stream.write(b"EHLO client.test\r\n")
        stream.flush()
        while not stream.readline().startswith(b"250 "):
            pass
        stream.write(b"MAIL FROM:<gone@x.test>\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250")
    return match.group(1)


@pytest.fixture
def mw(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Mailwright]:
    daemon = Mailwright(tmp_path, config(tmp_path, **request.param))
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.mark.parametrize("mw", [{}], indirect=True)
def test_text_lines_on_stderr_tell_each_story_by_queue_id(mw: Mailwright) -> None:
    qid = exercise(mw.port)
    mw.wait_log(f"{qid}: to=<root@mx.test>")
    mw.wait_log("lost input channel")
    story = [line for line in mw.log if qid in line]
    assert any(f"{qid}: from=<a@x.test>, size=" in line for line in story)
    assert any(f"{qid}: ruleset=check_rcpt, arg1=<nosuchuser@mx.test>" in line for line in story)
    assert any("stat=Sent (Delivered to mailbox" in line for line in story)
    refused = mw.wait_log("arg1=<spammer@bad.test>")
    assert re.search(r"\]: [0-9A-Z]{15}: ruleset=check_mail, arg1=<spammer@bad.test>", refused)
    lost = mw.wait_log("lost input channel")
    assert re.search(r"\]: [0-9A-Z]{15}: event=lost input channel, relay=", lost)


@pytest.mark.parametrize("mw", [{"format": "json"}], indirect=True)
def test_json_lines_carry_the_same_fields(mw: Mailwright) -> None:
    qid = exercise(mw.port)
    mw.wait_log(f"{qid}: to=<root@mx.test>")
    mw.wait_log("lost input channel")
    records = [json.loads(line) for line in mw.log if line.startswith("{")]
    assert len(records) == len([line for line in mw.log if line.strip()])  # only JSON
    mine = [r for r in records if r.get("queue_id") == qid]
    accepted = next(r for r in mine if "nrcpts" in r)
    assert accepted["from"] == "<a@x.test>" and accepted["nrcpts"] == 1
    assert accepted["proto"] == "ESMTP" and isinstance(accepted["size"], int)
    delivered = next(r for r in mine if r.get("to") == "<root@mx.test>")
    assert delivered["stat"].startswith("Sent") and delivered["mailer"] == "local"
    assert delivered["dsn"] == "2.0.0"
    refused = next(r for r in records if r.get("arg1") == "<spammer@bad.test>")
    assert refused["ruleset"] == "check_mail" and refused["reject"].startswith("550 5.7.1")
    assert QID.fullmatch(refused["queue_id"])
    lost = next(r for r in records if r.get("event") == "lost input channel")
    assert QID.fullmatch(lost["queue_id"])
    ready = next(r for r in records if "mailwright ready" in r["message"])
    assert ready["level"] == "info" and ready["logger"] == "mailwright.daemon"


def test_syslog_datagrams_facility_mail_with_the_configured_ident(tmp_path: Path) -> None:
    sink = DatagramSink(tmp_path / "log.sock")
    log = {
        "target": "syslog",
        "syslog_socket": str(tmp_path / "log.sock"),
        "syslog_ident": "sm-mta",
    }
    daemon = ServiceDaemon(tmp_path, config(tmp_path, **log))
    try:
        daemon.start()  # ready by sd_notify: nothing is on stderr
        qid = exercise(daemon.port)
        accepted = sink.wait_for(lambda m: f"{qid}: from=<a@x.test>" in m)
        assert re.fullmatch(rf"<22>sm-mta\[{daemon.proc.pid}\]: {qid}: from=.*", accepted)  # type: ignore[union-attr]
        sink.wait_for(lambda m: f"{qid}: to=<root@mx.test>" in m and "stat=Sent" in m)
        sink.wait_for(lambda m: "ruleset=check_mail" in m and m.startswith("<22>sm-mta["))
        assert not [line for line in daemon.log if "from=<a@x.test>" in line]  # not on stderr
        daemon.stop()
        wait_until(lambda: sink.count(lambda m: m.endswith("]: stopped")) == 1, what="stopped")
    finally:
        daemon.close()
        sink.close()
