"""The machine-readable part of a report: ``message/delivery-status`` (RFC 3464 2.1).

One block of per-message fields, then one block per recipient, blocks separated by
an empty line. With ``utf8`` the part is ``message/global-delivery-status`` (RFC 6533):
addresses and texts may be UTF-8 and non-ASCII addresses have the ``utf-8`` type.
Every value is cleaned and folded by ``dsn.fieldtext``; an ENVID or ORCPT that would
not survive cleaning is written xtext-encoded instead, so it still reads back exactly.
Reads no settings.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailwright.core import xtext
from mailwright.dsn.action import Action
from mailwright.dsn.diagnostic import remote_mta_name
from mailwright.dsn.fieldtext import clean, date, field, has_unsafe
from mailwright.dsn.original import OriginalMessage
from mailwright.dsn.recipient import RecipientReport


def delivery_status(
    original: OriginalMessage,
    recipients: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    utf8: bool,
) -> bytes:
    blocks = [per_message(original, reporting_mta=reporting_mta, utf8=utf8)]
    blocks += [per_recipient(r, utf8=utf8) for r in recipients]
    return b"\r\n".join(blocks)


def per_message(original: OriginalMessage, *, reporting_mta: str, utf8: bool) -> bytes:
    envid = original.envelope.params.envid
    sender = original.envelope.sender
    out = []
    if envid is not None:
        out.append(field("Original-Envelope-Id", _xtext_if_unsafe(envid, utf8), utf8=utf8))
    out.append(field("Reporting-MTA", f"dns; {reporting_mta}", utf8=utf8))
    out.append(field("X-Mailwright-Queue-ID", original.queue_id, utf8=utf8))
    if sender is not None:
        out.append(field("X-Mailwright-Sender", address_field(str(sender), utf8), utf8=utf8))
    out.append(field("Arrival-Date", date(original.received_at), utf8=utf8))
    return b"".join(out)


def per_recipient(report: RecipientReport, *, utf8: bool) -> bytes:
    out = []
    if report.original_recipient is not None:
        kind, _, addr = report.original_recipient.partition(";")
        value = f"{kind.strip()};{_xtext_if_unsafe(addr, utf8)}"
        out.append(field("Original-Recipient", value, utf8=utf8))
    out.append(field("Final-Recipient", address_field(report.final_recipient, utf8), utf8=utf8))
    out.append(field("Action", report.action.value, utf8=utf8))
    out.append(field("Status", report.status, utf8=utf8))
    remote = remote_mta_name(report.remote_mta)
    if remote:
        out.append(field("Remote-MTA", f"dns; {remote}", utf8=utf8))
    if report.diagnostic is not None:
        out.append(field("Diagnostic-Code", str(report.diagnostic), utf8=utf8))
    if report.last_attempt is not None:
        out.append(field("Last-Attempt-Date", date(report.last_attempt), utf8=utf8))
    if report.action is Action.DELAYED and report.will_retry_until is not None:
        out.append(field("Will-Retry-Until", date(report.will_retry_until), utf8=utf8))
    return b"".join(out)


def address_field(address: str, utf8: bool) -> str:
    """``rfc822; addr``, or ``utf-8; addr`` for a non-ASCII address (RFC 6533 3)."""
    if utf8 and not address.isascii():
        return f"utf-8; {clean(address, utf8=True)}"
    return f"rfc822; {address}"


def _xtext_if_unsafe(value: str, utf8: bool) -> str:
    # xtext.encode escapes control characters (and "+", "=") but passes UTF-8 through
    if has_unsafe(value, utf8=utf8) or value != value.strip(" "):  # what clean() takes
        encoded = xtext.encode(value)
        return encoded if utf8 else encoded.encode("ascii", "backslashreplace").decode()
    return value
