"""The alias file (aliases(5)): parsing it, compiling it atomically, and looking names up.

Format, as Sendmail reads it:

- ``name: item, item, ...`` (items: see ``routing.items``); names are local and
  case-insensitive (``Postmaster`` is ``postmaster``).
- A line that starts with a space or tab continues the previous entry; so does a
  line ending in a backslash.
- ``#`` starts a comment only at the beginning of a line; blank lines are ignored.
- A bad entry is reported as ``file:line: problem`` and skipped, and the build goes
  on: ``missing colon``, ``NAME... illegal alias name``, ``NAME... cannot alias
  non-local names``, ``NAME... missing value for alias``, ``Non-continuation line
  starts with space``, ``X... bad address``, ``not valid UTF-8``. A second entry for
  the same name gives ``Warning: duplicate alias name NAME`` and the first is kept.

``compile_aliases`` writes the parsed entries to a small SQLite file under a
temporary name, fsyncs it and renames it over the table in use, so a reader sees
the old table or the new one, never half of one. ``AliasTable`` opens the file
read-only and notices a rebuilt file (another inode, size or mtime, checked at
most once a second: ``core.watchedfile``) without a restart. The table records
the source's path, size and mtime; ``refresh_table`` (at start-up and on SIGHUP)
rebuilds a table whose record differs from the file ``routing.alias_file`` names
now. The summary line is Sendmail's:
``/etc/aliases: 12 aliases, longest 40 bytes, 300 bytes total`` (bytes of name plus
value, longest value).

``newaliases`` and ``sendmail -bi`` are ``cli.aliases.newaliases``; ``sendmail -bv``
is ``cli.verify`` over ``routing.resolution.verify_lines``. Trusts nothing in the source file.
Settings: ``routing.alias_file``, ``routing.alias_database`` (through
``Settings.alias_database``).
"""

from __future__ import annotations

import contextvars
import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailwright.core.watchedfile import WatchedFile
from mailwright.routing.items import Item, dump_items, load_items, parse_items
from mailwright.routing.table import TableError

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.routing")

FORMAT_VERSION = "1"
CHECK_INTERVAL = 1.0  # seconds between looks at the compiled file for a rebuild
_BATCH = 5000

Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass(frozen=True, slots=True)
class AliasEntry:
    name: str  # lower case
    items: tuple[Item, ...]
    line: int
    size: int  # octets of the value as written (Sendmail's rhssize)


@dataclass(slots=True)
class ParsedAliases:
    entries: list[AliasEntry] = field(default_factory=list)
    problems: list[TableError] = field(default_factory=list)

    @property
    def longest(self) -> int:
        return max((e.size for e in self.entries), default=0)

    @property
    def total(self) -> int:
        return sum(len(e.name.encode()) + e.size for e in self.entries)


@dataclass(slots=True)
class BuildReport:
    source: Path
    database: Path
    count: int
    longest: int
    total: int
    problems: list[TableError]
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.source}: {self.count} aliases, longest {self.longest} bytes, "
            f"{self.total} bytes total"
        )


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c in "!#$%&'*+-/=?^_`{|}~." or ord(c) > 127


# ---- parsing ------------------------------------------------------------------------------


def parse_aliases(data: bytes, name: str, progress: Progress | None = None) -> ParsedAliases:
    """Entries and problems of alias file text ``data`` (``name`` labels the problems)."""
    out = ParsedAliases()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    seen: set[str] = set()
    skipping = False  # after a bad line, its continuation lines are not reported again
    i = 0
    while i < len(lines):
        if progress is not None and i % 2000 == 0:
            progress("parse", i, len(lines))
        number = i + 1
        text, i, bad = _logical_line(lines, i)
        if bad:
            out.problems.append(TableError(name, number, "not valid UTF-8"))
            skipping = True
            continue
        if not text or text.startswith("#"):
            skipping = False
            continue
        if text[0] in " \t":
            if text.strip() and not skipping:
                out.problems.append(
                    TableError(name, number, "Non-continuation line starts with space")
                )
                skipping = True
            continue
        skipping = False
        parts = [text]
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            more, i, bad = _logical_line(lines, i)
            if bad:
                out.problems.append(TableError(name, i, "not valid UTF-8"))
                continue
            parts.append(more)
        entry = _entry(parts, number, name, out.problems)
        if entry is None:
            continue
        if entry.name in seen:
            out.problems.append(
                TableError(name, number, f"Warning: duplicate alias name {entry.name}")
            )
            continue
        seen.add(entry.name)
        out.entries.append(entry)
    if progress is not None:
        progress("parse", len(lines), len(lines))
    return out


