"""Recent notable events, kept in memory for the status page and ``mailwright status``.

The last bounces (a recipient failed for good), the last failure of each milter,
and the last warnings and errors the daemon logged. Bounded: memory stays flat
however much goes wrong, and nothing survives a restart (the mail log is the
record). Values come from mail and peers (addresses, replies, error texts): they
are stored as they are and must be escaped by whoever displays them. Reads no
settings.

With several workers (``daemon.supervisor``) the supervisor makes a ``SharedRecent``
before it forks them and each worker records into its own rings of it
(``Recent.share``, ``core.sharedring``): whoever reads (worker 0, for the status page
and ``mailwright status``) sees every worker's events, newest first. An event costs a
JSON encoding and a copy into shared memory (about 8 µs; only bounces, milter failures
and warnings are recorded, never every message); a worker's events outlive it.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, TypeVar

from mailwright.core.sharedring import SharedRing

KEEP = 50
MAX_TEXT = 500  # characters of a reply or log message kept
T = TypeVar("T")
RECORD = 2048  # bytes of shared memory per event (text fields are cut to fit)
MILTERS = 16  # milter failures kept per worker (the last of each milter is shown)


@dataclass(frozen=True, slots=True)
class Bounce:
    at: float
    queue_id: str
    sender: str
    recipient: str
    status: str | None
    reply: str  # as the reply reads: "550 5.1.1 text"
    remote_mta: str | None


@dataclass(frozen=True, slots=True)
class Failure:
    at: float
    stage: str
    error: str


@dataclass(frozen=True, slots=True)
class LogEntry:
    at: float
    level: str
    message: str


@dataclass(frozen=True, slots=True)
class MilterFailure:
    """A milter failure as it travels between workers."""

    name: str
    at: float
    stage: str
    error: str


class SharedRecent:
    """Every worker's rings of recent events, in memory shared across ``fork()``."""

    def __init__(self, workers: int, keep: int = KEEP) -> None:
        self.workers = workers
        self.bounces = SharedRing.create(rows=workers, entries=keep, size=RECORD)
        self.errors = SharedRing.create(rows=workers, entries=keep, size=RECORD)
        self.milters = SharedRing.create(rows=workers, entries=MILTERS, size=RECORD)


class Recent:
    def __init__(self, keep: int = KEEP) -> None:
        self._bounces: deque[Bounce] = deque(maxlen=keep)
        self._errors: deque[LogEntry] = deque(maxlen=keep)
        self._milter_failures: dict[str, Failure] = {}
        self._shared: SharedRecent | None = None
        self._row = 0

    def share(self, shared: SharedRecent | None, row: int = 0) -> None:
        """Record into worker ``row``'s rings of ``shared`` and read every worker's (None:
        in this process's memory again). Called in the worker, after the fork."""
        if shared is not None and not 0 <= row < shared.workers:
            raise ValueError(f"worker {row} is not in 0..{shared.workers - 1}")
        self._shared, self._row = shared, row

    def bounce(self, bounce: Bounce) -> None:
        if self._shared is not None:
            _append(self._shared.bounces, self._row, bounce)
        else:
            self._bounces.append(bounce)

    def milter_failed(self, name: str, stage: str, error: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        if self._shared is not None:
            failure = MilterFailure(name, at, stage, error[:MAX_TEXT])
            _append(self._shared.milters, self._row, failure)
        else:
            self._milter_failures[name] = Failure(at, stage, error[:MAX_TEXT])

    def logged(self, entry: LogEntry) -> None:
        if self._shared is not None:
            _append(self._shared.errors, self._row, entry)
        else:
            self._errors.append(entry)

    @property
    def milter_failures(self) -> dict[str, Failure]:
        """The last failure of each milter (of any worker)."""
        if self._shared is None:
            return self._milter_failures
        last: dict[str, Failure] = {}
        for f in _newest(self._shared.milters, MilterFailure):
            if f.name not in last:
                last[f.name] = Failure(f.at, f.stage, f.error)
        return last

    def bounces(self, limit: int = KEEP) -> list[Bounce]:
        """Newest first."""
        if self._shared is not None:
            return _newest(self._shared.bounces, Bounce)[:limit]
        return list(reversed(self._bounces))[:limit]

    def errors(self, limit: int = KEEP) -> list[LogEntry]:
        """Newest first."""
        if self._shared is not None:
            return _newest(self._shared.errors, LogEntry)[:limit]
        return list(reversed(self._errors))[:limit]

    def clear(self) -> None:
        self._bounces.clear()
        self._errors.clear()
        self._milter_failures.clear()


def _append(ring: SharedRing, row: int, event: Bounce | LogEntry | MilterFailure) -> None:
    """``event`` as JSON in ``row``; its longest text is halved until it fits a record."""
    values = {name: getattr(event, name) for name in event.__slots__}  # asdict is slower
    while True:
        payload = json.dumps(values, ensure_ascii=False).encode("utf-8", "surrogatepass")
        if ring.append(row, payload):
            return
        texts = [k for k, v in values.items() if isinstance(v, str) and v]
        if not texts:
            return  # cannot happen with records of RECORD bytes; never fail the caller
        longest = max(texts, key=lambda k: len(values[k]))
        values[longest] = values[longest][: len(values[longest]) // 2]


def _newest(ring: SharedRing, kind: type[T]) -> list[T]:
    """Every worker's events of ``ring``, newest first; records that do not decode (from a
    newer daemon's layout) are skipped."""
    events: list[Any] = []
    for payload in ring.read_all():
        try:
            events.append(kind(**json.loads(payload.decode("utf-8", "surrogatepass"))))
        except (ValueError, TypeError):
            continue
    events.sort(key=lambda e: e.at, reverse=True)
    return events


RECENT = Recent()


class ErrorLog(logging.Handler):
    """Keeps the WARNING-and-worse records of the loggers it is attached to in ``RECENT``."""

    def __init__(self, recent: Recent = RECENT) -> None:
        super().__init__(logging.WARNING)
        self.recent = recent

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        if record.exc_info and record.exc_info[1] is not None:
            message += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
        self.recent.logged(LogEntry(record.created, record.levelname, message[:MAX_TEXT]))
