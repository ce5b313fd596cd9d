"""Recent notable events, kept in memory for the status page and ``mailwright status``.

The last bounces (a recipient failed for good), the last failure of each milter,
and the last warnings and errors the daemon logged. Bounded: memory stays flat
however much goes wrong, and nothing survives a restart (the mail log is the
record). Values come from mail and peers (addresses, replies, error texts): they
are stored as they are and must be escaped by whoever displays them. Reads no
settings.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass

KEEP = 50
MAX_TEXT = 500  # characters of a reply or log message kept


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


class Recent:
    def __init__(self, keep: int = KEEP) -> None:
        self._bounces: deque[Bounce] = deque(maxlen=keep)
        self._errors: deque[LogEntry] = deque(maxlen=keep)
        self.milter_failures: dict[str, Failure] = {}

    def bounce(self, bounce: Bounce) -> None:
        self._bounces.append(bounce)

    def milter_failed(self, name: str, stage: str, error: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        self.milter_failures[name] = Failure(at, stage, error[:MAX_TEXT])

    def logged(self, entry: LogEntry) -> None:
        self._errors.append(entry)

    def bounces(self, limit: int = KEEP) -> list[Bounce]:
        """Newest first."""
        return list(reversed(self._bounces))[:limit]

    def errors(self, limit: int = KEEP) -> list[LogEntry]:
        """Newest first."""
        return list(reversed(self._errors))[:limit]

    def clear(self) -> None:
        self._bounces.clear()
        self._errors.clear()
        self.milter_failures.clear()


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