def _logical_line(lines: list[bytes], i: int) -> tuple[str, int, bool]:
    """Line ``i`` joined with the lines a trailing backslash continues; (text, next, bad)."""
    raw = lines[i].rstrip(b"\r")
    i += 1
    while raw.endswith(b"\\") and i < len(lines):
        raw = raw[:-1] + lines[i].rstrip(b"\r")
        i += 1
    try:
        return raw.decode("utf-8"), i, False
    except UnicodeDecodeError:
        return "", i, True


def _entry(
    parts: list[str], number: int, name: str, problems: list[TableError]
) -> AliasEntry | None:
    def problem(text: str) -> None:
        problems.append(TableError(name, number, text))

    lhs, colon, first = parts[0].partition(":")
    if not colon:
        problem("missing colon")
        return None
    lhs = lhs.strip()
    if not lhs:
        problem("missing alias name")
        return None
    if "@" in lhs:
        problem(f"{lhs}... cannot alias non-local names")
        return None
    if not all(_is_name_char(c) for c in lhs):
        problem(f"{lhs}... illegal alias name")
        return None
    value = "\n".join([first, *parts[1:]])
    if not value.strip():
        problem(f"{lhs}... missing value for alias")
        return None
    items, bad = parse_items(value)
    for text in bad:
        problem(text)
    if not items:
        if not bad:
            problem(f"{lhs}... missing value for alias")
        return None
    size = len(first.lstrip().encode()) + sum(len(p.encode()) for p in parts[1:])
    return AliasEntry(lhs.lower(), tuple(items), number, size)


# ---- compiling ----------------------------------------------------------------------------


def compile_aliases(source: Path, database: Path, progress: Progress | None = None) -> BuildReport:
    """Parse ``source`` and replace ``database`` with the result, atomically.

    Raises ``OSError`` when the source cannot be read or the table cannot be written
    (the table in use stays as it was);
    bad lines are only reported (``BuildReport.problems``).
    """
    started = time.monotonic()
    with open(source, "rb") as f:
        st = os.fstat(f.fileno())
        data = f.read()
    parsed = parse_aliases(data, str(source), progress)
    meta = {
        "format": FORMAT_VERSION,
        "source": str(source),
        "source_uid": str(st.st_uid),
        "source_mtime_ns": str(st.st_mtime_ns),
        "source_size": str(st.st_size),
        "count": str(len(parsed.entries)),
        "built_at": str(time.time()),
    }
    try:
        _write_database(database, parsed.entries, meta, progress)
    except sqlite3.Error as exc:  # e.g. the disk is full: an OSError for the caller
        raise OSError(errno.EIO, f"cannot write {database}: {exc}", str(database)) from exc
    return BuildReport(
        source=source,
        database=database,
        count=len(parsed.entries),
        longest=parsed.longest,
        total=parsed.total,
        problems=parsed.problems,
        seconds=time.monotonic() - started,
    )


def _write_database(
    database: Path, entries: list[AliasEntry], meta: dict[str, str], progress: Progress | None
) -> None:
    database.parent.mkdir(parents=True, exist_ok=True)
    tmp = database.with_name(f".{database.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode = OFF")  # a new private file: nothing to roll back
            conn.execute("PRAGMA synchronous = OFF")  # fsynced once, below, before the rename
            conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute(
                "CREATE TABLE aliases (name TEXT PRIMARY KEY, items TEXT NOT NULL) WITHOUT ROWID"
            )
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            for start in range(0, len(entries), _BATCH):
                batch = entries[start : start + _BATCH]
                conn.executemany(
                    "INSERT INTO aliases VALUES (?, ?)",
                    [(e.name, dump_items(list(e.items))) for e in batch],
                )
                if progress is not None:
                    progress("write", start + len(batch), len(entries))
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, 0o644)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, database)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(database.parent)


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- looking up ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Compiled:
    """one open version of the compiled table."""

    conn: sqlite3.Connection
    meta: dict[str, str]


