"""The ``dkim_verify`` filter through the real daemon, keys served by dnsmasq.

Mail signed by dkimpy (RSA 2048, whose TXT record is split into 255-octet
strings, and Ed25519) from an untrusted client is queued with
``Authentication-Results: mx.test; dkim=pass ...``; a tampered one gets
``dkim=fail``, an unsigned one ``dkim=none``, one whose domain's DNS fails
``dkim=temperror``; a forged Authentication-Results with our authserv-id is
removed (another host's is kept); a trusted client's mail is left alone. Each signature's
result counts in ``mailwright_dkim_results_total``, which ``mailwright status`` shows.
"""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailwright.core.headers import HeaderParser
from tests.support.daemon import Mailwright, running
from tests.support.dns import DnsServer, dnsmasq_available
from tests.support.peers import peer

pytestmark = peer("dnsmasq", dnsmasq_available(), "dnsmasq-base is not installed")

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: root@mx.test\r\nSubject: hello\r\n"
    b"Date: Thu, 26 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\n"
    b"hello  there \r\n\r\n"
)


def rsa_txt() -> str:
    der = RSA.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def ed_txt() -> str:
    raw = ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()


def long_txt(dns: DnsServer, name: str, text: str) -> None:
    """A TXT record longer than one 255-octet string. On its command line dnsmasq makes each
    comma-separated piece one string (quotes would be kept as text); DKIM records have no comma."""
    assert "," not in text
    parts = ",".join(text[i : i + 255] for i in range(0, len(text), 255))
    dns.option(f"--txt-record={name},{parts}").zone(name)


def sign(raw: bytes, selector: bytes, domain: bytes = b"example.org") -> bytes:
    if selector == b"ed":
        seed = ED.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        key, algorithm = base64.b64encode(seed), b"ed25519-sha256"
    else:
        key = RSA.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        algorithm = b"rsa-sha256"
    return bytes(dkim.sign(raw, selector, domain, key, signature_algorithm=algorithm)) + raw


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    assert len(rsa_txt()) > 255
    long_txt(server, "rsa._domainkey.example.org", rsa_txt())
    server.txt("ed._domainkey.example.org", ed_txt())
    server.zone("example.org")  # other selectors: NXDOMAIN
    server.servfail("broken.test")
    with server:
        yield server


@pytest.fixture(scope="module")
def mw(dns: DnsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mailwright]:
    config: dict[str, Any] = {
        "dns": dns.settings(),
        "relay": {"networks": ["127.0.0.1/32"]},
        "routing": {"local_domains": ["mx.test"]},
        "filters": [{"plugin": "dkim_verify"}],
    }
    with running(tmp_path_factory.mktemp("mw"), config) as daemon:
        yield daemon


def send(mw: Mailwright, data: bytes, source: str = "127.0.0.2") -> str:
    with smtplib.SMTP("127.0.0.1", mw.port, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        s.mail("alice@example.org")
        s.rcpt("root@mx.test")
        code, text = s.data(data)
    assert code == 250, (code, text)
    return text.decode().split()[1]


def queued_headers(mw: Mailwright, qid: str) -> list[tuple[str, str]]:
    from mailwright.queue.sqlite import SqliteQueueStore

    store = SqliteQueueStore(Path(mw.config["queue"]["directory"]) / "queue.db")
    store.open_for_reading()
    try:
        text = store.read_headers(qid).encode()
    finally:
        store.close()
    parser = HeaderParser()
    parser.feed(text + b"\r\n")
    return [(h.name, h.text) for h in parser.headers]


def results(mw: Mailwright, data: bytes, source: str = "127.0.0.2") -> list[str]:
    """The Authentication-Results values queued, in order."""
    headers = queued_headers(mw, send(mw, data, source))
    return [value for name, value in headers if name == "Authentication-Results"]


def test_valid_signatures_pass(mw: Mailwright) -> None:
    [rsa_result] = results(mw, sign(MESSAGE, b"rsa"))
    assert rsa_result.startswith("mx.test;\tdkim=pass header.d=example.org header.s=rsa header.b=")
    [both] = results(mw, sign(sign(MESSAGE, b"ed"), b"rsa"))
    assert both.count("dkim=pass") == 2 and "header.s=ed" in both, both


def test_tampered_unsigned_and_broken_dns(mw: Mailwright) -> None:
    [tampered] = results(mw, sign(MESSAGE, b"ed").replace(b"there", b"where"))
    assert 'dkim=fail reason="body hash mismatch" header.d=example.org header.s=ed' in tampered
    assert results(mw, MESSAGE) == ["mx.test;\tdkim=none"]
    broken = sign(MESSAGE.replace(b"example.org", b"broken.test"), b"rsa", b"broken.test")
    [temporary] = results(mw, broken)
    assert "dkim=temperror" in temporary and "header.d=broken.test" in temporary, temporary
    [missing] = results(mw, sign(MESSAGE, b"nokey"))
    assert 'dkim=permerror reason="no key record"' in missing


def test_forged_results_removed_and_trusted_clients_skipped(mw: Mailwright) -> None:
    forged = (
        b"Authentication-Results: MX.test; dkim=pass header.d=bank.test\r\n"
        b"Authentication-Results: other.test; spf=pass\r\n" + MESSAGE
    )
    assert results(mw, forged) == ["mx.test;\tdkim=none", "other.test; spf=pass"]
    assert results(mw, forged, source="127.0.0.1") == [
        "MX.test; dkim=pass header.d=bank.test",
        "other.test; spf=pass",
    ]


def dkim_counts(mw: Mailwright) -> tuple[bool, dict[str, int]]:
    import json

    done = mw.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    [dkim] = [a for a in json.loads(done.stdout)["auth"] if a["check"] == "dkim"]
    return dkim["enabled"], dkim["results"]


def test_results_counted_per_signature(mw: Mailwright) -> None:
    enabled, before = dkim_counts(mw)
    assert enabled
    results(mw, sign(sign(MESSAGE, b"ed"), b"rsa"))  # two signatures: two passes
    results(mw, sign(MESSAGE, b"ed").replace(b"there", b"where"))
    results(mw, MESSAGE)
    results(mw, MESSAGE, source="127.0.0.1")  # trusted: not verified, not counted
    _, after = dkim_counts(mw)
    added = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert {k: n for k, n in added.items() if n} == {"pass": 2, "fail": 1, "none": 1}
    text = mw.cli("status").stdout.decode()
    assert f"dkim: {after['fail']} fail" in text, text
