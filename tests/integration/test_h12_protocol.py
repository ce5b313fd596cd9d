"""Issue 12, protocol hardening, against a real daemon over real sockets: non-ASCII digits,
a client dripping its message (minimum data rate), long lines in and folded on the way
out, paths without angle brackets, HELP without VRFY, and protocol refusals in the mail
log and in ``mailwright_rejections_total``."""

from __future__ import annotations

import select
import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, free_port, running, wait_until
from tests.support.smtp import RawClient
from tests.support.web import Web, total, value

TOKEN = "metrics-token-h12-proto"


@pytest.fixture(scope="module")
def mw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    with running(tmp_path_factory.mktemp("mw")) as daemon:
        yield daemon


def stored_messages(mw: Mailwright) -> list[tuple[list[str], bytes]]:
    """(recipients, body) of everything in the daemon's queue."""
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        out = []
        for msg in store.list_messages():
            body = b"".join(store.read_body(msg.queue_id))
            out.append(([r.address for r in msg.recipients], body))
        return out
    finally:
        store.close()


def greeted(port: int) -> RawClient:
    c = RawClient(port)
    assert c.greeting.startswith("220")
    assert c.cmd("EHLO client.test").startswith("250")
    return c


# ---- item 4: numbers are ASCII digits only ------------------------------------------------
@pytest.mark.parametrize("number", ["²", "١٢٣", "\uff11\uff10", "1²"])
def test_non_ascii_digits_in_size_get_501(mw: Mailwright, number: str) -> None:
    c = greeted(mw.port)
    reply = c.cmd(f"MAIL FROM:<a@x.test> SIZE={number}")
    assert reply.startswith("501 5.5.4"), reply
    assert c.cmd("MAIL FROM:<a@x.test> SIZE=100").startswith("250")  # the session goes on
    assert c.cmd("QUIT").startswith("221")


@pytest.mark.parametrize("number", ["²", "٣", "1²"])
def test_non_ascii_digits_in_bdat_get_501_then_close(mw: Mailwright, number: str) -> None:
    c = greeted(mw.port)
    assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
    assert c.cmd("RCPT TO:<b@y.test>").startswith("250")
    reply = c.cmd(f"BDAT {number} LAST")
    assert reply.startswith("501 5.5.4"), reply
    assert c.closed()
    mw.wait_log("event=bad BDAT syntax")
    assert not [line for line in mw.log if "Traceback" in line]


