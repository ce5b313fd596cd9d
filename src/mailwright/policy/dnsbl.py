"""DNS blocklists (DNSBL, RFC 5782): clients listed in a configured zone are refused at RCPT.

Sendmail's ``FEATURE(`dnsbl')`` and Postfix's ``reject_rbl_client``. The client's
address is looked up as ``<reversed address>.<zone>`` (IPv4: octets reversed,
``2.0.0.127.zen.example``; IPv6: 32 nibbles reversed) for an A record, in every
zone at once, once per session: started at connect, awaited at the first RCPT,
bounded by ``dnsbl.timeout`` for the whole check; the first listing found ends it.
An A answer counts as a listing when it is in 127.0.0.0/8 except 127.0.0.1, or, for
a zone written ``zone=127.0.0.2,127.0.0.10/31``, when it is one of those addresses or
networks.
Answers in 127.255.255.0/24 are Spamhaus' "query refused" codes (e.g. from a public
resolver): logged and never counted.

A listed client gets the ``dnsbl.reply`` to every RCPT except to postmaster (bare or
at a local domain: RFC 5321 4.5.1 wants postmaster reachable), which the session logs
as any refusal (``ruleset=check_rcpt ... reject=``) and counts in the rejection
metrics. The reply is a template: ``{ip}`` the client address, ``{zone}`` the zone
that listed it, ``{txt}`` the zone's TXT record for the entry (fetched only when the
template uses it; "" when none). Never checked: local submission, clients trusted to
relay (loopback, ``relay.networks``, an access ``Connect:`` RELAY), authenticated
clients, ``Connect:`` OK entries of the access table, clients in ``dnsbl.allow``,
and sessions on listeners other than ``smtp`` kind.

Fails open: a DNS failure or a check that runs out of time never refuses mail (it is
logged at debug/info level). Trusts nothing DNS returns: answers are parsed as
addresses, TXT text is cut to printable ASCII. Settings: ``dnsbl.*``,
``routing.local_domains``; the lookups use ``dns.*`` through ``routing.mx.DnsResolver``.
The settings' syntax (zones, the reply template) is ``config.dnsbl``, checked when they load.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from mailwright.config.dnsbl import (
    MAX_TXT,
    REFUSED_NET,
    ReplyTemplate,
    Zone,
    parse_reply,
    parse_zone,
)
from mailwright.config.schema import Settings
from mailwright.core.domains import DomainSet
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.policy.access import AccessTable, Action
from mailwright.policy.hooks import Hook, SessionInfo, Transaction
from mailwright.policy.relay import Network, parse_networks, unchecked
from mailwright.routing.mx import DnsResolver, txt_string
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError

log = logging.getLogger("mailwright.policy.dnsbl")

# (name, type) -> record texts, [] for NXDOMAIN / no data; DnsTemporaryError when DNS fails
Lookup = Callable[[str, str], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---- answers (pure) --------------------------------------------------------------------
def client_ip(text: str) -> IPAddress | None:
    """The client address to look up (IPv4-mapped IPv6 as IPv4); None if not an address."""
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def query_name(ip: IPAddress, zone: str) -> str:
    """``192.0.2.1`` -> ``1.2.0.192.<zone>``; IPv6 as 32 reversed nibbles (RFC 5782 2.1, 2.4)."""
    suffix = ".in-addr.arpa" if ip.version == 4 else ".ip6.arpa"
    return f"{ip.reverse_pointer.removesuffix(suffix)}.{zone}"


@dataclass(frozen=True, slots=True)
class ZoneAnswer:
    """What a zone's A records say: the first answer that counts, and refusal codes seen."""

    listed: str | None = None
    refused: tuple[str, ...] = ()


def read_answer(zone: Zone, records: Iterable[str]) -> ZoneAnswer:
    listed: str | None = None
    refused: list[str] = []
    for text in records:
        try:
            address = ipaddress.IPv4Address(text.strip())
        except ValueError:
            continue  # not an A record's text: nothing to count
        if address in REFUSED_NET:
            refused.append(str(address))
        elif listed is None and zone.counts(address):
            listed = str(address)
    return ZoneAnswer(listed, tuple(refused))


def txt_text(records: Sequence[str]) -> str:
    """TXT records (presentation form) as one line of printable ASCII, at most MAX_TXT long."""
    text = " ".join(filter(None, map(txt_string, records)))
    # control characters (CR, LF: no reply injection) become spaces, non-ASCII "?"
    text = "".join(c if " " <= c <= "~" else " " if c <= "\x7f" else "?" for c in text)
    return " ".join(text.split())[:MAX_TXT]


# ---- the check -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Listing:
    """A client found on a blocklist."""

    ip: str
    zone: str
    answer: str  # the A record that counted
    txt: str = ""


