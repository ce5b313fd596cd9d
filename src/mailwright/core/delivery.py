"""The delivery contract shared by the queue manager, DSNs, metrics and the agents.

A delivery agent (``mailwright.delivery.agent``) is given ``DeliveryRecipient``s and
returns one ``DeliveryResult`` per recipient, whose ``Outcome`` the queue manager
records. These types live here, below every package that reads them, so that ``dsn``
and ``observability`` need not import ``delivery``. Pure data; reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailwright.core.envelope import Notify
from mailwright.core.reply import Reply
from mailwright.core.target import Target


class Outcome(StrEnum):
    DELIVERED = "delivered"  # final delivery, or accepted by a DSN-capable next hop
    RELAYED = "relayed"  # accepted by a next hop that does not support DSN
    DEFERRED = "deferred"  # temporary failure: try again later
    FAILED = "failed"  # permanent failure: bounce


@dataclass(slots=True)
class DeliveryRecipient:
    index: int  # the recipient's index in the queued message
    address: str
    orcpt: str | None = None  # passed on unchanged (RFC 3461)
    notify: frozenset[Notify] | None = None
    target: Target | None = None  # a resolved local recipient: mailbox, program or file


@dataclass(slots=True)
class DeliveryResult:
    index: int
    outcome: Outcome
    reply: Reply  # the remote server's reply, or our own diagnostic
    remote_mta: str = ""  # "mx1.example.org [192.0.2.1]" when a server answered
    diagnostic_type: str = "smtp"  # RFC 3464 Diagnostic-Code type: smtp, x-unix ...
    details: dict[str, str] = field(default_factory=dict)  # e.g. tls version for the log
