"""Sendmail-style mail log lines, one per event, each starting with the queue id.

``grep QUEUEID`` on the log tells a message's whole story, including the reports made
about it (``QID: QID2: DSN: reason``) and what administrators did to it (``admin=``).
Lines go to the ``mailwright.mail`` logger; where they end up (stderr, syslog facility mail,
JSON lines) is decided by the daemon's logging set-up
(``observability.logtargets``). Values that come from clients are quoted-safe: CR,
LF and other control characters are escaped.

Code that handles one message (an SMTP transaction, a delivery run) sets
``current_queue_id``; ``QueueIdFilter`` then puts that id in front of any other line
logged meanwhile (a .forward ignored, a milter warning, an agent error), so those
lines belong to the story too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextvars import ContextVar

log = logging.getLogger("mailwright.mail")

# the message the current task (and the threads it starts) is handling
current_queue_id: ContextVar[str | None] = ContextVar("mailwright_queue_id", default=None)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean(value: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def relay_text(name: str, address: str) -> str:
    if not address:
        return name or "localhost"
    return f"{name} [{address}]" if name else f"[{address}]"


def line(queue_id: str | None, **fields: object) -> str:
    parts = ", ".join(f"{k}={clean(v)}" for k, v in fields.items() if v is not None)
    return f"{queue_id}: {parts}" if queue_id else parts


def emit(queue_id: str | None, **fields: object) -> None:
    emit_fields(queue_id, fields)


def emit_fields(queue_id: str | None, fields: dict[str, object], level: int = logging.INFO) -> None:
    if log.isEnabledFor(level):
        log.log(level, line(queue_id, **fields), extra={"queue_id": queue_id, "fields": fields})


def accepted(
    queue_id: str,
    *,
    sender: str,
    size: int,
    nrcpts: int,
    msgid: str | None,
    proto: str,
    daemon: str,
    relay: str,
    bodytype: str | None = None,
    authid: str | None = None,
    checks: Mapping[str, str] | None = None,
) -> None:
    """The message's line; ``checks``: results of the checks it passed (``spf=pass``)."""
    emit_fields(
        queue_id,
        {
            "from": f"<{sender}>",
            "size": size,
            "class": 0,
            "nrcpts": nrcpts,
            "msgid": msgid,
            "bodytype": bodytype,
            "proto": proto,
            "daemon": daemon,
            "relay": relay,
            "authid": authid,  # who sent it, in the line that "grep QUEUE-ID" finds
            **(checks or {}),
        },
    )


def rejected(queue_id: str | None, *, stage: str, arg: str | None, relay: str, reply: str) -> None:
    emit(queue_id, ruleset=f"check_{stage}", arg1=arg, relay=relay, reject=reply)


def admin(queue_id: str | None, action: str, *, by: str, via: str, **fields: object) -> None:
    """An administrator's action on a message (``daemon.admin``): what, by whom, how."""
    emit_fields(queue_id, {"admin": action, "by": by, "via": via, **fields})


def dsn(queue_id: str, report_id: str, reason: str, to: str) -> None:
    """The report (bounce, delay warning, return receipt) made about a message, as
    Sendmail logs it: ``QID: QID2: DSN: reason``, the original's id first."""
    text = f"{queue_id}: {report_id}: DSN: {clean(reason)}"
    fields = {"dsn_id": report_id, "event": "DSN", "reason": reason, "to": to}
    if log.isEnabledFor(logging.INFO):
        log.info("%s", text, extra={"queue_id": queue_id, "fields": fields})


class QueueIdFilter(logging.Filter):
    """Marks a record logged while a message is handled with that message's queue id
    (``record.queue_id``) and, unless the text has it already, puts ``ID: `` in front."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "queue_id", None):
            return True
        queue_id = current_queue_id.get()
        if queue_id is None:
            return True
        record.queue_id = queue_id
        text = record.getMessage()
        if queue_id not in text:
            record.msg = f"{queue_id}: {text}"
            record.args = None
        return True
