"""MX resolution: the hosts and addresses to try for a domain (``routing.resolver.Resolver``).

``DnsResolver`` asks DNS through dnspython's async resolver: MX records in
preference order (equal preferences shuffled on every call), each target's A
and AAAA addresses (order per ``dns.address_order``), the domain's own
addresses when it has no MX (implicit MX, RFC 5321 5.1), RFC 7505 null MX
refused at once, CNAMEs followed as the resolver returns them. Like Postfix
(``smtp_defer_if_no_mx_address_found = no``), MX targets without addresses are
skipped; when none is left the failure is temporary if any lookup failed
temporarily, else permanent. Address literals (``[192.0.2.1]``,
``[IPv6:2001:db8::1]``) need no lookup. Answers are kept in a small cache
bounded by their TTL, ``dns.cache_max_ttl`` and ``dns.cache_size``.

With ``dnssec`` (``delivery.dane``, or a DANE level in ``delivery.tls_policy``: the name
servers are then ``delivery.dane_nameservers``, validating resolvers trusted to tell),
queries set the DO and AD flags and every answer remembers whether the resolver set AD on
it: ``MailHost.secure`` says whether a host's MX RRset and addresses were validated,
``MailHost.canonical`` names where a host that is an alias (CNAME) led, and ``tlsa`` looks
up a host's TLSA records (RFC 7672) with their security. Without ``dnssec`` nothing is
secure.

``StaticResolver`` answers from a fixed table instead (hosts without DNS, and
tests of other components). Table file, one domain or host per line::

    example.org    mx1.example.org=192.0.2.1, mx1.example.org=2001:db8::1, mx2.example.org=192.0.2.2
    relay.example  192.0.2.25
    gone.example   nxdomain
    *              127.0.0.1

``host=address`` items are MX hosts, kept in the order written (preference 10,
20, ... per distinct host); a bare address is the name's own address (implicit
MX); ``nxdomain``, ``nullmx`` and ``tempfail`` fail as DNS would; ``*`` answers
for every other name. ``#`` starts a comment line.

Trusts nothing from DNS or the table: bad names and records become
``DnsPermanentError``/``DnsTemporaryError`` with a Postfix-style reason.
Settings: ``dns.*``, ``delivery.dane``, ``delivery.tls_policy`` (its DANE levels) and
``delivery.dane_nameservers`` (via ``resolver_from_settings``).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from dns.rdtypes.txtbase import TXTBase

from mailwright.config.schema import AddressOrder, DnsSection, Settings
from mailwright.core.address import AddressError, parse_domain
from mailwright.routing.resolver import (
    DnsPermanentError,
    DnsTemporaryError,
    MailHost,
    NullMxError,
    Resolver,
)
from mailwright.routing.table import TableError, read_table

Clock = Callable[[], float]


def literal_address(text: str) -> str | None:
    """The IP of an address literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``) or bare IP
    address; None for a name."""
    inner = text.strip()
    if not inner.startswith("["):
        try:
            return ipaddress.ip_address(inner).compressed
        except ValueError:
            return None
    inner, tagged = inner[1:-1], inner[1:6].lower() == "ipv6:"
    try:
        if not text.strip().endswith("]"):
            raise ValueError(text)
        ip = ipaddress.ip_address(inner[5:] if tagged else inner)
        if tagged and ip.version != 6:
            raise ValueError(text)
    except ValueError:
        raise DnsPermanentError(f"{text}: invalid address literal") from None
    return ip.compressed


def _family_rank(order: AddressOrder) -> Callable[[MailHost], int]:
    """Sort key: 0 for the preferred address family, 1 for the other."""
    preferred = 6 if order in (AddressOrder.IPV6_FIRST, AddressOrder.IPV6_ONLY) else 4
    return lambda host: 0 if ipaddress.ip_address(host.address).version == preferred else 1


def _unique(hosts: Iterable[MailHost]) -> list[MailHost]:
    seen: set[str] = set()
    out = []
    for host in hosts:
        if host.address not in seen:
            seen.add(host.address)
            out.append(host)
    return out


# --------------------------------------------------------------------- the cache


@dataclass(frozen=True, slots=True)
class Answer:
    """One DNS answer as kept: record texts, or none (NODATA), or NXDOMAIN."""

    records: tuple[str, ...] = ()
    nxdomain: bool = False
    secure: bool = False  # the trusted resolver set the AD bit (only with ``dnssec``)
    canonical: str = ""  # where CNAMEs led, when the name asked is an alias


class AnswerCache:
    """(name, type) → answer, each kept until its TTL runs out; least recently used go first."""

    def __init__(self, size: int, max_ttl: float, clock: Clock = time.monotonic) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, Answer]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, str]) -> Answer | None:
        item = self._entries.get(key)
        if item is None:
            return None
        expires, answer = item
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return answer

    def put(self, key: tuple[str, str], answer: Answer, ttl: float) -> None:
        ttl = min(ttl, self.max_ttl)
        if ttl <= 0 or self.size == 0:
            return
        self._entries[key] = (self._clock() + ttl, answer)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


# ------------------------------------------------------------------ DNS resolver


def _not_found(name: str, rdtype: str) -> str:
    return (
        f"Host or domain name not found. Name service error for name={name} type={rdtype}: "
        "Host not found"
    )


def _no_data(name: str, rdtype: str) -> str:
    return (
        f"Host or domain name not found. Name service error for name={name} type={rdtype}: "
        "Host found but no data record of requested type"
    )


def _try_again(name: str, rdtype: str, why: str) -> str:
    return (
        f"Host or domain name not found. Name service error for name={name} type={rdtype}: "
        f"Host not found, try again ({why})"
    )


@dataclass(slots=True)
class _HostLookup:
    """The addresses of one host, or why there are none."""

    addresses: list[str] = field(default_factory=list)
    temporary: str = ""  # the first temporary failure, if any
    permanent: str = ""  # the first NXDOMAIN / NODATA, if any
    secure: bool = True  # every answer that gave addresses was validated
    canonical: str = ""  # the name the addresses are at, when the one asked is an alias

    def error(self) -> DnsTemporaryError | DnsPermanentError:
        if self.temporary:
            return DnsTemporaryError(self.temporary)
        return DnsPermanentError(self.permanent)


class DnsResolver:
    """``Resolver`` over DNS (dnspython, async)."""

    def __init__(
        self,
        nameservers: Sequence[str] = (),
        port: int = 53,
        timeout: float = 5.0,
        lifetime: float = 15.0,
        *,
        address_order: AddressOrder = AddressOrder.IPV4_FIRST,
        max_mx_hosts: int = 10,
        cache_size: int = 10000,
        cache_max_ttl: float = 3600.0,
        negative_ttl: float = 60.0,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        dnssec: bool = False,
    ) -> None:
        self.lifetime = lifetime
        self.dnssec = dnssec
        self.address_order = address_order
        self.max_mx_hosts = max_mx_hosts
        self.negative_ttl = negative_ttl
        self.cache = AnswerCache(cache_size, cache_max_ttl, clock)
        self._rng = rng or random.Random()
        self._family_rank = _family_rank(address_order)
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._unavailable = ""
        try:
            resolver = dns.asyncresolver.Resolver(configure=not nameservers)
        except dns.exception.DNSException as exc:  # no usable /etc/resolv.conf
            self._unavailable = f"no name servers configured ({exc})"
            return
        if nameservers:
            resolver.nameservers = list(nameservers)
            resolver.port = port
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        resolver.cache = None  # ours is the one cache
        if dnssec:  # DO: the resolver validates for us; AD in the query asks for the bit
            resolver.use_edns(0, dns.flags.DO, 1232)
            resolver.flags = dns.flags.RD | dns.flags.AD
        self._resolver = resolver

    @classmethod
    def from_settings(
        cls,
        section: DnsSection,
        *,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
        trusted: Sequence[str] = (),
    ) -> DnsResolver:
        """``trusted``: validating resolvers to use instead of ``dns.nameservers``, whose
        AD bit is believed (DANE)."""
        return cls(
            list(trusted) or section.nameservers,
            section.port,
            section.timeout,
            section.lifetime,
            address_order=section.address_order,
            max_mx_hosts=section.max_mx_hosts,
            cache_size=section.cache_size,
            cache_max_ttl=section.cache_max_ttl,
            negative_ttl=section.negative_ttl,
            clock=clock,
            rng=rng,
            dnssec=bool(trusted),
        )

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        if (ip := literal_address(domain)) is not None:
            return [MailHost(domain, ip)]
        name = _qname(domain)
        answer = await self._query(name, "MX")
        if answer.nxdomain:
            raise DnsPermanentError(_not_found(name, "MX"))
        if not answer.records:
            return await self._own_addresses(name, answer.secure)  # implicit MX
        records = _parse_mx(answer.records, name)
        targets = [(pref, host) for pref, host in records if host]
        if not targets:
            raise NullMxError(f"Domain {name} does not accept mail (null MX, RFC 7505)")
        targets = self._by_preference(targets)[: self.max_mx_hosts]
        lookups = await asyncio.gather(*(self._host(host) for _, host in targets))
        hosts = [
            MailHost(host, address, pref, answer.secure and lookup.secure, lookup.canonical)
            for (pref, host), lookup in zip(targets, lookups, strict=True)
            for address in lookup.addresses
        ]
        if hosts:
            return self._sorted(hosts)
        failed = _HostLookup(
            temporary=next((x.temporary for x in lookups if x.temporary), ""),
            permanent=f"No MX host for {name} has an address: {lookups[0].permanent}",
        )
        raise failed.error()

    async def host_addresses(self, host: str) -> list[MailHost]:
        if (ip := literal_address(host)) is not None:
            return [MailHost(host, ip)]
        return await self._own_addresses(_qname(host))

    async def ptr(self, reverse_name: str) -> list[str]:
        """The PTR targets of ``reverse_name`` (``4.3.2.1.in-addr.arpa``); [] when none."""
        answer = await self._query(reverse_name.lower(), "PTR")
        return list(answer.records)

    async def records(self, name: str, rdtype: str) -> list[str]:
        """Any name's records of one type, as text, cached like the rest (DNS blocklist
        A and TXT lookups); [] for NXDOMAIN or no data, ``DnsTemporaryError`` when DNS fails."""
        answer = await self._query(_qname(name), rdtype)
        return list(answer.records)

    async def tlsa(self, host: str, port: int = 25) -> Answer:
        """The TLSA records of ``_<port>._tcp.<host>`` and whether they were validated;
        NXDOMAIN and NODATA are no records; ``DnsTemporaryError`` when DNS fails (a bogus
        answer is SERVFAIL from a validating resolver)."""
        return await self._query(f"_{port}._tcp.{_qname(host)}", "TLSA")

    async def _own_addresses(self, name: str, secure: bool = True) -> list[MailHost]:
        """The name's A/AAAA as hosts (``[host]`` next hops, and implicit MX)."""
        lookup = await self._host(name)
        if not lookup.addresses:
            raise lookup.error()
        secure = secure and lookup.secure
        hosts = [
            MailHost(name, a, secure=secure, canonical=lookup.canonical) for a in lookup.addresses
        ]
        return self._sorted(hosts)

    def _by_preference(self, targets: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Best preference first; equal preferences in a fresh random order each call."""
        best: dict[str, int] = {}
        for pref, host in targets:
            best[host] = min(pref, best.get(host, pref))
        shuffled = [(pref, host) for host, pref in best.items()]
        self._rng.shuffle(shuffled)
        return sorted(shuffled, key=lambda target: target[0])  # stable: keeps the shuffle

    def _sorted(self, hosts: list[MailHost]) -> list[MailHost]:
        """Within one preference, the preferred address family first (as Postfix does)."""
        return _unique(sorted(hosts, key=lambda h: (h.preference, self._family_rank(h))))

    async def _host(self, name: str) -> _HostLookup:
        """A and/or AAAA of ``name``, queried together; either one answering is enough."""
        types = {
            AddressOrder.IPV4_ONLY: ("A",),
            AddressOrder.IPV6_ONLY: ("AAAA",),
        }.get(self.address_order, ("A", "AAAA"))
        results = await asyncio.gather(
            *(self._query(name, rdtype) for rdtype in types), return_exceptions=True
        )
        lookup = _HostLookup()
        for rdtype, result in zip(types, results, strict=True):
            if isinstance(result, DnsTemporaryError):
                lookup.temporary = lookup.temporary or str(result)
            elif isinstance(result, BaseException):
                raise result
            elif result.nxdomain:
                lookup.permanent = lookup.permanent or _not_found(name, rdtype)
            elif not result.records:
                lookup.permanent = lookup.permanent or _no_data(name, rdtype)
            else:
                lookup.addresses += result.records
                lookup.secure = lookup.secure and result.secure
                lookup.canonical = lookup.canonical or result.canonical
        return lookup

    async def _query(self, name: str, rdtype: str) -> Answer:
        cached = self.cache.get((name, rdtype))
        if cached is not None:
            return cached
        if self._resolver is None:
            raise DnsTemporaryError(_try_again(name, rdtype, self._unavailable))
        try:
            response = await self._resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            answer, ttl = Answer(nxdomain=True), self.negative_ttl
        except dns.resolver.YXDOMAIN:
            raise DnsPermanentError(_not_found(name, rdtype)) from None
        except dns.exception.Timeout:
            why = f"no answer within {self.lifetime:g} s"
            raise DnsTemporaryError(_try_again(name, rdtype, why)) from None
        except dns.resolver.NoNameservers:
            why = "no server could answer: SERVFAIL or REFUSED"
            raise DnsTemporaryError(_try_again(name, rdtype, why)) from None
        except dns.exception.DNSException as exc:
            raise DnsTemporaryError(_try_again(name, rdtype, str(exc))) from None
        else:
            ttl = float(response.chaining_result.minimum_ttl)
            secure = self.dnssec and bool(response.response.flags & dns.flags.AD)
            if response.rrset is None:
                answer, ttl = Answer(secure=secure), min(ttl, self.negative_ttl)
            else:
                records = tuple(rdata.to_text() for rdata in response.rrset)
                canonical = response.canonical_name.to_text(omit_final_dot=True).lower()
                answer = Answer(records, secure=secure, canonical=_alias_of(name, canonical))
        self.cache.put((name, rdtype), answer, ttl)
        return answer


def _alias_of(name: str, canonical: str) -> str:
    """``canonical`` when the answer for ``name`` came through CNAMEs, else ""."""
    return "" if canonical == name.rstrip(".").lower() else canonical


def _qname(domain: str) -> str:
    """``domain`` as an absolute DNS name in ASCII (IDNA for international names)."""
    try:
        name = dns.name.from_text(domain.strip())
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise DnsPermanentError(f"{domain}: invalid domain name ({exc})") from None
    if name == dns.name.root:
        raise DnsPermanentError("empty domain name")
    return name.to_text(omit_final_dot=True).lower()


@functools.lru_cache(maxsize=4096)  # the same cached records come back for every message
def txt_string(record: str) -> str:
    """One TXT record as ``records(name, "TXT")`` gives it (``"a" "b"``, with escapes) →
    its strings joined (``ab``), octet for character; "" when it is not a TXT record."""
    try:
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, record)
    except dns.exception.DNSException:
        return ""
    if not isinstance(rdata, TXTBase):
        return ""
    return b"".join(rdata.strings).decode("latin-1")


def _parse_mx(records: Iterable[str], name: str) -> list[tuple[int, str]]:
    """``"10 mx1.example.org."`` → (10, "mx1.example.org"); the null MX target is ""."""
    out = []
    for text in records:
        pref, _, exchange = text.partition(" ")
        try:
            out.append((int(pref), exchange.rstrip(".").lower()))
        except ValueError:
            raise DnsTemporaryError(f"malformed MX record for {name}: {text!r}") from None
    return out


# ----------------------------------------------------------------- static table


class StaticFailure(StrEnum):
    """Table values that make a lookup fail the way DNS would."""

    NXDOMAIN = "nxdomain"
    NULLMX = "nullmx"
    TEMPFAIL = "tempfail"


StaticEntry = list[MailHost] | StaticFailure
DEFAULT_KEY = "*"
_FAILURES = {failure.value for failure in StaticFailure}
_SEPARATORS = re.compile(r"[,\s]+")


def parse_static_entry(key: str, value: str) -> StaticEntry:
    """One table value: ``host=address, ...``, bare addresses, or a failure keyword."""
    items = [item for item in _SEPARATORS.split(value.strip()) if item]
    if len(items) == 1 and items[0].lower() in _FAILURES:
        return StaticFailure(items[0].lower())
    hosts: list[MailHost] = []
    order: list[str] = []
    for item in items:
        if item.lower() in _FAILURES:
            raise ValueError(f"{item!r} must be the only value")
        name, equals, address = item.rpartition("=")
        host = _static_host(name) if equals else key
        ip = _static_address(address, item)
        if host not in order:
            order.append(host)
        hosts.append(MailHost(host, ip, 10 * (order.index(host) + 1)))
    if not hosts:
        raise ValueError("no hosts")
    return hosts


def _static_host(name: str) -> str:
    try:
        return parse_domain(name.rstrip("."), utf8=True)
    except AddressError:
        raise ValueError(f"{name!r} is not a host name") from None


def _static_address(text: str, item: str) -> str:
    try:
        return ipaddress.ip_address(text.strip("[]")).compressed
    except ValueError:
        raise ValueError(f"{item!r}: {text!r} is not an IP address (write host=address)") from None


def _static_key(text: str) -> str:
    if text in ("*", "."):
        return DEFAULT_KEY
    try:
        return parse_domain(text.rstrip("."), utf8=True)
    except AddressError as exc:
        raise ValueError(f"key {text!r}: {exc}") from None


class StaticResolver:
    """``Resolver`` over a fixed table (see the module docstring for the format)."""

    def __init__(
        self,
        table: Mapping[str, str | Sequence[MailHost]] | None = None,
        *,
        unavailable: str = "",
    ) -> None:
        """``table`` values are table-file text or MailHost lists; bad text raises ValueError.

        ``unavailable``: why the table could not be read; every lookup then defers.
        """
        self.unavailable = unavailable
        self._domains: dict[str, StaticEntry] = {}
        for raw_key, value in (table or {}).items():
            key = _static_key(raw_key)
            if isinstance(value, str):
                self._domains[key] = parse_static_entry(key, value)
            else:
                self._domains[key] = list(value)
        self._hosts: dict[str, list[str]] = {}
        for key, entry in self._domains.items():
            for host in entry if isinstance(entry, list) else []:
                if key != DEFAULT_KEY or host.name != DEFAULT_KEY:
                    addresses = self._hosts.setdefault(host.name.lower(), [])
                    addresses += [host.address] if host.address not in addresses else []

    @classmethod
    def from_file(cls, path: str | Path) -> tuple[StaticResolver, list[TableError]]:
        lines, errors = read_table(path)
        if any(error.line == 0 for error in errors):
            return cls(unavailable=f"static DNS table {errors[0]}"), errors
        table: dict[str, str] = {}
        first_line: dict[str, int] = {}
        for line in lines:
            try:
                key = _static_key(line.key)
                parse_static_entry(key, line.value)
            except ValueError as exc:
                errors.append(TableError(str(path), line.number, str(exc)))
                continue
            if key in table:
                problem = f"duplicate key {line.key!r} (first on line {first_line[key]}), ignored"
                errors.append(TableError(str(path), line.number, problem))
                continue
            table[key], first_line[key] = line.value, line.number
        errors.sort(key=lambda e: e.line)
        return cls(table), errors

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        if (ip := literal_address(domain)) is not None:
            return [MailHost(domain, ip)]
        key = self._key(domain)
        entry = self._domains.get(key)
        if entry is None and key in self._hosts:
            return [MailHost(key, address) for address in self._hosts[key]]  # implicit MX
        if entry is None:
            entry = self._domains.get(DEFAULT_KEY)
        if entry is None:
            raise DnsPermanentError(f"{_not_found(key, 'MX')} (not in the static table)")
        return self._answer(key, entry)

    async def host_addresses(self, host: str) -> list[MailHost]:
        if (ip := literal_address(host)) is not None:
            return [MailHost(host, ip)]
        key = self._key(host)
        if key in self._hosts:
            return [MailHost(key, address) for address in self._hosts[key]]
        entry = self._domains.get(key)
        if entry is None:
            entry = self._domains.get(DEFAULT_KEY)
            if isinstance(entry, list):  # "*": every other name has these addresses
                return [MailHost(key, host.address) for host in entry]
        if entry is None:
            raise DnsPermanentError(f"{_not_found(key, 'A')} (not in the static table)")
        if entry is StaticFailure.NXDOMAIN:
            raise DnsPermanentError(_not_found(key, "A"))
        if entry is StaticFailure.TEMPFAIL:
            raise DnsTemporaryError(_try_again(key, "A", "static table says tempfail"))
        raise DnsPermanentError(_no_data(key, "A"))  # a mail domain with no address of its own

    def _key(self, name: str) -> str:
        if self.unavailable:
            raise DnsTemporaryError(_try_again(name, "MX", self.unavailable))
        return name.strip().rstrip(".").lower()

    @staticmethod
    def _answer(name: str, entry: StaticEntry) -> list[MailHost]:
        if entry is StaticFailure.NXDOMAIN:
            raise DnsPermanentError(_not_found(name, "MX"))
        if entry is StaticFailure.TEMPFAIL:
            raise DnsTemporaryError(_try_again(name, "MX", "static table says tempfail"))
        if entry is StaticFailure.NULLMX:
            raise NullMxError(f"Domain {name} does not accept mail (null MX, RFC 7505)")
        assert isinstance(entry, list)
        return [
            MailHost(name if host.name == DEFAULT_KEY else host.name, host.address, host.preference)
            for host in entry
        ]


def resolver_from_settings(settings: Settings) -> tuple[Resolver, list[TableError]]:
    """The resolver the settings ask for, and the problems found in a static table."""
    if settings.dns.static_table is not None:
        return StaticResolver.from_file(settings.dns.static_table)
    trusted = settings.delivery.dane_nameservers if settings.delivery.dane_used else []
    return DnsResolver.from_settings(settings.dns, trusted=trusted), []
