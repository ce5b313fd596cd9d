"""DKIM verification (RFC 6376 section 6; Ed25519 per RFC 8463) and its Authentication-Results.

Sans-I/O apart from one injected seam: ``Plan`` parses the ``DKIM-Signature``
fields of a header section (at most ``limit``, top first), ``body_hashes``
computes every body hash they need in one streaming pass over the body chunks
(constant memory, the ``BodyCanonicaliser`` of ``core.dkim``), and
``Plan.verify`` fetches each key through an async ``lookup(name) -> [TXT text]``
and checks the signatures with ``cryptography``. ``authentication_results``
renders the outcome as an RFC 8601 header value.

Trusts nothing in the message or in DNS: every tag is checked and a bad one
gives ``permerror`` (or ``neutral``) with a reason, never an exception.
Decisions where the RFCs leave room: ``rsa-sha1`` is ``neutral`` (RFC 8301:
verifiers must not accept it); ``l=`` is honoured (as OpenDKIM and dkimpy do),
and a body shorter than ``l=`` is ``permerror``; an expired ``x=`` is ``fail``;
an empty ``p=`` (revoked key) is ``fail``; RSA keys under 1024 bits are
``permerror`` (RFC 8301). Reads no settings.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from mailwright.core.dkim import CRLF, BodyCanonicaliser, Canon, canonical_header
from mailwright.core.headers import Header

PublicKey = RSAPublicKey | Ed25519PublicKey
BodySpec = tuple[Canon, int | None]  # body canonicalisation and l= (None: whole body)
Lookup = Callable[[str], Awaitable[list[str]]]

MIN_RSA_BITS = 1024  # RFC 8301 section 3.2
DEFAULT_LIMIT = 5
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
FWS = re.compile(r"[ \t\r\n]+")
DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?\.)*[A-Za-z0-9-]+$")
SELECTOR = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?(\.[A-Za-z0-9_-]+)*$")
B_TAG = re.compile(rb"(^|;)([ \t\r\n]*b[ \t\r\n]*=)[^;]*")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=]+$")
_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")  # RFC 2045 token
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
ALGORITHMS = {"rsa-sha256": "rsa", "ed25519-sha256": "ed25519"}


class PermError(Exception):
    """A signature or key that cannot be used; ``result`` is how RFC 8601 reports it."""

    def __init__(self, reason: str, result: str = "permerror") -> None:
        super().__init__(reason)
        self.reason = reason
        self.result = result


class TempError(Exception):
    """The key could not be fetched now (DNS timeout, SERVFAIL): ``temperror``."""


@dataclass(frozen=True, slots=True)
class Result:
    """One signature's outcome (or ``none``: no signature at all)."""

    result: str  # pass, fail, neutral, temperror, permerror, none
    reason: str = ""
    domain: str = ""
    selector: str = ""
    b: str = ""  # the b= value without white space (its start goes in header.b)
    testing: bool = False  # the key has t=y


def parse_tags(text: str) -> dict[str, str]:
    """A tag list (RFC 6376 3.2): ``tag=value`` separated by ``;``, FWS around both trimmed.

    ``PermError`` on a malformed pair, a bad tag name or a duplicate tag.
    """
    tags: dict[str, str] = {}
    parts = text.split(";")
    if parts and not parts[-1].strip(" \t\r\n"):
        parts.pop()  # a trailing ; is allowed
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not eq or not _TAG_NAME.match(name):
            raise PermError(f"malformed tag {part.strip()!r}")
        if name in tags:
            raise PermError(f"duplicate tag {name}=")
        tags[name] = value.strip(" \t\r\n")
    return tags


def decode_base64(value: str, tag: str) -> bytes:
    try:
        return base64.b64decode(FWS.sub("", value), validate=True)
    except (binascii.Error, ValueError):
        raise PermError(f"{tag}= is not base64") from None


def tag_number(value: str, tag: str) -> int:
    if not value.isdigit() or len(value) > 76:
        raise PermError(f"{tag}= is not a number")
    return int(value)


