"""A table file that is parsed again when it changes on disk (no restart, no signal).

``WatchedFile`` keeps the parsed value of a file together with the file's identity
(device, inode, size, mtime) and looks at that identity at most once per
``check_interval``; a changed file is parsed again with the given parser. A file
that became unreadable keeps the last good value and logs the problem once. Used
for the virtual user and virtual mailbox tables. Trusts its parser to report bad
lines; reads no settings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from mailwright.routing.table import TableError

log = logging.getLogger("mailwright.routing")

T = TypeVar("T")
Parser = Callable[[Path], tuple[T, list[TableError]]]


class WatchedFile(Generic[T]):
    def __init__(
        self,
        path: Path,
        parse: Parser[T],
        empty: T,
        check_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.problems: list[TableError] = []
        self._parse = parse
        self._value = empty
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int, int] | None = None
        self._checked: float | None = None

    def get(self) -> T:
        with self._lock:
            now = self._clock()
            if self._checked is None or now - self._checked >= self._interval:
                self._checked = now
                self._refresh()
            return self._value

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stamp != (0, 0, 0, 0):
                log.error("%s: cannot read: %s", self.path, exc.strerror or exc)
            self._stamp = (0, 0, 0, 0)
            return
        stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == self._stamp:
            return
        value, problems = self._parse(self.path)
        unreadable = [p for p in problems if p.line == 0]
        for problem in problems:
            log.error("%s", problem)
        self._stamp = stamp
        self.problems = problems
        if unreadable:
            return  # keep what we had
        if self._checked is not None:
            log.info("%s: loaded", self.path)
        self._value = value
