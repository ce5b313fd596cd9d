"""ARC through the real daemon: chains validated coming in, forwarded mail sealed going out.

One daemon with ``[arc] verify`` and ``seal``, keys of two earlier hops served by
dnsmasq (hop1: RSA 2048, its TXT record in 255-octet strings; hop2: Ed25519), an
alias ``fwd`` that forwards to ``bob@remote.test``, and remote.test routed to
Postfix's smtp-sink. A message with a chain sealed by dkimpy (two hops), sent by
smtplib from an untrusted address, gets ``arc=pass`` in our Authentication-Results,
in its mail log line and in ``mailwright_arc_results_total``; the sink receives it
with our ARC Set (i=3, cv=pass) on top, which dkimpy validates as pass. A message
without ARC is sealed with i=1 cv=none (dkimpy: pass), one with a broken chain
with cv=fail (dkimpy: fail).
"""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from tests.support import smtp_sink
from tests.support.arc import Dns, dkimpy_seal, dkimpy_verify, ed_key, rsa_key, txt_record
from tests.support.daemon import Mailwright, free_port, running, wait_until
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer
from tests.support.web import Web, value

pytestmark = [
    peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed"),
    peer("smtp-sink", smtp_sink.available(), "Postfix's smtp-sink is not installed"),
]

HOP1, HOP2, OURS = rsa_key(), ed_key(), rsa_key()
KEYS = Dns()
KEYS.add("s1", "hop1.test", HOP1)
KEYS.add("s2", "hop2.test", HOP2)
KEYS.add("arc", "mx.test", OURS)
TOKEN = "arc-metrics-token"
CLIENT = "127.0.0.2"


def message(subject: str) -> bytes:
    return (
        f"From: Alice <alice@origin.test>\r\nTo: fwd@mx.test\r\nSubject: {subject}\r\n"
        "Date: Thu, 26 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@origin.test>\r\n\r\n"
        "hello  there \r\n\r\n"
    ).encode()


