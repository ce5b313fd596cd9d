"""DKIM canonicalisation and signing, sans-I/O: against dkimpy and RFC 6376's examples."""

from __future__ import annotations

import base64
import email.utils

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given, settings
from hypothesis import strategies as st

from mailwright.core.dkim import (
    BodyCanonicaliser,
    Canon,
    Signer,
    SigningKey,
    body_hash,
    canonical_body,
    canonical_header,
    select_headers,
)
from mailwright.core.headers import Header, HeaderParser
from tests.support.peers import require_module

# bodies made of the bytes that matter to canonicalisation
BODY = st.binary().map(lambda b: bytes(b" \t\r\nab"[x % 6] for x in b))
REFERENCE = {"relaxed": Relaxed.canonicalize_body, "simple": Simple.canonicalize_body}


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def streamed(chunks: list[bytes], canon: Canon) -> bytes:
    c = BodyCanonicaliser(canon)
    return b"".join(c.feed(chunk) for chunk in chunks) + c.finish()


@pytest.mark.parametrize("canon", ["relaxed", "simple"])
@settings(max_examples=400, deadline=None)
@given(body=BODY, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_streaming_equals_whole_and_dkimpy(canon: Canon, body: bytes, cuts: list[int]) -> None:
    whole = canonical_body(body, canon)
    assert streamed(split(body, cuts), canon) == whole
    assert whole == REFERENCE[canon](body)


@pytest.mark.parametrize("canon", ["relaxed", "simple"])
def test_byte_by_byte(canon: Canon) -> None:
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert streamed([bytes([b]) for b in body], canon) == REFERENCE[canon](body)


def test_rfc6376_example_body() -> None:
    # RFC 6376 section 3.4.5
    body = b" C \r\nD \t E\r\n\r\n\r\n"
    assert canonical_body(body, "relaxed") == b" C\r\nD E\r\n"
    assert canonical_body(body, "simple") == b" C \r\nD \t E\r\n"


def test_rfc6376_example_headers() -> None:
    raw = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n"
    parser = HeaderParser()
    parser.feed(raw)
    a, b = parser.headers
    assert canonical_header(a.name, a.value, "relaxed") == b"a:X\r\n"
    assert canonical_header(b.name, b.value, "relaxed") == b"b:Y Z\r\n"
    assert canonical_header(a.name, a.value, "simple") == b"A: X\r\n"


def test_empty_bodies() -> None:
    assert canonical_body(b"", "relaxed") == b""
    assert canonical_body(b"\r\n\r\n", "relaxed") == b""
    assert canonical_body(b"", "simple") == b"\r\n"
    assert canonical_body(b"\r\n\r\n", "simple") == b"\r\n"
    # RFC 6376 3.4.4 example: SHA-256 of the empty relaxed body
    assert base64.b64encode(body_hash([b""], "relaxed")) == (
        b"47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    )


def test_long_runs_stay_small_and_fast() -> None:
    c = BodyCanonicaliser("relaxed")
    out = [c.feed(b"x" + b" " * (1 << 20)) for _ in range(4)]
    assert all(len(o) <= 2 for o in out) and len(c._carry) <= 2
    assert b"".join(out) + c.feed(b"\r\n" * (1 << 20)) + c.finish() == b"x x x x\r\n"


def test_select_headers_bottom_up_and_oversigned() -> None:
    headers = [
        Header.make("Received", "x"),
        Header.make("From", "a@x.test"),
        Header.make("List-Id", "l"),
        Header.make("Subject", "one"),
        Header.make("subject", "two"),
        Header.make("List-Post", "p"),
    ]
    names, picked = select_headers(headers, ["From", "Subject", "Date", "List-*"], ["from", "date"])
    assert names == ["From", "From", "Subject", "Subject", "Date", "List-Id", "List-Post"]
    assert [h.text for h in picked] == ["a@x.test", "two", "one", "l", "p"]


def keys() -> dict[str, tuple[SigningKey, str]]:
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ed25519.Ed25519PrivateKey.generate()
    der = r.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw = e.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "rsa": (r, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()),
        "ed25519": (e, "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()),
    }


KEYS = keys()


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("canon", ["relaxed", "simple"])
def test_signature_verifies_with_dkimpy(kind: str, canon: Canon) -> None:
    if kind == "ed25519":
        require_module("nacl", "dkimpy verifies Ed25519 with PyNaCl")
    key, txt = KEYS[kind]
    raw = (
        b"From: A <a@x.test>\r\nTo: b@y.test\r\nSubject:  hello \t there\r\n"
        b"Date: " + email.utils.formatdate().encode() + b"\r\n\r\nbody  \r\n\r\n"
    )
    parser = HeaderParser()
    body = parser.feed(raw) + parser.close()
    signer = Signer("x.test", "sel", key, ("From", "Subject", "To"), ("From",), canon, canon)
    header = signer.sign(parser.headers, body_hash([body], canon), 1700000000)
    signed = header.encode() + raw
    assert all(len(line) < 78 for line in header.encode().split(b"\r\n"))

    def dns(name: bytes, timeout: int = 5) -> bytes:
        assert name == b"sel._domainkey.x.test."
        return txt.encode()

    assert dkim.verify(signed, dnsfunc=dns)
    assert not dkim.verify(signed.replace(b"hello", b"jello"), dnsfunc=dns)
    assert not dkim.verify(b"From: c@x.test\r\n" + signed, dnsfunc=dns)  # oversigned


def test_long_header_list_is_folded() -> None:
    key, txt = KEYS["rsa"]
    names = ["From", "Reply-To", "Subject", "Date", "To", "Cc", "Resent-*", "In-Reply-To"]
    names += ["References", "List-*", "Message-ID", "MIME-Version", "Content-Type"]
    raw = b"".join(
        f"{name.rstrip('*') + ('From' if name.endswith('*') else '')}: v <a@x.test>\r\n".encode()
        for name in names
    )
    raw += b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nbody\r\n"
    parser = HeaderParser()
    body = parser.feed(raw) + parser.close()
    signer = Signer("x.test", "sel", key, tuple(names), ("From", "Subject", "To", "Cc"))
    header = signer.sign(parser.headers, body_hash([body], "relaxed"), 1700000000)
    lines = header.encode().split(b"\r\n")
    assert all(len(line) < 78 for line in lines) and len(lines) > 8, lines
    assert b"List-Unsubscribe-Post" in header.value
    assert dkim.verify(header.encode() + raw, dnsfunc=lambda name, timeout=5: txt.encode())