@dataclass(frozen=True, slots=True)
class Signature:
    """One parsed ``DKIM-Signature`` field."""

    field: Header
    algorithm: str  # rsa-sha256 or ed25519-sha256
    domain: str
    selector: str
    identity_domain: str
    signed: tuple[str, ...]  # h=, lower-cased
    header_canon: Canon
    body_canon: Canon
    bh: bytes
    b: bytes
    b_text: str
    length: int | None
    timestamp: int | None
    expires: int | None

    @property
    def body_spec(self) -> BodySpec:
        return (self.body_canon, self.length)

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def result(self, result: str, reason: str = "", testing: bool = False) -> Result:
        return Result(result, reason, self.domain, self.selector, self.b_text, testing)


def canonicalisation(value: str) -> tuple[Canon, Canon]:
    header, _, body = value.partition("/")
    names: dict[str, Canon] = {"simple": "simple", "relaxed": "relaxed"}
    if header not in names or (body or "simple") not in names:
        raise PermError(f"unknown canonicalization c={value}")
    return names[header], names[body or "simple"]


REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")


def parse_signature(header: Header) -> Signature:
    """The signature in ``header``; ``PermError`` (result permerror or neutral) with the reason."""
    try:
        text = header.value.decode("ascii")
    except UnicodeDecodeError:
        raise PermError("signature is not ASCII") from None
    tags = parse_tags(text)
    missing = [t for t in REQUIRED if t not in tags]
    if missing:
        raise PermError(f"missing tag {missing[0]}=")
    if tags["v"] != "1":
        raise PermError(f"unknown version v={tags['v']}")
    algorithm = tags["a"].lower()
    if algorithm == "rsa-sha1":
        raise PermError("rsa-sha1 is not accepted (RFC 8301)", "neutral")
    if algorithm not in ALGORITHMS:
        raise PermError(f"unknown algorithm a={tags['a']}", "neutral")
    domain = tags["d"].lower().rstrip(".")
    if not DOMAIN.match(domain):
        raise PermError(f"bad domain d={tags['d']}")
    selector = tags["s"]
    if not SELECTOR.match(selector):
        raise PermError(f"bad selector s={selector}")
    signed = tuple(FWS.sub("", n).lower() for n in tags["h"].split(":"))
    if any(not n for n in signed):
        raise PermError("empty name in h=")
    if "from" not in signed:
        raise PermError("From is not signed")
    identity = tags.get("i", "@" + domain)
    _, at, idomain = identity.rpartition("@")
    idomain = idomain.lower().rstrip(".")
    if not at or not (idomain == domain or idomain.endswith("." + domain)):
        raise PermError(f"i={identity} is not in d={domain}")
    if "q" in tags and "dns/txt" not in [FWS.sub("", q) for q in tags["q"].split(":")]:
        raise PermError(f"unknown query method q={tags['q']}")
    header_canon, body_canon = canonicalisation(FWS.sub("", tags.get("c", "simple/simple")))
    timestamp = tag_number(tags["t"], "t") if "t" in tags else None
    expires = tag_number(tags["x"], "x") if "x" in tags else None
    if timestamp is not None and expires is not None and expires < timestamp:
        raise PermError("x= is before t=")
    bh = decode_base64(tags["bh"], "bh")
    if len(bh) != hashlib.sha256().digest_size:
        raise PermError("bh= is not a SHA-256 digest")
    b = decode_base64(tags["b"], "b")
    if not b:
        raise PermError("b= is empty")
    return Signature(
        field=header,
        algorithm=algorithm,
        domain=domain,
        selector=selector,
        identity_domain=idomain,
        signed=signed,
        header_canon=header_canon,
        body_canon=body_canon,
        bh=bh,
        b=b,
        b_text=FWS.sub("", tags["b"]),
        length=tag_number(tags["l"], "l") if "l" in tags else None,
        timestamp=timestamp,
        expires=expires,
    )


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A ``_domainkey`` TXT record (RFC 6376 3.6.1)."""

    key: PublicKey
    kind: str  # rsa or ed25519
    testing: bool  # t=y
    strict: bool  # t=s: i= must be exactly d=


def _public_key(kind: str, data: bytes) -> PublicKey:
    if kind == "ed25519":
        if len(data) != 32:
            raise PermError("Ed25519 key is not 32 bytes")
        return Ed25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_der_public_key(data)
    except ValueError:
        try:  # some publish a bare PKCS#1 RSAPublicKey
            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(data)
            key = serialization.load_pem_public_key(pem + b"-----END RSA PUBLIC KEY-----\n")
        except ValueError:
            raise PermError("p= is not an RSA public key") from None
    if not isinstance(key, RSAPublicKey):
        raise PermError("p= is not an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise PermError(f"RSA key of {key.key_size} bits is too short")
    return key


@functools.lru_cache(maxsize=512)  # the same record comes back for every message of a domain
def parse_key(text: str) -> KeyRecord:
    """The key in one record's text; ``PermError`` for a bad one, result ``fail`` if revoked."""
    tags = parse_tags(text)
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        raise PermError(f"bad key record version v={tags['v']}")
    if "p" not in tags:
        raise PermError("key record has no p=")
    kind = tags.get("k", "rsa").lower()
    if kind not in ("rsa", "ed25519"):
        raise PermError(f"unknown key type k={kind}")
    listed = [h.strip(" \t").lower() for h in tags.get("h", "sha256").split(":")]
    if "sha256" not in listed:
        raise PermError("key does not allow sha256 (h=)")
    services = [s.strip(" \t").lower() for s in tags.get("s", "*").split(":")]
    if "*" not in services and "email" not in services:
        raise PermError("key is not for email (s=)")
    data = decode_base64(tags["p"], "p")
    if not data:
        raise PermError("key revoked", "fail")
    flags = [f.strip(" \t").lower() for f in tags.get("t", "").split(":")]
    return KeyRecord(_public_key(kind, data), kind, "y" in flags, "s" in flags)


