"""Delivery status notifications (RFC 3464, RFC 6522) built as new messages for the queue.

``build_report`` turns "these recipients of that message failed / are delayed / were
delivered" into a ``queue.store.NewMessage`` (or None when no report is due), which
the scheduler queues in the same transaction that records the results
(``RecordResults.new_messages``). The report is a ``multipart/report;
report-type=delivery-status`` from MAILER-DAEMON with the null sender, in three parts:
what happened in words (quoting each remote server's reply), the
``message/delivery-status`` fields, and the original message (``message/rfc822``) or
only its headers (``text/rfc822-headers``). An SMTPUTF8 original gets the RFC 6533
``message/global*`` types instead. The original's body is streamed (``dsn.body``):
it is read from the queue while the report is inserted, never held in memory whole,
so the original must still be in the queue then.

The rules (RFC 3461 4.1 and 6, RFC 3464, RFC 5321 6.1, Sendmail's behaviour):

- A recipient is reported only if its NOTIFY asks for that kind of report: failures
  and delays when NOTIFY is absent or names them, successes only for NOTIFY=SUCCESS,
  nothing for NOTIFY=NEVER. One report per message and event lists all its recipients.
- Part 3 is the whole message for a failure unless RET=HDRS (or it is larger than
  ``max_return_size``); delay and success reports carry only the headers.
- The report goes to the original sender with NOTIFY=NEVER, so it never causes
  another report; its origin protocol is ``bounce``.
- A message with the null sender gets no report. When it fails, the failure goes to
  ``double_bounce_recipient`` (the postmaster) regardless of NOTIFY, with origin
  protocol ``double-bounce``; a double bounce that fails is dropped.

Trusts its caller for the facts (which recipients, which action); cleans every value
it writes. Reads no settings: the caller passes ``hostname`` as ``reporting_mta`` and
Sendmail's DoubleBounceAddress as ``double_bounce_recipient``.
"""

from __future__ import annotations

import email.quoprimime
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from mailwright.core.address import Address, AddressError, parse_mailbox
from mailwright.core.envelope import BodyType, Envelope, MailParams, Notify, Recipient, Ret
from mailwright.core.headers import Header, HeaderList
from mailwright.core.queueid import new_queue_id
from mailwright.dsn.action import ReportKind
from mailwright.dsn.body import ReportBody
from mailwright.dsn.explanation import explanation
from mailwright.dsn.fieldtext import date
from mailwright.dsn.original import BOUNCE_PROTOCOL, DOUBLE_BOUNCE_PROTOCOL, OriginalMessage
from mailwright.dsn.recipient import RecipientReport
from mailwright.dsn.status import delivery_status
from mailwright.queue.store import NewMessage, Origin

DEFAULT_DOUBLE_BOUNCE = "postmaster"
FROM_NAME = "Mail Delivery Subsystem"
SUBJECTS = {
    ReportKind.FAILURE: "Undelivered Mail Returned to Sender",
    ReportKind.DELAY: "Delayed Mail (still being retried)",
    ReportKind.SUCCESS: "Successful Mail Delivery Report",
}
DOUBLE_BOUNCE_SUBJECT = "Postmaster Copy: Undelivered Mail"
_PREAMBLE = b"This is a MIME-encapsulated message.\r\n\r\n"
_BODY_RANK = {BodyType.SEVEN_BIT: 0, BodyType.EIGHT_BIT: 1, BodyType.BINARY: 2}
_CTE = {BodyType.EIGHT_BIT: "8bit", BodyType.BINARY: "binary"}


def build_report(
    original: OriginalMessage,
    kind: ReportKind,
    recipients: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    now: float | None = None,
    double_bounce_recipient: str | Address | None = DEFAULT_DOUBLE_BOUNCE,
    max_return_size: int | None = None,
    queue_id: str | None = None,
) -> NewMessage | None:
    """The report of ``kind`` about ``recipients`` of ``original``, or None if none is due.

    Every recipient's action must be of ``kind`` (ValueError otherwise).
    ``double_bounce_recipient`` None drops failures of null-sender messages; a bare
    local part is qualified with ``reporting_mta``.
    """
    for r in recipients:
        if r.action.kind is not kind:
            raise ValueError(f"action {r.action} of {r.final_recipient} is not a {kind} report")
    target = report_recipient(original, kind, double_bounce_recipient, reporting_mta)
    if target is None:
        return None
    double = original.envelope.sender is None
    selected = list(recipients) if double else [r for r in recipients if r.wants(kind)]
    if not selected:
        return None
    plan = _Plan.make(original, kind, selected, target, double, max_return_size)
    return _assemble(
        plan,
        reporting_mta=reporting_mta,
        now=time.time() if now is None else now,
        queue_id=queue_id or new_queue_id(),
    )


