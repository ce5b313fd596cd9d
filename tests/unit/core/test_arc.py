"""ARC (core.arc): chain structure, validation and sealing, cross-checked with dkimpy both ways.

Chains of 1, 2 and 3 hops are sealed by dkimpy (RSA and Ed25519; dkimpy seals
relaxed/relaxed only) and by our ``Sealer`` (RSA and Ed25519, relaxed/relaxed,
simple/simple, relaxed/simple), and mixed; each is validated by ours and by dkimpy,
keys from one static DNS table. A changed body, a changed signed header field, a
changed AAR or a changed cv= makes both say fail.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mailwright.core.arc import (
    ArcResult,
    Chain,
    Sealer,
    collect,
    method_result,
    next_instance,
    parse_seal,
    result_text,
    results_of,
    split_results,
)
from mailwright.core.dkim import Canon, SigningKey, body_hash
from mailwright.core.dkim_verify import PermError, body_hashes
from mailwright.core.headers import Header, HeaderList, HeaderParser
from tests.support.arc import Dns, dkimpy_seal, dkimpy_verify, ed_key, rsa_key

KEYS: dict[str, SigningKey] = {"rsa": rsa_key(), "ed": ed_key()}
DNS = Dns()
for _name, _key in KEYS.items():
    for _hop in range(1, 4):
        DNS.add(_name, f"hop{_hop}.test", _key)
SIGNED = ("From", "To", "Subject", "Date", "Message-ID")
MESSAGE = (
    b"From: Alice <alice@origin.test>\r\nTo: list@hop1.test\r\nSubject: a  test\r\n"
    b"Date: Thu, 26 Nov 2026 06:00:00 +0000\r\nMessage-ID: <1@origin.test>\r\n\r\n"
    b"hello  there \r\nsecond line\r\n\r\n"
)


def split(raw: bytes) -> tuple[HeaderList, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    parser = HeaderParser()
    parser.feed(head + b"\r\n\r\n")
    return HeaderList(parser.headers), body


def ours(raw: bytes, dns: Dns = DNS) -> ArcResult:
    headers, body = split(raw)
    chain = Chain.of(headers)
    hashes = body_hashes([body], chain.body_specs)
    return asyncio.run(chain.validate(headers, hashes, dns.lookup, int(time.time())))


def received(raw: bytes, hop: int, cv: str) -> bytes:
    """What hop ``hop`` has when it seals: its Authentication-Results with arc=cv on top."""
    field = f"Authentication-Results: hop{hop}.test; arc={cv}; spf=pass smtp.mailfrom=a@o.test\r\n"
    return field.encode() + raw


def our_seal(raw: bytes, hop: int, key: str, canon: str = "relaxed/relaxed") -> bytes:
    header_canon, _, body_canon = canon.partition("/")
    headers, body = split(raw)
    sealer = Sealer(
        f"hop{hop}.test", key, KEYS[key], f"hop{hop}.test", SIGNED,
        _canon(header_canon), _canon(body_canon),
    )  # fmt: skip
    results = results_of(headers, f"hop{hop}.test")
    cv = next(v for m, v in map(method_result, results) if m == "arc")
    fields = sealer.seal(
        headers, body_hash([body], _canon(body_canon)), cv, results, int(time.time())
    )  # type: ignore[arg-type]
    assert fields is not None
    return HeaderList([*fields, *headers]).encode() + b"\r\n" + body


def their_seal(raw: bytes, hop: int, key: str, canon: str = "relaxed/relaxed") -> bytes:
    assert canon == "relaxed/relaxed"  # dkimpy's ARC.sign knows no other
    return dkimpy_seal(
        raw, KEYS[key], domain=f"hop{hop}.test", selector=key, srv_id=f"hop{hop}.test",
        headers=tuple(h.lower() for h in SIGNED),
    )  # fmt: skip


def _canon(text: str) -> Canon:
    return "simple" if text == "simple" else "relaxed"


Sealing = Callable[[bytes, int, str, str], bytes]


def chain_of(sealers: list[Sealing], keys: list[str], canon: str = "relaxed/relaxed") -> bytes:
    raw = MESSAGE
    for hop, (seal, key) in enumerate(zip(sealers, keys, strict=True), start=1):
        raw = seal(received(raw, hop, "none" if hop == 1 else "pass"), hop, key, canon)
    return raw


HOPS = [1, 2, 3]


@pytest.mark.parametrize("hops", HOPS)
@pytest.mark.parametrize("key", ["rsa", "ed"])
def test_dkimpy_sealed_chains_pass_with_ours(hops: int, key: str) -> None:
    raw = chain_of([their_seal] * hops, [key] * hops)
    assert dkimpy_verify(raw, DNS)[0] == "pass"
    result = ours(raw)
    assert (result.result, result.instance, result.oldest_pass) == ("pass", hops, 0), result
    assert result.domain == f"hop{hops}.test"


@pytest.mark.parametrize("hops", HOPS)
@pytest.mark.parametrize("key", ["rsa", "ed"])
@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple", "relaxed/simple"])
def test_our_chains_pass_with_dkimpy(hops: int, key: str, canon: str) -> None:
    raw = chain_of([our_seal] * hops, [key] * hops, canon)
    assert dkimpy_verify(raw, DNS) == ("pass", "success")
    assert ours(raw).result == "pass"


@pytest.mark.parametrize("order", list(itertools.product([our_seal, their_seal], repeat=3)))
def test_mixed_chains_pass_with_both(order: tuple[Sealing, ...]) -> None:
    raw = chain_of(list(order), ["rsa", "ed", "rsa"])
    assert dkimpy_verify(raw, DNS)[0] == "pass"
    assert ours(raw).result == "pass"


def _tamper_body(raw: bytes) -> bytes:
    return raw.replace(b"hello  there", b"hello  world")


def _tamper_header(raw: bytes) -> bytes:
    return raw.replace(b"Subject: a  test", b"Subject: a  pest")


def _tamper_aar(raw: bytes) -> bytes:  # the oldest set's AAR: only the seals cover it
    at = raw.index(b"ARC-Authentication-Results: i=1")
    return raw[:at] + raw[at:].replace(b"spf=pass", b"spf=fail", 1)


def _tamper_cv(raw: bytes) -> bytes:
    return raw.replace(b"cv=pass", b"cv=none", 1)


@pytest.mark.parametrize("sealer", [our_seal, their_seal], ids=["ours", "dkimpy"])
@pytest.mark.parametrize(
    "tamper", [_tamper_body, _tamper_header, _tamper_aar, _tamper_cv], ids=lambda f: f.__name__
)
def test_tampered_chains_fail_in_both(sealer: Sealing, tamper: Callable[[bytes], bytes]) -> None:
    raw = chain_of([sealer] * 2, ["rsa", "rsa"])
    changed = tamper(raw)
    assert changed != raw
    assert dkimpy_verify(changed, DNS)[0] == "fail"
    result = ours(changed)
    assert result.result == "fail" and result.reason, result


def test_an_older_ams_broken_by_a_later_hop_gives_oldest_pass() -> None:
    """Hop 2 changed the subject before sealing: AMS 1 no longer verifies, the chain does."""
    one = our_seal(received(MESSAGE, 1, "none"), 1, "rsa")
    changed = _tamper_header(one)
    two = our_seal(received(changed, 2, "pass"), 2, "rsa")
    result = ours(two)
    assert (result.result, result.oldest_pass) == ("pass", 2)
    assert dkimpy_verify(two, DNS)[0] == "pass"
    assert result_text(result, "192.0.2.7") == (
        "arc=pass header.oldest-pass=2 smtp.remote-ip=192.0.2.7"
    )


def test_no_arc_fields_is_none() -> None:
    assert ours(MESSAGE) == ArcResult("none")
    assert result_text(ArcResult("none"), "192.0.2.7") == "arc=none"


def test_dns_trouble_and_missing_keys_fail() -> None:
    raw = chain_of([our_seal], ["rsa"])
    dns = Dns(DNS.records)
    dns.failing.add("rsa._domainkey.hop1.test")
    result = ours(raw, dns)
    assert result.result == "fail" and "SERVFAIL" in result.reason
    assert ours(raw, Dns()).result == "fail"


def _headers(*lines: str) -> HeaderList:
    return split(("\r\n".join(lines) + "\r\n\r\n").encode())[0]


def test_structure_errors() -> None:
    aar = "ARC-Authentication-Results: i={}; x.test; none"
    ams = "ARC-Message-Signature: i={}; a=rsa-sha256; d=x.test; s=s; h=from; bh=AA==; b=AA=="
    seal = "ARC-Seal: i={}; a=rsa-sha256; cv=none; d=x.test; s=s; b=AA=="
    complete = [aar.format(1), ams.format(1), seal.format(1)]
    assert [s.instance for s in collect(_headers(*complete))] == [1]
    for lines, why in [
        ([aar.format(1), ams.format(1)], "incomplete"),
        ([*complete, seal.format(1)], "two ARC-Seal"),
        ([aar.format(2), ams.format(2), seal.format(2)], "ARC Set 1 is incomplete"),
        ([aar.format(51), ams.format(51), seal.format(51)], "outside 1..50"),
        ([aar.format(0), ams.format(0), seal.format(0)], "outside 1..50"),
        (["ARC-Authentication-Results: x.test; none", ams.format(1), seal.format(1)], "instance"),
    ]:
        with pytest.raises(PermError, match=why):
            collect(_headers(*lines))
        assert ours(_headers(*lines).encode() + b"\r\n").result == "fail"
    assert next_instance(_headers(*complete, "ARC-Seal: garbage")) == 2


def test_seal_tags_are_checked() -> None:
    with pytest.raises(PermError, match="has h="):
        parse_seal(Header.make("ARC-Seal", "i=1; a=rsa-sha256; cv=none; d=x; s=s; h=from; b=AA=="))
    with pytest.raises(PermError, match="unknown cv"):
        parse_seal(Header.make("ARC-Seal", "i=1; a=rsa-sha256; cv=maybe; d=x; s=s; b=AA=="))


def test_a_chain_whose_last_seal_says_fail_is_not_continued() -> None:
    raw = chain_of([our_seal], ["rsa"])
    headers, body = split(received(raw, 2, "fail"))
    sealer = Sealer("hop2.test", "rsa", KEYS["rsa"], "hop2.test", SIGNED)
    fields = sealer.seal(headers, body_hash([body], "relaxed"), "fail", ["arc=fail"], 1)
    assert fields is not None  # a failed chain is sealed alone (RFC 8617 5.1.2) ...
    assert b"cv=fail" in fields[0].value
    sealed = HeaderList([*fields, *headers]).encode() + b"\r\n" + body
    assert ours(sealed).result == "fail"  # ... and reads as failed from then on
    assert dkimpy_verify(sealed, DNS)[0] == "fail"
    headers, body = split(received(sealed, 3, "fail"))
    assert sealer.seal(headers, body_hash([body], "relaxed"), "fail", [], 1) is None


def test_the_aar_carries_our_results_of_all_our_fields() -> None:
    headers = _headers(
        "Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@b.test",
        "Authentication-Results: other.test; dkim=fail",
        'Authentication-Results: MX.test (comment; here); dkim=pass reason="a;b" header.d=b.test',
        "Authentication-Results: mx.test; none",
    )
    assert results_of(headers, "mx.test") == [
        "spf=pass smtp.mailfrom=a@b.test",
        'dkim=pass reason="a;b" header.d=b.test',
    ]
    assert split_results("x; a=b (c;d); e") == ["x", "a=b (c;d)", "e"]
    assert method_result("arc=pass (i=2) smtp.remote-ip=1.2.3.4") == ("arc", "pass")
    sealer = Sealer("mx.test", "rsa", KEYS["rsa"], "mx.test", SIGNED)
    fields = sealer.seal(headers, body_hash([b""], "relaxed"), "none", [], 1)
    assert fields is not None and fields[2].text == "i=1;\tmx.test;\tnone"


def test_ed25519_keys_sign_with_their_algorithm() -> None:
    raw = chain_of([our_seal], ["ed"])
    assert b"a=ed25519-sha256" in raw
    assert isinstance(KEYS["ed"], ed25519.Ed25519PrivateKey)
