"""``sendmail -oem``: the errors of a submission, mailed back instead of printed.

Sendmail's ErrorMode ``m`` (and ``e``, BerkNet: mail back too) sends the submitter a short
"Returned mail" message rather than writing to stderr, which is what cron asks for
(``-oem``): nobody reads cron's stderr. The report is a ``multipart/mixed`` message from
``MAILER-DAEMON`` with a plain-text part listing the errors and the original message
attached (``message/rfc822``; only its header section, ``text/rfc822-headers``, when the
whole would not fit under the size limit). It goes with the null envelope sender, so it
can never bounce in its turn, through the same local submission as any message (the
daemon's socket, else the maildrop).

Who gets it: the ``-f`` sender when one was given and it is not the null sender, else the
calling user (``login@local domain``); when the first cannot take it, the second is tried.
Standard library only; loaded on the error path only. Trusts the caller's uid-derived
login name. Settings: the ``SubmitConfig`` view (``domain``, ``hostname``,
``max_message_size``, the socket and maildrop paths).
"""

from __future__ import annotations

from mailwright.cli.draft import Draft
from mailwright.cli.submit import OK, submit
from mailwright.config.lite import SubmitConfig
from mailwright.core.queueid import new_queue_id
from mailwright.core.submission import Rcpt, SubmissionEnvelope

MAIL_BACK_MODES = frozenset("me")  # ErrorMode values that mail errors back
SUBJECT = "Returned mail: see transcript for details"
_ROOM = 4096  # octets kept free under the size limit for the report around the original


def targets(sender: str | None, own: str) -> list[str]:
    """Who should get the report, in order: the ``-f`` sender (unless null), then the caller."""
    first = [sender] if sender else []
    return [*first, *([own] if own.lower() not in {s.lower() for s in first} else [])]


def report(
    errors: list[str],
    original: bytes | None,
    *,
    recipient: str,
    caller: str,
    config: SubmitConfig,
) -> bytes:
    """The CRLF report message for ``recipient``: the errors, then the original."""
    boundary = f"{new_queue_id()}/{config.hostname}"
    text = [
        f"The message you submitted on {config.hostname} as {caller} could not be sent",
        "(sendmail -oem: errors are mailed back to you).",
        "",
        "   ----- The following errors occurred -----",
        *errors,
        "",
    ]
    if original is None:
        text.append("   ----- The message could not be read completely; it is not included -----")
    else:
        text.append("   ----- The original message is attached -----")
    parts = [
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\n" + "\r\n".join(text).encode() + b"\r\n"
    ]
    if original is not None:
        parts.append(_attachment(original, config.max_message_size))
    draft = Draft([], _multipart(parts, boundary))
    draft.add("From", f"Mail Delivery Subsystem <MAILER-DAEMON@{config.domain}>")
    draft.add("To", f"<{recipient}>")
    draft.add("Subject", SUBJECT)
    draft.add("Auto-Submitted", "auto-generated (failure)")
    draft.add("MIME-Version", "1.0")
    draft.add("Content-Type", f'multipart/mixed; boundary="{boundary}"')
    draft.complete(sender=f"MAILER-DAEMON@{config.domain}", full_name="", hostname=config.hostname)
    return draft.encode()


def _attachment(original: bytes, limit: int) -> bytes:
    if limit and len(original) + _ROOM > limit:
        end = original.find(b"\r\n\r\n")
        headers = original if end < 0 else original[: end + 2]
        return b"Content-Type: text/rfc822-headers\r\n\r\n" + headers
    body = original if original.endswith(b"\r\n") else original + b"\r\n"
    return (
        b"Content-Type: message/rfc822\r\nContent-Description: Undelivered Message\r\n\r\n" + body
    )


def _multipart(parts: list[bytes], boundary: str) -> bytes:
    # the CRLF before a delimiter belongs to it (RFC 2046 5.1.1): each part keeps its own
    marker = f"\r\n--{boundary}".encode()
    out = b"This is a MIME-encapsulated message.\r\n"
    for part in parts:
        out += marker + b"\r\n" + part
    return out + marker + b"--\r\n"


def mail_back(
    errors: list[str],
    original: bytes | None,
    *,
    sender: str | None,
    caller: str,
    config: SubmitConfig,
) -> str | None:
    """Submit the report; returns who got it, or None when nobody could (then print)."""
    own = f"{caller}@{config.domain}"
    for recipient in targets(sender, own):
        content = report(errors, original, recipient=recipient, caller=caller, config=config)
        envelope = SubmissionEnvelope(
            "",
            [Rcpt(recipient)],
            body_type=None if content.isascii() else "8BITMIME",
            smtputf8=not recipient.isascii(),
        )
        outcome = submit(content, envelope, config)
        if outcome.code == OK and outcome.via:
            return recipient
    return None
