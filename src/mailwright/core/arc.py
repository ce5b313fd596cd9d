"""ARC (RFC 8617): the Authenticated Received Chain of a message, validated and sealed.

Sans-I/O apart from one injected seam, like ``core.dkim_verify``: ``Chain.of``
collects the ARC Sets of a header section (ARC-Authentication-Results, AAR;
ARC-Message-Signature, AMS; ARC-Seal, AS) and checks their structure (instances
1..N, N at most 50, exactly one of each field per instance); ``Chain.body_specs``
says which body hashes its AMS need, computed by ``core.dkim_verify.body_hashes``
in one streaming pass; ``Chain.validate`` runs RFC 8617 5.2 with keys fetched
through an async ``lookup(name) -> [TXT text]``: the most recent AS must not say
``cv=fail``, the cv= of instance 1 is ``none`` and of the others ``pass``, the most
recent AMS verifies like a DKIM signature (``core.dkim_verify.check``), the older
AMS give ``oldest-pass``, and every AS verifies over the AAR, AMS and AS of its
own and all earlier instances, in that order, relaxed, its own b= empty. The
outcome is ``pass``, ``fail`` (with the reason) or ``none``; every error,
DNS trouble included, is ``fail`` (RFC 8617 5.2.1).

``Sealer`` adds the next ARC Set (RFC 8617 5.1): the AAR carries the results
given (our Authentication-Results, ``results_of``), the AMS signs the message as
it is sent (relaxed/relaxed by default; the body hash from ``core.dkim``'s
streaming ``BodyHasher``) and the AS seals the chain with the given ``cv=``; a
chain that failed is sealed alone (5.1.2), and none is added after an AS with
``cv=fail`` or above instance 50. Tags go i= first, as RFC 8617's ABNF has them.

Trusts nothing in the message or in DNS. Reads no settings.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from mailwright.core.arcfields import AAR, AMS, ARC_FIELDS, AS
from mailwright.core.dkim import (
    CRLF,
    Canon,
    SigningKey,
    algorithm,
    canonical_header,
    fold_base64,
    fold_tags,
    select_headers,
    sign_bytes,
)
from mailwright.core.dkim_verify import (
    ALGORITHMS,
    B_TAG,
    DOMAIN,
    FWS,
    SELECTOR,
    BodySpec,
    KeyRecord,
    Lookup,
    PermError,
    Signature,
    TempError,
    canonicalisation,
    check,
    choose_record,
    decode_base64,
    parse_key,
    parse_tags,
    tag_number,
    verify_bytes,
)
from mailwright.core.headers import Header

Status = Literal["none", "pass", "fail"]

MAX_INSTANCE = 50  # RFC 8617 4.2.1
_KINDS = {AAR.lower(): "aar", AMS.lower(): "ams", AS.lower(): "as"}
_AAR_INSTANCE = re.compile(r"^[ \t\r\n]*i[ \t\r\n]*=[ \t\r\n]*([0-9]{1,9})[ \t\r\n]*;")
_STATUSES = ("none", "pass", "fail")


@dataclass(frozen=True, slots=True)
class ArcSet:
    instance: int
    aar: Header
    ams: Header
    seal: Header


@dataclass(frozen=True, slots=True)
class Seal:
    """One parsed ``ARC-Seal`` field."""

    field: Header
    instance: int
    cv: str
    algorithm: str
    domain: str
    selector: str
    b: bytes

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"


@dataclass(frozen=True, slots=True)
class ArcResult:
    """The Chain Validation Status of a message, and what the report says with it."""

    result: Status
    reason: str = ""
    instance: int = 0  # N, the most recent instance
    oldest_pass: int | None = None  # RFC 8617 5.2 step 5 (pass only)
    domain: str = ""  # d= of the most recent ARC-Seal


def _text(header: Header) -> str:
    try:
        return header.value.decode("ascii")
    except UnicodeDecodeError:
        raise PermError(f"{header.name} is not ASCII") from None


def instance_of(header: Header) -> int:
    """The i= of an ARC field; ``PermError`` when it has none or a bad one."""
    if header.name.lower() == AAR.lower():
        m = _AAR_INSTANCE.match(_text(header))
        if m is None:
            raise PermError(f"{AAR} without an instance")
        text = m.group(1)
    else:
        text = parse_tags(_text(header)).get("i", "")
    if not text.isdigit() or len(text) > 9:
        raise PermError(f"{header.name} without a valid i=")
    return int(text)


def collect(headers: Sequence[Header]) -> list[ArcSet]:
    """The ARC Sets in instance order; [] when there is none; ``PermError`` when the
    structure is broken (RFC 8617 5.2 steps 1 and 3.1-3.2)."""
    found: dict[int, dict[str, Header]] = {}
    for h in headers:
        kind = _KINDS.get(h.name.lower())
        if kind is None:
            continue
        n = instance_of(h)
        if not 1 <= n <= MAX_INSTANCE:
            raise PermError(f"ARC instance {n} is outside 1..{MAX_INSTANCE}")
        fields = found.setdefault(n, {})
        if kind in fields:
            raise PermError(f"two {h.name} fields for instance {n}")
        fields[kind] = h
    sets: list[ArcSet] = []
    for n in range(1, max(found, default=0) + 1):
        fields = found.get(n, {})
        if len(fields) != 3:
            raise PermError(f"ARC Set {n} is incomplete")
        sets.append(ArcSet(n, fields["aar"], fields["ams"], fields["as"]))
    return sets


def next_instance(headers: Sequence[Header]) -> int:
    """One more than the highest readable instance (1 without ARC fields)."""
    highest = 0
    for h in headers:
        if h.name.lower() in ARC_FIELDS:
            try:
                highest = max(highest, instance_of(h))
            except PermError:
                continue
    return highest + 1


def _algorithm(tags: Mapping[str, str]) -> str:
    value = tags["a"].lower()
    if value not in ALGORITHMS:
        raise PermError(f"unknown algorithm a={tags['a']}")
    return value


def _domain_selector(tags: Mapping[str, str]) -> tuple[str, str]:
    domain = tags["d"].lower().rstrip(".")
    if not DOMAIN.match(domain):
        raise PermError(f"bad domain d={tags['d']}")
    if not SELECTOR.match(tags["s"]):
        raise PermError(f"bad selector s={tags['s']}")
    return domain, tags["s"]


def _required(tags: Mapping[str, str], names: Sequence[str], what: str) -> None:
    missing = [t for t in names if t not in tags]
    if missing:
        raise PermError(f"{what} has no {missing[0]}=")


def parse_ams(header: Header) -> Signature:
    """An ``ARC-Message-Signature`` as a DKIM signature (RFC 8617 4.1.2): no v=, i= is the
    instance, and h= may not name the ARC-Seal (a sealer names no ARC field at all, RFC 8617
    4.1.2, but the older ones are harmless to verify, as the ARC test suite has it)."""
    tags = parse_tags(_text(header))
    _required(tags, ("i", "a", "b", "bh", "d", "h", "s"), AMS)
    algorithm = _algorithm(tags)
    domain, selector = _domain_selector(tags)
    # an empty name (h=a::b, h=) selects nothing, as dkimpy and the ARC test suite have it
    signed = tuple(n for n in (FWS.sub("", n).lower() for n in tags["h"].split(":")) if n)
    if AS.lower() in signed:  # what the seal signs cannot be signed before it
        raise PermError(f"{AMS} signs the {AS}")
    # no c=: relaxed/relaxed, ARC's own (dkimpy and the ARC test suite), not DKIM's simple
    header_canon, body_canon = canonicalisation(FWS.sub("", tags.get("c", "relaxed/relaxed")))
    bh = decode_base64(tags["bh"], "bh")
    b = decode_base64(tags["b"], "b")
    if len(bh) != 32 or not b:
        raise PermError("bh= or b= is unusable")
    timestamp = tag_number(tags["t"], "t") if "t" in tags else None
    expires = tag_number(tags["x"], "x") if "x" in tags else None
    return Signature(
        field=header,
        algorithm=algorithm,
        domain=domain,
        selector=selector,
        identity_domain=domain,
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


def parse_seal(header: Header) -> Seal:
    """An ``ARC-Seal`` (RFC 8617 4.1.3): i=, cv=, a=, b=, d=, s=; an h= is an error."""
    tags = parse_tags(_text(header))
    _required(tags, ("i", "cv", "a", "b", "d", "s"), AS)
    if "h" in tags:
        raise PermError(f"{AS} has h=")
    cv = tags["cv"].lower()
    if cv not in _STATUSES:
        raise PermError(f"unknown cv={tags['cv']}")
    domain, selector = _domain_selector(tags)
    b = decode_base64(tags["b"], "b")
    if not b:
        raise PermError(f"{AS} b= is empty")
    instance = tag_number(tags["i"], "i")
    return Seal(header, instance, cv, _algorithm(tags), domain, selector, b)


def seal_data(sets: Sequence[ArcSet], own: Header) -> bytes:
    """What an AS signs (RFC 8617 5.1.1): AAR, AMS and AS of each set in instance order,
    relaxed, ``own`` (the last set's AS) with b= empty and no final CRLF."""
    out: list[bytes] = []
    for s in sets:
        out.append(canonical_header(s.aar.name, s.aar.value, "relaxed"))
        out.append(canonical_header(s.ams.name, s.ams.value, "relaxed"))
        if s.seal is not own:
            out.append(canonical_header(s.seal.name, s.seal.value, "relaxed"))
    emptied = B_TAG.sub(rb"\1\2", own.value)
    return b"".join(out) + canonical_header(own.name, emptied, "relaxed").removesuffix(CRLF)


class _Keys:
    """Keys fetched once per validation (several sets are often one signer's)."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup
        self.known: dict[str, KeyRecord | PermError] = {}

    async def get(self, name: str) -> KeyRecord:
        if name not in self.known:
            try:
                self.known[name] = parse_key(choose_record(await self.lookup(name)))
            except TempError as exc:  # RFC 8617 5.2.1: all failures are permanent
                self.known[name] = PermError(f"key {name}: {exc or 'DNS failure'}")
            except PermError as exc:
                self.known[name] = PermError(f"key {name}: {exc.reason}")
        found = self.known[name]
        if isinstance(found, PermError):
            raise found
        return found


@dataclass(slots=True)
class Chain:
    """The ARC Sets of one message, or why their structure is broken."""

    sets: list[ArcSet] = field(default_factory=list)
    error: str = ""
    ams: dict[int, Signature | PermError] = field(default_factory=dict)

    @classmethod
    def of(cls, headers: Sequence[Header]) -> Chain:
        try:
            sets = collect(headers)
        except PermError as exc:
            return cls(error=exc.reason)
        chain = cls(sets)
        for s in sets:
            try:
                chain.ams[s.instance] = parse_ams(s.ams)
            except PermError as exc:
                chain.ams[s.instance] = exc
        return chain

    @property
    def body_specs(self) -> set[BodySpec]:
        return {s.body_spec for s in self.ams.values() if isinstance(s, Signature)}

    async def validate(
        self,
        headers: Sequence[Header],
        hashes: Mapping[BodySpec, bytes],
        lookup: Lookup,
        now: int,
    ) -> ArcResult:
        """The Chain Validation Status (RFC 8617 5.2)."""
        if self.error:
            return ArcResult("fail", self.error)
        if not self.sets:
            return ArcResult("none")
        n = len(self.sets)
        try:
            seals = [parse_seal(s.seal) for s in self.sets]
            domain = seals[-1].domain
            self._structure(seals)
            keys = _Keys(lookup)
            if not await self._ams_passes(n, headers, hashes, keys, now):
                raise PermError(f"{AMS} {n} did not verify")
            for seal in reversed(seals):
                await self._check_seal(seal, keys)
            oldest = await self._oldest_pass(headers, hashes, keys, now)
        except PermError as exc:
            return ArcResult("fail", exc.reason, n)
        return ArcResult("pass", instance=n, oldest_pass=oldest, domain=domain)

    def _structure(self, seals: Sequence[Seal]) -> None:
        """Steps 2 and 3.3: the last cv= is not fail, instance 1 says none, others pass."""
        for s, seal in zip(self.sets, seals, strict=True):
            if seal.instance != s.instance:
                raise PermError(f"{AS} {s.instance} has i={seal.instance}")
        if seals[-1].cv == "fail":
            raise PermError(f"{AS} {len(seals)} says cv=fail")
        for seal in seals:
            wanted = "none" if seal.instance == 1 else "pass"
            if seal.cv != wanted:
                raise PermError(f"{AS} {seal.instance} says cv={seal.cv}, not {wanted}")

    async def _ams_passes(
        self,
        instance: int,
        headers: Sequence[Header],
        hashes: Mapping[BodySpec, bytes],
        keys: _Keys,
        now: int,
    ) -> bool:
        sig = self.ams[instance]
        if isinstance(sig, PermError):
            raise PermError(f"{AMS} {instance}: {sig.reason}")
        record = await keys.get(sig.key_name)
        return check(sig, headers, hashes.get(sig.body_spec), record, now).result == "pass"

    async def _oldest_pass(
        self, headers: Sequence[Header], hashes: Mapping[BodySpec, bytes], keys: _Keys, now: int
    ) -> int:
        """Step 5: the oldest instance from which every AMS still verifies (0: all do)."""
        for m in range(len(self.sets) - 1, 0, -1):
            try:
                if not await self._ams_passes(m, headers, hashes, keys, now):
                    return m + 1
            except PermError:
                return m + 1
        return 0

    async def _check_seal(self, seal: Seal, keys: _Keys) -> None:
        record = await keys.get(seal.key_name)
        if ALGORITHMS[seal.algorithm] != record.kind:
            raise PermError(f"{AS} {seal.instance}: key type {record.kind} does not match a=")
        data = seal_data(self.sets[: seal.instance], seal.field)
        if not verify_bytes(record.key, seal.b, data):
            raise PermError(f"{AS} {seal.instance} did not verify")


# ---- Authentication-Results, read and written ------------------------------------------


def split_results(text: str) -> list[str]:
    """The ``;``-separated parts of an Authentication-Results value, outside quoted strings
    and comments, with white space runs made one space."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for c in text:
        if escaped:
            escaped = False
        elif c == "\\" and (quoted or depth):
            escaped = True
        elif quoted:
            quoted = c != '"'
        elif c == '"' and not depth:
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif c == ";" and not depth:
            parts.append("".join(current))
            current = []
            continue
        current.append(c)
    parts.append("".join(current))
    return [" ".join(p.split()) for p in parts]


def _authserv(part: str) -> str:
    """The authserv-id of the first part (a version and comments after it dropped)."""
    words = re.sub(r"\([^()]*\)", " ", part).split()
    return words[0].lower() if words else ""


def results_of(headers: Sequence[Header], authserv_id: str) -> list[str]:
    """The results of every ``Authentication-Results`` field of ``authserv_id``, top down
    (RFC 8617 4.1.1: the AAR combines them); ``none`` placeholders left out."""
    wanted = authserv_id.lower()
    results: list[str] = []
    for h in headers:
        if not h.is_("Authentication-Results"):
            continue
        parts = split_results(h.text)
        if _authserv(parts[0]) != wanted:
            continue
        results += [p for p in parts[1:] if p and p.lower() != "none"]
    return results


def method_result(result: str) -> tuple[str, str]:
    """``("arc", "pass")`` for ``arc=pass smtp.remote-ip=...``."""
    head = re.sub(r"\([^()]*\)", " ", result).split()
    method, _, value = (head[0] if head else "").partition("=")
    return method.lower(), value.lower()


def result_text(r: ArcResult, remote_ip: str = "") -> str:
    """``arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1`` (RFC 8617 6), a fail
    with ``reason=``."""
    out = f"arc={r.result}"
    if r.reason:
        out += ' reason="' + re.sub(r'[^\x20-\x7e]|["\\]', "?", r.reason) + '"'
    if r.oldest_pass is not None:
        out += f" header.oldest-pass={r.oldest_pass}"
    if remote_ip and r.result != "none":
        out += f" smtp.remote-ip={remote_ip}"
    return out


# ---- sealing ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sealer:
    """Seals for one ``d=`` domain and ``s=`` selector with one key."""

    domain: str
    selector: str
    key: SigningKey
    authserv_id: str
    headers: tuple[str, ...]  # the AMS h= names (no ARC field, no Authentication-Results)
    header_canon: Canon = "relaxed"
    body_canon: Canon = "relaxed"

    def seal(
        self,
        headers: Sequence[Header],
        bh: bytes,
        cv: Status,
        results: Sequence[str],
        timestamp: int,
    ) -> list[Header] | None:
        """The new set as ``[AS, AMS, AAR]`` (to go on top in this order), or None when the
        chain must not be continued (its last AS says cv=fail, or 50 sets are there)."""
        instance = next_instance(headers)
        if instance > MAX_INSTANCE or _last_cv(headers) == "fail":
            return None
        sets: list[ArcSet] = []
        if instance == 1:
            cv = "none"
        elif cv != "fail":
            try:
                sets = collect(headers)
            except PermError:
                cv = "fail"
        if cv == "none" and instance > 1:
            cv = "fail"  # a chain nobody validated cannot be vouched for
        aar = self._aar(instance, results)
        ams = self._ams(instance, headers, bh, timestamp)
        unsigned = self._seal_head(instance, cv, timestamp)
        new = ArcSet(instance, aar, ams, unsigned)
        b = sign_bytes(self.key, seal_data([*sets, new], unsigned))
        seal = _with_b(unsigned, b)
        return [seal, ams, aar]

    def _aar(self, instance: int, results: Sequence[str]) -> Header:
        lines = [f"i={instance}", self.authserv_id, *(results or ["none"])]
        return Header(AAR, (" " + ";\r\n\t".join(lines)).encode("ascii", "replace"))

    def _ams(self, instance: int, headers: Sequence[Header], bh: bytes, timestamp: int) -> Header:
        listed, picked = select_headers(headers, self.headers, ())
        tags = [
            ("i", str(instance)),
            ("a", algorithm(self.key)),
            ("c", f"{self.header_canon}/{self.body_canon}"),
            ("d", self.domain),
            ("s", self.selector),
            ("t", str(timestamp)),
            ("h", ":".join(listed)),
        ]
        head = fold_tags(tags, len(AMS) + 1) + ";"
        bh_text = base64.b64encode(bh).decode("ascii")
        head += "\r\n\tbh=" + fold_base64(bh_text, len(" bh=")) + ";\r\n\tb="
        unsigned = Header(AMS, head.encode("ascii"))
        data = b"".join(canonical_header(h.name, h.value, self.header_canon) for h in picked)
        data += canonical_header(AMS, unsigned.value, self.header_canon).removesuffix(CRLF)
        return _with_b(unsigned, sign_bytes(self.key, data))

    def _seal_head(self, instance: int, cv: str, timestamp: int) -> Header:
        tags = [
            ("i", str(instance)),
            ("a", algorithm(self.key)),
            ("t", str(timestamp)),
            ("cv", cv),
            ("d", self.domain),
            ("s", self.selector),
        ]
        return Header(AS, (fold_tags(tags, len(AS) + 1) + ";\r\n\tb=").encode("ascii"))


def _with_b(unsigned: Header, b: bytes) -> Header:
    text = base64.b64encode(b).decode("ascii")
    return Header(unsigned.name, unsigned.value + fold_base64(text, len(" b=")).encode("ascii"))


def _last_cv(headers: Sequence[Header]) -> str:
    """The cv= of the highest-instance ARC-Seal that can be read ("" when none)."""
    best, cv = 0, ""
    for h in headers:
        if h.is_(AS):
            try:
                seal = parse_seal(h)
            except PermError:
                continue
            if seal.instance > best:
                best, cv = seal.instance, seal.cv
    return cv
