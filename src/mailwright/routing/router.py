"""The router: the next hop for a recipient domain.

Order, first match wins: a local domain (``NextHop(LOCAL)``); the transport
table (exact domain, ``.parent`` keys, default); the smarthost; else SMTP to
the domain's MX (an address literal goes straight to its IP). The table file is
followed while running (``core.watchedfile``: an edit takes effect within a second,
no signal needed; ``reload`` reads it now): a new file with any problem is refused
and the table in use stays. A table that could not be read at start-up defers
every non-local recipient (451 4.3.0) rather than sending mail the wrong way.

Trusts the domain to be a parsed one (``core.address``). Settings:
``routing.local_domains`` (through ``Settings.local_domains``; a leading dot
matches subdomains), ``routing.transport_table``, ``routing.smarthost``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mailwright.config.schema import Settings
from mailwright.core.domains import DomainSet
from mailwright.core.hostport import normalize_domain
from mailwright.core.reply import Reply
from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.table import TableError
from mailwright.routing.transport import (
    TransportTable,
    destination_hop,
    load_transport_table,
    parse_smarthost,
)


@dataclass(frozen=True, slots=True)
class Routes:
    """One version of the transport table file; ``unavailable`` when it could not be read."""

    table: TransportTable = field(default_factory=TransportTable)
    unavailable: Reply | None = None


def read_routes(path: Path) -> tuple[Routes, list[TableError]]:
    table, errors = load_transport_table(path)
    unreadable = next((e for e in errors if e.line == 0), None)
    if unreadable is not None:
        reply = Reply.of(451, "4.3.0", f"Transport table unavailable: {unreadable}")
        return Routes(unavailable=reply), errors
    return Routes(table), errors


class Router:
    """Domain → ``NextHop``; safe to share between tasks (the table file is a
    ``WatchedFile``: a new version replaces one reference)."""

    def __init__(
        self,
        local_domains: Iterable[str],
        table: TransportTable | None = None,
        smarthost: NextHop | None = None,
        table_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.local_domains = DomainSet(local_domains)
        self.smarthost = smarthost
        self.table_path = Path(table_path) if table_path is not None else None
        self._fixed = Routes(table or TransportTable())
        self._file: WatchedFile[Routes] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> tuple[Router, list[TableError]]:
        """The router the settings describe, and the problems found in its table file."""
        routing = settings.routing
        smarthost = parse_smarthost(routing.smarthost) if routing.smarthost else None
        router = cls(
            settings.local_domains, smarthost=smarthost, table_path=routing.transport_table
        )
        return router, router.load()

    @property
    def routes(self) -> Routes:
        return self._file.current() if self._file is not None else self._fixed

    @property
    def table(self) -> TransportTable:
        return self.routes.table

    @property
    def unavailable(self) -> Reply | None:
        """Set while the table file could not be read since start-up."""
        return self.routes.unavailable

    def route(self, domain: str) -> NextHop:
        domain = normalize_domain(domain)
        if not domain or domain in self.local_domains:
            return NextHop(Transport.LOCAL)
        routes = self.routes
        hop = routes.table.lookup(domain)
        if hop is not None:
            return hop
        if routes.unavailable is not None:
            return NextHop(Transport.ERROR, error=routes.unavailable)
        if self.smarthost is not None:
            return self.smarthost
        return destination_hop(domain)

    def load(self) -> list[TableError]:
        """Read the table file at start-up: keep its good lines, report the bad ones; from
        now on the file is followed (``core.watchedfile``, strict)."""
        if self.table_path is None:
            return []
        if self._file is None:
            self._file = WatchedFile(
                self.table_path, read_routes, Routes(), strict=True, name="transport table"
            )
            return self._file.errors
        return self._file.reload()

    def reload(self) -> list[TableError]:
        """Re-read the table file now; if it has any problem, keep the table in use.

        Returns the problems (empty: the new table is in use).
        """
        return self.load()
