"""The reports a message's delivery results call for, built without I/O.

The queue manager decides *that* a report is due: it records each recipient's state
(failed, still queued, relayed, delivered), says whether a delay warning is due now,
and queues what this module returns in the same transaction as the results. This
module builds the reports:

- ``expired``: the failure that ends a recipient whose retries ran out (4.4.7, in our
  words, quoting who said the last error);
- ``MessageReports``: one message's results collected per kind (failure, delay,
  success) with the action each recipient gets, and turned into ``Notice`` s: at most
  one report per kind, each a ``queue.store.NewMessage`` from ``build_report`` (to the
  sender, or to the postmaster for a double bounce) with the Sendmail-style reason the
  mail log writes after ``DSN:``;
- ``Reporter.expanded``: the ``expanded`` success report of an alias or list that
  asked for NOTIFY=SUCCESS (``manager.expansion``).

Trusts the caller for the facts (states, whether a warning is due). Reads no settings:
``Reporter`` is given the host name, the double-bounce recipient and the return size
limit by the queue manager's settings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.reply import Reply
from mailwright.dsn.action import Action, ReportKind
from mailwright.dsn.diagnostic import said
from mailwright.dsn.original import OriginalMessage
from mailwright.dsn.recipient import RecipientReport, decode_orcpt, parse_notify
from mailwright.dsn.report import DEFAULT_DOUBLE_BOUNCE, build_report
from mailwright.queue.store import NewMessage, RecipientState, StoredRecipient

EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


def expired(result: DeliveryResult) -> DeliveryResult:
    """``result`` turned into the failure of a recipient whose retries ran out."""
    reply = Reply.of(
        result.reply.code if result.reply.transient else 451,
        EXPIRED_STATUS,
        # our words; the last error says who said what (dsn.said)
        f"Delivery time expired; last error: {said(result.reply, result.remote_mta)}",
    )
    return DeliveryResult(
        result.index, Outcome.FAILED, reply, result.remote_mta, result.diagnostic_type
    )


def report_action(state: RecipientState, *, final_here: bool) -> Action | None:
    """The action a recipient's report gives, or None when no report is about it:
    a delivery counts only when it was final delivery here (a DSN-capable SMTP hop
    reports itself)."""
    if state is RecipientState.FAILED:
        return Action.FAILED
    if state is RecipientState.QUEUED:
        return Action.DELAYED
    if state is RecipientState.RELAYED:
        return Action.RELAYED
    if state is RecipientState.DELIVERED and final_here:
        return Action.DELIVERED
    return None


def dsn_reason(kind: ReportKind, entries: Sequence[RecipientReport]) -> str:
    """Sendmail's reason after ``DSN:``: the first failure's diagnostic, the delay
    warning, or the return receipt."""
    if kind is ReportKind.SUCCESS:
        return "Return receipt"
    first = entries[0]
    why = first.diagnostic.text if first.diagnostic is not None else first.status
    if kind is ReportKind.DELAY:
        return f"Warning: could not send message yet, will keep trying: {why}"
    return why


@dataclass(frozen=True, slots=True)
class Notice:
    """A report to queue, of ``kind``, and why it was made (the mail log's ``DSN:``)."""

    kind: ReportKind
    message: NewMessage
    reason: str

    @property
    def to(self) -> str:
        """Its recipients, as the mail log writes them."""
        return ", ".join(str(r.address) for r in self.message.envelope.recipients)


@dataclass(frozen=True, slots=True)
class Reporter:
    """Builds reports as this host: ``reporting_mta`` is its name, failures of a
    null-sender message go to ``double_bounce_recipient``, and originals larger than
    ``max_return_size`` are returned as headers only."""

    reporting_mta: str = "localhost"
    double_bounce_recipient: str = DEFAULT_DOUBLE_BOUNCE
    max_return_size: int | None = None

    def notice(
        self,
        original: OriginalMessage,
        kind: ReportKind,
        entries: Sequence[RecipientReport],
        now: float,
    ) -> Notice | None:
        """The report of ``kind`` about ``entries``, or None when none is due."""
        report = build_report(
            original,
            kind,
            entries,
            reporting_mta=self.reporting_mta,
            now=now,
            double_bounce_recipient=self.double_bounce_recipient,
            max_return_size=self.max_return_size,
        )
        if report is None:
            return None
        return Notice(kind, report, dsn_reason(kind, entries))

    def expanded(
        self, original: OriginalMessage, recipient: StoredRecipient, now: float
    ) -> Notice | None:
        """The success report for ``recipient``, an alias or list that was expanded."""
        entry = RecipientReport(
            final_recipient=recipient.address,
            action=Action.EXPANDED,
            status="2.0.0",
            original_recipient=decode_orcpt(recipient.orcpt),
            notify=parse_notify(recipient.notify),
            last_attempt=now,
        )
        return self.notice(original, ReportKind.SUCCESS, [entry], now)


@dataclass(slots=True)
class MessageReports:
    """The report entries of one message's results, per kind in the order first seen."""

    found: dict[ReportKind, list[RecipientReport]] = field(default_factory=dict)

    def add(
        self,
        recipient: StoredRecipient,
        result: DeliveryResult,
        state: RecipientState,
        *,
        final_here: bool,
        now: float,
    ) -> None:
        """Note ``recipient``'s ``result`` (recorded as ``state``) if a report is about it."""
        action = report_action(state, final_here=final_here)
        if action is None:
            return
        target = DeliveryRecipient(
            recipient.index, recipient.address, recipient.orcpt, parse_notify(recipient.notify)
        )
        entry = RecipientReport.from_delivery(target, result, attempted_at=now, action=action)
        self.found.setdefault(action.kind, []).append(entry)

    @property
    def delayed(self) -> bool:
        """Is a recipient still queued (a delay warning would be about it)?"""
        return ReportKind.DELAY in self.found

    def notices(
        self,
        reporter: Reporter,
        original: OriginalMessage,
        now: float,
        *,
        warn_until: float | None,
    ) -> list[Notice]:
        """The reports to queue. ``warn_until`` is when retries end if a delay warning
        is due now, None when it is not (already sent, or too early)."""
        out = []
        for kind, found in self.found.items():
            entries = found
            if kind is ReportKind.DELAY:
                if warn_until is None:
                    continue
                entries = [dataclasses.replace(e, will_retry_until=warn_until) for e in found]
            notice = reporter.notice(original, kind, entries, now)
            if notice is not None:
                out.append(notice)
        return out
