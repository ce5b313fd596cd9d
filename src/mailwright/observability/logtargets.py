"""Where the daemon's log lines go: stderr or syslog, as text or JSON lines.

``configure`` installs one handler on the root logger from the ``[log]`` section:

- ``target = "stderr"``: one line per record on standard error (journald under
  systemd, the terminal under ``make run``);
- ``target = "syslog"``: datagrams to ``syslog_socket`` (``/dev/log``) with facility
  ``syslog_facility`` (``mail``) and ``ident[pid]:`` in front, as Sendmail logs;
- ``format = "text"``: the message as it is (mail lines read
  ``QUEUEID: from=<a@b>, size=..., relay=...``); ``format = "json"``: one JSON object
  per line with ``time``, ``level``, ``logger``, ``pid``, ``message``, ``queue_id``
  (when the line is about a message) and, for mail log lines, every ``key=value``
  field as a JSON key of its own.

A detached daemon has no stderr: it logs to syslog whatever the target says.
Reconfiguring (SIGHUP) replaces the handler. Trusts nothing in the records (JSON
escapes everything). Settings: ``log.*``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import sys
import time
from typing import Any

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


def build_handler(section: LogSection, detached: bool = False) -> logging.Handler:
    """The handler ``section`` describes (syslog when ``detached``: there is no stderr)."""
    target = LogTarget.SYSLOG if detached else section.target
    handler: logging.Handler
    if target is LogTarget.SYSLOG:
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


def configure(section: LogSection, level: str | None = None, detached: bool = False) -> None:
    """Install the handler on the root logger, replacing one installed before.

    ``level`` (the command line's ``--log-level``) overrides ``section.level``.
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
