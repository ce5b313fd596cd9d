"""SPF (RFC 7208): ``check_host()`` as a sans-I/O evaluator.

``check_host(ip, domain, sender, helo)`` returns a generator that yields the DNS
questions it needs (``Query``: a name and a type, ``TXT``, ``A``, ``AAAA``, ``MX``
or ``PTR``) and is sent back each ``Answer`` (the records as text, NXDOMAIN, or
an error meaning the lookup failed: timeout, SERVFAIL). It returns an
``Outcome``. ``run`` drives it over a synchronous lookup (a static table),
``run_async`` over an async one (the daemon's resolver); neither knows SPF.

Answers are records as text: TXT as its strings joined (the record, no quotes),
A/AAAA as addresses, MX as the exchange's name (preference dropped), PTR as the
target name. CNAMEs are the resolver's business.

What it implements: record selection (exactly one ``v=spf1`` TXT record; type
SPF is never asked for), every mechanism (all, include, a, mx, ptr, ip4, ip6,
exists) with qualifiers and dual CIDR lengths, the modifiers ``redirect=`` and
``exp=`` (others ignored once their syntax is checked), macros (section 7,
every letter and transformer, ``c``/``r``/``t`` in ``exp=`` text only), the
limits of 4.6.4 (10 terms that query DNS, 2 void lookups, 10 MX names per
``mx``: more is ``permerror``, the first 10 PTR names for ``ptr`` and ``%{p}``),
the domain checks of 4.3 (a malformed or single-label domain is ``none``), and
the explanation of a ``fail``. A syntax error anywhere in a record is
``permerror`` before any of it is evaluated (4.6).

Choices where RFC 7208 leaves room (the test suite accepts either): a target name
that cannot be a DNS name after expansion (an empty label, a label over 63
octets) does not match, as a name that does not exist, without a query;
``exp=`` text with characters outside printable ASCII is no explanation.

Trusts nothing in DNS: every record is parsed and a bad one is ``permerror``.
Reads no settings.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar
from urllib.parse import quote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_DNS_TERMS = 10  # 4.6.4: include, a, mx, ptr, exists, redirect
MAX_VOID_LOOKUPS = 2  # 4.6.4
MAX_NAMES = 10  # 4.6.4: MX names per mx, PTR names per ptr and %{p}
MAX_DOMAIN = 253


class Result(StrEnum):
    NONE = "none"
    NEUTRAL = "neutral"
    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


QUALIFIERS = {"+": Result.PASS, "-": Result.FAIL, "~": Result.SOFTFAIL, "?": Result.NEUTRAL}


@dataclass(frozen=True, slots=True)
class Query:
    name: str  # lower case, no final dot
    rdtype: str  # TXT, A, AAAA, MX or PTR


@dataclass(frozen=True, slots=True)
class Answer:
    """What DNS said: records (empty: no data), NXDOMAIN, or ``error`` (a failed lookup)."""

    records: tuple[str, ...] = ()
    nxdomain: bool = False
    error: str = ""

    @property
    def void(self) -> bool:
        return not self.error and not self.records


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    domain: str  # the domain checked
    mechanism: str = ""  # the term that decided, e.g. "-all", "default", "redirect=x"
    explanation: str | None = None  # on fail, from exp= (None: use a default)
    problem: str = ""  # why permerror / temperror
    lookups: int = 0


class SpfError(Exception):
    result = Result.PERMERROR


class PermError(SpfError):
    result = Result.PERMERROR


class TempError(SpfError):
    result = Result.TEMPERROR


T = TypeVar("T")
Asks = Generator[Query, Answer, T]  # a step that asks DNS questions and returns a T
Evaluation = Asks[Outcome]


# ------------------------------------------------------------------------ domains (4.3)
def valid_domain(name: str) -> bool:
    """A multi-label domain name DNS can ask for (4.3): labels of 1-63 octets, at most 253."""
    name = name[:-1] if name.endswith(".") else name
    labels = name.split(".")
    return (
        0 < len(name) <= MAX_DOMAIN
        and len(labels) > 1
        and all(0 < len(label) <= 63 for label in labels)
        and not name.startswith("[")
    )


def _qname(name: str) -> str:
    return name.rstrip(".").lower()


def split_sender(sender: str, helo: str) -> tuple[str, str]:
    """(local-part, domain) of the sender; the HELO identity when MAIL FROM is empty, and
    ``postmaster`` for an empty local-part (4.3)."""
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "", sender or helo
    return local or "postmaster", domain


# ------------------------------------------------------------------------------ macros (7)
_LITERAL = re.compile(r"[\x21-\x24\x26-\x7e]+")
_EXPAND = re.compile(r"%\{([A-Za-z])([0-9]*)(r?)([.\-+,/_=]*)\}", re.IGNORECASE)
# domain-end = ( "." toplabel [ "." ] ) / macro-expand
_DOMAIN_END = re.compile(r"\.(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9-]*[a-z0-9])\.?$", re.I)
_LETTERS = set("slodiphv")
_EXP_LETTERS = _LETTERS | set("crt")


@dataclass(frozen=True, slots=True)
class Macro:
    letter: str  # as written: upper case means URL-escape
    digits: int | None
    reverse: bool
    delimiters: str


MacroPart = str | Macro


def parse_macro_string(text: str, *, explanation: bool = False) -> tuple[MacroPart, ...]:
    """``macro-string`` (or the ``explain-string`` of an exp= record, where spaces and the
    letters c, r, t are allowed) → literal pieces and macros; ``PermError`` on bad syntax."""
    parts: list[MacroPart] = []
    letters = _EXP_LETTERS if explanation else _LETTERS
    i = 0
    while i < len(text):
        if text[i] != "%":
            literal = re.compile(r"[\x20-\x24\x26-\x7e]+" if explanation else _LITERAL.pattern)
            m = literal.match(text, i)
            if not m:
                raise PermError(f"invalid character {text[i]!r} in {text!r}")
            parts.append(m.group())
            i = m.end()
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in ("%", "_", "-"):
            parts.append({"%": "%", "_": " ", "-": "%20"}[nxt])
            i += 2
            continue
        m = _EXPAND.match(text, i)
        if not m or m.group(1).lower() not in letters:
            raise PermError(f"invalid macro in {text!r}")
        digits = int(m.group(2)) if m.group(2) else None
        if digits == 0:
            raise PermError(f"macro with zero parts in {text!r}")
        parts.append(Macro(m.group(1), digits, bool(m.group(3)), m.group(4) or "."))
        i = m.end()
    return tuple(parts)


def parse_domain_spec(text: str) -> tuple[MacroPart, ...]:
    """A ``domain-spec``: a macro-string ending in a macro or in "." toplabel (7.1)."""
    parts = parse_macro_string(text)
    if not parts:
        raise PermError("empty domain-spec")
    if isinstance(parts[-1], str) and not _DOMAIN_END.search(parts[-1]):
        raise PermError(f"domain-spec {text!r} does not end in a macro or a valid top label")
    return parts


def transform(value: str, macro: Macro) -> str:
    """Split on the delimiters, reverse, keep the rightmost parts, join with dots (7.3)."""
    pieces = re.split("[" + re.escape(macro.delimiters) + "]", value)
    if macro.reverse:
        pieces.reverse()
    if macro.digits is not None:
        pieces = pieces[-macro.digits :] if macro.digits < len(pieces) else pieces
    out = ".".join(pieces)
    if macro.letter.isupper():
        out = quote(out, safe="")
    return out


# ------------------------------------------------------------------------ record syntax
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)$", re.DOTALL)
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)$", re.DOTALL)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IP4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}$")
_CIDR4 = re.compile(r"/(0|[1-9][0-9]?)$")
_CIDR6 = re.compile(r"//(0|[1-9][0-9]?[0-9]?)$")
_VERSION = re.compile(r"v=spf1( |$)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Mechanism:
    qualifier: Result
    name: str  # all include a mx ptr ip4 ip6 exists
    target: tuple[MacroPart, ...] | None = None  # domain-spec, None: the current domain
    network: IPNetwork | None = None  # ip4/ip6
    cidr4: int = 32
    cidr6: int = 128
    text: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    mechanisms: tuple[Mechanism, ...]
    redirect: tuple[MacroPart, ...] | None = None
    exp: tuple[MacroPart, ...] | None = None


def is_spf_record(text: str) -> bool:
    return _VERSION.match(text) is not None


def parse_record(text: str) -> Record:
    """A ``v=spf1`` record → its terms; ``PermError`` for any syntax error (4.6)."""
    if not is_spf_record(text):
        raise PermError("not an SPF record")
    mechanisms: list[Mechanism] = []
    modifiers: dict[str, tuple[MacroPart, ...]] = {}
    for term in text[6:].split(" "):
        if not term:
            continue
        modifier = _MODIFIER.match(term)
        if modifier:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if name in modifiers:
                    raise PermError(f"more than one {name}= modifier")
                modifiers[name] = parse_domain_spec(value)
            else:
                parse_macro_string(value)  # unknown modifiers are ignored, not their syntax
            continue
        mechanisms.append(parse_mechanism(term))
    return Record(tuple(mechanisms), modifiers.get("redirect"), modifiers.get("exp"))


def _dual_cidr(arg: str, term: str) -> tuple[str, int, int]:
    """``domain/24//64`` → (domain, 24, 64); each length optional."""
    cidr4, cidr6 = 32, 128
    if m := _CIDR6.search(arg):
        cidr6 = int(m.group(1))
        arg = arg[: m.start()]
    if m := _CIDR4.search(arg):
        cidr4 = int(m.group(1))
        arg = arg[: m.start()]
    if cidr4 > 32 or cidr6 > 128:
        raise PermError(f"bad CIDR length in {term!r}")
    return arg, cidr4, cidr6


