"""A static DNS for SPF tests: the RFC 7208 test suite's zone data answering ``core.spf``.

The suite's conventions (rfc7208-tests.yml and its driver in pyspf): a name maps to a
list of records ``{TYPE: value}`` or the word ``TIMEOUT``; a ``TIMEOUT`` item makes every
query of the name time out unless records of the asked type come before it, and a value
``TIMEOUT`` makes queries of that type time out. Type SPF is never queried (RFC 7208),
but at a name without any TXT item its records are served as TXT (the suite's
"auto-magic duplication", so one zone tests both kinds of implementation); ``TXT: NONE``
is no TXT record and stops that. TXT values are strings or lists of strings (joined
without spaces), MX values ``[preference, name]``. CNAMEs are followed as a resolver
would (a loop ends in no data). Names not in the zone are NXDOMAIN. Lookups are counted.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mailwright.core.spf import Answer, Query

TIMEOUT = "TIMEOUT"
MAX_CNAMES = 8


def _value(rdtype: str, value: Any) -> str:
    if rdtype in ("TXT", "SPF"):
        return "".join(value) if isinstance(value, list) else str(value)
    if rdtype == "MX":
        return str(value[1]).rstrip(".")
    return str(value).rstrip(".") if rdtype in ("PTR", "CNAME") else str(value)


class SuiteZone:
    """The suite's ``zonedata`` of one scenario as a lookup: ``zone.lookup(query) -> Answer``."""

    def __init__(self, zonedata: dict[str, list[Any]] | None) -> None:
        self.names: dict[str, list[tuple[str, str]]] = {}
        for name, items in (zonedata or {}).items():
            self.names[name.lower().rstrip(".")] = self._records(items or [])
        self.queries: Counter[tuple[str, str]] = Counter()

    @staticmethod
    def _records(items: list[Any]) -> list[tuple[str, str]]:
        """(type, value) in order, TIMEOUT items kept as ("TIMEOUT", ""); SPF → TXT."""
        out: list[tuple[str, str]] = []
        has_txt = any(isinstance(i, dict) and "TXT" in i for i in items)
        for item in items:
            if item == TIMEOUT:
                out.append((TIMEOUT, ""))
                continue
            for rdtype, value in item.items():
                if value == "NONE":
                    continue
                if rdtype == "SPF":
                    if not has_txt:
                        out.append(("TXT", TIMEOUT if value == TIMEOUT else _value("TXT", value)))
                    continue
                out.append((rdtype, TIMEOUT if value == TIMEOUT else _value(rdtype, value)))
        return out

    def lookup(self, query: Query) -> Answer:
        self.queries[(query.name, query.rdtype)] += 1
        return self._answer(query.name.lower().rstrip("."), query.rdtype, 0)

    def _answer(self, name: str, rdtype: str, depth: int) -> Answer:
        if name not in self.names:
            return Answer(nxdomain=True)
        records: list[str] = []
        for t, value in self.names[name]:
            if t == TIMEOUT:
                if records:
                    break
                return Answer(error="timeout")
            if t == "CNAME" and rdtype != "CNAME":
                if depth >= MAX_CNAMES:
                    return Answer()
                return self._answer(value.lower(), rdtype, depth + 1)
            if t == rdtype:
                if value == TIMEOUT:
                    return Answer(error="timeout")
                records.append(value)
        return Answer(tuple(records))