# ---- item 5: a minimum data rate ----------------------------------------------------------
def drip_until_answered(c: RawClient, interval: float, limit: float) -> tuple[str, float]:
    """Send one byte every ``interval`` until the server answers; (reply, seconds taken)."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        try:
            c.send(b"x")
        except OSError:
            break  # closed under us: the reply is already in the receive buffer
        readable, _, _ = select.select([c.sock], [], [], interval)  # the drip's pace
        if readable:
            break
    reply = c.reply()
    return reply, time.monotonic() - start


def test_a_client_dripping_its_message_is_disconnected(tmp_path: Path) -> None:
    http = free_port()
    config = {
        "server": {"timeouts": {"data_block": 2}, "min_data_rate": 500},
        "http": {"port": http, "token": TOKEN},
    }
    with running(tmp_path, config) as mw:
        web = Web(http)
        before = web.scrape()
        c = greeted(mw.port)
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
        assert c.replies(2)[1].startswith("250")
        assert c.cmd("DATA").startswith("354")
        # 10 bytes/s: each read comes well within the 2 s per-read timeout, for ever
        reply, took = drip_until_answered(c, 0.1, limit=30)
        assert reply.startswith("421 4.4.2"), reply
        assert took < 10, took  # 2 s + 2 ms per byte received, plus scheduling slack
        assert c.closed()
        line = mw.wait_log("reason=timeout")
        assert "state=DATA" in line and "reject=421 4.4.2" in line
        after = web.scrape()
        status = {"stage": "data", "status": "4.4.2"}
        assert (
            value(after, "mailwright_rejections_total", **status)
            - value(before, "mailwright_rejections_total", **status)
            == 1
        )
        # a client at full speed is not hurt by the deadline: 3 MB in well under 2 s of credit
        with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
            big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 3000
            assert client.sendmail("a@x.test", ["b@y.test"], big) == {}


def test_a_client_dripping_bdat_chunks_is_disconnected(tmp_path: Path) -> None:
    """A message in chunks is one request: "BDAT 1" and one octet at a time does not help."""
    config = {"server": {"timeouts": {"data_block": 2}, "min_data_rate": 500}}
    with running(tmp_path, config) as mw:
        c = greeted(mw.port)
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n")
        assert c.replies(2)[1].startswith("250")
        start = time.monotonic()
        reply = ""
        while time.monotonic() - start < 30:
            c.send(b"BDAT 1\r\nx")  # each chunk is answered at once ...
            reply = c.reply()
            if not reply.startswith("250"):
                break
            # ... and the next one dripped 0.1 s later, unless the server speaks first
            if select.select([c.sock], [], [], 0.1)[0]:
                try:
                    reply = c.reply()
                except ConnectionError as exc:
                    raise AssertionError("\n".join(mw.log[-40:])) from exc
                break
        took = time.monotonic() - start
        assert reply.startswith("421 4.4.2"), reply
        assert took < 10, took
        assert "state=COMMAND" in mw.wait_log("reason=timeout")


# ---- item 11: long lines accepted, folded on the way out ----------------------------------
def test_long_lines_accepted_by_default_and_folded_when_relayed(tmp_path: Path) -> None:
    peer = Mailwright(tmp_path / "peer", {"server": {"max_line_length": 1000}}).start()
    try:
        table = tmp_path / "transport"
        table.write_text(f"far.test smtp:[127.0.0.1]:{peer.port}\n")
        config = {
            "delivery": {"mode": "background"},
            "routing": {"transport_table": str(table)},
        }
        with running(tmp_path / "mw", config) as mw:
            line = b"".join(b"%05d," % i for i in range(2000))  # 12000 octets, one line
            message = b"Subject: long\r\n\r\n" + line + b"\r\nend\r\n"
            with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
                assert client.sendmail("a@x.test", ["b@far.test"], message) == {}
            wait_until(lambda: len(stored_messages(peer)) == 1, what="relayed to the peer")
        [(rcpts, body)] = stored_messages(peer)
        assert rcpts == ["b@far.test"]
        assert max(map(len, body.split(b"\r\n"))) <= 998  # folded: the strict peer took it
        assert body.replace(b"\r\n ", b"") == line + b"\r\nend\r\n"
        # the refusing option still refuses
        c = greeted(peer.port)
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
        assert c.replies(3)[2].startswith("354")
        c.send(b"Subject: x\r\n\r\n" + line + b"\r\n.\r\n")
        assert c.reply().startswith("550 5.6.0")
    finally:
        peer.stop()


# ---- item 12: paths without angle brackets ------------------------------------------------
def test_paths_without_angle_brackets_accepted(mw: Mailwright) -> None:
    c = greeted(mw.port)
    assert c.cmd("MAIL FROM:sender@x.test SIZE=20").startswith("250")
    assert c.cmd("RCPT TO:bare@y.test").startswith("250")
    assert c.cmd("DATA").startswith("354")
    reply = c.cmd("Subject: bare\r\n\r\nhi\r\n.")
    assert reply.startswith("250 2.0.0"), reply
    assert any(r == ["bare@y.test"] for r, _ in stored_messages(mw))


def test_paths_without_angle_brackets_refused_when_strict(tmp_path: Path) -> None:
    with running(tmp_path, {"server": {"strict_rfc821_envelopes": True}}) as mw:
        c = greeted(mw.port)
        assert c.cmd("MAIL FROM:sender@x.test").startswith("501 5.5.4")
        assert c.cmd("MAIL FROM:<sender@x.test>").startswith("250")
        assert c.cmd("RCPT TO:bare@y.test").startswith("501 5.5.4")


# ---- item 23: HELP ------------------------------------------------------------------------
def test_help_does_not_list_vrfy_when_it_is_off(mw: Mailwright) -> None:
    with smtplib.SMTP("127.0.0.1", mw.port, timeout=20) as client:
        text = client.help().decode()
        assert "MAIL" in text and "VRFY" not in text
        assert client.verify("root")[0] == 502


# ---- item 18: protocol refusals are logged and counted ------------------------------------
def test_protocol_refusals_logged_and_counted(tmp_path: Path) -> None:
    http = free_port()
    config = {
        "server": {"max_message_size": 1000, "max_bad_commands": 3},
        "http": {"port": http, "token": TOKEN},
    }
    with running(tmp_path, config) as mw:
        web = Web(http)
        before = web.scrape()
        c = greeted(mw.port)
        assert c.cmd("MAIL FROM:<bad@@x.test>").startswith("553 5.1.7")
        assert c.cmd("MAIL FROM:<big@x.test> SIZE=5000").startswith("552 5.3.4")
        assert c.cmd("MAIL FROM:<a@x.test>").startswith("250")
        assert c.cmd("RCPT TO:<bad@@y.test>").startswith("553 5.1.3")
        assert c.cmd("XYZZY").startswith("500")  # the third error ...
        assert c.reply().startswith("421 4.7.0")  # ... is one too many
        assert c.closed()
        p = RawClient(mw.port)
        p.send(b"EHLO client.test\r\nNOOP\r\n")  # RFC 2920: nothing may follow EHLO unanswered
        assert p.reply().startswith("554 5.5.0")
        assert p.closed()

        assert "arg1=<bad@@x.test>" in mw.wait_log("reject=553 5.1.7")
        assert "arg1=<big@x.test>" in mw.wait_log("reject=552 5.3.4")
        assert "ruleset=check_rcpt" in mw.wait_log("reject=553 5.1.3")
        assert "event=too many errors" in mw.wait_log("reject=421 4.7.0")
        assert "event=improper pipelining after EHLO" in mw.wait_log("reject=554 5.5.0")

        after = web.scrape()

        def delta(**labels: str) -> float:
            name = "mailwright_rejections_total"
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta(stage="mail", status="5.1.7") == 1
        assert delta(stage="mail", status="5.3.4") == 1
        assert delta(stage="rcpt", status="5.1.3") == 1
        assert delta(stage="command", status="4.7.0") == 1
        assert delta(stage="command", status="5.5.0") == 1
        assert (
            total(after, "mailwright_rejections_total")
            - total(before, "mailwright_rejections_total")
            == 5
        )
