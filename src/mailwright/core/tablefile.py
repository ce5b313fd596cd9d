"""The lines of a table file that hold entries, and the problems found in them.

Every table file Mailwright reads (transport, credentials, static DNS, access, the
SMTP AUTH users file, ...) shares this much: one entry per line, blank lines and lines
whose first non-blank character is ``#`` ignored (no trailing comments, so a value may
contain ``#``), UTF-8 text. ``entry_lines`` yields the entry lines; the format of an
entry is the caller's. Trusts nothing in the data: a line that is not UTF-8 becomes a
``TableError`` naming file and line, and is skipped. Reads no files and no settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TableError:
    """One problem in a table file, printed as ``file:line: problem``."""

    path: str
    line: int  # 0: the file as a whole (unreadable)
    problem: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.problem}"
        return f"{self.path}: {self.problem}"


def entry_lines(data: bytes, name: str, errors: list[TableError]) -> Iterator[tuple[int, str]]:
    """Line number and stripped text of each line of ``data`` that holds an entry; a
    line that is not UTF-8 is added to ``errors`` (``name`` labels it) instead."""
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            errors.append(TableError(name, number, "not valid UTF-8"))
            continue
        if line and not line.startswith("#"):
            yield number, line
