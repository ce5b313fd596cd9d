"""DKIM verification: tag and key record parsing, the signed data, and verdicts on mail
signed by dkimpy and by our own Signer, with keys from a static lookup."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailwright.core.dkim import Signer, body_hash
from mailwright.core.dkim_verify import (
    KeyRecord,
    PermError,
    Plan,
    Result,
    TempError,
    authentication_results,
    authserv_id,
    body_hashes,
    parse_key,
    parse_signature,
    parse_tags,
    result_text,
    signed_data,
)
from mailwright.core.headers import Header, HeaderList, HeaderParser

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED = ed25519.Ed25519PrivateKey.generate()
RSA_PEM = RSA.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
ED_SEED = base64.b64encode(
    ED.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
)
RSA_TXT = (
    "v=DKIM1; k=rsa; p="
    + base64.b64encode(
        RSA.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
)
ED_TXT = (
    "v=DKIM1; k=ed25519; p="
    + base64.b64encode(
        ED.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()
)
MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@far.test\r\nSubject:  hello \t there\r\n"
    b"Date: Thu, 26 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n"
    b"X-Unsigned: yes\r\n\r\n"
    b"body  line \r\n\r\nsecond\r\n\r\n\r\n"
)


def dkimpy_sign(raw: bytes, selector: bytes = b"rsa", **kw: object) -> bytes:
    if selector == b"ed":
        kw["signature_algorithm"] = b"ed25519-sha256"
        key = ED_SEED
    else:
        key = RSA_PEM
    return bytes(dkim.sign(raw, selector, b"example.org", key, **kw)) + raw


def dkimpy_dns(name: bytes, timeout: int = 5) -> bytes:
    return {b"rsa._domainkey.example.org.": RSA_TXT, b"ed._domainkey.example.org.": ED_TXT}[
        name
    ].encode()


def zone(**records: str | None) -> dict[str, list[str]]:
    base: dict[str, str | None] = {"rsa": RSA_TXT, "ed": ED_TXT, **records}
    return {f"{s}._domainkey.example.org": [t] for s, t in base.items() if t is not None}


def verify(raw: bytes, records: dict[str, list[str]] | None = None, limit: int = 5) -> list[Result]:
    table = zone() if records is None else records

    async def lookup(name: str) -> list[str]:
        if name == "slow._domainkey.example.org":
            raise TempError("timed out")
        return table.get(name, [])

    parser = HeaderParser()
    body = parser.feed(raw) + parser.close()
    plan = Plan.of(parser.headers, limit)
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # small pieces: streaming
    hashes = body_hashes(chunks, plan.body_specs)
    return asyncio.run(plan.verify(parser.headers, hashes, lookup, int(time.time())))


def verdicts(results: list[Result]) -> list[tuple[str, str]]:
    return [(r.result, r.reason) for r in results]


def test_parse_tags() -> None:
    assert parse_tags(" v = 1 ;a=rsa-sha256;\r\n\tb= ab\r\n cd ;") == {
        "v": "1",
        "a": "rsa-sha256",
        "b": "ab\r\n cd",
    }
    for bad, why in [("v=1; v=1", "duplicate"), ("v=1; junk", "malformed"), ("1x=2", "malformed")]:
        with pytest.raises(PermError, match=why):
            parse_tags(bad)


def field(value: str) -> Header:
    return Header("DKIM-Signature", b" " + value.encode())


GOOD = "v=1; a=rsa-sha256; d=Example.ORG; s=sel; h=from:to; bh=" + "A" * 43 + "=; b=AbC/+d=="


def test_parse_signature() -> None:
    sig = parse_signature(field(GOOD + "; c=relaxed; l=12; t=5; x=10; i=joe@sub.example.org"))
    assert (sig.domain, sig.selector, sig.signed) == ("example.org", "sel", ("from", "to"))
    assert (sig.header_canon, sig.body_canon, sig.length) == ("relaxed", "simple", 12)
    assert sig.key_name == "sel._domainkey.example.org" and sig.identity_domain == "sub.example.org"


@pytest.mark.parametrize(
    ("change", "result", "why"),
    [
        (("v=1", "v=2"), "permerror", "unknown version"),
        (("rsa-sha256", "rsa-sha1"), "neutral", "rsa-sha1 is not accepted"),
        (("rsa-sha256", "dsa-md5"), "neutral", "unknown algorithm"),
        (("h=from:to", "h=to"), "permerror", "From is not signed"),
        (("s=sel", "s=sel; i=@other.org"), "permerror", "is not in d="),
        (("s=sel", "s=sel; i=@badexample.org"), "permerror", "is not in d="),
        (("s=sel", "s=sel; c=loose"), "permerror", "unknown canonicalization"),
        (("s=sel", "s=sel; q=http"), "permerror", "unknown query method"),
        (("s=sel", "s=sel; t=10; x=5"), "permerror", "x= is before t="),
        (("s=sel", "s=sel; l=-1"), "permerror", "l= is not a number"),
        (("b=AbC/+d==", "b=!!"), "permerror", "b= is not base64"),
        (("bh=A", "bh=!A"), "permerror", "bh= is not base64"),
        (("bh=" + "A" * 43 + "=", "bh=AAAA"), "permerror", "bh= is not a SHA-256 digest"),
        (("d=Example.ORG; ", ""), "permerror", "missing tag d="),
    ],
)
def test_bad_signatures(change: tuple[str, str], result: str, why: str) -> None:
    with pytest.raises(PermError, match=why) as caught:
        parse_signature(field(GOOD.replace(*change)))
    assert caught.value.result == result


def test_parse_key() -> None:
    record = parse_key(RSA_TXT + "; t=y:s; h=sha1:sha256; s=email")
    assert isinstance(record, KeyRecord) and record.kind == "rsa"
    assert record.testing and record.strict
    assert parse_key(ED_TXT).kind == "ed25519"
    assert parse_key(RSA_TXT.removeprefix("v=DKIM1; k=rsa; ")).kind == "rsa"  # defaults
    short = rsa.RSAPublicNumbers(65537, (1 << 511) | 1).public_key()  # too short to generate
    der = short.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases = [
        ("v=DKIM1; p=", "fail", "key revoked"),
        ("v=DKIM2; p=AAAA", "permerror", "bad key record version"),
        ("k=rsa; v=DKIM1; p=AAAA", "permerror", "bad key record version"),
        ("v=DKIM1; k=dsa; p=AAAA", "permerror", "unknown key type"),
        ("v=DKIM1; h=sha1; p=AAAA", "permerror", "does not allow sha256"),
        ("v=DKIM1; s=tlsrpt; p=AAAA", "permerror", "not for email"),
        ("v=DKIM1; k=rsa", "permerror", "no p="),
        ("v=DKIM1; p=AAAA", "permerror", "not an RSA public key"),
        ("v=DKIM1; k=ed25519; p=AAAA", "permerror", "not 32 bytes"),
        ("p=" + base64.b64encode(der).decode(), "permerror", "512 bits is too short"),
    ]
    for text, result, why in cases:
        with pytest.raises(PermError, match=why) as caught:
            parse_key(text)
        assert caught.value.result == result, text


@pytest.mark.parametrize("selector", [b"rsa", b"ed"])
@pytest.mark.parametrize("canon", [b"relaxed", b"simple"])
def test_dkimpy_signatures_pass(selector: bytes, canon: bytes) -> None:
    signed = dkimpy_sign(MESSAGE, selector, canonicalize=(canon, canon))
    [r] = verify(signed)
    assert (r.result, r.domain, r.selector) == ("pass", "example.org", selector.decode()), r
    assert verdicts(verify(signed.replace(b"second", b"secund"))) == [
        ("fail", "body hash mismatch")
    ]
    assert verdicts(verify(signed.replace(b"hello", b"jello"))) == [
        ("fail", "signature did not verify")
    ]
    # a header not signed may change; one more From: (bottom-up selection) breaks it
    assert verify(signed.replace(b"X-Unsigned: yes", b"X-Unsigned: no"))[0].result == "pass"
    for changed in (
        signed.replace(b"\r\n\r\n", b"\r\nFrom: eve@x.test\r\n\r\n", 1),
        signed.replace(b"\r\nFrom: Alice", b"\r\nFrom: eve@x.test\r\nFrom: Alice", 1),
        signed.replace(b"Subject:  hello \t there", b"Subject: hello there"),
        signed.replace(b"line \r\n", b"line\r\n"),
    ):
        assert (verify(changed)[0].result == "pass") == dkim.verify(changed, dnsfunc=dkimpy_dns)


def test_dkimpy_length_tag_is_honoured() -> None:
    signed = dkimpy_sign(MESSAGE, length=True)
    assert b"l=" in signed
    assert verify(signed + b"appended\r\n")[0].result == "pass"
    cut = signed[: -len(b"second\r\n\r\n\r\n")]
    assert verdicts(verify(cut)) == [("permerror", "l= is longer than the body")]


def own_sign(raw: bytes, **kw: object) -> bytes:
    parser = HeaderParser()
    body = parser.feed(raw) + parser.close()
    signer = Signer("example.org", "ed", ED, ("From", "Subject", "To"), ("From",))
    return (
        signer.sign(parser.headers, body_hash([body], "relaxed"), int(time.time())).encode() + raw
    )


def test_our_signer_verifies_and_oversigning_holds() -> None:
    signed = own_sign(MESSAGE)
    assert verify(signed)[0].result == "pass"
    extra = signed.replace(b"To: bob", b"From: eve@x.test\r\nTo: bob")
    assert verdicts(verify(extra)) == [("fail", "signature did not verify")]


def test_signed_data_bottom_up_with_b_emptied() -> None:
    sig = parse_signature(field(GOOD.replace("h=from:to", "h=to:from:to:to")))
    headers = HeaderList(
        [
            Header.make("To", "one"),
            Header.make("From", "a@example.org"),
            sig.field,
            Header.make("To", "two"),
        ]
    )
    data = signed_data(headers, sig)
    head = b"To: two\r\nFrom: a@example.org\r\nTo: one\r\nDKIM-Signature: "
    assert data.startswith(head) and data.endswith(b"=; b=")  # simple: byte for byte, no CRLF


def test_expired_revoked_missing_and_temporary() -> None:
    now = int(time.time())
    expired = re.sub(rb"t=\d+", b"t=%d; x=%d" % (now - 100, now - 10), dkimpy_sign(MESSAGE))
    assert b"x=" in expired
    assert verdicts(verify(expired)) == [("fail", "signature expired")]
    signed = dkimpy_sign(MESSAGE)
    assert verdicts(verify(signed, zone(rsa="v=DKIM1; p="))) == [("fail", "key revoked")]
    assert verdicts(verify(signed, zone(rsa=None))) == [("permerror", "no key record")]
    assert verdicts(verify(signed, zone(rsa=ED_TXT))) == [
        ("permerror", "key type ed25519 does not match a=")
    ]
    slow = dkimpy_sign(MESSAGE, b"ed").replace(b"s=ed;", b"s=slow;")
    assert verdicts(verify(slow)) == [("temperror", "timed out")]


def test_multiple_signatures_and_the_limit() -> None:
    twice = dkimpy_sign(dkimpy_sign(MESSAGE, b"ed"), b"rsa", canonicalize=(b"relaxed", b"simple"))
    bad = twice.replace(b"a=rsa-sha256", b"a=rsa-sha1", 1)
    assert [r.selector for r in verify(twice)] == ["rsa", "ed"]
    assert [r.result for r in verify(twice)] == ["pass", "pass"]
    assert verdicts(verify(bad)) == [
        ("neutral", "rsa-sha1 is not accepted (RFC 8301)"),
        ("pass", ""),
    ]
    assert [r.selector for r in verify(twice, limit=1)] == ["rsa"]
    assert verdicts(verify(MESSAGE)) == [("none", "")]


def test_authentication_results() -> None:
    results = [
        Result("pass", domain="example.org", selector="sel", b="AbCdEfGhIj"),
        Result("fail", "body hash mismatch", "example.org", "s2", "ab/+xyzWV"),
        Result("permerror", "bad\r\nX-Evil: 1"),
    ]
    h = authentication_results("mx.test", results)
    assert h.encode() == (
        b"Authentication-Results: mx.test;\r\n"
        b"\tdkim=pass header.d=example.org header.s=sel header.b=AbCdEfGh;\r\n"
        b'\tdkim=fail reason="body hash mismatch" header.d=example.org header.s=s2'
        b' header.b="ab/+xyzW";\r\n'
        b'\tdkim=permerror reason="bad??X-Evil: 1"\r\n'
    )
    assert result_text(Result("none")) == "dkim=none"
    assert authserv_id(h) == "mx.test"
    assert authserv_id(Header.make("Authentication-Results", "(c) MX.Test 1; none")) == "mx.test"