def two_hops(raw: bytes) -> bytes:
    one = dkimpy_seal(
        b"Authentication-Results: hop1.test; arc=none; spf=pass smtp.mailfrom=a@origin.test\r\n"
        + raw,
        HOP1, domain="hop1.test", selector="s1", srv_id="hop1.test",
    )  # fmt: skip
    return dkimpy_seal(
        b"Authentication-Results: hop2.test; arc=pass\r\n" + one,
        HOP2, domain="hop2.test", selector="s2", srv_id="hop2.test",
    )  # fmt: skip


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    rsa_txt = txt_record(HOP1)
    assert len(rsa_txt) > 255 and "," not in rsa_txt
    name = "s1._domainkey.hop1.test"
    pieces = ",".join(rsa_txt[i : i + 255] for i in range(0, len(rsa_txt), 255))
    server.option(f"--txt-record={name},{pieces}").zone(name)
    server.txt("s2._domainkey.hop2.test", txt_record(HOP2))
    with server:
        yield server


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Iterator[smtp_sink.SmtpSink]:
    started = smtp_sink.SmtpSink(tmp_path_factory.mktemp("sink")).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def mw(
    dns: DnsServer, sink: smtp_sink.SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mailwright]:
    root = tmp_path_factory.mktemp("mw")
    key = root / "arc.pem"
    key.write_bytes(
        OURS.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (root / "aliases").write_text("fwd: bob@remote.test\n")
    (root / "transport").write_text(f"remote.test smtp:[127.0.0.1]:{sink.port}\n")
    config: dict[str, Any] = {
        "dns": dns.settings(),
        "relay": {"networks": ["127.0.0.1/32"]},
        "routing": {
            "local_domains": ["mx.test"],
            "alias_file": str(root / "aliases"),
            "transport_table": str(root / "transport"),
        },
        "delivery": {"mode": "background", "idle_connection_timeout": 0.5},
        "arc": {
            "verify": True,
            "seal": True,
            "domain": "mx.test",
            "selector": "arc",
            "key_file": str(key),
        },
        "filters": [{"plugin": "dkim_verify"}],
        "http": {"port": free_port(), "token": TOKEN},
    }
    with running(root, config) as daemon:
        yield daemon


def send(mw: Mailwright, data: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", mw.port, source_address=(CLIENT, 0)) as s:
        s.ehlo("client.test")
        s.mail("alice@origin.test")
        assert s.rcpt("fwd@mx.test")[0] == 250
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]


def forwarded(sink: smtp_sink.SmtpSink, subject: str) -> bytes:
    """The message with this subject as the sink got it (CRLF line ends again)."""
    marker = f"Subject: {subject}\n".encode()
    found: list[bytes] = []

    def arrived() -> bool:
        found[:] = [m.content for m in sink.messages() if marker in m.content]
        return bool(found)

    wait_until(arrived, what=f"the message {subject!r} at the sink")
    return found[0].replace(b"\n", b"\r\n")


def field(raw: bytes, name: str) -> str:
    """The first field of that name, unfolded."""
    head = raw.partition(b"\r\n\r\n")[0].decode()
    lines = head.replace("\r\n\t", " ").replace("\r\n ", " ").split("\r\n")
    return next(line for line in lines if line.lower().startswith(name.lower() + ":"))


def test_a_valid_chain_passes_and_the_forwarded_copy_is_sealed(
    mw: Mailwright, sink: smtp_sink.SmtpSink
) -> None:
    chained = two_hops(message("chained"))
    assert dkimpy_verify(chained, KEYS)[0] == "pass"
    qid = send(mw, chained)
    line = mw.wait_log(f"{qid}: from=<alice@origin.test>")
    assert line.endswith(", arc=pass"), line
    mw.wait_log(f"{qid}: ARC sealed i=3 cv=pass d=mx.test s=arc")
    out = forwarded(sink, "chained")
    ours = field(out, "Authentication-Results")
    assert ours.startswith(
        "Authentication-Results: mx.test; arc=pass header.oldest-pass=0 "
        "smtp.remote-ip=127.0.0.2; dkim=none"
    ), ours
    assert field(out, "ARC-Seal").startswith("ARC-Seal: i=3; a=rsa-sha256; t=")
    assert "cv=pass; d=mx.test; s=arc;" in field(out, "ARC-Seal")
    aar = field(out, "ARC-Authentication-Results")
    assert aar.startswith("ARC-Authentication-Results: i=3; mx.test; arc=pass "), aar
    assert dkimpy_verify(out, KEYS) == ("pass", "success")
    samples = Web(mw.config["http"]["port"]).scrape(TOKEN)
    assert value(samples, "mailwright_arc_results_total", result="pass") >= 1


def test_mail_without_a_chain_is_sealed_as_the_first_instance(
    mw: Mailwright, sink: smtp_sink.SmtpSink
) -> None:
    qid = send(mw, message("plain"))
    assert mw.wait_log(f"{qid}: from=<alice@origin.test>").endswith(", arc=none")
    out = forwarded(sink, "plain")
    assert "i=1; a=rsa-sha256;" in field(out, "ARC-Seal") and "cv=none" in field(out, "ARC-Seal")
    assert field(out, "ARC-Authentication-Results").startswith(
        "ARC-Authentication-Results: i=1; mx.test; arc=none; dkim=none"
    )
    assert dkimpy_verify(out, KEYS) == ("pass", "success")


def test_a_broken_chain_fails_and_is_sealed_as_failed(
    mw: Mailwright, sink: smtp_sink.SmtpSink
) -> None:
    broken = two_hops(message("broken")).replace(b"hello  there", b"hello  where")
    qid = send(mw, broken)
    mw.wait_log(f"{qid}: arc: [127.0.0.2] fail (ARC-Message-Signature 2 did not verify)")
    out = forwarded(sink, "broken")
    assert "arc=fail" in field(out, "Authentication-Results")
    seal = field(out, "ARC-Seal")
    assert seal.startswith("ARC-Seal: i=3;") and "cv=fail" in seal
    assert dkimpy_verify(out, KEYS)[0] == "fail"
    samples = Web(mw.config["http"]["port"]).scrape(TOKEN)
    assert value(samples, "mailwright_arc_results_total", result="fail") >= 1
