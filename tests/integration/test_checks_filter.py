"""The ``checks`` filter (header_checks / body_checks) in a real daemon over SMTP.

REJECT by Subject at end of data, HOLD, a body REJECT deep in the body, IGNORE
removing a header, a SIGHUP picking up edited rules (and refusing bad ones), and a bad rules file
refused by ``mailwright config check`` with its file:line.
"""

from __future__ import annotations

import signal
import smtplib
from pathlib import Path

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import StoredMessage
from tests.support.daemon import Mailwright, running

MSG = "From: a@x.test\r\nTo: b@y.test\r\nSubject: {subject}\r\n{extra}\r\n{body}"

HEADER_RULES = """\
# header_checks for the test
/^Subject: .*buy now/ REJECT No advertising here
/^Subject: .*review me/ HOLD needs review
/^X-Internal:/ IGNORE
"""
BODY_RULES = "/^CONFIDENTIAL-PAYLOAD/ REJECT Confidential content\n"


def message(subject: str, extra: str = "", body: str = "hi\r\n") -> bytes:
    return MSG.format(subject=subject, extra=extra, body=body).encode()


def send(mw: Mailwright, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail("a@x.test")
        s.rcpt("b@y.test")
        return s.data(data)


def queued(mw: Mailwright) -> dict[str, tuple[StoredMessage, bytes]]:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return {
            m.queue_id: (m, store.read_headers(m.queue_id).encode()) for m in store.list_messages()
        }
    finally:
        store.close()


def config(tmp_path: Path) -> dict[str, object]:
    (tmp_path / "header_checks").write_text(HEADER_RULES)
    (tmp_path / "body_checks").write_text(BODY_RULES)
    options = {
        "header_checks": str(tmp_path / "header_checks"),
        "body_checks": str(tmp_path / "body_checks"),
    }
    return {"filters": [{"plugin": "checks", "options": options}]}


def test_header_and_body_checks_over_smtp(tmp_path: Path) -> None:
    with running(tmp_path / "mw", config(tmp_path)) as mw:
        assert send(mw, message("please buy now")) == (550, b"5.7.1 No advertising here")
        assert "header_checks=REJECT Subject: please buy now; No advertising here" in mw.wait_log(
            "header_checks=REJECT"
        )
        deep = "".join(f"filler line {i}\r\n" for i in range(2000)) + "CONFIDENTIAL-PAYLOAD x\r\n"
        assert len(deep) > 30000
        assert send(mw, message("report", body=deep)) == (550, b"5.7.1 Confidential content")
        assert queued(mw) == {}  # neither rejected message was kept

        code, text = send(mw, message("please review me"))
        assert code == 250
        held = text.decode().split()[1]
        code, text = send(mw, message("plain", extra="X-Internal: secret\r\n"))
        assert code == 250
        plain = text.decode().split()[1]
        messages = queued(mw)
        assert set(messages) == {held, plain}
        assert messages[held][0].hold_reason == "needs review"
        assert messages[plain][0].hold_reason is None
        assert b"X-Internal" not in messages[plain][1] and b"Subject: plain" in messages[plain][1]

        # edited rules take effect on SIGHUP (the filter is rebuilt and rereads its files)
        (tmp_path / "header_checks").write_text("/^Subject: .*plain/ REJECT Now refused\n")
        assert mw.proc is not None
        mw.proc.send_signal(signal.SIGHUP)
        mw.wait_log("SIGHUP: configuration reloaded")
        assert send(mw, message("plain")) == (550, b"5.7.1 Now refused")
        # a rules file that became bad: the reload is refused, the rules in use stay
        (tmp_path / "header_checks").write_text("/^Subject:/ FROBNICATE\n")
        mw.proc.send_signal(signal.SIGHUP)
        refused = mw.wait_log("SIGHUP: configuration refused")
        assert f"{tmp_path / 'header_checks'}:1: unknown action 'FROBNICATE'" in refused
        assert send(mw, message("plain")) == (550, b"5.7.1 Now refused")


def test_config_check_names_the_bad_rule(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "body_checks").write_text("# ok\n/fine/ WARN\n/broken[/ REJECT\n")
    mw = Mailwright(tmp_path / "mw", cfg)
    mw.write_config()
    checked = mw.cli("config", "check")
    err = checked.stderr.decode()
    assert checked.returncode == 78, err
    assert f"{tmp_path / 'body_checks'}:3: bad regex /broken[/" in err
