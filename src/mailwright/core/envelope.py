"""The envelope of a message: sender, recipients and their ESMTP/DSN parameters.

Values here are already validated by the protocol layer; this module only holds
them and answers simple questions (does NOTIFY ask for a success report?).
Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from mailwright.core.address import Address
from mailwright.core.target import Target


class BodyType(StrEnum):
    SEVEN_BIT = "7BIT"
    EIGHT_BIT = "8BITMIME"
    BINARY = "BINARYMIME"


class Notify(StrEnum):
    NEVER = "NEVER"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELAY = "DELAY"


class Ret(StrEnum):
    FULL = "FULL"
    HDRS = "HDRS"


@dataclass(slots=True)
class MailParams:
    """Parameters of MAIL FROM (RFC 1870, 6152, 6531, 3461, 4954)."""

    size: int | None = None
    body: BodyType = BodyType.SEVEN_BIT
    smtputf8: bool = False
    ret: Ret | None = None
    envid: str | None = None  # decoded from xtext
    auth: str | None = None  # decoded AUTH= value, "<>" when the client sent it


@dataclass(slots=True)
class Recipient:
    """One envelope recipient with its DSN parameters (RFC 3461)."""

    address: Address
    notify: frozenset[Notify] | None = None  # None: the client said nothing
    orcpt: str | None = None  # "addr-type;xtext" exactly as received, passed on unchanged
    target: Target | None = None  # set by alias expansion: deliver here, do not route

    def wants(self, kind: Notify) -> bool:
        """Does NOTIFY ask for this kind of report? Default (absent) is FAILURE and DELAY."""
        if self.notify is None:
            return kind in (Notify.FAILURE, Notify.DELAY)
        return kind in self.notify

    @property
    def original(self) -> str | None:
        """ORCPT decoded for a report: ``rfc822;user@example.org``."""
        if self.orcpt is None:
            return None
        from mailwright.core import xtext

        kind, _, value = self.orcpt.partition(";")
        try:
            return f"{kind};{xtext.decode(value, utf8=True)}"
        except xtext.XtextError:
            return self.orcpt


@dataclass(slots=True)
class Envelope:
    sender: Address | None  # None is the null reverse-path <>
    params: MailParams = field(default_factory=MailParams)
    recipients: list[Recipient] = field(default_factory=list)

    @property
    def sender_text(self) -> str:
        return "" if self.sender is None else str(self.sender)
