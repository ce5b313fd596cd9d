"""SASL PLAIN (RFC 4616) and LOGIN exchanges on the server side, sans-I/O.

An exchange is fed the decoded client data (the initial response of ``AUTH``,
then each response line) and answers with a ``Challenge`` to send as ``334``,
the ``Credentials`` to check, or a ``Failure`` reply. Base64 and the ``*``
cancel line are the caller's (``smtp.server.decode_sasl``); this module never
sees a socket and never logs. Trusts nothing: malformed data is a ``Failure``.
Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailwright.core.reply import Reply

MECHANISMS = ("PLAIN", "LOGIN")
MAX_FIELD = 1024  # octets of a user name or password we are willing to look at

MALFORMED = Reply.of(501, "5.5.2", "Malformed authentication data")
CANCELLED = Reply.of(501, "5.7.0", "Authentication cancelled")
BAD_BASE64 = Reply.of(501, "5.5.2", "Invalid base64 data")


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send ``334`` with this (base64-encoded by the core) and wait for a response."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """The client said who it is; the caller checks the password."""

    user: str
    password: str = ""

    def __repr__(self) -> str:  # never print a password, even in a traceback
        return f"Credentials(user={self.user!r}, password=<hidden>)"


@dataclass(frozen=True, slots=True)
class Failure:
    reply: Reply


Step = Challenge | Credentials | Failure


def _text(data: bytes) -> str | None:
    if len(data) > MAX_FIELD or b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class Exchange:
    """One mechanism's dialogue; ``start`` once, then ``step`` for each response."""

    mechanism = ""

    def start(self, initial: bytes | None) -> Step:
        raise NotImplementedError

    def step(self, response: bytes) -> Step:
        raise NotImplementedError


class PlainExchange(Exchange):
    """``authzid NUL authcid NUL passwd``; an authzid other than the authcid is refused."""

    mechanism = "PLAIN"

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"")
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        parts = response.split(b"\0")
        if len(parts) != 3:
            return Failure(MALFORMED)
        authzid, user, password = (_text(p) for p in parts)
        if user is None or password is None or authzid is None:
            return Failure(MALFORMED)
        if authzid and authzid != user:  # no proxy authorisation
            return Credentials(user, "")  # checked like a wrong password
        return Credentials(user, password)


class LoginExchange(Exchange):
    """The de-facto LOGIN mechanism: ``Username:``, then ``Password:``."""

    mechanism = "LOGIN"

    def __init__(self) -> None:
        self._user: str | None = None

    def start(self, initial: bytes | None) -> Step:
        if initial is None:
            return Challenge(b"Username:")
        return self.step(initial)

    def step(self, response: bytes) -> Step:
        text = _text(response)
        if text is None:
            return Failure(MALFORMED)
        if self._user is None:
            self._user = text
            return Challenge(b"Password:")
        return Credentials(self._user, text)


def exchange_for(mechanism: str) -> Exchange:
    """A fresh exchange; ``KeyError`` for a mechanism we do not implement."""
    return {"PLAIN": PlainExchange, "LOGIN": LoginExchange}[mechanism.upper()]()
