"""Events that the server protocol core emits to its driver (the edge session).

Events marked *decision* block the core until the driver calls
``ServerConnection.respond``; the core already checked syntax and sequence, so
the driver only applies policy.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.core.address import Address
from mailwright.core.envelope import MailParams, Recipient
from mailwright.core.reply import Reply


class Event:
    __slots__ = ()


@dataclass(slots=True)
class Hello(Event):
    """Decision: EHLO, HELO or LHLO. A positive reply resets any transaction."""

    verb: str
    name: str


@dataclass(slots=True)
class MailFrom(Event):
    """Decision: MAIL FROM with valid syntax and parameters."""

    sender: Address | None
    params: MailParams
    raw_path: str
    raw_params: list[str]


@dataclass(slots=True)
class RcptTo(Event):
    """Decision: RCPT TO with valid syntax, within the recipient limit."""

    recipient: Recipient
    raw_path: str
    raw_params: list[str]


@dataclass(slots=True)
class DataStart(Event):
    """Decision: DATA (``354`` on success) or the first BDAT chunk (``bdat``)."""

    bdat: bool = False


@dataclass(slots=True)
class Content(Event):
    """Message content, unstuffed; possibly many per message."""

    data: bytes


@dataclass(slots=True)
class ContentEnd(Event):
    """Decision: end of the message. ``problem`` is set when the core refuses it
    (too big, bare line ending, long line); the driver must then respond with it."""

    problem: Reply | None


@dataclass(slots=True)
class Reset(Event):
    """The transaction was reset (RSET, a new HELO/EHLO, or a failed one); no response."""

    reason: str


@dataclass(slots=True)
class StartTls(Event):
    """Decision: STARTTLS. On ``220`` the driver upgrades the stream, then calls
    ``tls_started``."""


@dataclass(slots=True)
class Auth(Event):
    """Decision: AUTH mechanism [initial-response]; the driver runs the SASL exchange."""

    mechanism: str
    initial: str | None


@dataclass(slots=True)
class Unknown(Event):
    """An unrecognised command: answered 500 already, or (``decide_unknown``) a decision
    whose ``None`` answer is that 500 and whose refusal (a milter's) replaces it."""

    line: str


@dataclass(slots=True)
class Closed(Event):
    """The session is over (QUIT answered, or the core gave up): flush and close."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Not an event: a refusal the core answered on its own, for the driver to log and count
    (``ServerConnection.take_refusals``). ``stage`` is the metric's stage label (``mail``,
    ``rcpt``, ``data``, ``connect``, ``command``); ``arg`` the address as sent, if any;
    ``reason`` a short text for the log when there is no address."""

    stage: str
    reply: Reply
    arg: str | None = None
    reason: str | None = None
