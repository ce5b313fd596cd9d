"""From a filter's verdict to the SMTP reply the client gets (sans-I/O).

Plain REJECT and TEMPFAIL get Sendmail's texts (``550 5.7.1 Command
rejected``, ``554`` at end of data, ``451 4.3.2 Please try again later``).
A REPLYCODE text is checked like Sendmail and Postfix do (4xx or 5xx, the
same code on every line, ``ddd-`` on all lines but the last, CRLF between
lines) and ``%%`` becomes ``%`` as Postfix does; an invalid text is a filter
failure. A filter that fails gets its failure policy's reply: Postfix's
``451 4.7.1 Service unavailable - try again later`` for ``tempfail``, Sendmail's
``550 5.7.1 Command rejected`` for ``reject``. Reads no settings.
"""

from __future__ import annotations

import re

from mailwright.config.schema import FailurePolicy
from mailwright.core.reply import Reply

_LINE = re.compile(r"^([45][0-9][0-9])(?:([ -])(.*))?$", re.DOTALL)
_STATUS = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?: |$)")

TEMPFAIL = Reply.of(451, "4.3.2", "Please try again later")
SHUTDOWN = Reply.of(421, "4.7.0", "Mail filter shut down, closing connection")


def rejected(end_of_data: bool = False) -> Reply:
    return Reply.of(554 if end_of_data else 550, "5.7.1", "Command rejected")


def failure_reply(policy: FailurePolicy) -> Reply | None:
    """What a failed filter means for the current command; ``None``: carry on without it."""
    if policy is FailurePolicy.TEMPFAIL:
        return Reply.of(451, "4.7.1", "Service unavailable - try again later")
    if policy is FailurePolicy.REJECT:
        return Reply.of(550, "5.7.1", "Command rejected")
    return None


def _percent(text: str) -> str:
    # libmilter filters double every % (Sendmail uses the text as a format); undo, drop lone %
    return re.sub(r"%(%?)", lambda m: m.group(1), text)


def parse_reply_text(raw: bytes) -> Reply | None:
    """The filter's REPLYCODE text as a ``Reply``; ``None`` if it is not a valid SMTP reply."""
    if b"\0" in raw:
        return None
    text = _percent(raw.decode("utf-8", "replace"))
    lines = text.split("\r\n")
    code: str | None = None
    status: str | None = None
    out: list[str] = []
    for number, line in enumerate(lines):
        match = _LINE.match(line)
        if match is None:
            return None
        line_code, sep, rest = match.group(1), match.group(2) or " ", match.group(3) or ""
        last = number == len(lines) - 1
        if (sep == "-") == last or (code is not None and line_code != code):
            return None
        code = line_code
        found = _STATUS.match(rest)
        if found and found.group(1) == code[0]:
            status = status or found.group(0).strip()
            rest = rest[found.end() :]
        out.append(rest)
    assert code is not None
    return Reply.of(int(code), status, *out)
