"""The human-readable part of a report: what happened, to whom, and what the server said.

Written for the sender, in plain English, one paragraph per recipient that quotes
the remote server's own reply (or our own diagnostic) word for word. Lines are
wrapped at 76 characters; a long unbroken word is cut so no line passes 998 octets.
The caller encodes the text (quoted-printable when it is not ASCII). Values are
cleaned of control characters first. Reads no settings.
"""

from __future__ import annotations

import email.header
import textwrap
from collections.abc import Sequence

from mailwright.core.durations import words
from mailwright.dsn.action import Action, ReportKind
from mailwright.dsn.fieldtext import clean, date
from mailwright.dsn.original import OriginalMessage
from mailwright.dsn.recipient import RecipientReport

WIDTH = 76
INDENT = "    "


def explanation(
    kind: ReportKind,
    original: OriginalMessage,
    recipients: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    now: float,
    double_bounce: bool,
    attachment: str,
) -> str:
    """The whole text, lines joined by CRLF and ending in CRLF.

    ``attachment`` says what part 3 holds, e.g. "the original message".
    """
    paragraphs = [f"This is the mail delivery system at {clean(reporting_mta, utf8=True)}."]
    paragraphs += _introduction(kind, original, recipients, now, double_bounce)
    paragraphs += [_recipient(r) for r in recipients]
    paragraphs.append(_closing(original, attachment, reporting_mta))
    return "\r\n\r\n".join(paragraphs) + "\r\n"


def _introduction(
    kind: ReportKind,
    original: OriginalMessage,
    recipients: Sequence[RecipientReport],
    now: float,
    double_bounce: bool,
) -> list[str]:
    if double_bounce:
        return [
            _wrap(
                "A message with an empty return address (most likely a delivery "
                "report) could not be delivered, so it comes to the postmaster "
                "instead. Its recipients and the reasons are below."
            )
        ]
    if kind is ReportKind.FAILURE:
        return [
            _wrap(
                "I'm sorry to have to tell you that your message could not be delivered "
                "to one or more recipients. This is a permanent error: delivery has "
                "been given up. The recipients and the reasons are below."
            )
        ]
    if kind is ReportKind.DELAY:
        waited = words(now - original.received_at)
        text = (
            f"Your message has not been delivered yet to the recipients below, "
            f"{waited} after it arrived. This is only a warning; "
            f"you do not need to send the message again."
        )
        until = [r.will_retry_until for r in recipients if r.will_retry_until is not None]
        if until:
            text += f" Delivery will be tried again until {date(max(until))}."
        return [_wrap(text)]
    return [
        _wrap(
            "Your message was delivered to the recipients below, as you asked "
            "(a delivery status notification was requested)."
        )
    ]


def _recipient(report: RecipientReport) -> str:
    address = clean(report.final_recipient, utf8=True)
    head = f"<{address}>: {_what(report)}"
    diagnostic = report.diagnostic
    if diagnostic is None:
        return _wrap(head)
    remote = clean(report.remote_mta, utf8=True)
    text = clean(diagnostic.text, utf8=True)
    if diagnostic.is_reply and remote:
        lead = f"{head} The mail server {remote} said:"
    elif diagnostic.is_reply:
        lead = f"{head} The server said:"
    else:
        lead = f"{head} Reason:"
    return _wrap(lead) + "\r\n" + _wrap(text, indent=INDENT)


def _what(report: RecipientReport) -> str:
    status = f"(status {report.status})"
    return {
        Action.FAILED: f"delivery failed {status}.",
        Action.DELAYED: f"delivery is delayed {status}.",
        Action.DELIVERED: f"delivered {status}.",
        Action.RELAYED: (
            f"relayed to a system that sends no delivery reports {status}; "
            "you may not be told when it is delivered."
        ),
        Action.EXPANDED: (
            f"expanded {status}: it reached an alias or mailing list that sent it on to others."
        ),
    }[report.action]


def _closing(original: OriginalMessage, attachment: str, reporting_mta: str) -> str:
    subject = original.headers.get("Subject")
    lines = [
        f"The delivery report and {attachment} are attached.",
        f"Queue id: {original.queue_id}, arrived {date(original.received_at)}.",
    ]
    if subject is not None:
        lines.append(f"Subject: {clean(_decoded(subject.text), utf8=True)}")
    lines.append(
        f"If you need help, ask the postmaster of {clean(reporting_mta, utf8=True)} "
        "and include this report."
    )
    return "\r\n".join(_wrap(line) for line in lines)


def _wrap(text: str, indent: str = "") -> str:
    lines = textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    out: list[str] = []
    for line in lines or [indent]:
        # a word longer than a line stays whole unless it is too long for SMTP (text that
        # is not ASCII goes out quoted-printable, so characters are octets here)
        out += textwrap.wrap(line, 900, subsequent_indent=indent) if len(line) > 900 else [line]
    return "\r\n".join(out)


def _decoded(text: str) -> str:
    """An RFC 2047 encoded header value as text; as it is when it does not decode."""
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text
