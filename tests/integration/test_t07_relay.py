"""End to end through the daemon: accept, queue, deliver to real peers, retry, bounce,
and steer the queue with the admin commands."""

from __future__ import annotations

import email
import email.policy
import json
import re
import signal
import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import dovecot as dovecot_support
from tests.support import postfix as postfix_support
from tests.support import smtp_sink
from tests.support.daemon import Mailwright, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer

pytestmark = peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")

MSG = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: relay me\r\n\r\n.leading dot\r\nbody\r\n"


def transport(root: Path, lines: list[str]) -> str:
    path = root / "transport"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def send(
    mw: Mailwright,
    rcpts: list[str],
    sender: str = "a@x.test",
    msg: bytes = MSG,
    mail_options: list[str] | None = None,
    rcpt_options: list[str] | None = None,
) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail(sender, mail_options or [])
        for r in rcpts:
            s.rcpt(r, rcpt_options or [])
        code, text = s.data(msg)
    assert code == 250
    return text.decode().split()[1]


def queue_json(mw: Mailwright) -> list[dict]:  # type: ignore[type-arg]
    out = mw.cli("queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[dict[str, smtp_sink.SmtpSink]]:
    good = smtp_sink.SmtpSink(tmp_path / "good").start()
    bad = smtp_sink.SmtpSink(
        tmp_path / "bad", "-B", "550 5.1.1 No such user here", "-f", "RCPT"
    ).start()
    soft = smtp_sink.SmtpSink(tmp_path / "soft", "-r", "RCPT").start()
    try:
        yield {"good": good, "bad": bad, "soft": soft}
    finally:
        for s in (good, bad, soft):
            s.stop()


def relay_config(tmp_path: Path, sinks: dict[str, smtp_sink.SmtpSink]) -> dict:  # type: ignore[type-arg]
    table = transport(
        tmp_path,
        [
            f"bad.test smtp:[127.0.0.1]:{sinks['bad'].port}",
            f"soft.test smtp:[127.0.0.1]:{sinks['soft'].port}",
            f"* smtp:[127.0.0.1]:{sinks['good'].port}",
        ],
    )
    return {
        "routing": {"transport_table": table},
        "delivery": {"idle_connection_timeout": 0.5, "mode": "background"},
        "queue": {"host_status_timeout": 0},
    }


def test_relay_to_smtp_sink_with_dsn_parameters(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    with running(tmp_path / "mw", relay_config(tmp_path, sinks)) as mw:
        qid = send(
            mw,
            ["b@y.test", "c@y.test"],
            mail_options=["RET=HDRS", "ENVID=abc"],
            rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;orig@y.test"],
        )
        mw.wait_log(f"{qid}: to=<c@y.test>")
        line = mw.wait_log(f"{qid}: to=<b@y.test>")
        assert "stat=Sent (" in line and "mailer=esmtp" in line and "dsn=2.0.0" in line
    (msg,) = sinks["good"].messages()
    assert msg.mail_args.startswith("<a@x.test>") and "RET=HDRS" in msg.mail_args
    assert "ENVID=abc" in msg.mail_args
    assert sorted(msg.rcpt_args) == sorted(
        [
            "<b@y.test> NOTIFY=FAILURE ORCPT=rfc822;orig@y.test",
            "<c@y.test> NOTIFY=FAILURE ORCPT=rfc822;orig@y.test",
        ]
    )
    assert b"\n.leading dot\n" in msg.content  # dot-stuffing undone at the far end
    assert b"by mx.test (Mailwright) with ESMTP id " + qid.encode() in msg.content


SENDMAIL_TIME = r"(\d+\+)?\d\d:\d\d:\d\d"  # delay= and xdelay=: [days+]HH:MM:SS


def test_log_lines_have_sendmails_fields(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    """grep QUEUE-ID tells the story in Sendmail's words: from= (size, class, nrcpts, msgid,
    proto, daemon, relay) and one to= per recipient (delay, xdelay, mailer, relay, dsn, stat)."""
    with running(tmp_path / "mw", relay_config(tmp_path, sinks)) as mw:
        qid = send(mw, ["b@y.test"], msg=b"Message-ID: <log1@x.test>\r\n" + MSG)
        accepted = mw.wait_log(f"{qid}: from=<a@x.test>")
        sent = mw.wait_log(f"{qid}: to=<b@y.test>")
    assert re.search(
        rf"{qid}: from=<a@x.test>, size=\d+, class=0, nrcpts=1, msgid=<log1@x.test>, "
        r"proto=ESMTP, daemon=\S+, relay=localhost \[127.0.0.1\]$",
        accepted,
    ), accepted
    assert re.search(
        rf"{qid}: to=<b@y.test>, delay={SENDMAIL_TIME}, xdelay={SENDMAIL_TIME}, mailer=esmtp, "
        rf"relay=127.0.0.1 \[127.0.0.1\], dsn=2.0.0, stat=Sent \(",
        sent,
    ), sent


def test_permanent_failure_bounces_to_sender(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    with running(tmp_path / "mw", relay_config(tmp_path, sinks)) as mw:
        qid = send(mw, ["nobody@bad.test", "other@bad.test"], sender="sender@y.test")
        line = mw.wait_log(f"{qid}: to=<nobody@bad.test>")
        assert "550 5.1.1 No such user here" in line
        dsn_line = mw.wait_log(": DSN: ")  # the DSN was queued: QID: QID2: DSN: reason
        assert re.search(rf"{qid}: \w{{15}}: DSN: 550 5\.1\.1 ", dsn_line), dsn_line
        bounce_line = mw.wait_log("to=<sender@y.test>")
        assert "stat=Sent" in bounce_line
    bounces = [m for m in sinks["good"].messages() if m.mail_args.startswith("<>")]
    assert len(bounces) == 1  # one bounce lists both recipients
    report = email.message_from_bytes(bounces[0].content, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    status = next(p for p in report.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    for rcpt in ("nobody@bad.test", "other@bad.test"):
        assert f"Final-Recipient: rfc822; {rcpt}" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user here" in text
    assert "Remote-MTA: dns; 127.0.0.1" in text or "Remote-MTA:" in text


def test_deferred_then_admin_commands(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    with running(tmp_path / "mw", relay_config(tmp_path, sinks)) as mw:
        qid = send(mw, ["later@soft.test"], sender="sender@y.test")
        mw.wait_log(f"{qid}: to=<later@soft.test>")
        (entry,) = queue_json(mw)
        assert entry["queue_id"] == qid
        (r,) = entry["recipients"]
        assert r["state"] == "queued" and r["attempts"] == 1 and r["last_status"].startswith("4.")
        plain = mw.cli("queue", "list").stdout.decode()
        assert qid in plain and "Deferred:" in plain and "<later@soft.test>" in plain
        assert "Total requests: 1" in plain
        show = mw.cli("queue", "show", qid).stdout.decode()
        assert "later@soft.test" in show and "1 attempt(s)" in show
        # flush: tried again at once
        assert mw.cli("queue", "flush", qid).returncode == 0
        mw.wait_log(f"{qid}: to=<later@soft.test>", occurrence=2)
        assert queue_json(mw)[0]["recipients"][0]["attempts"] == 2
        # hold and release
        assert mw.cli("queue", "hold", qid, "--reason", "looking").returncode == 0
        assert queue_json(mw)[0]["state"] == "hold"
        assert "Held: looking" in mw.cli("queue", "list").stdout.decode()
        assert mw.cli("queue", "release", qid).returncode == 0
        assert queue_json(mw)[0]["state"] == "active"
        # bounce: the sender gets a report at the good sink, the message leaves the queue
        assert mw.cli("queue", "bounce", qid).returncode == 0
        mw.wait_log("to=<sender@y.test>")
        assert queue_json(mw) == []
        # delete of an unknown id is an error naming it
        out = mw.cli("queue", "delete", qid)
        assert out.returncode == 66 and qid in out.stderr.decode()
    bounces = [m for m in sinks["good"].messages() if m.mail_args.startswith("<>")]
    assert len(bounces) == 1 and b"bounced by administrator" in bounces[0].content


def test_queue_commands_without_daemon(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    mw = Mailwright(tmp_path / "mw", relay_config(tmp_path, sinks)).start()
    qid = send(mw, ["x@soft.test"])
    mw.wait_log(f"{qid}: to=<x@soft.test>")
    mw.stop()
    assert [m["queue_id"] for m in queue_json(mw)] == [qid]
    # the soft sink now accepts: restart it without failure injection on the same port
    sinks["soft"].stop()
    soft_ok = smtp_sink.SmtpSink(tmp_path / "soft2", port=sinks["soft"].port).start()
    try:
        out = mw.cli("queue", "flush")
        assert out.returncode == 0, out.stderr
        assert queue_json(mw) == []
        assert len(soft_ok.messages()) == 1
    finally:
        soft_ok.stop()


def test_crash_during_delivery_delivers_at_least_once(tmp_path: Path) -> None:
    slow = smtp_sink.SmtpSink(tmp_path / "slow", "-w", "3").start()  # delays the DATA reply
    try:
        config = {
            "routing": {
                "transport_table": transport(tmp_path, [f"* smtp:[127.0.0.1]:{slow.port}"])
            },
            "delivery": {"mode": "background"},
        }
        mw = Mailwright(tmp_path / "mw", config).start()
        qid = send(mw, ["b@y.test"])
        assert mw.proc is not None
        # the sink holds the DATA reply for 3 s: kill while the delivery is in flight
        mw.wait_log(f"{qid}: delivering to")
        mw.proc.send_signal(signal.SIGKILL)
        mw.proc.wait()
        mw.proc = None
        assert [m["queue_id"] for m in queue_json(mw)] == [qid]  # not lost
        mw.start()
        mw.wait_log(f"{qid}: to=<b@y.test>", timeout=60)
        mw.stop()
        assert queue_json(mw) == []
        assert len(slow.messages()) >= 1
    finally:
        slow.stop()


@peer("Dovecot LMTP", dovecot_support.available(), "needs root and dovecot-core, dovecot-lmtpd")
def test_lmtp_into_dovecot_per_recipient(tmp_path: Path) -> None:
    dv = dovecot_support.Dovecot()
    dv.start()
    good = smtp_sink.SmtpSink(tmp_path / "good").start()
    try:
        config = {
            "routing": {
                "transport_table": transport(
                    tmp_path,
                    [
                        f"example.test lmtp:unix:{dv.socket_path}",
                        f"* smtp:[127.0.0.1]:{good.port}",
                    ],
                )
            },
            "delivery": {"mode": "background"},
        }
        with running(tmp_path / "mw", config) as mw:
            qid = send(
                mw,
                [
                    "alice@example.test",
                    "full@example.test",
                    "nobody@example.test",
                    "bob@example.test",
                ],
                sender="sender@y.test",
            )
            for r in ("alice", "bob"):
                assert "stat=Sent" in mw.wait_log(f"{qid}: to=<{r}@example.test>")
            assert "mailer=lmtp" in mw.wait_log(f"{qid}: to=<alice@example.test>")
            assert "5.2.2" in mw.wait_log(f"{qid}: to=<full@example.test>")
            assert "5.1.1" in mw.wait_log(f"{qid}: to=<nobody@example.test>")
            mw.wait_log("to=<sender@y.test>")
        assert len(dv.delivered("alice")) == 1 and len(dv.delivered("bob")) == 1
        (bounce,) = [m for m in good.messages() if m.mail_args.startswith("<>")]
        text = bounce.content.decode()
        assert "full@example.test" in text and "nobody@example.test" in text
        assert "alice@example.test" not in text.split("delivery-status", 1)[1].split("--")[0]
    finally:
        good.stop()
        dv.stop()


@peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")
def test_mx_routing_with_fallback_and_null_mx(tmp_path: Path) -> None:
    port_sink = smtp_sink.SmtpSink(tmp_path / "mx2", address="127.0.0.12").start()
    try:
        dns = DnsServer(tmp_path / "dns")
        dns.zone("example.test", "nullmx.test", "y.test")
        dns.mx("example.test", "mx1.example.test", 10)
        dns.mx("example.test", "mx2.example.test", 20)
        dns.host("mx1.example.test", "127.0.0.11")  # nothing listens there
        dns.host("mx2.example.test", "127.0.0.12")
        dns.null_mx("nullmx.test")
        dns.mx("y.test", "mx2.example.test", 10)
        with dns:
            config = {
                "dns": dns.settings(),
                "delivery": {
                    "smtp_port": port_sink.port,
                    "connect_timeout": 2,
                    "mode": "background",
                },
            }
            with running(tmp_path / "mw", config) as mw:
                qid = send(mw, ["b@example.test"], sender="s@y.test")
                line = mw.wait_log(f"{qid}: to=<b@example.test>")
                assert "stat=Sent" in line and "mx2.example.test" in line
                qid2 = send(mw, ["c@nullmx.test"], sender="s@y.test")
                line = mw.wait_log(f"{qid2}: to=<c@nullmx.test>")
                assert "5.1.10" in line
                mw.wait_log("to=<s@y.test>")
        bounces = [m for m in port_sink.messages() if m.mail_args.startswith("<>")]
        assert len(bounces) == 1 and b"5.1.10" in bounces[0].content
    finally:
        port_sink.stop()


@peer("Postfix", postfix_support.available(), "needs root and package postfix")
def test_relay_to_a_real_postfix(tmp_path: Path, sinks: dict) -> None:  # type: ignore[type-arg]
    pf = postfix_support.Postfix(["alice"]).start()
    try:
        config = relay_config(tmp_path, sinks)
        table = Path(config["routing"]["transport_table"])
        table.write_text(f"pf.test smtp:[127.0.0.1]:{pf.port}\n" + table.read_text())
        with running(tmp_path / "mw", config) as mw:
            qid = send(mw, ["alice@pf.test", "carol@pf.test"], sender="sender@y.test")
            assert "stat=Sent" in mw.wait_log(f"{qid}: to=<alice@pf.test>")
            line = mw.wait_log(f"{qid}: to=<carol@pf.test>")
            assert "User unknown in virtual mailbox table" in line
            mw.wait_log("to=<sender@y.test>")
        mailbox = pf.wait_delivered("alice")
        assert b"Subject: relay me" in mailbox
        assert b"by mx.test (Mailwright) with ESMTP id " + qid.encode() in mailbox
        assert "status=sent (delivered to mailbox)" in pf.log()
        (bounce,) = [m for m in sinks["good"].messages() if m.mail_args.startswith("<>")]
        assert b"Final-Recipient: rfc822; carol@pf.test" in bounce.content
        assert b"Remote-MTA: dns; 127.0.0.1" in bounce.content
    finally:
        pf.stop()
