"""A static ``Resolver`` for tests: a table of domains to mail hosts, no DNS at all.

A legitimate resolver (a fixed table is what a DNS-less host would use), with
the same failure vocabulary as the real one: a domain mapped to an exception
raises it (``DnsTemporaryError``, ``NullMxError``, ``DnsPermanentError``); an
unknown name is ``DnsPermanentError`` (NXDOMAIN). Lookups are counted.
"""

from __future__ import annotations

from collections import Counter

from mailwright.routing.resolver import DnsPermanentError, MailHost

Entry = list[MailHost] | Exception


class StaticResolver:
    def __init__(
        self,
        mx: dict[str, Entry] | None = None,
        hosts: dict[str, Entry] | None = None,
    ) -> None:
        self.mx = {k.lower(): v for k, v in (mx or {}).items()}
        self.hosts = {k.lower(): v for k, v in (hosts or {}).items()}
        self.lookups: Counter[str] = Counter()

    async def mail_hosts(self, domain: str) -> list[MailHost]:
        self.lookups[f"MX {domain}"] += 1
        entry = self.mx.get(domain.lower())
        if entry is None:
            return await self.host_addresses(domain)  # implicit MX
        return self._answer(entry)

    async def host_addresses(self, host: str) -> list[MailHost]:
        self.lookups[f"A {host}"] += 1
        entry = self.hosts.get(host.lower())
        if entry is None:
            raise DnsPermanentError(f"{host}: NXDOMAIN")
        return self._answer(entry)

    @staticmethod
    def _answer(entry: Entry) -> list[MailHost]:
        if isinstance(entry, Exception):
            raise entry
        return list(entry)
