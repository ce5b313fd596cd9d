"""The ``dkim`` filter through the real daemon: what it queues verifies with dkimpy and OpenDKIM.

RSA and Ed25519, relaxed and simple canonicalisation, awkward bodies (long
lines, trailing white space, trailing empty lines), a 5 MiB message; mail from
an untrusted client or with a From: domain not ours is left unsigned; a bad key
is a configuration error (exit 78) naming the file.
"""

from __future__ import annotations

import base64
import smtplib
import subprocess
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailwright.core.sysexits import ExitCode
from mailwright.queue.sqlite import SqliteQueueStore
from tests.support.daemon import Mailwright, running
from tests.support.peers import have_programs, peer, require_module, require_peer

AWKWARD = (
    b"From: Alice <alice@example.org>\r\nTo: bob@far.test\r\n"
    b"Subject: folded\r\n\tsubject  line \r\nMessage-ID: <1@example.org>\r\n"
    b"Cc: carol@far.test\r\nDate: Thu, 26 Nov 2026 06:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\nList-Id: <l.example.org>\r\n"
    b"List-Unsubscribe: <mailto:l-off@example.org>\r\nX-Unsigned: yes\r\n\r\n"
    + b"word \t " * 140
    + b"\r\n"
    + b"x" * 990
    + b"\r\n\ttabbed   line\t \r\n trailing spaces   \r\n\r\n \r\n\r\n\r\n"
)
OPENDKIM_CROSS_CHECK = "package opendkim; the cross-check runs after the dkimpy assertions passed"
PLAIN = b"From: alice@example.org\r\nTo: bob@far.test\r\nSubject: hi\r\n\r\nhello\r\n"


def write_key(path: Path, kind: str) -> str:
    """Writes a fresh private key to ``path``; returns the DNS TXT record for it."""
    if kind == "rsa":
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return f"v=DKIM1; k={kind}; p=" + base64.b64encode(public).decode()


def dkim_config(key: Path, **options: Any) -> dict[str, Any]:
    entry = {"domain": "example.org", "selector": "mw", "key_file": str(key), **options}
    return {"filters": [{"plugin": "dkim", "options": entry}]}