def build_reports(
    original: OriginalMessage,
    recipients: Sequence[RecipientReport],
    *,
    reporting_mta: str,
    now: float | None = None,
    double_bounce_recipient: str | Address | None = DEFAULT_DOUBLE_BOUNCE,
    max_return_size: int | None = None,
) -> list[NewMessage]:
    """One report per kind present among ``recipients`` (failure, delay, success order)."""
    reports = []
    for kind in ReportKind:
        group = [r for r in recipients if r.action.kind is kind]
        report = build_report(
            original,
            kind,
            group,
            reporting_mta=reporting_mta,
            now=now,
            double_bounce_recipient=double_bounce_recipient,
            max_return_size=max_return_size,
        )
        if report is not None:
            reports.append(report)
    return reports


def report_recipient(
    original: OriginalMessage,
    kind: ReportKind,
    double_bounce_recipient: str | Address | None,
    reporting_mta: str,
) -> Address | None:
    """Who gets a report of ``kind`` about ``original``: its sender, the postmaster, or nobody."""
    if original.envelope.sender is not None:
        return original.envelope.sender
    if kind is not ReportKind.FAILURE or original.is_double_bounce:
        return None
    if double_bounce_recipient is None:
        return None
    return _qualified(double_bounce_recipient, reporting_mta)


def summary(kind: ReportKind, recipients: Sequence[RecipientReport], limit: int = 160) -> str:
    """One line for the mail log, e.g.
    ``failure DSN for 1 recipient: <bob@example.org> 5.1.1 (smtp; 550 5.1.1 User unknown)``.
    Each diagnostic is cut to ``limit`` characters; the log line escapes control characters.
    """
    items = []
    for r in recipients:
        diagnostic = ""
        if r.diagnostic is not None:
            text = str(r.diagnostic)
            diagnostic = f" ({text[:limit]}{'...' if len(text) > limit else ''})"
        items.append(f"<{r.final_recipient}> {r.status}{diagnostic}")
    count = len(recipients)
    noun = "recipient" if count == 1 else "recipients"
    return f"{kind} DSN for {count} {noun}: {', '.join(items)}"


# ---- assembly -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """What a report will say and carry, decided before any byte is written."""

    original: OriginalMessage
    kind: ReportKind
    recipients: list[RecipientReport]
    target: Address
    double_bounce: bool
    utf8: bool  # RFC 6533 message/global* types and an SMTPUTF8 envelope
    full: bool  # part 3 is the whole message, not only its headers
    too_big: bool  # headers only because of max_return_size
    private: bool = False  # REQUIRETLS: headers only, the report under REQUIRETLS too

    @classmethod
    def make(
        cls,
        original: OriginalMessage,
        kind: ReportKind,
        recipients: list[RecipientReport],
        target: Address,
        double_bounce: bool,
        max_return_size: int | None,
    ) -> _Plan:
        utf8 = (
            original.envelope.params.smtputf8
            or target.needs_smtputf8
            or any(not r.final_recipient.isascii() for r in recipients)
        )
        params = original.envelope.params
        # RFC 8689 5: a REQUIRETLS message's body never travels in a report (as RET=HDRS)
        wants_full = (
            kind is ReportKind.FAILURE and params.ret is not Ret.HDRS and not params.requiretls
        )
        too_big = wants_full and max_return_size is not None and _size(original) > max_return_size
        return cls(
            original,
            kind,
            recipients,
            target,
            double_bounce,
            utf8,
            wants_full and not too_big,
            too_big,
            params.requiretls,
        )

    @property
    def subject(self) -> str:
        return DOUBLE_BOUNCE_SUBJECT if self.double_bounce else SUBJECTS[self.kind]

    @property
    def attachment(self) -> str:
        if self.full:
            return "the original message"
        if self.too_big:
            return "the headers of the message (it is too large to return whole)"
        if self.private and self.kind is ReportKind.FAILURE:
            return "the headers of the message (it was sent with REQUIRETLS)"
        return "the headers of the message"

    @property
    def returned_type(self) -> str:
        if self.full:
            return "message/global" if self.utf8 else "message/rfc822"
        return "message/global-headers" if self.utf8 else "text/rfc822-headers"

    @property
    def returned_body_type(self) -> BodyType:
        """How 8-bit part 3 is: the original's BODY= when whole, its header bytes anyway."""
        header_type = BodyType.SEVEN_BIT if _ascii(self.original.headers) else BodyType.EIGHT_BIT
        if not self.full:
            return header_type
        return max(header_type, self.original.envelope.params.body, key=_BODY_RANK.__getitem__)

    def returned_chunks(self) -> Iterator[bytes]:
        if self.full:
            yield from self.original.message_chunks()
        else:
            yield self.original.headers.encode()

    def returned_size(self) -> int | None:
        headers = len(self.original.headers.encode())
        if not self.full:
            return headers
        body = self.original.body_size
        return None if body is None else headers + 2 + body


