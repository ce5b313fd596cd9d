"""The envelope of a message: sender, recipients and their ESMTP/DSN parameters.

Values here are already validated by the protocol layer; this module only holds
them and answers simple questions (does NOTIFY ask for a success report?).
Plain classes (``core.record``), not dataclasses: ``sendmail`` loads this module.
Reads no settings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from mailwright.core.record import Record

if TYPE_CHECKING:  # not loaded at run time: ``sendmail`` imports this module
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


class MailParams(Record):
    """Parameters of MAIL FROM (RFC 1870, 6152, 6531, 3461, 4954, 8689)."""

    __slots__ = ("auth", "body", "envid", "requiretls", "ret", "size", "smtputf8")

    def __init__(
        self,
        size: int | None = None,
        body: BodyType = BodyType.SEVEN_BIT,
        smtputf8: bool = False,
        ret: Ret | None = None,
        envid: str | None = None,
        auth: str | None = None,
        requiretls: bool = False,
    ) -> None:
        self.size = size
        self.body = body
        self.smtputf8 = smtputf8
        self.ret = ret
        self.envid = envid  # decoded from xtext
        self.auth = auth  # decoded AUTH= value, "<>" when the client sent it
        # RFC 8689: every onward hop over verified TLS, and one that offers REQUIRETLS
        self.requiretls = requiretls


class Recipient(Record):
    """One envelope recipient with its DSN parameters (RFC 3461)."""

    __slots__ = ("address", "notify", "orcpt", "target")

    def __init__(
        self,
        address: Address,
        notify: frozenset[Notify] | None = None,
        orcpt: str | None = None,
        target: Target | None = None,
    ) -> None:
        self.address = address
        self.notify = notify  # None: the client said nothing
        self.orcpt = orcpt  # "addr-type;xtext" exactly as received, passed on unchanged
        self.target = target  # set by alias expansion: deliver here, do not route

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


class Envelope(Record):
    __slots__ = ("params", "recipients", "sender")

    def __init__(
        self,
        sender: Address | None,
        params: MailParams | None = None,
        recipients: list[Recipient] | None = None,
    ) -> None:
        self.sender = sender  # None is the null reverse-path <>
        self.params = MailParams() if params is None else params
        self.recipients: list[Recipient] = [] if recipients is None else recipients

    @property
    def sender_text(self) -> str:
        return "" if self.sender is None else str(self.sender)