def send(mw: Mailwright, data: bytes, source: str = "127.0.0.1", rcpt: str = "bob@far.test") -> str:
    with smtplib.SMTP("127.0.0.1", mw.port, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        s.mail("alice@example.org")
        s.rcpt(rcpt)
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


def opendkim_verifies(tmp_path: Path, raw: bytes, txt: str) -> bool:
    """OpenDKIM's own verdict (``opendkim -t``), the public key given by TestPublicKeys."""
    (tmp_path / "keys").write_text(f"mw._domainkey.example.org {txt}\n")
    (tmp_path / "opendkim.conf").write_text(f"Syslog no\nTestPublicKeys {tmp_path / 'keys'}\n")
    (tmp_path / "msg.eml").write_bytes(raw)
    done = subprocess.run(
        ["opendkim", "-x", str(tmp_path / "opendkim.conf"), "-t", str(tmp_path / "msg.eml")],
        capture_output=True,
        timeout=30,
    )
    said = done.stdout + done.stderr  # opendkim -t reports on stdout
    return b"verification (s=mw, d=example.org" in said and b"succeeded" in said


def verifies(raw: bytes, txt: str) -> bool:
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt.encode() if name == b"mw._domainkey.example.org." else b""

    return bool(dkim.verify(raw, dnsfunc=dns))


@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signed_mail_verifies(tmp_path: Path, kind: str, canon: str) -> None:
    if kind == "ed25519":
        require_module("nacl", "dkimpy verifies Ed25519 with PyNaCl")
    txt = write_key(tmp_path / "key.pem", kind)
    with running(tmp_path / "mw", dkim_config(tmp_path / "key.pem", canonicalization=canon)) as mw:
        raw = queued_raw(mw, send(mw, AWKWARD))
    assert raw.startswith(
        b"DKIM-Signature: v=1; a=" + kind.encode() + b"-sha256; c=" + canon.encode()
    )
    header = raw[: raw.index(b"\r\n", raw.index(b"b=")) + 2]
    assert all(len(line) <= 78 for line in header.split(b"\r\n")), header
    assert verifies(raw, txt)
    assert not verifies(raw.replace(b"tabbed", b"tabbbb"), txt)
    assert not verifies(raw.replace(b"List-Id: <l.", b"List-Id: <m."), txt)
    assert verifies(raw.replace(b"X-Unsigned: yes", b"X-Unsigned: no"), txt)
    require_peer("opendkim", have_programs("opendkim"), OPENDKIM_CROSS_CHECK)
    assert opendkim_verifies(tmp_path, raw, txt)
    assert not opendkim_verifies(tmp_path, raw.replace(b"tabbed", b"tabbbb"), txt)


def test_five_mib_message(tmp_path: Path) -> None:
    txt = write_key(tmp_path / "key.pem", "rsa")
    line = b"0123456789 abcdefghij \t ABCDEFGHIJ  " * 2 + b"\r\n"
    body = line * (5 * 1024 * 1024 // len(line) + 1)
    with running(tmp_path / "mw", dkim_config(tmp_path / "key.pem")) as mw:
        raw = queued_raw(mw, send(mw, PLAIN + body))
    assert len(raw) > 5 * 1024 * 1024
    assert verifies(raw, txt)
    require_peer("opendkim", have_programs("opendkim"), OPENDKIM_CROSS_CHECK)
    assert opendkim_verifies(tmp_path, raw, txt)


def test_only_trusted_clients_and_our_domains_are_signed(tmp_path: Path) -> None:
    txt = write_key(tmp_path / "key.pem", "rsa")
    config = dkim_config(tmp_path / "key.pem", domains=["example.org", "example.net"])
    config["relay"] = {"networks": ["127.0.0.1/32"]}
    with running(tmp_path / "mw", config) as mw:
        stranger = queued_raw(mw, send(mw, PLAIN, source="127.0.0.2", rcpt="user@mx.test"))
        trusted = queued_raw(mw, send(mw, PLAIN, rcpt="user@mx.test"))
        sub = queued_raw(mw, send(mw, PLAIN.replace(b"@example.org", b"@mail.example.net")))
        foreign = queued_raw(mw, send(mw, PLAIN.replace(b"@example.org", b"@example.com")))
        lookalike = queued_raw(mw, send(mw, PLAIN.replace(b"@example.org", b"@badexample.org")))
    assert b"DKIM-Signature" not in stranger
    assert verifies(trusted, txt) and verifies(sub, txt)
    assert b"DKIM-Signature" not in foreign and b"DKIM-Signature" not in lookalike


@peer("opendkim-genkey", have_programs("opendkim-genkey"), "package opendkim-tools")
def test_opendkim_genkey_keys_are_accepted(tmp_path: Path) -> None:
    subprocess.run(
        ["opendkim-genkey", "-b", "2048", "-d", "example.org", "-s", "mw", "-D", str(tmp_path)],
        check=True,
        timeout=60,
    )
    mw = Mailwright(tmp_path / "mw", dkim_config(tmp_path / "mw.private"))
    mw.write_config()
    checked = mw.cli("config", "check")
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read DKIM key"),
        (b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n", "not an"),
        ("rsa1024", "RSA 1024 bits; at least 2048 needed"),
    ],
)
def test_bad_key_is_a_configuration_error(
    tmp_path: Path, content: bytes | str | None, problem: str
) -> None:
    key = tmp_path / "key.pem"
    if content == "rsa1024":
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        key.write_bytes(
            small.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    elif isinstance(content, bytes):
        key.write_bytes(content)
    mw = Mailwright(tmp_path / "mw", dkim_config(key))
    mw.write_config()
    checked = mw.cli("config", "check")
    assert checked.returncode == ExitCode.CONFIG, checked
    assert problem.encode() in checked.stderr and str(key).encode() in checked.stderr
    started = mw.cli("serve", timeout=30)
    assert started.returncode == ExitCode.CONFIG and str(key).encode() in started.stderr


def test_sign_only_trusted_off_signs_strangers_too(tmp_path: Path) -> None:
    txt = write_key(tmp_path / "key.pem", "ed25519")
    config = dkim_config(tmp_path / "key.pem", sign_only_trusted=False)
    config["relay"] = {"networks": []}
    with running(tmp_path / "mw", config) as mw:
        raw = queued_raw(mw, send(mw, PLAIN, source="127.0.0.2", rcpt="user@mx.test"))
    assert raw.startswith(b"DKIM-Signature: v=1; a=ed25519-sha256;")
    require_module("nacl", "dkimpy verifies Ed25519 with PyNaCl")
    assert verifies(raw, txt)