def _assemble(plan: _Plan, *, reporting_mta: str, now: float, queue_id: str) -> NewMessage:
    boundary = f"=_{queue_id}/{secrets.token_hex(12)}"
    text_part, text_type, text_cte = _text_part(plan, reporting_mta, now)
    status = delivery_status(
        plan.original, plan.recipients, reporting_mta=reporting_mta, utf8=plan.utf8
    )
    body_type = plan.returned_body_type
    if not status.isascii():
        body_type = max(body_type, BodyType.EIGHT_BIT, key=_BODY_RANK.__getitem__)
    delimiter = f"--{boundary}\r\n".encode()
    head = b"".join(
        [
            _PREAMBLE,
            delimiter,
            _part_headers("Notification", text_type, text_cte),
            text_part,
            b"\r\n",
            delimiter,
            _part_headers("Delivery report", _status_type(plan.utf8), _cte_of(status)),
            status,
            b"\r\n",
            delimiter,
            _part_headers(_returned_description(plan), plan.returned_type, _CTE.get(body_type)),
        ]
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = ReportBody(head, plan.returned_chunks, tail, plan.returned_size())
    return NewMessage(
        queue_id=queue_id,
        envelope=Envelope(
            sender=None,
            params=MailParams(body=body_type, smtputf8=plan.utf8, requiretls=plan.private),
            recipients=[Recipient(plan.target, notify=frozenset({Notify.NEVER}))],
        ),
        headers=_headers(plan, reporting_mta, now, queue_id, boundary, body_type),
        body=body,
        received_at=now,
        origin=Origin(protocol=DOUBLE_BOUNCE_PROTOCOL if plan.double_bounce else BOUNCE_PROTOCOL),
    )


def _headers(
    plan: _Plan, host: str, now: float, queue_id: str, boundary: str, body_type: BodyType
) -> HeaderList:
    headers = HeaderList(
        [
            Header.make("From", f"{FROM_NAME} <MAILER-DAEMON@{host}>"),
            Header.make("To", str(plan.target)),
            Header.make("Subject", plan.subject),
            Header.make("Date", date(now)),
            Header.make("Message-ID", f"<{queue_id}@{host}>"),
            Header.make("Auto-Submitted", "auto-replied"),
            Header.make("MIME-Version", "1.0"),
            Header.make(
                "Content-Type",
                f'multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
            ),
        ]
    )
    if body_type in _CTE:
        headers.append(Header.make("Content-Transfer-Encoding", _CTE[body_type]))
    return headers


def _text_part(plan: _Plan, reporting_mta: str, now: float) -> tuple[bytes, str, str | None]:
    """The explanation, its Content-Type and its Content-Transfer-Encoding."""
    text = explanation(
        plan.kind,
        plan.original,
        plan.recipients,
        reporting_mta=reporting_mta,
        now=now,
        double_bounce=plan.double_bounce,
        attachment=plan.attachment,
    )
    if text.isascii():
        return text.encode("ascii"), "text/plain; charset=us-ascii", None
    # quoted-printable keeps the report 7-bit however the reply text was written
    latin1 = text.encode("utf-8").decode("latin-1")
    encoded = email.quoprimime.body_encode(latin1, maxlinelen=76, eol="\r\n")
    encoded = encoded.rstrip("\r\n") + "\r\n"
    return encoded.encode("ascii"), "text/plain; charset=utf-8", "quoted-printable"


def _part_headers(description: str, content_type: str, cte: str | None = None) -> bytes:
    lines = [f"Content-Description: {description}", f"Content-Type: {content_type}"]
    if cte is not None:
        lines.append(f"Content-Transfer-Encoding: {cte}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _status_type(utf8: bool) -> str:
    return "message/global-delivery-status" if utf8 else "message/delivery-status"


def _returned_description(plan: _Plan) -> str:
    what = {
        ReportKind.FAILURE: "Undelivered Message",
        ReportKind.DELAY: "Delayed Message",
        ReportKind.SUCCESS: "Delivered Message",
    }[plan.kind]
    return what if plan.full else f"{what} Headers"


def _cte_of(data: bytes) -> str | None:
    return None if data.isascii() else "8bit"


def _ascii(headers: HeaderList) -> bool:
    return all(h.value.isascii() for h in headers)


def _size(original: OriginalMessage) -> int:
    body = original.body_size
    if body is None:
        body = sum(len(piece) for piece in original.body())
    return len(original.headers.encode()) + 2 + body


def _qualified(recipient: str | Address, host: str) -> Address:
    if isinstance(recipient, Address):
        return recipient if recipient.domain else recipient.with_domain(host)
    if "@" not in recipient:
        return Address(recipient, host)
    try:
        return parse_mailbox(recipient, utf8=True)
    except AddressError as exc:
        raise ValueError(f"double_bounce_recipient {recipient!r}: {exc}") from None
