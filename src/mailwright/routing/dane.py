"""DANE for SMTP (RFC 7672, with RFC 6698 and 7671), sans-I/O: TLSA records and certificates.

``parse_tlsa`` reads one TLSA record as DNS presents it (``3 1 1 8f2a...``);
``TlsaRecord.usable`` says whether SMTP may use it: DANE-TA(2) and DANE-EE(3)
usages only (PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP, RFC 7672 3.1.3),
selectors Cert(0) and SPKI(1), matching types Full(0), SHA2-256(1) and
SHA2-512(2) with a digest of the right length. ``check_chain`` decides whether
the certificate chain a server presented satisfies a host's usable records:

- DANE-EE(3): the server's own certificate (the first of the chain) matches;
  its names and validity dates are not checked (RFC 7672 3.1.1).
- DANE-TA(2): a certificate the server presented after its own matches (the
  trust anchor: RFC 7672 3.1.2 asks servers to include it); every certificate
  from the server's up to it is issued by the next (issuer name, signature, a
  CA), those below the trust anchor are within their validity dates, and the
  server's certificate names one of the reference identifiers (the MX host
  name, which is the TLSA base domain here: RFC 7672 3.2.2), in a DNS
  subjectAltName or, when it has none, its Common Name; a ``*`` is allowed as
  the whole leftmost label only. A trust anchor published as a bare public key
  (DANE-TA SPKI(1) Full(0), RFC 7671 5.2.2) need not be in the chain: the
  certificate it signed directly is then the top of the path, and every
  certificate of the path is checked as above (dates included).

Pure functions over bytes (``cryptography`` parses the certificates); no
sockets, no DNS. Trusts nothing in the records or certificates: malformed
input is a ``TlsaError`` or a failed check, never an exception escaping
``check_chain``. Reads no settings.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_der_public_key,
)
from cryptography.x509.oid import ExtensionOID, NameOID


class TlsaError(Exception):
    """A TLSA record that cannot be read."""


class Usage(IntEnum):
    PKIX_TA = 0
    PKIX_EE = 1
    DANE_TA = 2
    DANE_EE = 3


class Selector(IntEnum):
    CERT = 0
    SPKI = 1


class Matching(IntEnum):
    FULL = 0
    SHA256 = 1
    SHA512 = 2


_DIGEST_SIZE = {Matching.SHA256: 32, Matching.SHA512: 64}


@dataclass(frozen=True, slots=True)
class TlsaRecord:
    usage: int
    selector: int
    matching: int
    data: bytes

    @property
    def usable(self) -> bool:
        """RFC 7672 3.1.3 and RFC 7671 4: what an SMTP client may authenticate with."""
        if self.usage not in (Usage.DANE_TA, Usage.DANE_EE):
            return False
        if self.selector not in (Selector.CERT, Selector.SPKI):
            return False
        if self.matching == Matching.FULL:
            return bool(self.data)
        size = _DIGEST_SIZE.get(Matching(self.matching)) if self.matching in (1, 2) else None
        return size is not None and len(self.data) == size

    def matches(self, certificate: x509.Certificate) -> bool:
        return association(certificate, self.selector, self.matching) == self.data

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.matching} {self.data.hex()}"


def parse_tlsa(text: str) -> TlsaRecord:
    """``"3 1 1 8f2a..."`` (hex may be split by spaces, as dnspython prints long data)."""
    fields = text.split()
    if len(fields) < 4:
        raise TlsaError(f"malformed TLSA record {text!r}")
    try:
        usage, selector, matching = (int(f) for f in fields[:3])
        data = bytes.fromhex("".join(fields[3:]))
    except ValueError:
        raise TlsaError(f"malformed TLSA record {text!r}") from None
    if not all(0 <= n <= 255 for n in (usage, selector, matching)):
        raise TlsaError(f"malformed TLSA record {text!r}")
    return TlsaRecord(usage, selector, matching, data)


def usable_records(texts: Iterable[str]) -> list[TlsaRecord]:
    """The usable records among ``texts``; malformed ones are unusable (RFC 7671 4)."""
    records = []
    for text in texts:
        try:
            record = parse_tlsa(text)
        except TlsaError:
            continue
        if record.usable:
            records.append(record)
    return records


def association(certificate: x509.Certificate, selector: int, matching: int) -> bytes:
    """The data a TLSA record with ``selector`` and ``matching`` holds for ``certificate``."""
    if selector == Selector.CERT:
        selected = certificate.public_bytes(Encoding.DER)
    else:
        selected = certificate.public_key().public_bytes(
            Encoding.DER, PublicFormat.SubjectPublicKeyInfo
        )
    if matching == Matching.SHA256:
        return hashlib.sha256(selected).digest()
    if matching == Matching.SHA512:
        return hashlib.sha512(selected).digest()
    return selected


def tlsa_text(certificate: bytes, usage: int, selector: int, matching: int) -> str:
    """The TLSA record (presentation form) for a DER certificate, e.g. to publish one."""
    cert = x509.load_der_x509_certificate(certificate)
    return f"{usage} {selector} {matching} {association(cert, selector, matching).hex()}"


# ------------------------------------------------------------------------- the check


def check_chain(
    chain: Sequence[bytes], records: Sequence[TlsaRecord], names: Sequence[str], now: datetime
) -> str | None:
    """None when the DER ``chain`` (server's certificate first) satisfies one of the usable
    ``records``; otherwise why not. ``names``: reference identifiers for DANE-TA."""
    usable = [r for r in records if r.usable]
    if not usable:
        return "no usable TLSA records"
    if not chain:
        return "the server presented no certificate"
    try:
        certificates = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as exc:
        return f"unreadable certificate in the server's chain ({exc})"
    if any(r.usage == Usage.DANE_EE and r.matches(certificates[0]) for r in usable):
        return None
    anchors = [r for r in usable if r.usage == Usage.DANE_TA]
    problem = "the server's certificate matches no DANE-EE record"
    if not anchors:
        return problem
    for index, candidate in enumerate(certificates[1:], start=1):
        if any(r.matches(candidate) for r in anchors):
            return _check_path(certificates[: index + 1], names, now)
    for key in _bare_keys(anchors):
        for index, candidate in enumerate(certificates):
            if signed_by(candidate, key):
                return _check_path(certificates[: index + 1], names, now, anchor_in_path=False)
    return f"{problem}, and no certificate of its chain matches a DANE-TA record"


def _bare_keys(anchors: Sequence[TlsaRecord]) -> list[PublicKeyTypes]:
    """The public keys of DANE-TA SPKI(1) Full(0) records (RFC 7671 5.2.2)."""
    keys = []
    for record in anchors:
        if record.selector == Selector.SPKI and record.matching == Matching.FULL:
            try:
                keys.append(load_der_public_key(record.data))
            except (ValueError, UnsupportedAlgorithm):
                continue  # not a key: this record matches nothing
    return keys


def signed_by(cert: x509.Certificate, key: PublicKeyTypes) -> bool:
    """Whether ``key`` made ``cert``'s signature (RSA PKCS#1 v1.5 or PSS, ECDSA, EdDSA)."""
    data, signature = cert.tbs_certificate_bytes, cert.signature
    try:
        digest = cert.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey) and digest is not None:
            parameters = cert.signature_algorithm_parameters
            if not isinstance(parameters, padding.PSS | padding.PKCS1v15):
                return False
            key.verify(signature, data, parameters, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and digest is not None:
            key.verify(signature, data, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            key.verify(signature, data)
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _check_path(
    path: list[x509.Certificate],
    names: Sequence[str],
    now: datetime,
    anchor_in_path: bool = True,
) -> str | None:
    """The server's certificate up to the trust anchor (the last, when ``anchor_in_path``;
    otherwise the anchor is a bare key that signed the last): links, dates, name."""
    for subject, issuer in itertools.pairwise(path):
        problem = _issued_by(subject, issuer)
        if problem:
            return problem
    for cert in path[:-1] if anchor_in_path else path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return f"certificate {_subject(cert)} is outside its validity period"
    if not any(name_matches(pattern, name) for pattern in dns_names(path[0]) for name in names):
        wanted = ", ".join(names)
        return f"the server's certificate does not name {wanted} (DANE-TA)"
    return None


def _issued_by(subject: x509.Certificate, issuer: x509.Certificate) -> str:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        return f"certificate {_subject(issuer)} is not a CA"
    try:
        subject.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature) as exc:
        why = str(exc) or type(exc).__name__
        return f"certificate {_subject(subject)} is not issued by {_subject(issuer)} ({why})"
    return ""


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS subjectAltNames, or the Common Names when there are none (RFC 7672 3.2.3)."""
    try:
        extension = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        extension = None
    except ValueError:  # a malformed extension names nothing
        return []
    if extension is not None:
        assert isinstance(extension.value, x509.SubjectAlternativeName)
        names = extension.value.get_values_for_type(x509.DNSName)
        if names:
            return names
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return [str(a.value) for a in common]


def name_matches(pattern: str, name: str) -> bool:
    """``mx.example.org`` matches itself; ``*.example.org`` exactly one more label."""
    pattern = pattern.lower().rstrip(".")
    name = name.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = name.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:] and "*" not in rest
    return "*" not in pattern and pattern == name
