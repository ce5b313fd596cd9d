"""One recipient's line in a report: who, what happened, and what the server said.

``RecipientReport`` holds the facts RFC 3464 2.3 reports per recipient. It is built
from whatever the caller has at hand: an envelope ``Recipient``, a ``StoredRecipient``
from the queue (its last result), or a delivery agent's ``DeliveryResult``.
``original_recipient`` is the ORCPT decoded from xtext (``rfc822;bob@example.org``),
as ``core.envelope.Recipient.original`` gives it. Reads no settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailwright.core import xtext
from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.envelope import Notify, Recipient
from mailwright.dsn.action import Action, ReportKind
from mailwright.dsn.diagnostic import Diagnostic
from mailwright.queue.store import StoredRecipient

_STATUS = re.compile(r"^[245]\.[0-9]{1,3}\.[0-9]{1,3}$")
_OUTCOME_ACTION = {
    Outcome.DELIVERED: Action.DELIVERED,
    Outcome.RELAYED: Action.RELAYED,
    Outcome.DEFERRED: Action.DELAYED,
    Outcome.FAILED: Action.FAILED,
}


@dataclass(frozen=True, slots=True)
class RecipientReport:
    final_recipient: str  # the address we tried: "bob@example.org"
    action: Action
    status: str  # RFC 3463 enhanced status code: "5.1.1"
    original_recipient: str | None = None  # decoded ORCPT: "rfc822;Bob@Example.org"
    notify: frozenset[Notify] | None = None  # None: the client gave no NOTIFY
    remote_mta: str = ""  # "mx.example.org [192.0.2.1]", or "" when no server answered
    diagnostic: Diagnostic | None = None
    last_attempt: float | None = None  # seconds since the epoch
    will_retry_until: float | None = None  # delay reports: when we give up

    def __post_init__(self) -> None:
        if not _STATUS.match(self.status):
            raise ValueError(f"not an enhanced status code: {self.status!r}")

    def wants(self, kind: ReportKind) -> bool:
        """Does this recipient's NOTIFY ask for a report of ``kind`` (RFC 3461 4.1)?"""
        if self.notify is None:
            return kind in (ReportKind.FAILURE, ReportKind.DELAY)
        return kind.notify in self.notify

    @classmethod
    def from_recipient(
        cls,
        recipient: Recipient,
        action: Action,
        status: str | None = None,
        *,
        remote_mta: str = "",
        diagnostic: Diagnostic | None = None,
        last_attempt: float | None = None,
        will_retry_until: float | None = None,
    ) -> RecipientReport:
        """From an envelope recipient: its address, decoded ORCPT and NOTIFY."""
        return cls(
            final_recipient=str(recipient.address),
            action=action,
            status=status or action.default_status,
            original_recipient=decode_orcpt(recipient.orcpt),
            notify=recipient.notify,
            remote_mta=remote_mta,
            diagnostic=diagnostic,
            last_attempt=last_attempt,
            will_retry_until=will_retry_until,
        )

    @classmethod
    def from_stored(
        cls,
        stored: StoredRecipient,
        action: Action,
        status: str | None = None,
        *,
        diagnostic: Diagnostic | None = None,
        will_retry_until: float | None = None,
    ) -> RecipientReport:
        """From a queued recipient and its last result (status, reply, remote MTA, time)."""
        if diagnostic is None and stored.last_reply:
            diagnostic = Diagnostic.coerce(stored.last_reply)
        return cls(
            final_recipient=stored.address,
            action=action,
            status=status or stored.last_status or action.default_status,
            original_recipient=decode_orcpt(stored.orcpt),
            notify=parse_notify(stored.notify),
            remote_mta=stored.remote_mta or "",
            diagnostic=diagnostic,
            last_attempt=stored.last_attempt,
            will_retry_until=will_retry_until,
        )

    @classmethod
    def from_delivery(
        cls,
        recipient: DeliveryRecipient,
        result: DeliveryResult,
        *,
        attempted_at: float,
        action: Action | None = None,
        will_retry_until: float | None = None,
    ) -> RecipientReport:
        """From a delivery agent's result; the action follows its outcome unless given."""
        action = action or _OUTCOME_ACTION[result.outcome]
        diagnostic = Diagnostic.from_reply(result.reply, result.diagnostic_type)
        return cls(
            final_recipient=recipient.address,
            action=action,
            status=result.reply.status or action.default_status,
            original_recipient=decode_orcpt(recipient.orcpt),
            notify=recipient.notify,
            # Remote-MTA names the MTA that reported the status (RFC 3464 2.3.5): none
            # when the words are ours (a refused connection, say)
            remote_mta=result.remote_mta if diagnostic.is_reply else "",
            diagnostic=diagnostic,
            last_attempt=attempted_at,
            will_retry_until=will_retry_until,
        )


def parse_notify(text: str | None) -> frozenset[Notify] | None:
    """The stored NOTIFY text (``"FAILURE,SUCCESS"``) as a set; None stays None."""
    if text is None:
        return None
    return frozenset(Notify(part.strip().upper()) for part in text.split(",") if part.strip())


def decode_orcpt(orcpt: str | None) -> str | None:
    """ORCPT as received (``rfc822;a+2Bb@example.org``) decoded: ``rfc822;a+b@example.org``.

    Malformed xtext (which the SMTP server never accepts) is reported as received.
    """
    if orcpt is None:
        return None
    kind, _, value = orcpt.partition(";")
    try:
        return f"{kind};{xtext.decode(value, utf8=True)}"
    except xtext.XtextError:
        return orcpt
