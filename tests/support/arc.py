"""ARC test helpers: keys in a static DNS table, and dkimpy's ARC (its sealer and validator).

dkimpy's ``ARC.sign`` reads the Authentication-Results fields with the ``authres``
package, which is not installed (only dkimpy is pinned); ``AuthresStub`` stands in
for the one call it makes (parse a field into its authserv-id and results). The
signing and verification themselves are dkimpy's own code. dkimpy 1.1.8's
``ARC.sign`` reads every private key as PEM, so its Ed25519 path (in
``gen_header``) cannot be reached; for an Ed25519 key ``dkimpy_seal`` hands it the
PyNaCl signing key that path expects (what ``dkim.sign`` builds from the seed).
Its ARC validator accepts only the algorithms in ``ARC_HASH_ALGORITHMS``
(rsa-sha256); ``dkimpy_verify`` lets it take those of DKIM (Ed25519 too), which
its DKIM machinery then verifies.
"""

from __future__ import annotations

import base64
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailwright.core.dkim import SigningKey
from mailwright.core.dkim_verify import TempError


@dataclass
class _Result:
    method: str
    result: str
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass
class _Field:
    authserv_id: str
    results: list[_Result] = field(default_factory=list)


class _SyntaxError(Exception):
    pass


def _parse(text: str) -> _Field:
    value = text.split(":", 1)[1]
    parts = [" ".join(p.split()) for p in value.split(";")]
    results = []
    for part in parts[1:]:
        if not part or part == "none":
            continue
        method, _, rest = part.partition("=")
        results.append(_Result(method.strip(), rest.split()[0] if rest.split() else "", part))
    return _Field(parts[0].split()[0] if parts[0].split() else "", results)


AuthresStub = types.SimpleNamespace(
    AuthenticationResultsHeader=types.SimpleNamespace(parse=_parse),
    core=types.SimpleNamespace(SyntaxError=_SyntaxError),
    AuthresNotFoundError=ImportError,
)
if not hasattr(dkim, "authres"):
    dkim.authres = AuthresStub  # type: ignore[attr-defined]


def pem_file(path: Path, key: Any) -> str:
    """``key`` (a private key) written to ``path`` as unencrypted PKCS#8 PEM; the path."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return str(path)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def txt_record(key: SigningKey) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def dkimpy_key(key: SigningKey) -> bytes:
    """The key as dkimpy takes it: PKCS#1 PEM for RSA, the base64 seed for Ed25519."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class Dns:
    """A static TXT table, for our lookup (async) and dkimpy's ``dnsfunc``."""

    def __init__(self, records: Mapping[str, str] | None = None) -> None:
        self.records = {k.lower().rstrip("."): v for k, v in (records or {}).items()}
        self.failing: set[str] = set()

    def add(self, selector: str, domain: str, key: SigningKey) -> None:
        self.records[f"{selector}._domainkey.{domain}".lower()] = txt_record(key)

    async def lookup(self, name: str) -> list[str]:
        name = name.lower().rstrip(".")
        if name in self.failing:
            raise TempError(f"{name}: SERVFAIL")
        return [self.records[name]] if name in self.records else []

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        text = self.records.get(name.decode().lower().rstrip("."))
        return text.encode() if text is not None else None


def dkimpy_seal(
    message: bytes,
    key: SigningKey,
    *,
    domain: str,
    selector: str,
    srv_id: str,
    headers: tuple[str, ...] = ("from", "to", "subject", "date", "message-id"),
    timestamp: int | None = None,
) -> bytes:
    """``message`` with the ARC Set dkimpy adds (its cv= from the ``arc=`` of the srv_id's
    Authentication-Results), the set on top."""
    algorithm = b"ed25519-sha256" if isinstance(key, ed25519.Ed25519PrivateKey) else b"rsa-sha256"
    arc = dkim.ARC(message, signature_algorithm=algorithm)
    private = dkimpy_key(key)
    reader = dkim.parse_pem_private_key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        nacl_key = nacl.signing.SigningKey(private, encoder=nacl.encoding.Base64Encoder)
        reader = lambda _: nacl_key  # noqa: E731
    with mock.patch.object(dkim, "parse_pem_private_key", reader):
        fields = arc.sign(
            selector.encode(),
            domain.encode(),
            private,
            srv_id.encode(),
            include_headers=[h.encode() for h in headers],
            timestamp=timestamp,
        )
    assert fields, "dkimpy added no ARC Set"
    return b"".join(fields) + message


def dkimpy_verify(message: bytes, dns: Dns) -> tuple[str, str]:
    """dkimpy's Chain Validation Status (``pass``, ``fail``, ``none``) and its reason."""
    with mock.patch.object(dkim, "ARC_HASH_ALGORITHMS", dkim.HASH_ALGORITHMS):
        cv, _, reason = dkim.arc_verify(message, dnsfunc=dns.dnsfunc)
    return (cv.decode().lower() if cv else "fail"), reason