def choose_record(texts: Sequence[str]) -> str:
    """The one key record among a name's TXT texts; ``PermError`` when there is none."""
    if len(texts) == 1:
        return texts[0]
    tagged = [t for t in texts if t.lstrip(" \t").startswith("v=DKIM1")]
    if len(tagged) == 1:
        return tagged[0]
    raise PermError("no key record" if not texts else "several key records")


def signed_data(headers: Sequence[Header], sig: Signature) -> bytes:
    """What ``b=`` signs (RFC 6376 3.7): the h= fields, each name's instances bottom-up
    (a name listed more often than present contributes nothing), then the signature
    field with ``b=`` emptied, canonicalised, without its final CRLF."""
    used: dict[str, int] = {}
    out: list[bytes] = []
    for name in sig.signed:
        fields = [h for h in headers if h.name.lower() == name and h is not sig.field]
        n = used.get(name, 0)
        used[name] = n + 1
        if n < len(fields):
            h = fields[len(fields) - 1 - n]
            out.append(canonical_header(h.name, h.value, sig.header_canon))
    emptied = B_TAG.sub(rb"\1\2", sig.field.value)
    own = canonical_header(sig.field.name, emptied, sig.header_canon)
    return b"".join(out) + own.removesuffix(CRLF)


def body_hashes(chunks: Iterable[bytes], specs: Collection[BodySpec]) -> dict[BodySpec, bytes]:
    """SHA-256 of each canonical body (cut at ``l=``), in one pass over the chunks.

    A spec whose ``l=`` is longer than the canonical body is left out of the result.
    """
    canons = {canon: BodyCanonicaliser(canon) for canon, _ in specs}
    shas = {spec: hashlib.sha256() for spec in specs}
    seen = dict.fromkeys(specs, 0)

    def put(canon: Canon, data: bytes) -> None:
        for spec in specs:
            if spec[0] != canon or not data:
                continue
            limit = spec[1]
            room = len(data) if limit is None else max(limit - seen[spec], 0)
            shas[spec].update(data[:room])
            seen[spec] += len(data)

    for chunk in chunks:
        for canon, canonicaliser in canons.items():
            put(canon, canonicaliser.feed(chunk))
    for canon, canonicaliser in canons.items():
        put(canon, canonicaliser.finish())
    return {
        spec: sha.digest() for spec, sha in shas.items() if spec[1] is None or seen[spec] >= spec[1]
    }


def check(
    sig: Signature, headers: Sequence[Header], bh: bytes | None, record: KeyRecord, now: int
) -> Result:
    """The verdict on one signature given its body hash and key (RFC 6376 6.1.3)."""
    testing = record.testing
    if sig.expires is not None and sig.expires < now:
        return sig.result("fail", "signature expired", testing)
    if ALGORITHMS[sig.algorithm] != record.kind:
        return sig.result("permerror", f"key type {record.kind} does not match a=", testing)
    if record.strict and sig.identity_domain != sig.domain:
        return sig.result("permerror", "key has t=s but i= is a subdomain of d=", testing)
    if bh is None:
        return sig.result("permerror", "l= is longer than the body", testing)
    if bh != sig.bh:
        return sig.result("fail", "body hash mismatch", testing)
    if not verify_bytes(record.key, sig.b, signed_data(headers, sig)):
        return sig.result("fail", "signature did not verify", testing)
    return sig.result("pass", testing=testing)


