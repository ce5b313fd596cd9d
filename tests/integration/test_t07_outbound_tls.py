"""The outbound TLS policy from configuration, between two real daemons: A relays to B
(found through A's static DNS table) under ``delivery.tls_policy``: opportunistic, verified
with the right CA, verified without it (deferred 4.7.5), and required towards a peer that
offers no STARTTLS (smtp-sink; deferred 4.7.5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import smtp_sink
from tests.support.daemon import Mailwright, running
from tests.support.peers import peer
from tests.support.security import certificate

MSG = b"From: a@x.test\r\nTo: user@b.test\r\nSubject: over TLS\r\n\r\nbody\r\n"


def sender_config(root: Path, port: int, policy: dict[str, str], **delivery: Any) -> dict:  # type: ignore[type-arg]
    table = root / "dns"
    table.parent.mkdir(parents=True, exist_ok=True)
    table.write_text("b.test mx.b.test=127.0.0.1\nplain.test mx.plain.test=127.0.0.1\n")
    return {
        "hostname": "a.test",
        "dns": {"static_table": str(table)},
        "delivery": {
            "mode": "background",
            "smtp_port": port,
            "tls_policy": policy,
            "idle_connection_timeout": 0.5,
            **delivery,
        },
        "queue": {"host_status_timeout": 0},
    }


def submit(mw: Mailwright, rcpt: str = "user@b.test", message: bytes = MSG) -> str:
    import smtplib

    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        s.mail("a@x.test")
        s.rcpt(rcpt)
        code, text = s.data(message)
    assert code == 250
    return text.decode().split()[1]


@pytest.fixture
def receiver(tmp_path: Path):  # type: ignore[no-untyped-def]
    cert, key = certificate(tmp_path / "b-tls", "mx.b.test")
    config = {
        "hostname": "mx.b.test",
        "tls": {"certificate": str(cert), "key": str(key)},
        "routing": {"local_domains": ["b.test"]},
    }
    with running(tmp_path / "b", config) as mw:
        mw.cert = cert  # type: ignore[attr-defined]
        yield mw


def test_verified_tls_with_the_right_ca(tmp_path: Path, receiver: Mailwright) -> None:
    config = sender_config(
        tmp_path / "a", receiver.port, {"b.test": "verify"}, tls_ca_file=str(receiver.cert)
    )  # type: ignore[attr-defined]
    with running(tmp_path / "a", config) as a:
        qid = submit(a)
        line = a.wait_log(f"{qid}: to=<user@b.test>")
        assert "stat=Sent" in line, line
    accepted = receiver.wait_log("proto=ESMTPS")
    assert "relay=localhost [127.0.0.1]" in accepted
    assert "event=STARTTLS=server" in receiver.wait_log("event=STARTTLS=server")


def test_verify_without_the_ca_defers(tmp_path: Path, receiver: Mailwright) -> None:
    config = sender_config(tmp_path / "a", receiver.port, {".b.test": "may", "b.test": "verify"})
    with running(tmp_path / "a", config) as a:
        qid = submit(a)
        line = a.wait_log(f"{qid}: to=<user@b.test>")
        assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
        assert "did not verify" in line
    assert not any("proto=ESMTP" in x for x in receiver.log)


def test_opportunistic_by_default(tmp_path: Path, receiver: Mailwright) -> None:
    with running(tmp_path / "a", sender_config(tmp_path / "a", receiver.port, {})) as a:
        qid = submit(a)
        assert "stat=Sent" in a.wait_log(f"{qid}: to=<user@b.test>")
    assert receiver.wait_log("proto=ESMTPS")  # encrypted though nothing was checked


@peer("smtp-sink", smtp_sink.available(), "postfix (smtp-sink) is not installed")
def test_encrypt_towards_a_peer_without_starttls_defers(tmp_path: Path) -> None:
    sink = smtp_sink.SmtpSink(tmp_path / "sink").start()
    try:
        config = sender_config(tmp_path / "a", sink.port, {"plain.test": "encrypt"})
        with running(tmp_path / "a", config) as a:
            qid = submit(a, "user@plain.test")
            line = a.wait_log(f"{qid}: to=<user@plain.test>")
            assert "stat=Deferred" in line and "dsn=4.7.5" in line, line
            assert "does not offer STARTTLS" in line
        assert sink.messages() == []
    finally:
        sink.stop()
