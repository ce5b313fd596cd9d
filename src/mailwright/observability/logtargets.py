"""Where the daemon's log lines go: stderr, syslog or a file, as text or JSON lines.

``configure`` installs one handler on the root logger from the ``[log]`` section:

- ``target = "stderr"``: one line per record on standard error (journald under
  systemd, the terminal under ``make run``);
- ``target = "syslog"``: datagrams to ``syslog_socket`` (``/dev/log``) with facility
  ``syslog_facility`` (``mail``) and ``ident[pid]:`` in front, as Sendmail logs; when
  that socket does not exist, a warning on stderr says the lines will be lost;
- ``target = "file"`` (or just ``file = PATH``): ``time ident[pid]: line`` appended to
  ``file``; ``reopen`` (the daemon's SIGUSR1 and SIGHUP) opens the path again after
  logrotate renamed it. A process that cannot be signalled (the privileged helper, root
  while the daemon is not) ``watch``-es the path instead: it follows a new file at its
  next line, without creating one. A file that cannot be reopened keeps the old one, with
  a note in it;
- ``format = "text"``: the message as it is (mail lines read
  ``QUEUEID: from=<a@b>, size=..., relay=...``); ``format = "json"``: one JSON object
  per line with ``time``, ``level``, ``logger``, ``pid``, ``message``, ``queue_id``
  (when the line is about a message) and, for mail log lines, every ``key=value``
  field as a JSON key of its own.

A detached daemon has no stderr: it logs to its file with ``target = "file"``, else to
syslog whatever the target says.
Reconfiguring (SIGHUP) replaces the handler; a log file that cannot be opened is a
``ConfigError``. Trusts nothing in the records (JSON
escapes everything). Settings: ``log.*``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

from mailwright.config.loader import ConfigError
from mailwright.config.schema import LogFormat, LogSection, LogTarget
from mailwright.core.queueid import QUEUE_ID_RE
from mailwright.observability.maillog import QueueIdFilter

TEXT_FORMAT = "%(asctime)s mailwright[%(process)d]: %(message)s"
RESERVED = frozenset({"time", "level", "logger", "pid", "message", "queue_id", "exception"})
_HANDLER_NAME = "mailwright-log-target"


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a mail log line's fields become keys of their own."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        queue_id = getattr(record, "queue_id", None) or _leading_queue_id(out["message"])
        if queue_id:
            out["queue_id"] = queue_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                if value is None:
                    continue
                name = f"field_{key}" if key in RESERVED else str(key)
                out[name] = value if isinstance(value, bool | int | float) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class SyslogHandler(logging.handlers.SysLogHandler):
    """``SysLogHandler`` without the trailing NUL and quiet when syslog is away.

    A record that cannot be sent (no syslog daemon yet, socket gone) is dropped with one
    note on stderr rather than a traceback per line; the next record tries again.
    """

    append_nul = False

    def __init__(self, address: str, facility: int) -> None:
        self._complained = False
        super().__init__(address=address, facility=facility)

    def createSocket(self) -> None:  # noqa: N802 - the stdlib's name
        try:
            super().createSocket()
        except OSError:
            self.socket = None  # retried at the next record

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - the stdlib's name
        if not self._complained:
            self._complained = True
            exc = sys.exc_info()[1]
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"mailwright: cannot log to syslog {self.address}: {exc}\n")
        if self.socket is not None:
            with contextlib.suppress(OSError, ValueError):
                self.socket.close()
            self.socket = None

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if self.socket is not None:
            self._complained = False


class LogFile(logging.FileHandler):
    """A log file appended to and opened again on request (after logrotate renamed it).

    ``request_reopen`` only sets a flag (safe in a signal handler); the next record
    reopens. With ``watch`` the path is compared with the open file at every record
    and followed once a new file is there (never created: its owner is logrotate's or
    the daemon's business).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8", errors="backslashreplace")
        self.path = path
        self.watch = False
        self._reopen = False

    def request_reopen(self) -> None:
        self._reopen = True

    def reopen(self, create: bool = True) -> None:
        """Open the path again; on failure keep writing to the old file, and say so there."""
        self.acquire()
        try:
            self._reopen = False
            try:
                flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | (os.O_CREAT if create else 0)
                fd = os.open(self.path, flags, 0o640)
            except OSError as exc:
                if create and self.stream is not None:
                    self.stream.write(
                        f"mailwright: cannot reopen {self.path}: {exc.strerror};"
                        " still writing to the previous file\n"
                    )
                    self.flush()
                return
            old = self.stream
            self.stream = open(fd, "a", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
            if old is not None:
                with contextlib.suppress(OSError):
                    old.close()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if self._reopen:
            self.reopen(create=not self.watch)
        elif self.watch and self._moved():
            self.reopen(create=False)
        super().emit(record)

    def _moved(self) -> bool:
        if self.stream is None:
            return False
        try:
            there = os.stat(self.path)
        except OSError:
            return False  # renamed, the new one not there yet: keep the old
        mine = os.fstat(self.stream.fileno())
        return (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino)


def build_handler(section: LogSection, detached: bool = False) -> logging.Handler:
    """The handler ``section`` describes (no stderr when ``detached``: its file, or syslog)."""
    target = section.target
    if detached and target is LogTarget.STDERR:
        target = LogTarget.SYSLOG
    handler: logging.Handler
    if target is LogTarget.FILE:
        assert section.file is not None  # the schema insists
        try:
            section.file.parent.mkdir(parents=True, exist_ok=True)
            handler = LogFile(section.file)
        except OSError as exc:
            raise ConfigError(f"log.file: cannot open {section.file}: {exc.strerror}") from None
        if section.format is LogFormat.JSON:
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(
                logging.Formatter(f"%(asctime)s {section.syslog_ident}[%(process)d]: %(message)s")
            )
    elif target is LogTarget.SYSLOG:
        _warn_without_syslog(section.syslog_socket)
        facility = logging.handlers.SysLogHandler.facility_names[section.syslog_facility]
        handler = SyslogHandler(str(section.syslog_socket), facility)
        prefix = f"{section.syslog_ident}[%(process)d]: "
        if section.format is LogFormat.JSON:
            handler.setFormatter(_PrefixedJson(prefix))
        else:
            handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        if section.format is LogFormat.JSON:
            handler.setFormatter(JsonFormatter())
        else:
            handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(QueueIdFilter())
    return handler


class _PrefixedJson(JsonFormatter):
    """JSON after syslog's ``ident[pid]:`` (syslog daemons parse the tag off the front)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        return self.prefix % {"process": record.process} + super().format(record)


def _warn_without_syslog(path: Path) -> None:
    """No syslog socket: every line would be dropped; say so while stderr is still there."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            return
        why = "is not a socket"
    except OSError as exc:
        why = f"cannot be used ({exc.strerror})"
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(
            f"mailwright: warning: syslog socket {path} {why}: log lines will be lost until a"
            ' syslog daemon creates it; set [log] file = "/var/log/mailwright.log" to log to'
            " a file instead\n"
        )


def current_file() -> LogFile | None:
    """The log file handler ``configure`` installed, if the target is a file."""
    for handler in logging.getLogger().handlers:
        if handler.get_name() == _HANDLER_NAME and isinstance(handler, LogFile):
            return handler
    return None


def reopen() -> Path | None:
    """Open the log file again (SIGUSR1, SIGHUP: logrotate moved it); its path, or None
    when the target is not a file."""
    handler = current_file()
    if handler is None:
        return None
    handler.reopen()
    return handler.path


def watch() -> None:
    """Follow a rotated log file by itself (a process nobody signals: the helper)."""
    handler = current_file()
    if handler is not None:
        handler.watch = True


def hand_over(uid: int, gid: int) -> None:
    """Give the log file to the account the daemon becomes, so it can reopen it."""
    handler = current_file()
    if handler is not None and handler.stream is not None:
        os.fchown(handler.stream.fileno(), uid, gid)


def configure(section: LogSection, level: str | None = None, detached: bool = False) -> None:
    """Install the handler on the root logger, replacing one installed before.

    ``level`` (the command line's ``--log-level``) overrides ``section.level``.
    ``ConfigError`` (and the old handler stays) when the log file cannot be opened.
    """
    root = logging.getLogger()
    handler = build_handler(section, detached)
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel((level or section.level).upper())


def _utc(created: float) -> str:
    whole = int(created)
    millis = int((created - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def _leading_queue_id(message: str) -> str | None:
    """``QUEUEID: ...`` at the start of a line not from the mail log (errors, warnings)."""
    head, colon, _ = message.partition(":")
    return head if colon and QUEUE_ID_RE.match(head) else None