class Blocklists:
    """``await blocklists.check(ip)``: the first zone to answer with a listing of the
    client, or None; never raises for DNS trouble."""

    def __init__(
        self, zones: Sequence[Zone], lookup: Lookup, timeout: float, want_txt: bool = False
    ) -> None:
        self.zones = list(zones)
        self.lookup = lookup
        self.timeout = timeout
        self.want_txt = want_txt

    async def check(self, address: str) -> Listing | None:
        ip = client_ip(address)
        if ip is None or not self.zones:
            return None
        deadline = time.monotonic() + self.timeout
        tasks = {asyncio.ensure_future(self._zone(zone, ip)): zone for zone in self.zones}
        pending = set(tasks)
        try:
            while pending and (left := deadline - time.monotonic()) > 0:
                done, pending = await asyncio.wait(
                    pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                # a listing ends the check: the other zones need not answer
                for task in sorted(done, key=lambda t: self.zones.index(tasks[t])):
                    if (listed := task.result()) is not None:
                        zone = tasks[task].name
                        txt = await self._txt(query_name(ip, zone), deadline)
                        return Listing(str(ip), zone, listed, txt)
        finally:
            for task in pending:
                task.cancel()
        for task in pending:
            log.info(
                "dnsbl: no answer from %s for [%s] within %gs: not counted",
                tasks[task].name,
                ip,
                self.timeout,
            )
        return None

    async def _zone(self, zone: Zone, ip: IPAddress) -> str | None:
        name = query_name(ip, zone.name)
        try:
            records = await self.lookup(name, "A")
        except (DnsTemporaryError, DnsPermanentError) as exc:
            log.info("dnsbl: %s: lookup failed, not counted: %s", zone.name, exc)
            return None
        answer = read_answer(zone, records)
        if answer.refused:
            log.info(
                "dnsbl: %s refused the query for [%s] (%s): not counted; use your own "
                "resolver or the zone's registered access",
                zone.name,
                ip,
                ", ".join(answer.refused),
            )
        if answer.listed is None:
            log.debug("dnsbl: [%s] not listed in %s", ip, zone.name)
        return answer.listed

    async def _txt(self, name: str, deadline: float) -> str:
        if not self.want_txt:
            return ""
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                return txt_text(await self.lookup(name, "TXT"))
        except (TimeoutError, DnsTemporaryError, DnsPermanentError) as exc:
            log.debug("dnsbl: no TXT for %s: %s", name, exc or "timeout")
            return ""


def _loop_time(deadline: float) -> float:
    """A ``time.monotonic`` deadline on the running loop's clock."""
    return asyncio.get_running_loop().time() + (deadline - time.monotonic())


# ---- the policy hook -----------------------------------------------------------------------
class BlocklistPolicy(Hook):
    """Starts the check at connect, refuses RCPT (but postmaster) when the client is listed."""

    name = "dnsbl"

    def __init__(
        self,
        blocklists: Blocklists,
        reply: ReplyTemplate,
        local_domains: DomainSet,
        allow: Sequence[Network] = (),
        access: Callable[[], AccessTable] | None = None,
    ) -> None:
        self.blocklists = blocklists
        self.reply = reply
        self.local_domains = local_domains
        self.allow = list(allow)
        self.access = access
        self._checks: dict[str, asyncio.Task[Listing | None]] = {}

    def _exempt(self, session: SessionInfo) -> bool:
        if unchecked(session, self.allow):
            return True
        if self.access is None:
            return False
        rule = self.access().connect(session.client_address, session.client_name)
        return rule is not None and rule.action in (Action.OK, Action.RELAY)

    async def connect(self, session: SessionInfo) -> Reply | None:
        if not self._exempt(session):
            self._start(session)
        return None

    def _start(self, session: SessionInfo) -> asyncio.Task[Listing | None]:
        task = self._checks.get(session.session_id)
        if task is None:
            task = asyncio.ensure_future(self.blocklists.check(session.client_address))
            self._checks[session.session_id] = task
        return task

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        address = recipient.address
        if address.is_postmaster and (not address.domain or address.domain in self.local_domains):
            return None
        if self._exempt(session):
            return None
        try:
            listing = await asyncio.shield(self._start(session))
        except Exception:  # a bug, not DNS: never a reason to refuse mail
            log.exception("dnsbl: check for [%s] failed", session.client_address)
            return None
        if listing is None:
            return None
        log.debug("dnsbl: [%s] listed in %s (%s)", listing.ip, listing.zone, listing.answer)
        return self.reply.render(listing.ip, listing.zone, listing.txt)

    async def close(self, session: SessionInfo) -> None:
        task = self._checks.pop(session.session_id, None)
        if task is not None:
            task.cancel()


def from_settings(
    settings: Settings, access: Callable[[], AccessTable] | None = None
) -> BlocklistPolicy | None:
    """The hook for ``[dnsbl]``, or None when no zone is configured (the default)."""
    section = settings.dnsbl
    if not section.zones:
        return None
    reply = parse_reply(section.reply)
    resolver = DnsResolver.from_settings(settings.dns)
    zones = [parse_zone(text) for text in section.zones]
    blocklists = Blocklists(zones, resolver.records, section.timeout, reply.wants_txt)
    return BlocklistPolicy(
        blocklists,
        reply,
        DomainSet(settings.local_domains),
        parse_networks(section.allow),
        access,
    )