class AliasTable:
    """Read-only view of the compiled table that follows rebuilds (``core.watchedfile``);
    safe across threads."""

    def __init__(
        self,
        database: Path | None,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.reloads = 0  # how many times a new file was opened
        self._interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()  # one query at a time on the shared connection
        self._file: WatchedFile[_Compiled | None] | None = None  # opened at the first lookup

    @property
    def meta(self) -> dict[str, str]:
        with self._lock:
            compiled = self._current()
            return compiled.meta if compiled is not None else {}

    def lookup(self, name: str) -> tuple[Item, ...] | None:
        """The items of alias ``name`` (any case), or None when there is no such alias."""
        with self._lock:
            compiled = self._current()
            if compiled is None:
                return None
            row = compiled.conn.execute("SELECT items FROM aliases WHERE name = ?", (name.lower(),))
            found = row.fetchone()
        return None if found is None else tuple(load_items(found[0]))

    def __len__(self) -> int:
        with self._lock:
            compiled = self._current()
            if compiled is None:
                return 0
            return int(compiled.conn.execute("SELECT count(*) FROM aliases").fetchone()[0])

    def info(self) -> dict[str, str]:
        """What the table in use was compiled from (source, owner, mtime, count)."""
        return dict(self.meta)

    @property
    def source_uid(self) -> int | None:
        """The owner of the source file when it was compiled (runs its programs and files)."""
        value = self.info().get("source_uid")
        return int(value) if value is not None else None

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                compiled = self._file.current()
                if compiled is not None:
                    compiled.conn.close()
            self._file = None

    def _current(self) -> _Compiled | None:
        if self.database is None:
            return None
        if self._file is None:
            self._file = WatchedFile(
                self.database,
                self._open,
                None,
                interval=self._interval,
                discard=_close,
                clock=self._clock,
            )
        return self._file.current()

    def _open(self, database: Path) -> tuple[_Compiled | None, list[TableError]]:
        """Open a version of the compiled file (``WatchedFile`` calls this when it changed):
        a file that went away means no aliases; one that cannot be opened keeps the
        table in use."""
        if not database.exists():
            if self.reloads:
                log.warning("alias table %s is gone; no aliases", database)
            return None, []
        uri = f"{database.resolve().as_uri()}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("format") != FORMAT_VERSION:
                raise sqlite3.DatabaseError(f"unknown format {meta.get('format')!r}")
        except sqlite3.Error as exc:
            problem = f"alias table unreadable ({exc}); keeping the previous one"
            return None, [TableError(str(database), 0, problem)]
        if self.reloads:
            # noticed during some lookup: logged without that message's id (WatchedFile)
            log.info("alias table %s reloaded (%s aliases)", database, meta.get("count"))
        self.reloads += 1
        return _Compiled(conn, meta), []


def _close(compiled: _Compiled | None) -> None:
    if compiled is not None:
        compiled.conn.close()


def out_of_date(source: Path, table: AliasTable) -> str:
    """Why the table was not compiled from ``source`` as it is now ("" when it was): another
    file (``routing.alias_file`` changed), another size or another mtime. Not "older":
    a file put in place with ``cp -p`` or ``rsync -a`` may be older than the table."""
    try:
        st = source.stat()
    except OSError:
        return ""  # the resolver reports a missing alias file
    meta = table.info()
    if not meta:
        return "no table"
    built_from = meta.get("source", "")
    if os.path.abspath(built_from) != os.path.abspath(source):
        return f"built from {built_from}"
    if meta.get("source_size") != str(st.st_size):
        return "the file changed size"
    if meta.get("source_mtime_ns") != str(st.st_mtime_ns):
        return "the file changed"
    return ""


def refresh_table(settings: Settings) -> BuildReport | None:
    """Compile ``routing.alias_file`` when its table is missing or out of date (see
    ``out_of_date``); None when the table is current. ``OSError`` as ``compile_aliases``."""
    source, database = settings.routing.alias_file, settings.alias_database
    if source is None or not source.exists():
        return None
    if database.exists():
        table = AliasTable(database)
        try:
            reason = out_of_date(source, table)
        finally:
            table.close()
        if not reason:
            return None
        log_unattributed(
            logging.INFO, "alias table %s out of date (%s): rebuilding", database, reason
        )
    return compile_aliases(source, database)


def prepare_aliases(settings: Settings) -> None:
    """At start-up (and on SIGHUP): compile an alias file whose table is missing or out of
    date; its bad lines are logged, its good ones used (as ``newaliases`` does)."""
    try:
        report = refresh_table(settings)
    except OSError as exc:
        log_unattributed(
            logging.ERROR, "cannot build alias database %s: %s", settings.alias_database, exc
        )
        return
    if report is None:
        return
    for problem in report.problems:
        log_unattributed(logging.WARNING, "%s", problem)
    log_unattributed(logging.INFO, "%s", report.summary())


def log_unattributed(level: int, message: str, *args: object) -> None:
    """Log a line about the alias table, not about the message being handled: an empty
    context, so the queue-id filter (``observability.maillog``) finds no message's id."""
    contextvars.Context().run(log.log, level, message, *args)
