"""In-process filters through the real daemon: stamp, archive (SQLite, PostgreSQL), spamassassin.

Also: a filter plugin found through its entry point, and a chain mixing a Python
filter with a milter (the milter sees the Python filter's header).
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.policy.filters import registry
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, running
from tests.support.milters import free_port, py_filter, stop, wait_connectable
from tests.support.peers import have_programs, require_peer

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: hello\r\nMessage-ID: <f1@x.test>\r\n\r\nhi\r\n"


def send(mw: Mailwright, data: bytes, rcpts: tuple[str, ...] = ("b@y.test",)) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail("a@x.test")
        for rcpt in rcpts:
            s.rcpt(rcpt)
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]


def queued_headers(mw: Mailwright, qid: str) -> bytes:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.read_headers(qid).encode()
    finally:
        store.close()


def test_stamp_replaces_a_forged_header(tmp_path: Path) -> None:
    stamp = {"plugin": "stamp", "options": {"header": "X-Do-Not-Forward", "value": "yes"}}
    with running(tmp_path, {"filters": [stamp]}) as mw:
        qid = send(mw, b"X-Do-Not-Forward: forged\r\n" + MSG)
        headers = queued_headers(mw, qid)
    assert b"forged" not in headers and headers.endswith(b"X-Do-Not-Forward: yes\r\n")


def test_python_filter_then_milter(tmp_path: Path) -> None:
    stamp = {"plugin": "stamp", "options": {"header": "X-Stamp", "value": "1", "position": "top"}}
    with py_filter(tmp_path) as f:
        with running(tmp_path / "mw", {"filters": [stamp, {"milter": f.spec}]}) as mw:
            send(mw, MSG)
        assert ["X-Stamp", "1"] in [e["args"] for e in f.wait_for("eom") if e["cb"] == "header"]


def test_archive_sqlite_stores_message_and_envelope(tmp_path: Path) -> None:
    db = tmp_path / "archive.db"
    filters = [
        {"plugin": "stamp", "options": {"header": "X-Stamp", "value": "1"}},
        {"plugin": "archive", "options": {"database": str(db)}},
    ]
    with running(tmp_path / "mw", {"filters": filters}) as mw:
        qid = send(mw, MSG, rcpts=("b@y.test", "c@y.test"))
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT queue_id, sender, recipients, client_address, helo, message_id, subject, "
            "message FROM mail_archive"
        ).fetchall()
    (row,) = rows
    assert row[:7] == (qid, "a@x.test", json.dumps(["b@y.test", "c@y.test"]), "127.0.0.1",
                       "client.test", "<f1@x.test>", "hello")  # fmt: skip
    assert row[7].startswith(b"Received: from client.test") and b"X-Stamp: 1\r\n" in row[7]
    assert row[7].endswith(b"\r\n\r\nhi\r\n")


def test_archive_postgresql(tmp_path: Path, postgres_database: str) -> None:
    postgres = postgres_database
    import psycopg

    filters = [{"plugin": "archive", "options": {"database": postgres, "table": "archive_t"}}]
    with running(tmp_path, {"filters": filters}) as mw:
        qid = send(mw, MSG)
    with psycopg.connect(postgres) as conn:
        row = conn.execute("SELECT queue_id, recipients, message FROM archive_t").fetchone()
    assert row is not None and row[0] == qid and row[1] == ["b@y.test"]
    assert bytes(row[2]).endswith(b"\r\n\r\nhi\r\n")


@pytest.fixture(scope="module")
def spamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    require_peer("spamd", have_programs("spamd"), "SpamAssassin's spamd (package spamd)")
    port = free_port()
    root = tmp_path_factory.mktemp("spamd")
    proc = subprocess.Popen(
        ["spamd", f"--listen=127.0.0.1:{port}", "--max-children=1", "--min-children=1",
         "-x", "-L", "-u", "debian-spamd", "--syslog=stderr", f"--pidfile={root / 'pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_connectable(("127.0.0.1", port), timeout=60)  # spamd compiles its rules first
        yield port
    finally:
        stop(proc)


def test_spamassassin_marks_ham_and_rejects_spam(tmp_path: Path, spamd: int) -> None:
    sa = {"plugin": "spamassassin", "options": {"port": spamd, "reject_score": 15}}
    with running(tmp_path, {"filters": [sa]}) as mw:
        qid = send(mw, b"X-Spam-Flag: YES\r\n" + MSG)
        headers = queued_headers(mw, qid)
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            with pytest.raises(smtplib.SMTPDataError) as err:
                s.sendmail("a@x.test", ["b@y.test"], MSG.replace(b"hi\r\n", GTUBE + b"\r\n"))
        assert mw.wait_log("filter=spamassassin, stage=message, reject=550 5.7.1")
    assert b"X-Spam-Flag" not in headers  # the client's forged flag is gone
    assert b"X-Spam-Status: No, score=" in headers and b"X-Spam-Score: " in headers
    assert err.value.smtp_code == 550 and b"Message rejected as spam" in err.value.smtp_error


def test_spamd_down_follows_the_failure_policy(tmp_path: Path) -> None:
    sa = {"plugin": "spamassassin", "options": {"port": free_port()}, "on_failure": "accept"}
    sa_t = {**sa, "name": "sa-tempfail", "on_failure": "tempfail"}
    with running(tmp_path, {"filters": [sa]}) as mw:
        send(mw, MSG)
    with running(tmp_path / "2", {"filters": [sa_t]}) as mw:
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            with pytest.raises(smtplib.SMTPDataError) as err:
                s.sendmail("a@x.test", ["b@y.test"], MSG)
        assert err.value.smtp_code == 451
        assert mw.wait_log("filter=sa-tempfail, stage=message, failed=")


def test_plugin_found_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hello_filter.py").write_text(
        "from mailwright.policy.filters.base import Filter\nclass Hello(Filter):\n    pass\n"
    )
    info = tmp_path / "hello_filter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-filter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mailwright.filters]\nhello = hello_filter:Hello\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.load("hello").__name__ == "Hello"
    with pytest.raises(ValueError, match="no filter plugin named 'nope'"):
        registry.load("nope")
    assert sys.modules["hello_filter"]


ACTIONS_FILTER = '''
from mailwright.core.address import Address
from mailwright.core.envelope import Recipient
from mailwright.core.headers import Header
from mailwright.core.reply import Reply
from mailwright.policy.filters.base import Filter


class Actions(Filter):
    """Does what the Subject says, at the message stage, as a milter's end of body can."""

    async def message(self, session, txn):
        subject = txn.headers.get("Subject").text
        if subject == "quarantine":
            txn.hold_reason = "held by actions"
        elif subject == "discard":
            txn.discard = True
        elif subject == "reject":
            return Reply.of(550, "5.7.1", "Rejected by actions")
        elif subject == "rewrite":
            txn.body.replace([b"new body\\r\\n"])
            txn.sender = Address("new-sender", "x.test")
            kept = [r for r in txn.recipients if r.address.local != "drop"]
            txn.recipients = [*kept, Recipient(Address("added", "y.test"))]
            txn.headers.append(Header.make("X-Actions", "rewritten"))
        return None
