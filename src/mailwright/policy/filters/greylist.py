"""The ``greylist`` filter: defer the first attempt of an unknown (network, sender, recipient).

As milter-greylist and postgrey do: at RCPT, an unknown triplet is answered
``451 4.7.1 Greylisted, please try again in N seconds``; a retry after
``delay`` and within ``retry_window`` is accepted and the triplet is then
accepted at once for ``expire`` (refreshed by every accepted message). The
network is the client address cut to ``ipv4_prefix`` / ``ipv6_prefix`` bits
(senders with a pool of outgoing servers retry from another address). The
sender and recipient are compared lower-cased, nothing else is stripped; the
null sender (bounces) is greylisted like any other. Never greylisted:
trusted relay clients, authenticated clients, local submission, clients in
``whitelist_clients``, recipients in ``whitelist_recipients`` (``postmaster@``
and ``abuse@`` by default) and, with ``auto_whitelist`` = N, a network whose
N messages passed greylisting. Refusals are logged by the filter chain; a
triplet passing logs ``greylist=passed after N s``. The database calls run
in a worker thread. Trusts the client address the session reports.

The database is a SQLite file of this host (``database``, by default ``greylist.db`` in
the queue directory), or with ``queue.backend = "postgresql"`` the shared queue database
(``policy.greylist_postgres``), which every node sees (``database`` is then ignored). A
database error (unreachable) fails the filter, and its ``on_failure`` answers: ``451``
by default.
Settings: its ``options``, ``queue.directory`` (the default database), ``queue.backend``,
``queue.postgresql``, ``queue.postgresql_password_file``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailwright.config.schema import Seconds, Settings, cidr_list
from mailwright.core.address import Address
from mailwright.core.envelope import Recipient
from mailwright.core.reply import Reply
from mailwright.observability import maillog
from mailwright.policy.filters.base import Filter
from mailwright.policy.greylist_store import (
    GreylistDatabase,
    GreylistStore,
    GreylistTimes,
    Outcome,
    Triplet,
)
from mailwright.policy.hooks import SessionInfo, Transaction
from mailwright.policy.relay import Network, parse_networks


class GreylistOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str | None = None  # SQLite file; default greylist.db in the queue directory
    delay: Seconds = 300.0
    retry_window: Seconds = 2 * 86400.0
    expire: Seconds = 35 * 86400.0
    ipv4_prefix: int = Field(default=24, ge=0, le=32)
    ipv6_prefix: int = Field(default=64, ge=0, le=128)
    whitelist_clients: list[str] = []  # CIDR networks or addresses
    whitelist_recipients: list[str] = ["postmaster@", "abuse@"]  # "local@", "a@b", "@domain"
    auto_whitelist: int = Field(default=5, ge=0)  # 0 = off

    @field_validator("whitelist_clients")
    @classmethod
    def _clients(cls, value: list[str]) -> list[str]:
        return cidr_list(value)

    @field_validator("whitelist_recipients")
    @classmethod
    def _recipients(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item or item.count("@") > 1 or item == "@" or any(c.isspace() for c in item):
                raise ValueError(f"{item!r} is not a local part, address or @domain")
        return [item.lower() for item in value]

    @model_validator(mode="after")
    def _windows(self) -> GreylistOptions:
        if self.retry_window <= self.delay:
            raise ValueError("retry_window must be longer than delay")
        return self

    @property
    def times(self) -> GreylistTimes:
        return GreylistTimes(self.delay, self.retry_window, self.expire, self.auto_whitelist)


def client_network(address: str, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network a client address is grouped in, e.g. ``192.0.2.0/24``."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def recipient_listed(address: Address, entries: list[str]) -> bool:
    """Is the recipient in ``whitelist_recipients`` (local part, full address or @domain)?"""
    local, domain = address.local.lower(), address.domain.lower()
    for entry in entries:
        entry_local, at, entry_domain = entry.partition("@")
        if entry_local and entry_local != local:
            continue
        if at and entry_domain and entry_domain != domain:
            continue
        return True
    return False


def normalised(address: Address | None) -> str:
    return "" if address is None else str(address).lower()


class GreylistFilter(Filter):
    Options = GreylistOptions

    def __init__(
        self,
        name: str,
        options: Any,
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, options, settings)
        self.clock = clock
        self._store: GreylistDatabase | None = None
        self._whitelist: list[Network] = parse_networks(options.whitelist_clients)

    @property
    def store(self) -> GreylistDatabase:
        if self._store is None:
            self._store = self._open_store()
        return self._store

    def _open_store(self) -> GreylistDatabase:
        queue = self.settings.queue
        if queue.backend == "postgresql":  # psycopg is imported only then
            from mailwright.policy.greylist_postgres import PostgresGreylistStore
            from mailwright.queue.postgres_state import state_database

            return PostgresGreylistStore(state_database(queue), self.clock)
        options: GreylistOptions = self.options
        path = Path(options.database or queue.directory / "greylist.db")
        return GreylistStore(path, self.clock)

    def exempt(self, session: SessionInfo, recipient: Recipient) -> bool:
        """Clients and recipients that are never greylisted."""
        if session.is_local or session.trusted_relay or session.auth_user:
            return True
        options: GreylistOptions = self.options
        if recipient_listed(recipient.address, options.whitelist_recipients):
            return True
        try:
            ip = ipaddress.ip_address(session.client_address.split("%", 1)[0])
        except ValueError:
            return True  # not an IP client (a test transport): nothing to group by
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._whitelist)

    async def rcpt(
        self, session: SessionInfo, txn: Transaction, recipient: Recipient, raw_params: list[str]
    ) -> Reply | None:
        if self.exempt(session, recipient):
            return None
        options: GreylistOptions = self.options
        triplet = Triplet(
            client_network(session.client_address, options.ipv4_prefix, options.ipv6_prefix),
            normalised(txn.sender),
            normalised(recipient.address),
        )
        verdict = await asyncio.to_thread(self.store.check, triplet, options.times, txn.queue_id)
        if verdict.outcome is Outcome.PASSED:
            maillog.emit(
                txn.queue_id,
                filter=self.name,
                greylist=f"passed after {int(verdict.waited)} s",
                network=triplet.network,
                **{"from": f"<{triplet.sender}>"},
                to=f"<{triplet.recipient}>",
            )
        if verdict.accepted:
            return None
        wait = max(1, math.ceil(verdict.wait))
        return Reply.of(451, "4.7.1", f"Greylisted, please try again in {wait} seconds")
