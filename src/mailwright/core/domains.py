"""A set of domain names as the configuration lists them: ``example.org`` matches
itself, ``.example.org`` every subdomain. Case-insensitive; a trailing dot is ignored.

Used by routing (local and relay domains) and policy (relay control, milter macros).
Pure data; reads no settings itself.
"""

from __future__ import annotations

from collections.abc import Iterable


class DomainSet:
    """Exact domains plus ``.suffix`` entries that match every subdomain."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.suffixes: list[str] = []
        for raw in entries:
            entry = raw.lower().rstrip(".")
            if entry.startswith("."):
                self.suffixes.append(entry)
            elif entry:
                self.exact.add(entry)

    def __contains__(self, domain: object) -> bool:
        if not isinstance(domain, str):
            return False
        domain = domain.lower()
        return domain in self.exact or any(domain.endswith(s) for s in self.suffixes)
