"""DKIM signing (RFC 6376, RFC 8463): canonicalisation, the body hash and the DKIM-Signature.

Sans-I/O (but for ``load_signing_key``, which reads a PEM file): ``BodyHasher``
is fed the body in chunks of any size and keeps at most two bytes between them
(a white-space run shrinks to one space, a CR waits for its LF), so the body
hash takes constant memory whatever the message size. ``Signer`` turns a header
section and a body hash into a folded ``DKIM-Signature`` header field, signed
(``sign_bytes``) with an RSA (PKCS#1 v1.5, SHA-256) or an Ed25519 (SHA-256
prehash, RFC 8463) private key from the ``cryptography`` package; ``core.arc``
signs its ARC fields with the same pieces. Trusts its caller to have chosen which
mail to sign; reads no settings.

Canonicalisation follows RFC 6376 section 3.4 as dkimpy and OpenDKIM read it:
only CRLF ends a line; a body not ending in CRLF gets one; "relaxed" turns an
empty body (or one of only empty lines) into nothing, "simple" into one CRLF.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from mailwright.core.headers import Header

Canon = Literal["relaxed", "simple"]
SigningKey = RSAPrivateKey | Ed25519PrivateKey

CRLF = b"\r\n"
_WSP_RUN = re.compile(rb"[ \t]+")
_FOLD = re.compile(rb"\r\n(?=[ \t])")
LINE = 76  # fold the signature under 78 octets a line, leaving room for the CRLF


class BodyCanonicaliser:
    """Streams a body through "relaxed" or "simple" canonicalisation.

    ``feed`` returns the canonical bytes that are final so far; ``finish`` the rest.
    Empty lines are held back (as a count) until something follows them, so the
    ones at the end of the body are never emitted.
    """

    def __init__(self, canon: Canon) -> None:
        self._relaxed = canon == "relaxed"
        self._carry = b""  # at most " \r": the unfinished end of the last chunk
        self._held = 0  # CRLFs ending empty lines, not yet known to be followed by text
        self._emitted = False

    def feed(self, data: bytes) -> bytes:
        buf = self._carry + data
        # the end that may still change with the next chunk: a CR, and (relaxed) WSP before it
        cut = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        if self._relaxed:
            cut = len(buf[:cut].rstrip(b" \t"))
        head, tail = buf[:cut], buf[cut:]
        if self._relaxed:
            # after compressing, trailing WSP on a line is exactly one space before CRLF
            head = _WSP_RUN.sub(b" ", head).replace(b" \r\n", CRLF)
            space = b" " if tail[:1] in (b" ", b"\t") else b""
            tail = space + (b"\r" if tail.endswith(b"\r") else b"")
        self._carry = tail
        return self._emit(head)

    def finish(self) -> bytes:
        out = self._emit(self._carry)
        self._carry = b""
        if self._emitted:
            return out + CRLF  # the last line's CRLF (held ones dropped), or one added
        return b"" if self._relaxed else CRLF

    def _emit(self, piece: bytes) -> bytes:
        if not piece:
            return b""
        end = len(piece.rstrip(b"\r\n"))
        run = len(piece) - end
        if piece[end:] != CRLF * (run // 2):  # e.g. a CR LF LF: pair them from the end
            end = len(piece)
            while piece.endswith(CRLF, 0, end):
                end -= 2
        core = piece[:end]
        count = (len(piece) - end) // 2
        if not core:
            self._held += count
            return b""
        out = CRLF * self._held + core
        self._held = count
        self._emitted = True
        return out


def canonical_body(body: bytes, canon: Canon) -> bytes:
    """The whole body canonicalised at once (tests and small bodies)."""
    c = BodyCanonicaliser(canon)
    return c.feed(body) + c.finish()


class BodyHasher:
    """The ``bh=`` value: SHA-256 over the canonical body, fed in chunks."""

    def __init__(self, canon: Canon) -> None:
        self._canon = BodyCanonicaliser(canon)
        self._sha = hashlib.sha256()

    def feed(self, data: bytes) -> None:
        self._sha.update(self._canon.feed(data))

    def digest(self) -> bytes:
        self._sha.update(self._canon.finish())
        return self._sha.digest()


def body_hash(chunks: Iterable[bytes], canon: Canon) -> bytes:
    hasher = BodyHasher(canon)
    for chunk in chunks:
        hasher.feed(chunk)
    return hasher.digest()


def canonical_header(name: str, value: bytes, canon: Canon) -> bytes:
    """One header field canonicalised, with its CRLF."""
    if canon == "simple":
        return name.encode("ascii") + b":" + value + CRLF
    unfolded = _WSP_RUN.sub(b" ", _FOLD.sub(b"", value)).strip(b" \t")
    return name.lower().strip().encode("ascii") + b":" + unfolded + CRLF


def select_headers(
    headers: Sequence[Header], names: Sequence[str], oversign: Collection[str]
) -> tuple[list[str], list[Header]]:
    """The ``h=`` names and the fields they pick, bottom-up per name (RFC 6376 5.4.2).

    A name ending in ``*`` stands for every field name starting with the rest.
    Each name is listed once per field present; an ``oversign`` name once more,
    so that a field of that name added later breaks the signature.
    """
    present: list[str] = []
    seen: set[str] = set()
    for h in headers:
        key = h.name.lower()
        if key not in seen:
            seen.add(key)
            present.append(h.name)
    wanted: list[str] = []
    for name in names:
        if name.endswith("*"):
            prefix = name[:-1].lower()
            wanted += [p for p in present if p.lower().startswith(prefix)]
        else:
            wanted.append(name)
    listed: list[str] = []
    picked: list[Header] = []
    over = {n.lower() for n in oversign}
    done: set[str] = set()
    for name in wanted:
        key = name.lower()
        if key in done:
            continue
        done.add(key)
        fields = [h for h in headers if h.name.lower() == key]
        picked += reversed(fields)
        listed += [name] * (len(fields) + (1 if key in over else 0))
    return listed, picked


def algorithm(key: SigningKey) -> str:
    return "ed25519-sha256" if isinstance(key, Ed25519PrivateKey) else "rsa-sha256"


def fold_tags(tags: Sequence[tuple[str, str]], start: int) -> str:
    """``tag=value;`` pairs joined, a new line (CRLF TAB) before a piece that would not fit.

    The ``h=`` list may break after any colon (RFC 6376 3.5 allows FWS there).
    """
    out = ""
    column = start
    for i, (tag, value) in enumerate(tags):
        end = ";" if i < len(tags) - 1 else ""
        parts = value.split(":") if tag == "h" else [value]
        pieces = [f"{p}:" for p in parts[:-1]] + [parts[-1] + end]
        pieces[0] = f"{tag}={pieces[0]}"
        for j, piece in enumerate(pieces):
            space = " " if j == 0 else ""
            if column + len(space) + len(piece) > LINE and column > 1:
                out += "\r\n\t"
                column = 1
            else:
                out += space
                column += len(space)
            out += piece
            column += len(piece)
    return out


def fold_base64(value: str, column: int) -> str:
    """A long base64 value (``bh=``, ``b=``) broken over lines with CRLF TAB."""
    parts: list[str] = []
    room = max(LINE - column, 8)
    while value:
        parts.append(value[:room])
        value = value[room:]
        room = LINE - 1
    return "\r\n\t".join(parts)


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs for one ``d=`` domain and ``s=`` selector with one key."""

    domain: str
    selector: str
    key: SigningKey
    headers: tuple[str, ...]
    oversign: tuple[str, ...] = ()
    header_canon: Canon = "relaxed"
    body_canon: Canon = "relaxed"

    def sign(self, headers: Sequence[Header], bh: bytes, timestamp: int) -> Header:
        """The ``DKIM-Signature`` field for a message with these headers and body hash."""
        listed, picked = select_headers(headers, self.headers, self.oversign)
        tags = [
            ("v", "1"),
            ("a", algorithm(self.key)),
            ("c", f"{self.header_canon}/{self.body_canon}"),
            ("d", self.domain),
            ("s", self.selector),
            ("t", str(timestamp)),
            ("h", ":".join(listed)),
        ]
        head = fold_tags(tags, len("DKIM-Signature:")) + ";"
        bh_text = base64.b64encode(bh).decode("ascii")
        head += "\r\n\tbh=" + fold_base64(bh_text, len(" bh=")) + ";\r\n\tb="
        unsigned = Header("DKIM-Signature", head.encode("ascii"))
        data = b"".join(canonical_header(h.name, h.value, self.header_canon) for h in picked)
        data += canonical_header(unsigned.name, unsigned.value, self.header_canon)[:-2]
        signature = base64.b64encode(sign_bytes(self.key, data)).decode("ascii")
        return Header("DKIM-Signature", (head + fold_base64(signature, len(" b="))).encode("ascii"))


def sign_bytes(key: SigningKey, data: bytes) -> bytes:
    """The ``b=`` signature of ``data``: RSA PKCS#1 v1.5 over SHA-256, or Ed25519 over its
    SHA-256 digest (RFC 8463)."""
    if isinstance(key, Ed25519PrivateKey):
        return key.sign(hashlib.sha256(data).digest())
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def load_signing_key(path: str, what: str = "DKIM", min_rsa_bits: int = 2048) -> SigningKey:
    """The private key in PEM file ``path``; ``ValueError`` naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ValueError(f"cannot read {what} key {path}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        why = str(exc).split(". See ")[0]  # cryptography appends a link to its FAQ
        problem = f"{what} key {path} is not an unencrypted PEM private key: {why}"
        raise ValueError(problem) from None
    if isinstance(key, RSAPrivateKey):
        if key.key_size < min_rsa_bits:
            raise ValueError(
                f"{what} key {path} is RSA {key.key_size} bits; at least {min_rsa_bits} needed"
            )
        return key
    if isinstance(key, Ed25519PrivateKey):
        return key
    raise ValueError(f"{what} key {path} is neither RSA nor Ed25519")
