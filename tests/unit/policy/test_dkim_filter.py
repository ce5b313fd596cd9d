"""The ``dkim`` filter's options, its From: domain check and which sessions it signs for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mailwright.config.schema import Settings
from mailwright.core.envelope import MailParams
from mailwright.core.headers import Header, HeaderList
from mailwright.policy.filters import registry
from mailwright.policy.filters.dkim import DkimFilter, DkimOptions, covered, from_domains
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.queue.spool import Spool
from tests.support.arc import pem_file


def key_file(tmp_path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return pem_file(tmp_path / "key.pem", key)


def test_defaults_and_from_always_signed(tmp_path: Path) -> None:
    path = key_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    options = registry.validate_options(
        "dkim",
        {"domain": "Example.ORG.", "selector": "s1", "key_file": path, "headers": ["Subject"]},
    )
    assert isinstance(options, DkimOptions)
    assert options.domain == "example.org" and options.signed_domains == ["example.org"]
    assert options.headers == ["From", "Subject"]
    assert options.canonicalization == "relaxed/relaxed" and options.sign_only_trusted


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"selector": "bad selector"}, "is not a DKIM selector"),
        ({"domain": "not a domain"}, "is not a domain name"),
        ({"headers": ["Sub:ject"]}, "is not a header field name"),
        ({"canonicalization": "relaxed"}, "canonicalization"),
        ({"key_file": "/nonexistent/key.pem"}, "cannot read DKIM key /nonexistent/key.pem"),
    ],
)
def test_bad_options(tmp_path: Path, extra: dict[str, object], problem: str) -> None:
    path = key_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    options = {"domain": "example.org", "selector": "s1", "key_file": path, **extra}
    with pytest.raises(ValueError, match=problem):
        registry.validate_options("dkim", options)


def test_ecdsa_key_refused(tmp_path: Path) -> None:
    path = key_file(tmp_path, ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="neither RSA nor Ed25519"):
        registry.validate_options("dkim", {"domain": "x.test", "selector": "s", "key_file": path})


def test_from_domains() -> None:
    def headers(*values: str) -> HeaderList:
        return HeaderList(Header.make("From", v) for v in values)

    assert from_domains(headers('"A, B" <a@Example.ORG>, c@sub.x.test')) == [
        "example.org",
        "sub.x.test",
    ]
    assert from_domains(headers()) is None
    assert from_domains(headers("a@x.test", "b@x.test")) is None  # two From: fields
    assert from_domains(headers("undisclosed")) is None
    assert covered("mail.x.test", ["x.test"]) and not covered("badx.test", ["x.test"])


def session(client: str = "192.0.2.7", **fields: object) -> SessionInfo:
    info = SessionInfo("s1", "mx", "smtp", "127.0.0.1", 25, client, 40000)
    for name, value in fields.items():
        setattr(info, name, value)
    return info


@pytest.mark.parametrize(
    ("who", "signed"),
    [
        (session(), False),  # a stranger on port 25
        (session(trusted_relay=True), True),
        (session(auth_user="alice"), True),
        (session(client="", local_user="root"), True),  # local submission
    ],
)
def test_who_gets_signed(tmp_path: Path, who: SessionInfo, signed: bool) -> None:
    path = key_file(tmp_path, ed25519.Ed25519PrivateKey.generate())
    settings = Settings.model_validate(
        {"hostname": "mx.test", "queue": {"directory": str(tmp_path / "q")}}
    )
    options = registry.validate_options(
        "dkim", {"domain": "example.org", "selector": "s", "key_file": path}
    )
    dkim = DkimFilter("dkim", options, settings)
    txn = Transaction("Q1", None, MailParams())
    txn.headers = HeaderList([Header.make("From", "a@example.org")])
    txn.body = Spool.from_bytes(b"body\r\n")
    assert asyncio.run(dkim.message(who, txn)) is None
    assert txn.headers[0].is_("DKIM-Signature") is signed
