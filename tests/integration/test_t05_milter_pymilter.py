"""The daemon against a real libmilter filter (pymilter): what it is sent, every action applied.

The test filter (tests/support/testmilter.py) logs every callback with its
macros and performs the actions named in the message's ``X-Do-<name>:`` header;
the tests check the SMTP replies and what was queued.
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.envelope import Notify
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import MessageState
from tests.support.daemon import Mailwright, running
from tests.support.milters import PyFilter, py_filter
from tests.support.peers import has_module, peer
from tests.support.smtp import RawClient

pytestmark = peer("pymilter", has_module("Milter"), "pip install '.[dev]' (pymilter)")


def message(do: str = "", extra: bytes = b"", body: bytes = b"Body line\r\n") -> bytes:
    head = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: hello\r\nMessage-ID: <m1@x.test>\r\n"
    if do:
        head += b"X-Do-t: " + do.encode() + b"\r\n"
    return head + extra + b"\r\n" + body


def store_of(mw: Mailwright) -> SqliteQueueStore:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    return store


def queued(mw: Mailwright, qid: str) -> tuple[Any, bytes, bytes]:
    store = store_of(mw)
    try:
        msg = store.get_message(qid)
        assert msg is not None, f"{qid} not queued"
        return msg, store.read_headers(qid).encode(), b"".join(store.read_body(qid))
    finally:
        store.close()


def count(mw: Mailwright) -> int:
    store = store_of(mw)
    try:
        return store.count_messages()
    finally:
        store.close()


def send(
    mw: Mailwright,
    data: bytes,
    rcpts: list[str] | None = None,
    sender: str = "a@x.test",
    mail_options: list[str] | None = None,
    rcpt_options: list[str] | None = None,
) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        code, text = s.mail(sender, mail_options or [])
        assert code == 250, text
        for rcpt in rcpts or ["b@y.test"]:
            code, text = s.rcpt(rcpt, rcpt_options or [])
            assert code == 250, text
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]  # fmt: skip


def rcpts(msg: Any) -> list[str]:
    return [str(r.address) for r in msg.envelope.recipients]


def of_message(f: PyFilter, qid: str) -> list[dict[str, Any]]:
    """The filter's events from MAIL to EOM of the message with queue id ``qid``."""
    events = f.wait_for("eom", 1)
    start = next(
        i for i, e in enumerate(events) if e["cb"] == "mail" and e["macros"].get("i") == qid
    )
    end = next(i for i in range(start, len(events)) if events[i]["cb"] in ("eom", "abort"))
    return events[start : end + 1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mailwright, PyFilter]]:
    root = tmp_path_factory.mktemp("pymilter")
    config = {
        "filters": [{"milter": "", "name": "t", "timeouts": {"eom": 1}}],
        "routing": {"local_domains": ["mx.test"]},
    }
    with py_filter(root) as f:
        config["filters"][0]["milter"] = f.spec  # type: ignore[index]
        with running(root / "mw", config) as mw:
            yield mw, f


@pytest.fixture
def mw(setup: tuple[Mailwright, PyFilter]) -> Mailwright:
    return setup[0]


@pytest.fixture
def tf(setup: tuple[Mailwright, PyFilter]) -> PyFilter:
    return setup[1]


