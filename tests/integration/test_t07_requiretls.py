"""REQUIRETLS (RFC 8689) between real daemons: a client sends to daemon A over STARTTLS
with REQUIRETLS; A relays through its smarthost, daemon B (queue mode, so what B queued can
be read), over TLS verified with B's CA, passing REQUIRETLS on; towards a B that does not
offer it, A fails the message with 5.7.30 instead of sending it; without TLS, A does not
offer it and refuses the parameter."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, running, wait_until
from tests.support.security import certificate

MSG = b"From: a@x.test\r\nTo: user@b.test\r\nSubject: secret\r\n\r\nbody\r\n"


def receiver(root: Path, **server: Any) -> Iterator[Mailwright]:
    cert, key = certificate(root / "tls", "mx.b.test")
    config = {"hostname": "mx.b.test", "tls": {"certificate": str(cert), "key": str(key)}}
    if server:
        config["server"] = server
    with running(root, config) as mw:
        mw.cert = cert  # type: ignore[attr-defined]
        yield mw


@pytest.fixture
def b(tmp_path: Path) -> Iterator[Mailwright]:
    yield from receiver(tmp_path / "b")


@pytest.fixture
def b_without(tmp_path: Path) -> Iterator[Mailwright]:
    yield from receiver(tmp_path / "b", requiretls=False)


def sender(root: Path, smarthost: Mailwright) -> dict[str, Any]:
    cert, key = certificate(root / "tls", "a.test")
    return {
        "hostname": "a.test",
        "tls": {"certificate": str(cert), "key": str(key)},
        "routing": {"smarthost": f"[127.0.0.1]:{smarthost.port}"},
        "delivery": {"mode": "background", "tls_ca_file": str(smarthost.cert)},  # type: ignore[attr-defined]
        "queue": {"host_status_timeout": 0},
    }


def submit(mw: Mailwright, *params: str) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.starttls(context=ssl._create_unverified_context())
        s.ehlo("client.test")
        assert s.has_extn("requiretls")
        s.mail("a@x.test", list(params))
        s.rcpt("user@b.test")
        code, text = s.data(MSG)
    assert code == 250
    return text.decode().split()[1]


def queued_params(mw: Mailwright) -> list[tuple[str | None, bool]]:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        wait_until(lambda: store.count_messages() >= 1, what="a queued message")
        return [(m.subject, m.envelope.params.requiretls) for m in store.list_messages()]
    finally:
        store.close()


def test_passed_on_over_verified_tls(tmp_path: Path, b: Mailwright) -> None:
    with running(tmp_path / "a", sender(tmp_path / "a", b)) as a:
        qid = submit(a, "REQUIRETLS")
        assert "stat=Sent" in a.wait_log(f"{qid}: to=<user@b.test>")
    accepted = b.wait_log("proto=ESMTPS")
    assert "requiretls=yes" in accepted, accepted  # the log line says what was asked
    assert queued_params(b) == [("secret", True)]


def test_a_smarthost_without_it_fails_the_message(tmp_path: Path, b_without: Mailwright) -> None:
    with running(tmp_path / "a", sender(tmp_path / "a", b_without)) as a:
        qid = submit(a, "REQUIRETLS")
        line = a.wait_log(f"{qid}: to=<user@b.test>")
        assert "dsn=5.7.30" in line and "does not offer REQUIRETLS" in line, line
    assert not any("proto=ESMTP" in x and "from=<a@x.test>" in x for x in b_without.log)


def test_plain_mail_still_goes_to_that_smarthost(tmp_path: Path, b_without: Mailwright) -> None:
    with running(tmp_path / "a", sender(tmp_path / "a", b_without)) as a:
        qid = submit(a)
        assert "stat=Sent" in a.wait_log(f"{qid}: to=<user@b.test>")
        assert "requiretls" not in a.wait_log(f"{qid}: from=<a@x.test>")
    assert queued_params(b_without) == [("secret", False)]


def test_not_offered_without_tls(tmp_path: Path, b: Mailwright) -> None:
    with (
        running(tmp_path / "a", sender(tmp_path / "a", b)) as a,
        smtplib.SMTP("127.0.0.1", a.port) as s,
    ):
        s.ehlo("client.test")
        assert not s.has_extn("requiretls")
        code, text = s.mail("a@x.test", ["REQUIRETLS"])
        assert (code, text) == (555, b"5.5.4 Unsupported parameter REQUIRETLS")