def parse_mechanism(term: str) -> Mechanism:
    m = _MECHANISM.match(term)
    if not m:
        raise PermError(f"unknown term {term!r}")
    qualifier = QUALIFIERS[m.group(1) or "+"]
    name, rest = m.group(2).lower(), m.group(3)
    if name == "all":
        if rest:
            raise PermError(f"bad term {term!r}")
        return Mechanism(qualifier, name, text=term)
    if name in ("include", "exists"):
        if not rest.startswith(":") or len(rest) == 1:
            raise PermError(f"{name} needs a domain: {term!r}")
        return Mechanism(qualifier, name, parse_domain_spec(rest[1:]), text=term)
    if name in ("a", "mx", "ptr"):
        return _host_mechanism(qualifier, name, rest, term)
    if name in ("ip4", "ip6"):
        return _ip_mechanism(qualifier, name, rest, term)
    raise PermError(f"unknown mechanism {term!r}")


def _host_mechanism(qualifier: Result, name: str, rest: str, term: str) -> Mechanism:
    cidr4, cidr6 = 32, 128
    if name != "ptr":
        rest, cidr4, cidr6 = _dual_cidr(rest, term)
    if not rest:
        return Mechanism(qualifier, name, None, None, cidr4, cidr6, term)
    if not rest.startswith(":") or len(rest) == 1:
        raise PermError(f"bad term {term!r}")
    return Mechanism(qualifier, name, parse_domain_spec(rest[1:]), None, cidr4, cidr6, term)