'''


def test_a_python_filter_has_the_milter_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "actions_filter.py").write_text(ACTIONS_FILTER)
    info = plugins / "actions_filter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: actions-filter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[mailwright.filters]\nactions = actions_filter:Actions\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(plugins))  # the daemon finds it by its entry point

    def with_subject(subject: str) -> bytes:
        return MSG.replace(b"Subject: hello", b"Subject: " + subject.encode())

    with running(tmp_path / "mw", {"filters": [{"plugin": "actions"}]}) as mw:
        held = send(mw, with_subject("quarantine"))
        rewritten = send(mw, with_subject("rewrite"), rcpts=("keep@y.test", "drop@y.test"))
        dropped = send(mw, with_subject("discard"))
        with smtplib.SMTP("127.0.0.1", mw.port) as s:
            s.ehlo("client.test")
            s.mail("a@x.test")
            s.rcpt("b@y.test")
            assert s.data(with_subject("reject")) == (550, b"5.7.1 Rejected by actions")
        store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
        store.open_for_reading()
        try:
            queued = {m.queue_id: m for m in store.list_messages()}
            assert dropped not in queued  # discarded (accepted with 250) and rejected: not kept
            assert set(queued) == {held, rewritten}
            assert queued[held].hold_reason == "held by actions"
            message = queued[rewritten]
            assert message.hold_reason is None
            assert str(message.envelope.sender) == "new-sender@x.test"
            assert [str(r.address) for r in message.envelope.recipients] == [
                "keep@y.test",
                "added@y.test",
            ]
            assert b"".join(store.read_body(rewritten)) == b"new body\r\n"
            assert store.read_headers(rewritten).encode().endswith(b"X-Actions: rewritten\r\n")
        finally:
            store.close()
