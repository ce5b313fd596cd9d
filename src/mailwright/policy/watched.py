"""A table file that is reread when it changes on disk (access table, users file).

``current()`` stats the file (at most once per ``interval`` seconds) and parses it
again when its inode, size or modification time changed, so an edit takes effect
without a restart; ``reload()`` (SIGHUP) forces it. Problems are logged as
``file:line: problem``; the entries of a file with bad lines are the good ones, and
a file that cannot be read at all keeps the previous entries (a transient
editor's rename must not open or close the gates). Reads no settings; callers
pass the path and the parser.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from mailwright.routing.table import TableError

T = TypeVar("T")
Parser = Callable[[Path], tuple[T, list[TableError]]]

log = logging.getLogger("mailwright.policy")


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class WatchedFile(Generic[T]):
    """The parsed contents of ``path``, kept fresh."""

    def __init__(self, path: Path, parse: Parser[T], empty: T, interval: float = 1.0) -> None:
        self.path = path
        self.parse = parse
        self.interval = interval
        self.errors: list[TableError] = []
        self._value = empty
        self._loaded = False
        self._signature: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self.reload()

    def current(self) -> T:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            if _signature(self.path) != self._signature:
                self.reload()
        return self._value

    def reload(self) -> list[TableError]:
        """Parse the file now; returns (and logs) its problems."""
        self._checked = time.monotonic()
        signature = _signature(self.path)
        value, errors = self.parse(self.path)
        unreadable = any(e.line == 0 for e in errors)
        if not unreadable or not self._loaded:
            self._value = value
            self._loaded = not unreadable
        self._signature = signature
        self.errors = errors
        for error in errors:
            log.error("%s", error)
        if not errors:
            log.info("%s: loaded", self.path)
        return errors