def _ip_mechanism(qualifier: Result, name: str, rest: str, term: str) -> Mechanism:
    if not rest.startswith(":"):
        raise PermError(f"{name} needs an address: {term!r}")
    address, slash, length = rest[1:].partition("/")
    limit = 32 if name == "ip4" else 128
    if slash and (not re.fullmatch(r"0|[1-9][0-9]{0,2}", length) or int(length) > limit):
        raise PermError(f"bad CIDR length in {term!r}")
    try:
        if name == "ip4":
            if not _IP4.match(address):
                raise ValueError(address)
            ip: IPAddress = ipaddress.IPv4Address(address)
        else:
            ip = ipaddress.IPv6Address(address)
    except ValueError:
        raise PermError(f"bad address in {term!r}") from None
    network = ipaddress.ip_network(f"{ip}/{length if slash else limit}", strict=False)
    return Mechanism(qualifier, name, network=network, text=term)


# ------------------------------------------------------------------------- evaluation
def _lookup(name: str, rdtype: str) -> Asks[Answer]:
    answer = yield Query(_qname(name), rdtype)
    return answer


@dataclass(slots=True)
class _Check:
    """One check_host() run: the identity, the client, and the limits spent so far."""

    ip: IPAddress
    local: str
    sender_domain: str
    helo: str
    receiver: str
    now: int
    lookups: int = 0
    voids: int = 0
    validated: dict[str, str] = field(default_factory=dict)  # %{p} per domain

    # ---- counting
    def count_term(self) -> None:
        self.lookups += 1
        if self.lookups > MAX_DNS_TERMS:
            raise PermError(f"more than {MAX_DNS_TERMS} DNS lookups")

    def count_void(self, answer: Answer) -> None:
        if answer.void:
            self.voids += 1
            if self.voids > MAX_VOID_LOOKUPS:
                raise PermError(f"more than {MAX_VOID_LOOKUPS} void lookups")

    # ---- record lookup and evaluation
    def record(self, domain: str) -> Asks[Record | None]:
        """The domain's SPF record, None when it has none (4.4, 4.5)."""
        answer = yield from _lookup(domain, "TXT")
        if answer.error:
            raise TempError(f"DNS lookup of {domain} TXT failed: {answer.error}")
        texts = [t for t in answer.records if is_spf_record(t)]
        if not texts:
            return None
        if len(texts) > 1:
            raise PermError(f"{domain} has more than one SPF record")
        return parse_record(texts[0])

    def check_host(self, domain: str, *, explain: bool) -> Evaluation:
        """check_host() of ``domain``; with ``explain`` (not inside include) a fail gets
        the explanation of the record that decided it."""
        if not valid_domain(domain):
            return Outcome(Result.NONE, domain, problem=f"{domain!r} is not a valid domain")
        record = yield from self.record(domain)
        if record is None:
            return Outcome(Result.NONE, domain, problem=f"{domain} has no SPF record")
        for mechanism in record.mechanisms:
            if (yield from self.matches(mechanism, domain)):
                explanation = None
                if explain and mechanism.qualifier is Result.FAIL:
                    explanation = yield from self.explanation(record, domain)
                return Outcome(mechanism.qualifier, domain, mechanism.text, explanation)
        if record.redirect is None:
            return Outcome(Result.NEUTRAL, domain, "default")
        self.count_term()
        target = yield from self.expand_domain(record.redirect, domain)
        # a new check_host(): the target's exp= applies, not ours (6.2)
        outcome = yield from self.check_host(target, explain=explain)
        if outcome.result is Result.NONE:
            raise PermError(f"redirect={target}: {outcome.problem}")
        return outcome

    def matches(self, mechanism: Mechanism, domain: str) -> Asks[bool]:
        name = mechanism.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            assert mechanism.network is not None
            return self.ip.version == mechanism.network.version and self.ip in mechanism.network
        self.count_term()
        target = domain
        if mechanism.target is not None:
            target = yield from self.expand_domain(mechanism.target, domain)
        if name == "include":  # a name DNS cannot have has no record: permerror
            return (yield from self.include(target))
        if not target or not valid_domain(target):
            return False  # not a name DNS could have: as if it did not exist
        if name == "exists":
            answer = yield from self.addresses(target, "A")
            return bool(answer.records)
        if name == "a":
            answer = yield from self.addresses(target, self.address_type)
            return self.in_cidr(answer.records, mechanism)
        if name == "mx":
            return (yield from self.mx(target, mechanism))
        return (yield from self.ptr(target))

    @property
    def address_type(self) -> str:
        return "A" if self.ip.version == 4 else "AAAA"

    def addresses(self, name: str, rdtype: str, *, void: bool = True) -> Asks[Answer]:
        answer = yield from _lookup(name, rdtype)
        if answer.error:
            raise TempError(f"DNS lookup of {name} {rdtype} failed: {answer.error}")
        if void:
            self.count_void(answer)
        return answer

    def in_cidr(self, records: tuple[str, ...], mechanism: Mechanism) -> bool:
        length = mechanism.cidr4 if self.ip.version == 4 else mechanism.cidr6
        for text in records:
            try:
                network = ipaddress.ip_network(f"{text.strip()}/{length}", strict=False)
            except ValueError:
                continue  # not an address of the family asked for
            if self.ip in network:
                return True
        return False

    def include(self, target: str) -> Asks[bool]:
        outcome = yield from self.check_host(target, explain=False)
        if outcome.result is Result.PASS:
            return True
        if outcome.result is Result.TEMPERROR:
            raise TempError(outcome.problem)
        if outcome.result in (Result.PERMERROR, Result.NONE):
            raise PermError(f"include:{target}: {outcome.problem or outcome.result}")
        return False

    def mx(self, target: str, mechanism: Mechanism) -> Asks[bool]:
        answer = yield from self.addresses(target, "MX")
        if len(answer.records) > MAX_NAMES:
            raise PermError(f"{target} has more than {MAX_NAMES} MX records")
        found: list[str] = []
        for exchange in answer.records:  # all of them: a DNS error anywhere is temperror,
            host = exchange.strip()  # whatever order DNS gave the names in (5)
            if valid_domain(host):
                addresses = yield from self.addresses(host, self.address_type, void=False)
                found += addresses.records
        return self.in_cidr(tuple(found), mechanism)

    def ptr(self, target: str) -> Asks[bool]:
        names = yield from self.validated_names(strict=True)
        wanted = _qname(target)
        return any(n == wanted or n.endswith("." + wanted) for n in names)

    def validated_names(self, *, strict: bool) -> Generator[Query, Answer, list[str]]:
        """The names of the client's PTR records whose addresses include it (5.5)."""
        answer = yield from _lookup(self.ip.reverse_pointer, "PTR")
        if answer.error:
            return []  # 5.5: a DNS error on the PTR lookup is no match
        if strict:
            self.count_void(answer)
        names: list[str] = []
        for name in answer.records[:MAX_NAMES]:
            host = _qname(name.strip())
            if not valid_domain(host):
                continue
            addresses = yield from _lookup(host, self.address_type)
            if addresses.error:
                continue  # 5.5: skip the name
            if self.in_cidr(addresses.records, Mechanism(Result.PASS, "a")):
                names.append(host)
        return names

    # ---- macros
    def expand_domain(self, spec: tuple[MacroPart, ...], domain: str) -> Asks[str]:
        """A domain-spec expanded, shortened from the left to 253 octets (7.3); "" if empty."""
        name = yield from self.expand(spec, domain)
        name = name.rstrip(".") if name.endswith(".") and not name.endswith("..") else name
        while len(name) > MAX_DOMAIN and "." in name:
            name = name.split(".", 1)[1]
        return name

    def expand(self, parts: tuple[MacroPart, ...], domain: str) -> Asks[str]:
        out: list[str] = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
            else:
                value = yield from self.macro_value(part.letter.lower(), domain)
                out.append(transform(value, part))
        return "".join(out)

    def macro_value(self, letter: str, domain: str) -> Asks[str]:
        v6 = self.ip.version == 6
        if letter == "p":
            return (yield from self.validated_name(domain))
        values = {
            "s": f"{self.local}@{self.sender_domain}",
            "l": self.local,
            "o": self.sender_domain,
            "d": domain,
            # nibbles in upper case, as in the RFC's example (7.4)
            "i": ".".join(self.ip.exploded.replace(":", "").upper()) if v6 else str(self.ip),
            "v": "ip6" if v6 else "in-addr",
            "h": self.helo,
            "c": str(self.ip),
            "r": self.receiver,
            "t": str(self.now),
        }
        return values[letter]

    def validated_name(self, domain: str) -> Asks[str]:
        """%{p}: a validated name of the client, the domain or a subdomain of it preferred."""
        if domain not in self.validated:
            names = yield from self.validated_names(strict=False)
            d = _qname(domain)
            ranked = sorted(names, key=lambda n: (n != d, not n.endswith("." + d)))
            self.validated[domain] = ranked[0] if ranked else "unknown"
        return self.validated[domain]

    # ---- explanation (6.2)
    def explanation(self, record: Record, domain: str) -> Asks[str | None]:
        if record.exp is None:
            return None
        try:
            target = yield from self.expand_domain(record.exp, domain)
            if not valid_domain(target):
                return None
            answer = yield from _lookup(target, "TXT")
            if answer.error or len(answer.records) != 1:
                return None
            parts = parse_macro_string(answer.records[0], explanation=True)
            return (yield from self.expand(parts, domain))
        except SpfError:
            return None


