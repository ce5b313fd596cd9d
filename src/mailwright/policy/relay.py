"""Relay control: who may send mail to which domains (never an open relay).

Clients on loopback, in ``relay.networks``, authenticated, or given ``RELAY`` by
an access table ``Connect:`` entry may relay to any domain; everyone else may
only send to local domains, ``relay.domains`` (a leading dot matches
subdomains) and ``To:`` entries of the access table that say ``RELAY``. For
those clients a local part that still routes somewhere (``user%other@local``,
``other!user@local``, ``"user@other"@local``) is refused too: a later hop could
act on it, which is how open relays were made. An address literal
(``user@[192.0.2.1]``) is local when listed in the local domains or when it names
an address a listener is bound to (``Settings.local_domains`` adds those). The
refusal is Sendmail's ``550 5.7.1 <rcpt>... Relaying denied``. Trusts the
client address from the socket, nothing the client says. Settings: ``relay.*``,
``routing.local_domains``, ``access.table``.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable

from mailwright.core.domains import DomainSet
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.policy.access import AccessTable, Action
from mailwright.policy.hooks import Hook, SessionInfo, Transaction

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
ROUTING_CHARACTERS = frozenset("%!@")  # percent hack, UUCP bang path, quoted @


def relaying_denied(recipient: Recipient) -> Reply:
    return Reply.of(550, "5.7.1", f"<{recipient.address}>... Relaying denied")


def parse_networks(entries: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


def unchecked(session: SessionInfo, allow: Iterable[Network] = ()) -> bool:
    """Whether a client's mail skips the inbound checks (SPF, DMARC, ARC, DNS blocklists):
    local submission, a listener of another kind than ``smtp``, a client trusted to relay,
    an authenticated one, or one in the check's own ``allow`` networks."""
    return (
        session.is_local
        or session.listener_kind != "smtp"
        or session.trusted_relay
        or bool(session.auth_user)
        or in_networks(session.client_address, allow)
    )


def in_networks(address: str, networks: Iterable[Network]) -> bool:
    ip = _client_ip(address)
    if ip is None:
        return False
    return any(ip.version == net.version and ip in net for net in networks)


# every session asks, and most come from a few addresses: parsed once each
@functools.lru_cache(maxsize=4096)
def _client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class RelayControl(Hook):
    name = "relay"

    def __init__(
        self,
        local_domains: DomainSet,
        relay_domains: DomainSet,
        networks: list[Network],
        access: Callable[[], AccessTable] | None = None,
    ) -> None:
        self.local_domains = local_domains
        self.relay_domains = relay_domains
        self.networks = networks
        self.access = access

    async def connect(self, session: SessionInfo) -> Reply | None:
        if session.is_local or in_networks(session.client_address, self.networks):
            session.trusted_relay = True
        return None

    def may_relay(self, session: SessionInfo, recipient: Recipient) -> bool:
        if session.trusted_relay or session.auth_user:
            return True
        address = recipient.address
        if ROUTING_CHARACTERS.intersection(address.local):
            return False
        domain = address.domain
        return (
            domain == ""  # bare "postmaster"
            or domain in self.local_domains
            or domain in self.relay_domains
            or self._access_relays(recipient)
        )

    def _access_relays(self, recipient: Recipient) -> bool:
        if self.access is None:
            return False
        rule = self.access().address("to", recipient.address)
        return rule is not None and rule.action is Action.RELAY

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        return None if self.may_relay(session, recipient) else relaying_denied(recipient)
