"""The virtual user table, in the spirit of Sendmail's virtusertable.

One ``key  target`` per line (``routing.table`` format). Keys, tried in this order
for ``user+detail@domain``:

    user+detail@domain    the exact address
    user+*@domain         any detail of user
    user@domain           the user, whatever the detail
    @domain               catch-all for the domain

Targets: a local name (``alice``: aliased, forwarded and delivered here), an
address (``bob@example.org``), or ``error:5.1.1 text`` (also ``error:5.7.1:550
text`` and ``error:550 5.1.1 text``), refused at RCPT time. In a target, ``%1`` is
the user (without detail), ``%2`` the detail and ``%3`` ``+detail``. Keys and users
are case-insensitive. The file is re-read when it changes; bad lines are reported
as ``file:line: problem`` and skipped. Settings: ``routing.virtual_user_table``,
``routing.virtual_domains`` (read by ``routing.resolution``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mailwright.core.reply import Reply
from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.items import ItemKind, parse_items
from mailwright.routing.table import TableError, read_table
from mailwright.routing.transport import parse_error


@dataclass(frozen=True, slots=True)
class VirtualMatch:
    key: str  # the key that matched, e.g. "@example.org"
    target: str = ""  # address or local name, %1 %2 %3 substituted
    error: Reply | None = None


@dataclass(slots=True)
class _Entries:
    targets: dict[str, str | Reply] = field(default_factory=dict)
    domains: set[str] = field(default_factory=set)


def split_detail(local: str) -> tuple[str, str]:
    """``user+detail`` → (user, detail); no ``+`` → (local, "")."""
    user, plus, detail = local.partition("+")
    return (user, detail) if plus and user else (local, "")


class VirtualTable:
    def __init__(self, path: Path) -> None:
        self.file: WatchedFile[_Entries] = WatchedFile(path, parse_virtual_table, _Entries())

    @property
    def domains(self) -> set[str]:
        """Domains that have at least one key in the table."""
        return self.file.current().domains

    def lookup(self, address: str) -> VirtualMatch | None:
        local, _, domain = address.rpartition("@")
        local, domain = local.lower(), domain.lower()
        user, detail = split_detail(local)
        entries = self.file.current().targets
        keys = [f"{local}@{domain}"]
        if detail:
            keys += [f"{user}+*@{domain}", f"{user}@{domain}"]
        keys.append(f"@{domain}")
        for key in keys:
            value = entries.get(key)
            if value is None:
                continue
            if isinstance(value, Reply):
                return VirtualMatch(key, error=value)
            target = (
                value.replace("%1", user)
                .replace("%2", detail)
                .replace("%3", f"+{detail}" if detail else "")
            )
            return VirtualMatch(key, target)
        return None


def parse_virtual_table(path: Path) -> tuple[_Entries, list[TableError]]:
    lines, problems = read_table(path)
    out = _Entries()
    name = str(path)
    for line in lines:
        key = line.key.lower()
        _, at, domain = key.rpartition("@")
        if not at or not domain or "%" in key:
            problems.append(
                TableError(name, line.number, f"{line.key}: key must be user@domain or @domain")
            )
            continue
        try:
            value = _target(line.value)
        except ValueError as exc:
            problems.append(TableError(name, line.number, str(exc)))
            continue
        if key in out.targets:
            problems.append(TableError(name, line.number, f"Warning: duplicate key {key}"))
            continue
        out.targets[key] = value
        out.domains.add(domain)
    return out, problems


def _target(text: str) -> str | Reply:
    if text.lower().startswith("error:"):
        return parse_error(text[6:])
    probe = text.replace("%1", "x").replace("%2", "x").replace("%3", "")
    items, bad = parse_items(probe)
    if bad:
        raise ValueError(bad[0])
    if len(items) != 1 or items[0].kind is not ItemKind.ADDRESS:
        raise ValueError(f"{text}: one address or local name per entry")
    return text
