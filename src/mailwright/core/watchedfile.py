"""A table file that is parsed again when it changes on disk: the one watch-and-reload
mechanism of every table (access, users, aliases, virtual, transport, generic, credentials).

``WatchedFile.current()`` returns the parsed value; at most once per ``interval``
seconds it looks at the file's identity (device, inode, size, mtime_ns: one ``stat``,
so the per-message path does not stat on every lookup) and parses the file again when
that changed, including when the file appeared or went away. ``reload()`` (SIGHUP)
parses it now. What a new parse installs:

- a file that cannot be read (a problem on line 0) keeps the value in use: a
  transient editor's rename must not open or close the gates. Before the first good
  read there is nothing to keep and the parser's answer for it is used;
- a file with bad lines installs its good lines, or with ``strict`` keeps the value in
  use (the transport table: a half-read routing table must not send mail the wrong way);
- a good file installs its value.

Every problem of a new version is logged once, as ``file:line: problem`` (after
``name: `` when the table has a name), in an empty
logging context (it is about the file, not about the message whose lookup noticed it).
``discard`` is called with a value that was replaced (to close a database handle).
Trusts its parser to report bad lines as ``TableError``; reads no settings.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from mailwright.core.tablefile import TableError

T = TypeVar("T")
Parser = Callable[[Path], tuple[T, list[TableError]]]
Stamp = tuple[int, int, int, int]

CHECK_INTERVAL = 1.0  # seconds between two looks at a file

log = logging.getLogger("mailwright.tables")


def stamp_of(path: Path) -> Stamp | None:
    """The identity of ``path`` now (device, inode, size, mtime_ns); None when absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class WatchedFile(Generic[T]):
    """The parsed contents of ``path``, kept fresh; safe to share between threads."""

    def __init__(
        self,
        path: Path,
        parse: Parser[T],
        empty: T,
        *,
        interval: float = CHECK_INTERVAL,
        strict: bool = False,
        name: str = "",
        discard: Callable[[T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.parse = parse
        self.interval = interval
        self.strict = strict
        self.name = name  # what the log lines call the file ("transport table")
        self.errors: list[TableError] = []  # the problems of the file's latest version
        self.reloads = 0  # how many times a new value was installed
        self._discard = discard
        self._clock = clock
        self._value = empty
        self._loaded = False  # the value in use came from a readable file
        self._stamp: Stamp | None = None
        self._checked = float("-inf")
        self._lock = threading.Lock()
        self.reload()

    def current(self) -> T:
        """The value in use, after a look at the file when ``interval`` has passed."""
        now = self._clock()
        if now - self._checked < self.interval:
            return self._value  # the hot path: no lock, no stat
        with self._lock:
            if now - self._checked >= self.interval:
                self._checked = now
                if stamp_of(self.path) != self._stamp:
                    self._load()
            return self._value

    def reload(self) -> list[TableError]:
        """Parse the file now (start-up, SIGHUP); returns (and logs) its problems."""
        with self._lock:
            self._checked = self._clock()
            self._load()
            return self.errors

    def _load(self) -> None:
        contextvars.Context().run(self._load_unattributed)

    def _load_unattributed(self) -> None:
        self._stamp = stamp_of(self.path)  # before reading: a change while parsing is seen
        value, errors = self.parse(self.path)
        self.errors = errors
        prefix = f"{self.name}: " if self.name else ""
        for error in errors:
            log.error("%s%s", prefix, error)
        unreadable = any(e.line == 0 for e in errors)
        if self._loaded and (unreadable or (errors and self.strict)):
            log.error("%s%s: keeping the table in use", prefix, self.path)
            return
        old, self._value, self._loaded = self._value, value, not unreadable
        self.reloads += 1
        if self.reloads > 1:
            log.info("%s%s: loaded", prefix, self.path)
            if self._discard is not None and old is not value:
                self._discard(old)