def verify_bytes(key: PublicKey, b: bytes, data: bytes) -> bool:
    """Whether ``b`` signs ``data``: RSA PKCS#1 v1.5 over SHA-256, or Ed25519 over its
    SHA-256 digest (RFC 8463)."""
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(b, hashlib.sha256(data).digest())
        else:
            key.verify(b, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


async def fetch_key(lookup: Lookup, sig: Signature) -> KeyRecord:
    """The signature's key from DNS; ``TempError`` or ``PermError`` when there is none usable."""
    return parse_key(choose_record(await lookup(sig.key_name)))


@dataclass(slots=True)
class Plan:
    """The signatures of one message: the parsed ones and the ones already decided."""

    signatures: list[Signature | Result] = field(default_factory=list)

    @classmethod
    def of(cls, headers: Sequence[Header], limit: int = DEFAULT_LIMIT) -> Plan:
        plan = cls()
        for h in [h for h in headers if h.is_("DKIM-Signature")][:limit]:
            try:
                plan.signatures.append(parse_signature(h))
            except PermError as exc:
                plan.signatures.append(Result(exc.result, exc.reason, *_names(h)))
        return plan

    @property
    def body_specs(self) -> set[BodySpec]:
        return {s.body_spec for s in self.signatures if isinstance(s, Signature)}

    async def verify(
        self,
        headers: Sequence[Header],
        hashes: Mapping[BodySpec, bytes],
        lookup: Lookup,
        now: int,
    ) -> list[Result]:
        """One result per signature, in header order; ``[none]`` when there is none."""
        results: list[Result] = []
        for sig in self.signatures:
            if isinstance(sig, Result):
                results.append(sig)
                continue
            try:
                record = await fetch_key(lookup, sig)
            except TempError as exc:
                results.append(sig.result("temperror", str(exc)))
                continue
            except PermError as exc:
                results.append(sig.result(exc.result, exc.reason))
                continue
            results.append(check(sig, headers, hashes.get(sig.body_spec), record, now))
        return results or [Result("none")]


def _names(h: Header) -> tuple[str, str, str]:
    """d=, s= and b= of an unusable signature, as far as they can be read (for the report)."""
    found = dict.fromkeys(("d", "s", "b"), "")
    for part in h.value.decode("ascii", "replace").split(";"):
        name, _, value = part.partition("=")
        name, value = name.strip(" \t\r\n"), FWS.sub("", value)
        if name in found and not found[name]:
            found[name] = value
    domain = found["d"].lower().rstrip(".")
    return (
        domain if DOMAIN.match(domain) else "",
        found["s"] if SELECTOR.match(found["s"]) else "",
        found["b"] if _BASE64.match(found["b"]) else "",
    )


def _value(text: str) -> str:
    """A property value: a token as is, anything else quoted (RFC 8601 / RFC 2045)."""
    if _TOKEN.match(text):
        return text
    text = _UNPRINTABLE.sub("?", text)  # DNS and tag text must not break the header
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def result_text(r: Result) -> str:
    """``dkim=<result> [reason="..."] header.d=... header.s=... header.b=...``."""
    out = f"dkim={r.result}"
    reason = r.reason + (" (key in test mode)" if r.testing else "")
    if reason:
        out += " reason=" + _value(reason)
    if r.domain:
        out += " header.d=" + _value(r.domain)
    if r.selector:
        out += " header.s=" + _value(r.selector)
    if r.b:
        out += " header.b=" + _value(r.b[:8])
    return out


def authentication_results(authserv_id: str, results: Sequence[Result]) -> Header:
    """The ``Authentication-Results`` field, one result a line."""
    lines = [authserv_id] + [result_text(r) for r in results]
    return Header("Authentication-Results", (" " + ";\r\n\t".join(lines)).encode("ascii"))


def authserv_id(h: Header) -> str:
    """The authserv-id an ``Authentication-Results`` field starts with (comments dropped)."""
    text = re.sub(r"\([^()]*\)", " ", h.text)
    first = text.split(";", 1)[0].split()
    return first[0].lower() if first else ""
