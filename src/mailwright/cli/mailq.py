"""The queue listing in Sendmail's ``mailq`` layout (``sendmail -bp``).

Plain text, one block per message: id, size, arrival time, sender, the last
status text in parentheses, then the recipients still waiting. The queue directory is
shown absolute and normalised, however the configuration spells it. Reads the store
only; imports nothing heavy so ``mailq`` starts fast.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

from mailwright.queue.admin import status_text
from mailwright.queue.store import MessageState, RecipientState, StoredMessage

HEADER = "-----Q-ID------ --Size-- -----Q-Time----- ------------Sender/Recipient-----------"


def format_queue(directory: Path, messages: Iterable[StoredMessage]) -> str:
    """The listing; ``directory`` is shown normalised (``/var/spool/q``, not ``./var/../q``),
    as the daemon's settings hold it (``config.schema.Settings.resolve_paths``)."""
    directory = Path(os.path.abspath(directory))  # abspath normalises; links stay as named
    messages = list(messages)
    n = len(messages)
    if not n:
        return f"{directory} is empty\n\t\tTotal requests: 0\n"
    lines = [f"\t\t{directory} ({n} request{'s' if n != 1 else ''})", HEADER]
    for m in messages:
        mark = "X" if m.state is MessageState.HOLD else " "
        when = time.strftime("%a %b %d %H:%M", time.localtime(m.received_at))
        lines.append(f"{m.queue_id}{mark}{m.size:8d} {when} <{m.envelope.sender_text}>")
        status = status_text(m)
        if status:
            lines.append(f"                 ({status})")
        for r in m.recipients:
            if r.state is RecipientState.QUEUED:
                lines.append(f"\t\t\t\t\t <{r.address}>")
    lines.append(f"\t\tTotal requests: {n}")
    return "\n".join(lines) + "\n"


def as_json(message: StoredMessage) -> dict[str, object]:
    env = message.envelope
    return {
        "queue_id": message.queue_id,
        "size": message.size,
        "received_at": message.received_at,
        "state": message.state.value,
        "hold_reason": message.hold_reason,
        "sender": env.sender_text,
        "ret": env.params.ret.value if env.params.ret else None,
        "envid": env.params.envid,
        "body": env.params.body.value,
        "smtputf8": env.params.smtputf8,
        "requiretls": env.params.requiretls,
        "message_id": message.message_id_header,
        "subject": message.subject,
        "warned": message.warned,
        "origin": {
            "protocol": message.origin.protocol,
            "client_address": message.origin.client_address,
            "helo": message.origin.helo,
            "auth_user": message.origin.auth_user,
            "local_user": message.origin.local_user,
        },
        "recipients": [
            {
                "index": r.index,
                "address": r.address,
                "state": r.state.value,
                "attempts": r.attempts,
                "next_attempt": r.next_attempt,
                "last_attempt": r.last_attempt,
                "last_status": r.last_status,
                "last_reply": r.last_reply,
                "remote_mta": r.remote_mta,
                "notify": r.notify,
                "orcpt": r.orcpt,
            }
            for r in message.recipients
        ],
    }
