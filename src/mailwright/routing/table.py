"""Reading ``key value`` table files (transport, credentials, static DNS), line by line.

The format shared by Sendmail's makemap sources and Postfix's postmap sources:
one entry per line, the key, white space, the value; blank lines and ``#``
comment lines are ignored (``core.tablefile`` finds the entry lines). Trusts
nothing in the file: every problem becomes a ``TableError`` naming file, line and
problem, and the line is skipped; a file that cannot be read is one
``TableError`` with line 0. Reads no settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mailwright.core.tablefile import TableError, entry_lines

__all__ = ["TableError", "TableLine", "keyed_entries", "read_table", "split_table"]

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class TableLine:
    """One entry as written: its line number, key and (stripped) value."""

    number: int
    key: str
    value: str


def read_table(path: str | os.PathLike[str]) -> tuple[list[TableLine], list[TableError]]:
    """Entries and problems of the file at ``path``."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return [], [TableError(name, 0, f"cannot read: {exc.strerror or exc}")]
    return split_table(data, name)


def split_table(data: bytes, name: str) -> tuple[list[TableLine], list[TableError]]:
    """Entries and problems of table text ``data`` (``name`` labels the errors)."""
    entries: list[TableLine] = []
    errors: list[TableError] = []
    for number, line in entry_lines(data, name, errors):
        parts = line.split(None, 1)
        if len(parts) < 2:
            errors.append(
                TableError(name, number, f"{parts[0]!r} has no value (expected 'key value')")
            )
            continue
        entries.append(TableLine(number, parts[0], parts[1].strip()))
    return entries, errors


def keyed_entries(
    lines: list[TableLine],
    errors: list[TableError],
    name: str,
    parse_key: Callable[[str], str],
    parse_value: Callable[[str], V],
) -> dict[str, V]:
    """The entries by normalised key; a line whose key or value does not parse (their
    ``ValueError`` is the problem) or whose key came before is added to ``errors``,
    which end up in line order."""
    entries: dict[str, V] = {}
    first_line: dict[str, int] = {}
    for line in lines:
        try:
            key = parse_key(line.key)
            value = parse_value(line.value)
        except ValueError as exc:
            errors.append(TableError(name, line.number, str(exc)))
            continue
        if key in entries:
            problem = f"duplicate key {line.key!r} (first on line {first_line[key]}), ignored"
            errors.append(TableError(name, line.number, problem))
            continue
        entries[key] = value
        first_line[key] = line.number
    errors.sort(key=lambda e: e.line)
    return entries
