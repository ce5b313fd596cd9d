#!/usr/bin/env python3
"""The messages and DNS records of bench/auth.sh: one 1 KiB message, plain, DKIM-signed, and
DKIM-signed with an ARC set, for ``smtp-source -F``; the TXT records that make them pass.

    auth_mail.py DIR FROM TO

writes into DIR:
  plain.eml  a 1 KiB message (From: FROM, To: TO, a text body), LF line ends (smtp-source -F
             sends each line with CRLF)
  dkim.eml   the same with a DKIM-Signature (rsa-sha256, relaxed/relaxed, d = FROM's domain,
             s=bench) made by dkimpy, an implementation independent of Mailwright's
  arc.eml    dkim.eml as a forwarder (forwarder.example.net) passed it on: its
             Authentication-Results and an ARC set i=1 (cv=none) sealed by Mailwright's
             core/arc.py (dkimpy's arc_sign needs the authres package, not in the venv)
  dns.txt    the TXT records, a line each: NAME<TAB>STRING[<TAB>STRING...] (strings of at most
             255 octets, as DNS needs): the DKIM key of both domains (one 2048-bit RSA key),
             SPF for FROM's domain and for the HELO name bench-client.<domain>, DMARC p=none
Reads nothing else; trusts its arguments. Needs dkimpy and cryptography (the test venv) and
Mailwright's src/ on the path (PYTHONPATH).
"""

from __future__ import annotations

import base64
import sys
from email.utils import formatdate
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailwright.core.arc import Sealer
from mailwright.core.dkim import body_hash
from mailwright.core.headers import HeaderParser

SELECTOR = b"bench"
FORWARDER = "forwarder.example.net"
SPF = "v=spf1 ip4:127.0.0.0/8 -all"
SIZE = 1024


def message(sender: str, recipient: str) -> bytes:
    domain = sender.rpartition("@")[2]
    head = (
        f"From: Bench Sender <{sender}>\n"
        f"To: <{recipient}>\n"
        "Subject: authentication benchmark\n"
        f"Date: {formatdate(1796467416, localtime=False)}\n"
        f"Message-ID: <auth-bench-1@{domain}>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n"
    body = b""
    while len(head) + len(body) + len(line) <= SIZE:
        body += line
    return head + body + b"x" * (SIZE - len(head) - len(body) - 1) + b"\n"


def seal(signed: bytes, key: rsa.RSAPrivateKey, domain: str) -> bytes:
    """``signed`` with the forwarder's Authentication-Results and ARC set i=1 on top."""
    results = [f"spf=pass smtp.mailfrom={domain}", f"dkim=pass header.d={domain} header.s=bench"]
    text = f"Authentication-Results: {FORWARDER}; " + ";\n\t".join(results) + "\n"
    crlf = (text.encode() + signed).replace(b"\n", b"\r\n")
    head, _, body = crlf.partition(b"\r\n\r\n")
    parser = HeaderParser()
    parser.feed(head + b"\r\n\r\n")
    sealer = Sealer(
        FORWARDER,
        SELECTOR.decode(),
        key,
        FORWARDER,
        ("from", "to", "subject", "date", "message-id", "dkim-signature"),
    )
    fields = sealer.seal(parser.headers, body_hash([body], "relaxed"), "none", results, 1796467416)
    assert fields is not None
    return b"".join(f.encode() for f in fields).replace(b"\r\n", b"\n") + text.encode() + signed


def chunks(text: str) -> list[str]:
    return [text[i : i + 255] for i in range(0, len(text), 255)]


def main(directory: Path, sender: str, recipient: str) -> None:
    domain = sender.rpartition("@")[2]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    plain = message(sender, recipient)
    signature = dkim.sign(
        plain,
        SELECTOR,
        domain.encode(),
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"From", b"To", b"Subject", b"Date", b"Message-ID"],
        linesep=b"\n",
    )
    signed = signature + plain
    forwarded = seal(signed, key, domain)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plain.eml").write_bytes(plain)
    (directory / "dkim.eml").write_bytes(signed)
    (directory / "arc.eml").write_bytes(forwarded)
    key_record = chunks(f"v=DKIM1; k=rsa; p={public}")
    records = [
        [f"bench._domainkey.{domain}", *key_record],
        [f"bench._domainkey.{FORWARDER}", *key_record],
        [domain, SPF],
        [f"bench-client.{domain}", SPF],
        [f"_dmarc.{domain}", "v=DMARC1; p=none; adkim=r; aspf=r"],
    ]
    (directory / "dns.txt").write_text("".join("\t".join(r) + "\n" for r in records))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: auth_mail.py DIR FROM TO")
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
