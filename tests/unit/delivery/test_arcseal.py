"""ARC sealing of forwarded mail (delivery.arcseal) and the ``[arc]`` settings.

A forwarded request gets AS, AMS and AAR on top (dkimpy validates the result), its
size grown by theirs, the body read in chunks; one not forwarded is left alone; the
cv= comes from our Authentication-Results (a chain nobody here validated is not
sealed); ``[arc] seal`` without a key, or with a short one, is a settings error.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from mailwright.config.schema import ArcSection, Settings
from mailwright.core.arc import Sealer
from mailwright.core.arcfields import DEFAULT_HEADERS
from mailwright.delivery.agent import DeliveryRequest
from mailwright.delivery.arcseal import ArcSealing
from tests.support.arc import Dns, dkimpy_seal, dkimpy_verify, rsa_key
from tests.support.delivery_request import request, smtp_hop

KEY = rsa_key()
DNS = Dns()
DNS.add("arc", "mx.test", KEY)
DNS.add("s1", "hop1.test", KEY)
SEALING = ArcSealing(Sealer("mx.test", "arc", KEY, "mx.test", DEFAULT_HEADERS))
MESSAGE = (
    b"Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@x.test\r\n"
    b"From: a@x.test\r\nTo: b@y.test\r\nSubject: test\r\n\r\nHello\r\n"
)


def forwarded(message: bytes = MESSAGE) -> DeliveryRequest:
    req = request(smtp_hop("y.test"), "b@y.test", message=message, chunk=5)
    return dataclasses.replace(req, forwarded=True)


def wire(req: DeliveryRequest) -> bytes:
    return req.headers.encode() + b"\r\n" + b"".join(req.body())


def test_a_forwarded_message_is_sealed_and_validates_with_dkimpy() -> None:
    req = forwarded()
    out = asyncio.run(SEALING.sealed(req))
    names = [h.name for h in out.headers][:3]
    assert names == ["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results"]
    assert out.headers[2].text == "i=1;\tmx.test;\tarc=none;\tspf=pass smtp.mailfrom=a@x.test"
    assert out.size == req.size + len(wire(out)) - len(wire(req))
    assert dkimpy_verify(wire(out), DNS) == ("pass", "success")


def test_a_message_not_forwarded_is_left_alone() -> None:
    req = dataclasses.replace(forwarded(), forwarded=False)
    assert asyncio.run(SEALING.sealed(req)) is req


def test_cv_comes_from_our_authentication_results() -> None:
    chained = dkimpy_seal(
        b"Authentication-Results: hop1.test; arc=none\r\n" + MESSAGE,
        KEY, domain="hop1.test", selector="s1", srv_id="hop1.test",
    )  # fmt: skip
    unvalidated = forwarded(chained)
    assert SEALING.chain_status(unvalidated)[0] is None
    assert asyncio.run(SEALING.sealed(unvalidated)) is unvalidated
    passed = forwarded(b"Authentication-Results: mx.test; arc=pass\r\n" + chained)
    out = asyncio.run(SEALING.sealed(passed))
    assert b"i=2;" in out.headers[0].value and b"cv=pass" in out.headers[0].value
    assert dkimpy_verify(wire(out), DNS)[0] == "pass"
    failed = forwarded(b"Authentication-Results: mx.test; arc=fail\r\n" + chained)
    assert SEALING.chain_status(failed)[0] == "fail"


def _pem(path: Path, bits: int) -> str:
    path.write_bytes(
        rsa_key(bits).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def test_settings(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"needs arc\.domain, arc\.selector"):
        ArcSection(seal=True, domain="mx.test")
    short = _pem(tmp_path / "short.pem", 1024)
    with pytest.raises(ValidationError, match="RSA 1024 bits; at least 2048 needed"):
        ArcSection(seal=True, domain="mx.test", selector="arc", key_file=short)
    with pytest.raises(ValidationError, match="cannot be signed"):
        ArcSection(headers=["From", "Authentication-Results"])
    good = _pem(tmp_path / "good.pem", 2048)
    section = ArcSection(seal=True, domain="MX.test.", selector="arc", key_file=good)
    assert section.domain == "mx.test" and section.headers[-1] == "DKIM-Signature"
    settings = Settings(hostname="mx.test", arc=section)
    sealing = ArcSealing.from_settings(settings)
    assert sealing is not None and sealing.sealer.authserv_id == "mx.test"
    assert ArcSealing.from_settings(Settings(hostname="mx.test")) is None
