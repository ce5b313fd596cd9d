"""The router: the next hop for a recipient domain.

Order, first match wins: a local domain (``NextHop(LOCAL)``); the transport
table (exact domain, ``.parent`` keys, default); the smarthost; else SMTP to
the domain's MX (an address literal goes straight to its IP). The table can be
re-read while running (``reload``): a new file with any problem is refused and
the table in use stays. A table that could not be read at start-up defers
every non-local recipient (451 4.3.0) rather than sending mail the wrong way.

Trusts the domain to be a parsed one (``core.address``). Settings:
``routing.local_domains`` (through ``Settings.local_domains``; a leading dot
matches subdomains), ``routing.transport_table``, ``routing.smarthost``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from mailwright.config.schema import Settings
from mailwright.core.domains import DomainSet
from mailwright.core.hostport import normalize_domain
from mailwright.core.reply import Reply
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.table import TableError
from mailwright.routing.transport import (
    TransportTable,
    destination_hop,
    load_transport_table,
    parse_smarthost,
)


class Router:
    """Domain → ``NextHop``; safe to share between tasks (``reload`` swaps one reference)."""

    def __init__(
        self,
        local_domains: Iterable[str],
        table: TransportTable | None = None,
        smarthost: NextHop | None = None,
        table_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.local_domains = DomainSet(local_domains)
        self.table = table or TransportTable()
        self.smarthost = smarthost
        self.table_path = Path(table_path) if table_path is not None else None
        self.unavailable: Reply | None = None  # set when the table file could not be read

    @classmethod
    def from_settings(cls, settings: Settings) -> tuple[Router, list[TableError]]:
        """The router the settings describe, and the problems found in its table file."""
        routing = settings.routing
        smarthost = parse_smarthost(routing.smarthost) if routing.smarthost else None
        router = cls(
            settings.local_domains, smarthost=smarthost, table_path=routing.transport_table
        )
        return router, router.load()

    def route(self, domain: str) -> NextHop:
        domain = normalize_domain(domain)
        if not domain or domain in self.local_domains:
            return NextHop(Transport.LOCAL)
        hop = self.table.lookup(domain)
        if hop is not None:
            return hop
        if self.unavailable is not None:
            return NextHop(Transport.ERROR, error=self.unavailable)
        if self.smarthost is not None:
            return self.smarthost
        return destination_hop(domain)

    def load(self) -> list[TableError]:
        """Read the table file at start-up: keep its good lines, report the bad ones."""
        if self.table_path is None:
            return []
        table, errors = load_transport_table(self.table_path)
        self._install(table, errors)
        return errors

    def reload(self) -> list[TableError]:
        """Re-read the table file; if it has any problem, keep the table in use.

        Returns the problems (empty: the new table is in use).
        """
        if self.table_path is None:
            return []
        table, errors = load_transport_table(self.table_path)
        if not errors or self.unavailable is not None:
            self._install(table, errors)
        return errors

    def _install(self, table: TransportTable, errors: list[TableError]) -> None:
        unreadable = next((e for e in errors if e.line == 0), None)
        if unreadable is not None:
            self.table = TransportTable()
            self.unavailable = Reply.of(451, "4.3.0", f"Transport table unavailable: {unreadable}")
        else:
            self.table = table
            self.unavailable = None
