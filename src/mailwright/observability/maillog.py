"""Sendmail-style mail log lines, one per event, each starting with the queue id.

``grep QUEUEID`` on the log tells a message's whole story. Lines go to the
``mailwright.mail`` logger; where they end up (stderr, syslog facility mail,
JSON lines) is decided by the daemon's logging set-up. Values that come from
clients are quoted-safe: CR, LF and other control characters are escaped.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger("mailwright.mail")

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
) -> None:
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
        },
    )


def rejected(queue_id: str | None, *, stage: str, arg: str | None, relay: str, reply: str) -> None:
    emit(queue_id, ruleset=f"check_{stage}", arg1=arg, relay=relay, reject=reply)