def test_filter_is_sent_envelope_macros_headers_and_body_chunks(
    mw: Mailwright, tf: PyFilter
) -> None:
    body = b"".join(b"line %06d of a long body\r\n" % i for i in range(8000))  # 208,000 bytes
    extra = b"X-Folded: first\r\n\tsecond\r\nX-Tab:\tvalue\r\n"
    qid = send(mw, message(extra=extra, body=body), rcpts=["b@y.test", "root@mx.test"],
               mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=SUCCESS,FAILURE"])  # fmt: skip
    events = tf.events()
    connect = [e for e in events if e["cb"] == "connect"][-1]
    assert connect["args"][0] == "localhost"  # loopback's name, without a DNS query
    macros = connect["macros"]
    assert macros["j"] == "mx.test" and macros["{client_addr}"] == "127.0.0.1"
    assert macros["{daemon_name}"].startswith("smtp-")
    assert macros["{client_name}"] == "localhost"
    assert macros["_"] == "localhost [127.0.0.1]" and macros["v"].startswith("Mailwright")
    msg = of_message(tf, qid)
    cbs = [e["cb"] for e in msg]
    assert cbs[:4] == ["mail", "rcpt", "rcpt", "data"]
    mail, rcpt1, rcpt2 = msg[0], msg[1], msg[2]
    assert mail["args"][0] == "<a@x.test>" and "BODY=8BITMIME" in [a.upper() for a in mail["args"]]
    assert mail["macros"]["{mail_addr}"] == "a@x.test" and mail["macros"]["i"] == qid
    assert rcpt1["args"] == ["<b@y.test>", "NOTIFY=SUCCESS,FAILURE"]
    assert (
        rcpt1["macros"]["{rcpt_addr}"] == "b@y.test" and rcpt1["macros"]["{rcpt_mailer}"] == "smtp"
    )
    assert rcpt2["macros"]["{rcpt_mailer}"] == "local"
    headers = [e["args"] for e in msg if e["cb"] == "header"]
    # Date: added for a trusted (loopback) client that left it out (issue 12 item 14)
    names = ["From", "To", "Subject", "Message-ID", "X-Folded", "X-Tab", "Date"]
    assert [h[0] for h in headers] == names
    assert ["X-Folded", "first\n\tsecond"] in headers  # folded with LF, one leading space gone
    assert ["X-Tab", "\tvalue"] in headers  # a tab is not removed
    chunks = [e["args"][0] for e in msg if e["cb"] == "body"]
    assert all(c <= 65535 for c in chunks) and sum(chunks) == len(body) and len(chunks) == 4
    eom = msg[-1]
    assert eom["cb"] == "eom" and eom["macros"]["{msg_id}"] == "<m1@x.test>"
    queued(mw, qid)


def test_connection_serves_every_message_of_the_session_and_rset_aborts(
    mw: Mailwright, tf: PyFilter
) -> None:
    before = len([e for e in tf.events() if e["cb"] == "connect"])
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    for _ in range(2):
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        assert [r[:3] for r in c.replies(3)] == ["250", "250", "354"]
        c.send(message() + b".\r\n")
        assert c.reply().startswith("250 2.0.0")
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    assert c.cmd("RSET").startswith("250")
    c.cmd("QUIT")
    events = tf.wait_for("close", before + 1)
    assert len([e for e in events if e["cb"] == "connect"]) == before + 1
    tail = [e["cb"] for e in events[-6:]]
    assert tail[-3:] == ["mail", "abort", "close"]


@pytest.mark.parametrize(
    ("do", "check"),
    [
        ("add-header", lambda m, h, b: h.endswith(b"X-Added: added by t\r\n")),
        ("insert-header", lambda m, h, b: h.startswith(b"X-Inserted: at the top\r\nReceived:")),
        ("change-header", lambda m, h, b: b"Subject: changed subject\r\n" in h),
        ("folded-header", lambda m, h, b: b"X-Folded: first line\r\n\tsecond line\r\n" in h),
        ("add-rcpt", lambda m, h, b: "added@y.test" in rcpts(m)),
        ("del-rcpt", lambda m, h, b: rcpts(m) == ["c@y.test"]),
        ("chgfrom", lambda m, h, b: str(m.envelope.sender) == "changed@x.test"
         and m.envelope.params.body == "8BITMIME"),
        ("replbody", lambda m, h, b: b == b"replaced body\r\nsecond line\r\n"),
        ("replbody-big", lambda m, h, b: b == b"0123456789abcdef" * 13050),
        ("quarantine", lambda m, h, b: m.state is MessageState.HOLD
         and m.hold_reason == "held for review"),
    ],
)  # fmt: skip
def test_each_modification_is_queued(mw: Mailwright, do: str, check: Any) -> None:
    qid = send(mw, message(do, b"X-Delete-Me: x\r\n"), rcpts=["b@y.test", "c@y.test"])
    msg, headers, body = queued(mw, qid)
    assert check(msg, headers, body), (headers, body, msg)


def test_delete_header_and_add_recipient_with_parameters(mw: Mailwright) -> None:
    qid = send(mw, message("delete-header, add-rcpt-par", b"X-Delete-Me: x\r\n"))
    msg, headers, _ = queued(mw, qid)
    assert b"X-Delete-Me" not in headers
    added = msg.envelope.recipients[-1]
    assert str(added.address) == "added-par@y.test" and added.notify == frozenset({Notify.NEVER})


def test_quarantined_message_is_released_by_the_queue_command(mw: Mailwright) -> None:
    qid = send(mw, message("quarantine"))
    assert queued(mw, qid)[0].state is MessageState.HOLD
    out = mw.cli("queue", "release", qid)
    assert out.returncode == 0, out.stderr
    assert queued(mw, qid)[0].state is MessageState.ACTIVE


@pytest.mark.parametrize(
    ("do", "code", "text"),
    [
        ("reject", 550, b"5.7.1 rejected by test filter"),
        ("multiline", 550, b"5.7.1 first line\n5.7.1 second line\n5.7.1 last line"),
        ("tempfail", 451, b"4.3.2 Please try again later"),
    ],
)
def test_end_of_message_refusals_reach_the_client(
    mw: Mailwright, do: str, code: int, text: bytes
) -> None:
    before = count(mw)
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        with pytest.raises(smtplib.SMTPDataError) as err:
            s.sendmail("a@x.test", ["b@y.test"], message(do))
    assert (err.value.smtp_code, err.value.smtp_error) == (code, text)
    assert count(mw) == before
    assert mw.wait_log(f"milter=t, stage=eom, reject={code}")


def test_discard_answers_250_and_keeps_nothing(mw: Mailwright) -> None:
    before = count(mw)
    qid = send(mw, message("discard"))
    assert count(mw) == before
    assert mw.wait_log(f"{qid}: milter=t, stage=eom, event=discard")


def test_envelope_verdicts(mw: Mailwright) -> None:
    before = count(mw)
    c = RawClient(mw.port)
    c.cmd("EHLO client.test")
    assert c.cmd("MAIL FROM:<tempfail@x.test>") == "451 4.3.2 Please try again later"
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    assert c.cmd("RCPT TO:<reject-me@y.test>") == "550 5.1.1 no such user here"
    assert c.cmd("RCPT TO:<accept-rcpt@y.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(message("reject") + b".\r\n")  # accepted at RCPT: the filter is done with it
    assert c.reply().startswith("250 2.0.0")
    assert c.cmd("MAIL FROM:<discard-me@x.test>").startswith("250")
    assert c.cmd("RCPT TO:<b@y.test>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    c.send(message() + b".\r\n")
    assert c.reply().startswith("250 2.0.0")
    c.cmd("QUIT")
    assert count(mw) == before + 1


def test_helo_refusal_refuses_the_session(mw: Mailwright) -> None:
    c = RawClient(mw.port)
    assert c.cmd("EHLO reject.helo") == "550 5.7.1 go away % now"
    assert c.cmd("HELO other.name").startswith("550 5.7.1 go away")
    c.cmd("QUIT")


def test_progress_restarts_the_end_of_message_timeout(mw: Mailwright) -> None:
    # the filter takes 1.2 s with a PROGRESS every 0.4 s; E is 1 s
    qid = send(mw, message("progress, add-header"))
    assert queued(mw, qid)[1].endswith(b"X-Added: added by t\r\n")


def test_skip_stops_the_body(mw: Mailwright, tf: PyFilter) -> None:
    body = b"".join(b"line %06d of a body to skip\r\n" % i for i in range(5000))
    qid = send(mw, message("skip", body=body))
    chunks = [e for e in of_message(tf, qid) if e["cb"] == "body"]
    assert len(chunks) == 1
    assert queued(mw, qid)[2] == body
