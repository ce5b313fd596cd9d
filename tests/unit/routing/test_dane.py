"""The sans-I/O DANE matcher (routing.dane): TLSA parsing, usability, DANE-EE and DANE-TA
checks over certificates made here (a CA, a server certificate it issued, a stranger), and
DANE-TA anchors published as bare keys (2 1 0) of every kind of key."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from mailwright.routing.dane import (
    TlsaError,
    TlsaRecord,
    check_chain,
    name_matches,
    parse_tlsa,
    tlsa_text,
    usable_records,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
Key = Any  # a private key of any kind cryptography signs certificates with


def make_cert(
    name: str,
    key: Key,
    issuer: tuple[str, Key] | None = None,
    *,
    ca: bool = False,
    sans: tuple[str, ...] | None = None,
    days: tuple[int, int] = (-1, 30),
    pss: bool = False,
) -> bytes:
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + timedelta(days=days[0]))
        .not_valid_after(NOW + timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False
        )
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return builder.sign(issuer_key, None).public_bytes(Encoding.DER)
    pad = padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.DIGEST_LENGTH) if pss else None
    return builder.sign(issuer_key, hashes.SHA256(), rsa_padding=pad).public_bytes(Encoding.DER)


@pytest.fixture(scope="module")
def pki() -> dict[str, bytes]:
    ca_key, leaf_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = make_cert("Test CA", ca_key, ca=True)
    return {
        "ca": ca,
        "leaf": make_cert("mx", leaf_key, ("Test CA", ca_key), sans=("mx.example.test",)),
        "wild": make_cert("w", leaf_key, ("Test CA", ca_key), sans=("*.example.test",)),
        "cn_only": make_cert("mx.example.test", leaf_key, ("Test CA", ca_key)),
        "expired": make_cert(
            "old", leaf_key, ("Test CA", ca_key), sans=("mx.example.test",), days=(-60, -1)
        ),
        "forged": make_cert("mx", leaf_key, ("Test CA", other_key), sans=("mx.example.test",)),
        "stranger": make_cert("mx.example.test", other_key, sans=("mx.example.test",)),
        "not_ca": make_cert("Test CA", ca_key),  # same name and key, but no CA flag
    }


def spki_sha256(der: bytes) -> str:
    key = x509.load_der_x509_certificate(der).public_key()
    spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def check(chain: list[bytes], *records: str, name: str = "mx.example.test") -> str | None:
    return check_chain(chain, [parse_tlsa(r) for r in records], [name], NOW)


# ---- parsing and usability ---------------------------------------------------------------


def test_parse_joins_hex_split_by_spaces() -> None:
    record = parse_tlsa("3 1 1 ABCD ef01")
    assert record == TlsaRecord(3, 1, 1, bytes.fromhex("abcdef01"))
    assert str(record) == "3 1 1 abcdef01"


@pytest.mark.parametrize("text", ["", "3 1 1", "3 1 x abcd", "3 1 1 abc", "256 1 1 ab", "3 1 1 zz"])
def test_malformed_records_are_errors(text: str) -> None:
    with pytest.raises(TlsaError):
        parse_tlsa(text)


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        ("3 1 1 " + "00" * 32, True),
        ("2 0 2 " + "00" * 64, True),
        ("3 0 0 3082", True),
        ("0 0 1 " + "00" * 32, False),  # PKIX-TA: unusable for SMTP (RFC 7672 3.1.3)
        ("1 1 1 " + "00" * 32, False),  # PKIX-EE
        ("3 2 1 " + "00" * 32, False),  # unknown selector
        ("3 1 3 " + "00" * 32, False),  # unknown matching type
        ("3 1 1 " + "00" * 31, False),  # SHA-256 digest of the wrong length
        ("3 1 2 " + "00" * 32, False),  # SHA-512 digest of the wrong length
    ],
)
def test_usability(text: str, usable: bool) -> None:
    assert parse_tlsa(text).usable is usable


def test_usable_records_drops_malformed_and_unusable() -> None:
    good = "3 1 1 " + "11" * 32
    assert usable_records([good, "garbage", "1 1 1 " + "11" * 32]) == [parse_tlsa(good)]


# ---- DANE-EE -----------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "matching"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
def test_dane_ee_every_selector_and_matching_type(
    pki: dict[str, bytes], selector: int, matching: int
) -> None:
    record = tlsa_text(pki["stranger"], 3, selector, matching)
    assert check([pki["stranger"]], record) is None
    assert check([pki["leaf"]], record) == "the server's certificate matches no DANE-EE record"


def test_dane_ee_spki_sha256_is_the_public_key_digest(pki: dict[str, bytes]) -> None:
    assert tlsa_text(pki["leaf"], 3, 1, 1) == "3 1 1 " + spki_sha256(pki["leaf"])


def test_dane_ee_ignores_names_dates_and_issuer(pki: dict[str, bytes]) -> None:
    # the expired certificate has the leaf's key: its SPKI record matches
    record = tlsa_text(pki["leaf"], 3, 1, 1)
    assert check([pki["expired"]], record, name="other.example") is None


def test_dane_ee_matches_only_the_servers_own_certificate(pki: dict[str, bytes]) -> None:
    record = tlsa_text(pki["ca"], 3, 0, 1)
    assert check([pki["leaf"], pki["ca"]], record) is not None


def test_no_certificate_or_no_usable_record(pki: dict[str, bytes]) -> None:
    assert check([], tlsa_text(pki["leaf"], 3, 1, 1)) == "the server presented no certificate"
    assert check([pki["leaf"]], "1 1 1 " + spki_sha256(pki["leaf"])) == "no usable TLSA records"
    assert "unreadable" in (check([b"junk"], tlsa_text(pki["leaf"], 3, 1, 1)) or "")


# ---- DANE-TA -----------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "matching"), [(0, 1), (1, 1), (0, 2), (1, 0)])
def test_dane_ta_chain_to_the_anchor(pki: dict[str, bytes], selector: int, matching: int) -> None:
    record = tlsa_text(pki["ca"], 2, selector, matching)
    assert check([pki["leaf"], pki["ca"]], record) is None


def test_dane_ta_needs_the_anchor_in_the_chain(pki: dict[str, bytes]) -> None:
    problem = check([pki["leaf"]], tlsa_text(pki["ca"], 2, 0, 1))
    assert problem is not None and "no certificate of its chain matches a DANE-TA" in problem


def test_dane_ta_checks_the_name(pki: dict[str, bytes]) -> None:
    record = tlsa_text(pki["ca"], 2, 0, 1)
    problem = check([pki["leaf"], pki["ca"]], record, name="mx2.example.test")
    assert problem == "the server's certificate does not name mx2.example.test (DANE-TA)"
    assert check([pki["wild"], pki["ca"]], record, name="mx2.example.test") is None
    assert check([pki["wild"], pki["ca"]], record, name="a.mx2.example.test") is not None
    assert check([pki["cn_only"], pki["ca"]], record) is None  # no SAN: the Common Name


def test_dane_ta_checks_dates_below_the_anchor(pki: dict[str, bytes]) -> None:
    problem = check([pki["expired"], pki["ca"]], tlsa_text(pki["ca"], 2, 0, 1))
    assert problem is not None and "outside its validity period" in problem


def test_dane_ta_checks_the_signature(pki: dict[str, bytes]) -> None:
    problem = check([pki["forged"], pki["ca"]], tlsa_text(pki["ca"], 2, 1, 1))
    assert problem is not None and "is not issued by" in problem


def test_dane_ta_anchor_must_be_a_ca(pki: dict[str, bytes]) -> None:
    problem = check([pki["leaf"], pki["not_ca"]], tlsa_text(pki["not_ca"], 2, 0, 1))
    assert problem is not None and "is not a CA" in problem


def test_dane_ta_bare_key_needs_no_anchor_in_the_chain(pki: dict[str, bytes]) -> None:
    # RFC 7671 5.2.2: 2 1 0 publishes the anchor's key itself; the chain is checked against it
    record = tlsa_text(pki["ca"], 2, 1, 0)
    assert check([pki["leaf"]], record) is None
    assert check([pki["leaf"], pki["ca"]], record) is None  # sent all the same: as before
    problem = check([pki["forged"]], record)
    assert problem is not None and "no certificate of its chain matches a DANE-TA" in problem
    problem = check([pki["expired"]], record)  # the top of the path is not the anchor: dated
    assert problem is not None and "outside its validity period" in problem
    problem = check([pki["leaf"]], record, name="mx2.example.test")
    assert problem == "the server's certificate does not name mx2.example.test (DANE-TA)"
    for digest in (tlsa_text(pki["ca"], 2, 1, 1), tlsa_text(pki["ca"], 2, 0, 0)):
        assert check([pki["leaf"]], digest) is not None  # a digest or a certificate: no key


def test_dane_ta_bare_key_above_an_intermediate() -> None:
    root, middle, leaf = (ec.generate_private_key(ec.SECP384R1()) for _ in range(3))
    inter = make_cert("Intermediate", middle, ("Root", root), ca=True)
    server = make_cert("mx", leaf, ("Intermediate", middle), sans=("mx.example.test",))
    spki = root.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    record = f"2 1 0 {spki.hex()}"
    assert check([server, inter], record) is None
    not_ca = make_cert("Intermediate", middle, ("Root", root))
    problem = check([server, not_ca], record)
    assert problem is not None and "is not a CA" in problem


def signed_with(key: Any, **options: Any) -> tuple[bytes, str]:
    """A server certificate signed by ``key`` (no anchor certificate), and 2 1 0 of it."""
    cert = make_cert("mx", ec.generate_private_key(ec.SECP256R1()), ("Root", key),
                     sans=("mx.example.test",), **options)  # fmt: skip
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return cert, f"2 1 0 {spki.hex()}"


@pytest.mark.parametrize("kind", ["rsa", "rsa-pss", "ed25519", "ed448"])
def test_dane_ta_bare_key_of_every_kind(kind: str) -> None:
    if kind.startswith("rsa"):
        key: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = (
            ed25519.Ed25519PrivateKey.generate()
            if kind == "ed25519"
            else ed448.Ed448PrivateKey.generate()
        )
    cert, record = signed_with(key, pss=kind == "rsa-pss")
    assert check([cert], record) is None
    _, other = signed_with(ec.generate_private_key(ec.SECP256R1()))
    assert check([cert], other) is not None


def test_either_usage_may_match(pki: dict[str, bytes]) -> None:
    ee_other = tlsa_text(pki["stranger"], 3, 1, 1)
    ta = tlsa_text(pki["ca"], 2, 1, 1)
    assert check([pki["leaf"], pki["ca"]], ee_other, ta) is None


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("mx.example.test", "MX.Example.Test.", True),
        ("*.example.test", "mx.example.test", True),
        ("*.example.test", "example.test", False),
        ("*.example.test", "a.b.example.test", False),
        ("m*.example.test", "mx.example.test", False),
        ("mx.example.test", "mx2.example.test", False),
    ],
)
def test_name_matches(pattern: str, name: str, ok: bool) -> None:
    assert name_matches(pattern, name) is ok
