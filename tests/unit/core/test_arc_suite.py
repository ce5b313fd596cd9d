"""The ARC test suite of ValiMail (github.com/ValiMail/arc_test_suite, draft-18 era), both parts.

Validation (``tests/data/arc-draft-validation-tests.yml``, 171 cases): every message
through ``Chain.validate`` over a static DNS of its scenario's records; our cv must
be the suite's. Where the suite expects an empty cv (dkimpy's "chain terminated",
for a chain whose last or first ARC-Seal says cv=fail), RFC 8617 5.2 steps 2 and 3
say ``fail``, and so do we.

Signing (``tests/data/arc-draft-sign-tests.yml``, 17 cases): our ``Sealer`` with the
case's key, selector, domain, h= names, t= and authserv-id, cv= from the ``arc=``
of its Authentication-Results. The suite's runner compares the tags of each new
field as sets; ours are compared so for the AAR, and without b= for the AMS and the
AS: our tags start with i= (RFC 8617's ABNF), the suite's are in alphabetical
order, so the bytes signed differ. Each set we add must then validate with ours
and with dkimpy (as pass, or fail where the chain had failed), and the suite's own
expected AMS must verify with ours. (Its expected ARC-Seals verify neither with
ours nor with dkimpy: the AAR text they were computed over is not in the suite.)
The licence is ``tests/data/arc_test_suite.LICENSE``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mailwright.core.arc import Chain, Sealer, method_result, parse_ams, results_of
from mailwright.core.dkim import SigningKey, body_hash
from mailwright.core.dkim_verify import body_hashes, check, parse_key
from mailwright.core.headers import Header, HeaderList, HeaderParser
from tests.support.arc import Dns, dkimpy_verify

DATA = Path(__file__).parents[2] / "data"


def load(name: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    with (DATA / name).open("rb") as f:
        return [(n, t, s) for s in yaml.safe_load_all(f) for n, t in s["tests"].items()]


VALIDATION = load("arc-draft-validation-tests.yml")
SIGNING = load("arc-draft-sign-tests.yml")


def crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def split(raw: bytes) -> tuple[HeaderList, bytes]:
    if raw.startswith(b"\r\n"):
        return HeaderList(), raw[2:]
    head, _, body = raw.partition(b"\r\n\r\n")
    parser = HeaderParser()
    parser.feed(head + b"\r\n\r\n")
    return HeaderList(parser.headers), body


def validate(headers: HeaderList, body: bytes, dns: Dns) -> str:
    chain = Chain.of(headers)
    hashes = body_hashes([body], chain.body_specs)
    return asyncio.run(chain.validate(headers, hashes, dns.lookup, int(time.time()))).result


def test_both_suites_are_loaded() -> None:
    assert (len(VALIDATION), len(SIGNING)) == (171, 17)


@pytest.mark.parametrize(("test", "scenario"), [pytest.param(t, s, id=n) for n, t, s in VALIDATION])
def test_validation(test: dict[str, Any], scenario: dict[str, Any]) -> None:
    headers, body = split(crlf(test["message"]))
    expected = str(test["cv"]).strip().lower() or "fail"
    assert validate(headers, body, Dns(scenario["txt-records"])) == expected, test["description"]


def tags(text: str, without_b: bool = False) -> set[str]:
    found = set("".join(text.split()).split(";")) - {""}
    return {t for t in found if not (without_b and t.startswith("b="))}


def fold(text: str) -> str:
    return "\r\n ".join(line.strip() for line in text.strip().splitlines())


@pytest.mark.parametrize(("test", "scenario"), [pytest.param(t, s, id=n) for n, t, s in SIGNING])
def test_signing(test: dict[str, Any], scenario: dict[str, Any]) -> None:
    key = load_pem_private_key(scenario["privatekey"].encode(), None)
    assert not isinstance(key, str)
    dns = Dns(scenario["txt-records"])
    headers, body = split(crlf(test["message"]))
    srv = test["srv-id"]
    results = results_of(headers, srv)
    arcs = [value for method, value in map(method_result, results) if method == "arc"]
    cv = arcs[0] if len(arcs) == 1 else "fail" if arcs else "none"
    signing_key: SigningKey = key  # type: ignore[assignment]
    names = tuple(test["sig-headers"].split(":"))
    sealer = Sealer(scenario["domain"], scenario["sel"], signing_key, srv, names)
    fields = sealer.seal(headers, body_hash([body], "relaxed"), cv, results, int(test["t"]))  # type: ignore[arg-type]
    if fields is None:
        assert not (test["AS"] or test["AMS"] or test["AAR"])
        return
    seal, ams, aar = fields
    assert tags(aar.text) == tags(test["AAR"])
    assert tags(ams.text, without_b=True) == tags(test["AMS"], without_b=True)
    assert tags(seal.text, without_b=True) == tags(test["AS"], without_b=True)
    sealed = HeaderList([*fields, *headers])
    expected = "fail" if cv == "fail" else "pass"
    assert validate(sealed, body, dns) == expected
    assert dkimpy_verify(sealed.encode() + b"\r\n" + body, dns)[0] == expected
    # the suite's own AMS, on the same message, verifies with ours
    theirs = parse_ams(Header.make("ARC-Message-Signature", fold(test["AMS"])))
    record = parse_key(
        scenario["txt-records"][f"{scenario['sel']}._domainkey.{scenario['domain']}"]
    )
    bh = body_hashes([body], {theirs.body_spec})[theirs.body_spec]
    assert check(theirs, [theirs.field, *headers], bh, record, int(time.time())).result == "pass"