def check_host(
    ip: str,
    domain: str,
    sender: str,
    helo: str = "",
    *,
    receiver: str = "unknown",
    now: int = 0,
) -> Evaluation:
    """Evaluate SPF for ``sender`` (``local@domain``, or ``""`` / ``postmaster@helo`` for
    the HELO identity) at ``domain`` from client ``ip``: a generator of DNS queries."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # 5: an IPv4-mapped address is an IPv4 address
    local, sender_domain = split_sender(sender, helo)
    check = _Check(address, local, sender_domain, helo, receiver, now)
    return _top(check, domain)


def _top(check: _Check, domain: str) -> Evaluation:
    try:
        outcome = yield from check.check_host(domain, explain=True)
    except SpfError as exc:
        outcome = Outcome(exc.result, domain, problem=str(exc))
    return Outcome(
        outcome.result,
        domain,
        outcome.mechanism,
        outcome.explanation,
        outcome.problem,
        check.lookups,
    )


# ---------------------------------------------------------------------------- drivers
SyncLookup = Callable[[Query], Answer]
AsyncLookup = Callable[[Query], Awaitable[Answer]]


def run(evaluation: Evaluation, lookup: SyncLookup) -> Outcome:
    """Drive an evaluation with a synchronous lookup (a static table)."""
    try:
        query = next(evaluation)
        while True:
            query = evaluation.send(lookup(query))
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome


async def run_async(evaluation: Evaluation, lookup: AsyncLookup) -> Outcome:
    """Drive an evaluation with an async lookup (the daemon's resolver)."""
    try:
        query = next(evaluation)
        while True:
            query = evaluation.send(await lookup(query))
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome


# ------------------------------------------------------------------------ header fields
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_COMMENT_UNSAFE = re.compile(r"[^\x20-\x27\x2a-\x5b\x5d-\x7e]")  # no ( ) \ or controls


def _kv_value(text: str) -> str:
    """A Received-SPF key-value value: a dot-atom, or a quoted-string (RFC 7208 9.1)."""
    if _DOT_ATOM.match(text) and not text.startswith(".") and ".." not in text:
        return text
    text = re.sub(r"[^\x20-\x7e]", "?", text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_COMMENTS = {
    Result.PASS: "domain of {who} designates {ip} as permitted sender",
    Result.FAIL: "domain of {who} does not designate {ip} as permitted sender",
    Result.SOFTFAIL: "domain of transitioning {who} does not designate {ip} as permitted sender",
    Result.NEUTRAL: "{ip} is neither permitted nor denied by domain of {who}",
    Result.NONE: "domain of {who} does not designate permitted sender hosts",
    Result.TEMPERROR: "error in processing during lookup of {who}",
    Result.PERMERROR: "permanent error in processing domain of {who}",
}


def received_spf(
    outcome: Outcome, *, ip: str, sender: str, helo: str, receiver: str, identity: str
) -> str:
    """The value of a ``Received-SPF`` field (RFC 7208 9.1) for ``outcome``."""
    who = sender or f"postmaster@{helo}"
    comment = _COMMENTS[outcome.result].format(who=who, ip=ip)
    comment = _COMMENT_UNSAFE.sub("?", f"{receiver}: {comment}")
    pairs = [
        ("client-ip", ip),
        ("envelope-from", sender),
        ("helo", helo),
        ("receiver", receiver),
        ("identity", identity),
    ]
    if outcome.mechanism and outcome.mechanism != "default":
        pairs.append(("mechanism", outcome.mechanism))
    if outcome.problem and outcome.result in (Result.PERMERROR, Result.TEMPERROR):
        pairs.append(("problem", outcome.problem))
    keys = "; ".join(f"{k}={_kv_value(v)}" for k, v in pairs)
    return f"{outcome.result} ({comment}) {keys}"
