"""Filter chains and protocol variants against real filters: pymilter and OpenDKIM.

Two filters in a chain (the second sees the first's changes), filters that
waive replies (NR_HDR, NR_BODY), ask for verbatim headers (HDR_LEADSPC) or
their own macro lists, protocol version 2, local submission (non_smtpd), and
OpenDKIM signing: the queued DKIM-Signature verifies with dkimpy.
"""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from mailwright.config.schema import Settings
from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.daemon.generation import build_pipeline
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.policy.milter import codec
from mailwright.policy.milter.codec import OptNegReply
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, running
from tests.support.milters import OpenDkim, PyFilter, have, py_filter
from tests.support.peers import has_module, peer, require_module
from tests.support.rawmilter import RawMilter, packets

pytestmark = peer("pymilter", has_module("Milter"), "pip install '.[dev]' (pymilter)")


def send(mw: Mailwright, data: bytes, sender: str = "a@x.test") -> str:
    with smtplib.SMTP("127.0.0.1", mw.port) as s:
        s.ehlo("client.test")
        code, text = s.mail(sender)
        assert code == 250, text
        code, text = s.rcpt("b@y.test")
        assert code == 250, text
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]


def queued_raw(mw: Mailwright, qid: str) -> bytes:
    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        return store.read_headers(qid).encode() + b"\r\n" + b"".join(store.read_body(qid))
    finally:
        store.close()


def headers_seen(f: PyFilter) -> list[list[str]]:
    return [e["args"] for e in f.wait_for("eom") if e["cb"] == "header"]


def test_second_filter_sees_the_first_filters_changes(tmp_path: Path) -> None:
    with py_filter(tmp_path, "one") as one, py_filter(tmp_path, "two") as two:
        filters = [{"milter": one.spec, "name": "one"}, {"milter": two.spec, "name": "two"}]
        with running(tmp_path / "mw", {"filters": filters}) as mw:
            msg = (
                b"From: a@x.test\r\nSubject: original\r\n"
                b"X-Do-one: add-header, change-header, replbody\r\n\r\nold body\r\n"
            )
            qid = send(mw, msg)
            seen = headers_seen(two)
            assert ["X-Added", "added by one"] in seen and ["Subject", "changed subject"] in seen
            body = [e["args"][0] for e in two.events() if e["cb"] == "body"]
            assert body == [len(b"replaced body\r\nsecond line\r\n")]
            assert b"X-Added: added by one" in queued_raw(mw, qid)


@pytest.mark.parametrize("option", ["--noreply", "--leadspc"])
def test_negotiated_options(tmp_path: Path, option: str) -> None:
    with py_filter(tmp_path, "t", option) as f:
        with running(tmp_path / "mw", {"filters": [{"milter": f.spec}]}) as mw:
            msg = b"From: a@x.test\r\nX-Spaced:  two spaces\r\nX-Do-t: add-header\r\n\r\nbody\r\n"
            qid = send(mw, msg)
            raw = queued_raw(mw, qid)
            assert b"X-Added" in raw
            events = f.events()
            seen = [e["args"] for e in events if e["cb"] == "header"]
            rcpt = next(e for e in events if e["cb"] == "rcpt")
            if option == "--leadspc":
                assert ["X-Spaced", "  two spaces"] in seen
                assert b"X-Added:added by t\r\n" in raw  # written exactly as the filter sent it
            else:
                assert ["X-Spaced", " two spaces"] in seen
                assert b"X-Added: added by t\r\n" in raw
            assert "{rcpt_mailer}" in rcpt["macros"]


def test_filter_macro_lists_are_honoured(tmp_path: Path) -> None:
    lists = {0: b"j {client_addr}", 3: b"{rcpt_addr},i"}
    optneg = packets(OptNegReply(6, 0x1FF, 0, lists))
    raw = RawMilter(tmp_path / "raw.sock", {b"O": optneg})
    try:
        with running(tmp_path / "mw", {"filters": [{"milter": raw.spec}]}) as mw:
            qid = send(mw, b"Subject: x\r\n\r\nbody\r\n")
    finally:
        raw.close()
    macros = {
        p.data[:1]: codec.split_strings(p.data[1:], "D") for p in raw.received if p.cmd == b"D"
    }
    assert macros[b"C"] == [b"j", b"mx.test", b"{client_addr}", b"127.0.0.1"]
    assert macros[b"R"] == [b"{rcpt_addr}", b"b@y.test", b"i", qid.encode()]
    assert macros[b"M"][:2] == [b"i", qid.encode()]  # other stages keep the configured lists


