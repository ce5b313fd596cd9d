"""DMARC (RFC 7489): policy records, discovery, organizational domains, alignment, evaluation.

Sans-I/O apart from one injected seam: ``discover`` asks DNS through an async
``lookup(name) -> [TXT text]`` (``TempError`` for a failed lookup). The rest is pure:

- ``parse_record``: a ``_dmarc`` TXT record (6.3); unknown tags are ignored, bad
  values of optional tags give their defaults, a record whose ``p`` (or ``sp``) is
  not valid counts as ``p=none`` when it has a usable ``rua`` and as no record
  otherwise (6.3).
- ``PublicSuffixes``: organizational domains (3.2) from the Public Suffix List of
  the ``publicsuffixlist`` package, or a list file the operator keeps fresh.
- ``discover``: the record of the RFC5322.From domain, else of its organizational
  domain (6.6.3); several DMARC records at one name stop discovery (``permerror``:
  not applied).
- ``evaluate``: identifier alignment (3.1, relaxed or strict per ``aspf``/``adkim``)
  of the SPF-authenticated domain and of each passing DKIM signature's ``d=``, the
  result (pass, fail, none, temperror, permerror) and the disposition the policy
  asks for (``p``, ``sp`` for subdomains, ``pct`` sampling with an injected random:
  a message sampled out gets the next milder policy, 6.6.4).
- ``author_domains``: the RFC5322.From domains of a header section (6.6.1).

Trusts nothing from DNS or the message: every tag and address is checked. Reads no
settings.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.headerregistry import HeaderRegistry
from enum import StrEnum
from pathlib import Path

from publicsuffixlist import PublicSuffixList

from mailwright.core.headers import HeaderList

Lookup = Callable[[str], Awaitable[list[str]]]  # TXT texts; [] for NXDOMAIN or no data

_TAG = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)
_SIZE = re.compile(r"^(\d{1,15})([kmgt]?)$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9])?\.)+[A-Za-z0-9-]+$")


class TempError(Exception):
    """A DNS lookup failed (SERVFAIL, timeout): ``temperror``."""


class Result(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


class Disposition(StrEnum):
    NONE = "none"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    def milder(self) -> Disposition:
        """The next less strict policy (6.6.4: a message ``pct`` leaves out)."""
        return Disposition.QUARANTINE if self is Disposition.REJECT else Disposition.NONE


class Alignment(StrEnum):
    RELAXED = "r"
    STRICT = "s"


@dataclass(frozen=True, slots=True)
class ReportUri:
    """One ``rua`` or ``ruf`` destination: a ``mailto:`` address and its size limit (``!``)."""

    address: str
    limit: int | None = None  # octets; None: no limit

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Record:
    """A parsed ``v=DMARC1`` record (defaults of 6.3 filled in)."""

    p: Disposition
    sp: Disposition | None = None
    adkim: Alignment = Alignment.RELAXED
    aspf: Alignment = Alignment.RELAXED
    pct: int = 100
    rua: tuple[ReportUri, ...] = ()
    ri: int = 86400
    fo: str = "0"
    ruf: tuple[ReportUri, ...] = ()  # failure reports (7.3), as fo= asks


class RecordError(ValueError):
    """A ``v=DMARC1`` record that cannot be used (no valid ``p`` and no ``rua``)."""


def parse_size(text: str) -> int | None:
    """``10m`` → 10485760 (6.3 ``rua`` size limits); None when malformed."""
    match = _SIZE.match(text)
    return int(match[1]) * _UNITS[match[2].lower()] if match else None


def parse_uri(text: str) -> ReportUri | None:
    """A ``mailto:`` reporting URI with an optional ``!size``; None for anything else
    (other schemes are allowed by the RFC but we only send mail)."""
    text = text.strip()
    uri, bang, size = text.rpartition("!") if "!" in text else (text, "", "")
    limit = parse_size(size) if bang else None
    if bang and limit is None:
        return None
    if uri[:7].lower() != "mailto:":
        return None
    address = uri[7:].split("?", 1)[0]
    address = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), address)
    local, at, domain = address.rpartition("@")
    if not at or not _LOCAL_PART.fullmatch(local) or not _DOMAIN.fullmatch(domain):
        return None
    return ReportUri(f"{local}@{domain.lower()}", limit)


def _disposition(value: str) -> Disposition | None:
    try:
        return Disposition(value.lower())
    except ValueError:
        return None


def is_dmarc(text: str) -> bool:
    """Does the TXT text start with the ``v=DMARC1`` tag (6.6.3 record selection)?"""
    first = text.split(";", 1)[0]
    match = _TAG.match(first)
    return match is not None and match[1] == "v" and match[2] == "DMARC1"


def parse_record(text: str) -> Record:
    """The record (6.3), or ``RecordError`` when it must be treated as absent."""
    if not is_dmarc(text):
        raise RecordError("not a v=DMARC1 record")
    tags: dict[str, str] = {}
    for part in text.split(";")[1:]:
        match = _TAG.match(part)
        if match and match[1].lower() not in tags:
            tags[match[1].lower()] = match[2]
    rua = _uris(tags.get("rua", ""))
    p = _disposition(tags.get("p", ""))
    sp = _disposition(tags["sp"]) if "sp" in tags else None
    if p is None or ("sp" in tags and sp is None):
        if not rua:
            raise RecordError("no valid p= (or a bad sp=) and no usable rua=")
        p, sp = Disposition.NONE, None  # 6.3: act as if p=none was published
    return Record(
        p=p,
        sp=sp,
        adkim=_alignment(tags.get("adkim", "r")),
        aspf=_alignment(tags.get("aspf", "r")),
        pct=_number(tags.get("pct", ""), 100, 0, 100),
        rua=rua,
        ri=_number(tags.get("ri", ""), 86400, 0, 2**32 - 1),
        fo=tags.get("fo", "0") or "0",
        ruf=_uris(tags.get("ruf", "")),
    )


def _uris(value: str) -> tuple[ReportUri, ...]:
    """The usable ``mailto:`` URIs of a comma-separated ``rua``/``ruf`` list."""
    return tuple(u for u in (parse_uri(t) for t in value.split(",") if t) if u)


def _alignment(value: str) -> Alignment:
    return Alignment.STRICT if value.lower() == "s" else Alignment.RELAXED


def _number(value: str, default: int, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        return default
    return int(value)


# ---------------------------------------------------------------- organizational domains
class PublicSuffixes:
    """Organizational domains (3.2) from a Public Suffix List (the package's or a file)."""

    def __init__(self, psl: PublicSuffixList, source: str) -> None:
        self.psl = psl
        self.source = source

    @classmethod
    def bundled(cls) -> PublicSuffixes:
        return cls(PublicSuffixList(), "publicsuffixlist package")

    @classmethod
    def from_file(cls, path: Path) -> PublicSuffixes:
        """The list in ``path``; ``ValueError`` when it does not look like one."""
        text = path.read_text(encoding="utf-8")
        check_list(text)
        return cls(PublicSuffixList(text.splitlines()), str(path))

    def org_domain(self, name: str) -> str:
        """The public suffix plus one label; a public suffix itself is its own."""
        name = name.lower().rstrip(".")
        return self.psl.privatesuffix(name) or name


_RULE = re.compile(r"^(\*\.|!)?[^\s!*<>/\\]+$")


def check_list(text: str) -> int:
    """The number of rules in a Public Suffix List text; ``ValueError`` if it is not one
    (no rule, or a line that is no rule: an HTML error page, a truncated download)."""
    rules = [
        line.split()[0]
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("//")
    ]
    bad = next((r for r in rules if not _RULE.match(r)), None)
    if not rules or bad is not None:
        raise ValueError(f"not a Public Suffix List: {'no rules' if not rules else repr(bad)}")
    return len(rules)


def aligned(a: str, b: str, mode: Alignment, psl: PublicSuffixes) -> bool:
    """Identifier alignment (3.1): the same name (strict) or organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if a == b:
        return True
    return mode is Alignment.RELAXED and psl.org_domain(a) == psl.org_domain(b)


# ---------------------------------------------------------------- discovery (6.6.3)
@dataclass(frozen=True, slots=True)
class Discovery:
    """Where the policy was found (``domain``), the record, or why there is none."""

    result: Result | None  # None: a record was found; else none, temperror, permerror
    domain: str = ""  # the name whose _dmarc record applies
    record: Record | None = None
    problem: str = ""


async def _records_at(domain: str, lookup: Lookup) -> Discovery | None:
    texts = await lookup(f"_dmarc.{domain}")
    candidates = [t for t in texts if is_dmarc(t)]
    if len(candidates) > 1:
        return Discovery(Result.PERMERROR, domain, problem=f"{len(candidates)} DMARC records")
    if not candidates:
        return None
    try:
        return Discovery(None, domain, parse_record(candidates[0]))
    except RecordError:
        return None  # 6.3: as if no record was found


async def discover(author_domain: str, org_domain: str, lookup: Lookup) -> Discovery:
    """The policy for ``author_domain``: its own record, else its organizational
    domain's. ``TempError`` from ``lookup`` is ``temperror``."""
    try:
        found = await _records_at(author_domain, lookup)
        if found is None and org_domain != author_domain:
            found = await _records_at(org_domain, lookup)
    except TempError as exc:
        return Discovery(Result.TEMPERROR, author_domain, problem=str(exc) or "DNS failure")
    return found or Discovery(Result.NONE, author_domain, problem="no DMARC record")


# ---------------------------------------------------------------- evaluation
@dataclass(frozen=True, slots=True)
class Identifier:
    """An authenticated identifier: the SPF domain (MAIL FROM or HELO) or a DKIM ``d=``."""

    domain: str
    result: str  # the SPF or DKIM result: pass, fail, temperror, ...
    selector: str = ""  # DKIM only
    scope: str = "mfrom"  # SPF only: mfrom or helo


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The DMARC outcome of one author domain."""

    result: Result
    author_domain: str
    discovery: Discovery
    requested: Disposition = Disposition.NONE  # p or sp, before pct
    disposition: Disposition = Disposition.NONE  # after pct
    sampled_out: bool = False
    spf_aligned: bool = False
    dkim_aligned: bool = False
    dkim_domains: tuple[str, ...] = field(default=())  # the aligned passing d= (for reports)

    @property
    def record(self) -> Record | None:
        return self.discovery.record

    @property
    def policy_domain(self) -> str:
        return self.discovery.domain


def evaluate(
    author_domain: str,
    discovery: Discovery,
    spf: Identifier | None,
    dkim: Sequence[Identifier],
    psl: PublicSuffixes,
    rng: random.Random,
) -> Evaluation:
    """Alignment, result and the disposition asked for (6.6.2, 6.6.4)."""
    record = discovery.record
    if discovery.result is not None or record is None:
        return Evaluation(discovery.result or Result.NONE, author_domain, discovery)
    spf_ok = (
        spf is not None
        and spf.result == "pass"
        and aligned(author_domain, spf.domain, record.aspf, psl)
    )
    dkim_ok = tuple(
        d.domain
        for d in dkim
        if d.result == "pass" and aligned(author_domain, d.domain, record.adkim, psl)
    )
    if spf_ok or dkim_ok:
        return Evaluation(
            Result.PASS,
            author_domain,
            discovery,
            spf_aligned=spf_ok,
            dkim_aligned=bool(dkim_ok),
            dkim_domains=dkim_ok,
        )
    subdomain = discovery.domain != author_domain.lower().rstrip(".")
    requested = record.sp if subdomain and record.sp is not None else record.p
    sampled_out = record.pct < 100 and rng.random() * 100 >= record.pct
    disposition = requested.milder() if sampled_out else requested
    # a lookup that failed on an identifier that could have aligned: it might have passed
    unsure = any(
        i.result == "temperror" and aligned(author_domain, i.domain, mode, psl)
        for i, mode in [
            *([(spf, record.aspf)] if spf is not None else []),
            *((d, record.adkim) for d in dkim),
        ]
    )
    return Evaluation(
        Result.TEMPERROR if unsure else Result.FAIL,
        author_domain,
        discovery,
        requested=requested,
        disposition=disposition,
        sampled_out=sampled_out,
    )


# ---------------------------------------------------------------- the author (6.6.1)
class FromError(ValueError):
    """The message has no single usable RFC5322.From (several fields, no domain)."""


_REGISTRY = HeaderRegistry()


def author_domains(headers: HeaderList) -> list[str]:
    """The domains of the From field's addresses, lower case, each once, in order; []
    when there is no From field. ``FromError`` for several From fields or an address
    without a valid domain (a message whose author cannot be told)."""
    fields = [h for h in headers if h.is_("From")]
    if not fields:
        return []
    if len(fields) > 1:
        raise FromError(f"{len(fields)} From fields")
    return list(_from_domains(" ".join(fields[0].text.split())))


@functools.lru_cache(maxsize=1024)  # the stdlib's parser is slow; senders repeat
def _from_domains(text: str) -> tuple[str, ...]:
    """``author_domains`` of one From field's (unfolded) text; errors are not cached."""
    try:
        parsed = _REGISTRY("From", text)
        addresses = list(parsed.addresses)  # type: ignore[attr-defined]
    except Exception:  # the stdlib parser's errors are of many kinds
        raise FromError("unparseable From field") from None
    domains: list[str] = []
    for address in addresses:
        domain = str(address.domain).lower().rstrip(".")
        if not _DOMAIN.fullmatch(domain):
            raise FromError(f"From address without a domain: {str(address)[:80]!r}")
        if domain not in domains:
            domains.append(domain)
    if not domains:
        raise FromError("From field without an address")
    return tuple(domains)


# ---------------------------------------------------------------- Authentication-Results
def resinfo(evaluation: Evaluation, applied: Disposition) -> str:
    """``dmarc=fail (p=REJECT sp=NONE dis=REJECT) header.from=example.com`` (RFC 7489
    11.2; the comment as large receivers write it, ``dis`` what was done)."""
    text = f"dmarc={evaluation.result}"
    record = evaluation.record
    if record is not None:
        policy = f"p={record.p.upper()}"
        if record.sp is not None:
            policy += f" sp={record.sp.upper()}"
        text += f" ({policy} dis={applied.upper()})"
    return f"{text} header.from={evaluation.author_domain}"
