"""The verified host name of an SMTP client: forward-confirmed reverse DNS.

The PTR records of the client's address name candidates; a candidate counts only when
one of its own A/AAAA records is that address again (Postfix's and Sendmail's check),
so a client cannot claim a name by controlling its reverse zone alone. The name goes
into ``Received:``, log lines (``relay=``), access rules (``Connect:host.example``) and
milter macros (``{client_name}``, ``{client_resolve}``); without one the client is
known by its address only.

The loopback addresses 127.0.0.1 and ::1 are ``localhost`` without a query (what every
host's /etc/hosts says). A lookup that fails, times out or finds no confirmed name
gives "": a name is a label, never a reason to delay or refuse mail. Trusts nothing
DNS returns. Settings: ``server.reverse_dns``, ``server.reverse_dns_timeout``, ``dns.*``.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import dns.exception
import dns.name
import dns.reversename

from mailwright.config.schema import Settings
from mailwright.routing.mx import DnsResolver
from mailwright.routing.resolver import DnsPermanentError, DnsTemporaryError, MailHost

LOCALHOST = "localhost"
_LOOPBACK = frozenset({"127.0.0.1", "::1"})
_MAX_CANDIDATES = 5  # PTR names checked; more is a misconfigured or hostile zone

PtrLookup = Callable[[str], Awaitable[list[str]]]  # reverse name -> PTR targets
AddressLookup = Callable[[str], Awaitable[list[MailHost]]]  # host name -> its addresses


def client_names_from_settings(settings: Settings) -> ClientNames:
    """DNS lookups when ``server.reverse_dns`` is on and no static table replaces DNS."""
    timeout = settings.server.reverse_dns_timeout
    if not settings.server.reverse_dns or settings.dns.static_table is not None:
        return ClientNames(None, None, timeout)
    resolver = DnsResolver.from_settings(settings.dns)
    return ClientNames(resolver.ptr, resolver.host_addresses, timeout)


class ClientNames:
    """``await names.lookup(ip)``: the client's verified host name, or ""."""

    def __init__(
        self, ptr: PtrLookup | None, addresses: AddressLookup | None, timeout: float
    ) -> None:
        self._ptr = ptr
        self._addresses = addresses
        self.timeout = timeout

    async def lookup(self, address: str) -> str:
        if address in _LOOPBACK:
            return LOCALHOST
        if self._ptr is None or self._addresses is None or not address:
            return ""
        try:
            return await asyncio.wait_for(self._confirmed(address), self.timeout)
        except (TimeoutError, DnsTemporaryError, DnsPermanentError):
            return ""

    async def _confirmed(self, address: str) -> str:
        assert self._ptr is not None and self._addresses is not None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return ""
        reverse = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
        for candidate in (await self._ptr(reverse))[:_MAX_CANDIDATES]:
            name = _host_name(candidate)
            if not name:
                continue
            try:
                hosts = await self._addresses(name)
            except (DnsTemporaryError, DnsPermanentError):
                continue
            if any(_same_address(host.address, ip) for host in hosts):
                return name
        return ""


def _host_name(target: str) -> str:
    """A PTR target as a lower-case host name without the final dot; "" if unusable."""
    try:
        name = dns.name.from_text(target)
    except (dns.exception.DNSException, UnicodeError):
        return ""
    text: str = name.to_text(omit_final_dot=True).lower()
    if not text or text == "." or any(c in text for c in "[]\\ "):
        return ""  # only what may stand in a Received: header and an access key
    return text


def _same_address(text: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == ip
    except ValueError:
        return False