def test_protocol_version_2(tmp_path: Path) -> None:
    with py_filter(tmp_path) as f:
        config = {"filters": [{"milter": f.spec, "protocol": 2}]}
        with running(tmp_path / "mw", config) as mw:
            msg = (
                b"From: a@x.test\r\nX-Do-t: insert-header, change-header\r\nSubject: s\r\n\r\nb\r\n"
            )
            raw = queued_raw(mw, send(mw, msg))
            assert raw.startswith(b"X-Inserted: at the top\r\n")
            assert b"Subject: changed subject" in raw
            assert "data" not in [e["cb"] for e in f.events()]  # DATA needs version 4


def local_session() -> SessionInfo:
    return SessionInfo("local-1", "local", "local", "", 0, "", 0, local_user="root")


def test_local_submission_runs_non_smtpd_filters_only(tmp_path: Path) -> None:
    with py_filter(tmp_path, "loc") as f:
        settings = Settings.model_validate(
            {
                "hostname": "mx.test",
                "queue": {"directory": str(tmp_path / "q")},
                "filters": [
                    {"milter": f.spec, "name": "local-only", "smtpd": False, "non_smtpd": True},
                    {"milter": "unix:/nonexistent/x.sock", "name": "smtp-only"},
                ],
            }
        )
        pipeline = build_pipeline(settings)

        async def submit() -> Transaction:
            session = local_session()
            txn = Transaction("QLOCAL1", Address("root", "mx.test"), MailParams(),
                              raw_sender="<root@mx.test>")  # fmt: skip
            assert await pipeline.connect(session) is None
            assert await pipeline.mail(session, txn) is None
            rcpt = Recipient(Address("b", "y.test"))
            assert await pipeline.rcpt(session, txn, rcpt, []) is None
            txn.recipients.append(rcpt)
            assert await pipeline.data(session, txn) is None
            txn.headers = HeaderList([Header(b"X-Do-loc".decode(), b" add-header")])
            txn.body = Spool.from_bytes(b"local body\r\n")
            assert await pipeline.message(session, txn) is None
            await pipeline.close(session)
            return txn

        txn = asyncio.run(submit())
        assert txn.headers is not None and txn.headers[-1].encode() == b"X-Added: added by loc\r\n"
        connect = next(e for e in f.wait_for("close") if e["cb"] == "connect")
        assert connect["args"][0] == "localhost" and connect["macros"]["_"] == "root@localhost"


@peer("OpenDKIM", have("opendkim", "opendkim-genkey"), "opendkim and opendkim-tools")
def test_opendkim_signature_verifies(tmp_path: Path) -> None:
    dkim = require_module("dkim", "pip install '.[dev]' (dkimpy)")
    signer = OpenDkim(tmp_path / "dkim").start()
    try:
        with running(tmp_path / "mw", {"filters": [{"milter": signer.spec, "name": "dkim"}]}) as mw:
            msg = (b"From: Alice <alice@example.com>\r\nTo: b@y.test\r\nSubject: signed\r\n"
                   b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <s1@example.com>\r\n"
                   b"\r\nHello, signed world.\r\n")  # fmt: skip
            raw = queued_raw(mw, send(mw, msg, sender="alice@example.com"))
    finally:
        signer.stop()
    assert raw.startswith(b"DKIM-Signature:")

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"test._domainkey.example.com."
        return signer.dns_txt

    assert dkim.verify(raw, dnsfunc=dns)
    tampered = raw.replace(b"Hello, signed world.", b"Hello, forged world.")
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_opendkim_signature_verifies_at_the_next_hop(tmp_path: Path) -> None:
    """Signed, queued, relayed by the SMTP client (dot-stuffing, BDAT) to another MTA:
    what that MTA received still verifies."""
    dkim = require_module("dkim", "pip install '.[dev]' (dkimpy)")
    signer = OpenDkim(tmp_path / "dkim").start()
    try:
        with running(tmp_path / "peer") as peer:
            config = {
                "filters": [{"milter": signer.spec, "name": "dkim"}],
                "delivery": {"mode": "background", "tls_default": "none"},
                "routing": {"smarthost": f"[127.0.0.1]:{peer.port}"},
            }
            with running(tmp_path / "mw", config) as mw:
                msg = (b"From: Alice <alice@example.com>\r\nTo: b@y.test\r\nSubject: hop\r\n"
                       b"Date: Thu, 1 Jan 2026 00:00:00 +0000\r\nMessage-ID: <s2@example.com>\r\n"
                       b"\r\n.leading dot\r\nHello, relayed world.\r\n")  # fmt: skip
                send(mw, msg, sender="alice@example.com")
                line = mw.wait_log("stat=Sent")
            qid = line.split("stat=Sent (")[1].split()[0]  # the peer's queue id
            raw = queued_raw(peer, qid)
    finally:
        signer.stop()
    assert b"\r\nDKIM-Signature:" in raw and b"\r\n\r\n.leading dot\r\n" in raw

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"test._domainkey.example.com."
        return signer.dns_txt

    assert dkim.verify(raw, dnsfunc=dns)
