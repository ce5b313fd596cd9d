"""What a report says went wrong: the ``Diagnostic-Code`` and the ``Remote-MTA`` name.

A diagnostic is a type (``smtp`` for a server's reply, RFC 3464 2.3.6; ``X-Mailwright``
for our own words) and its text, e.g. ``smtp; 550 5.1.1 <bob@example.org>... User
unknown``. The text is kept exactly as the remote server sent it (it is quoted to the
sender); it is only cleaned where it is written. Only a reply a peer really sent
(``Reply.from_peer``) is typed ``smtp``/``lmtp``: a refused connection, a timeout or an
expired message is our own text in a reply's form, and the report must not put it in a
server's mouth. Reads no settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailwright.core.reply import Reply

OWN_TYPE = "X-Mailwright"  # the diagnostic type of our own explanations
_REPLY_TYPES = ("smtp", "lmtp")  # diagnostic types that quote a server
_TYPED = re.compile(r"^\s*([A-Za-z][A-Za-z0-9-]*)\s*;\s*(.*)$", re.DOTALL)
_SMTP_REPLY = re.compile(r"^[2-5][0-9][0-9](?:[ -]|$)")
_REMOTE = re.compile(r"^(?P<name>[^\s\[\]]*)\s*(?:\[(?P<addr>[^\]]*)\])?$")


@dataclass(frozen=True, slots=True)
class Diagnostic:
    type: str  # "smtp", "X-Mailwright", "x-unix" ...
    text: str  # "550 5.1.1 <bob@example.org>... User unknown"

    @classmethod
    def from_reply(cls, reply: Reply, type: str = "smtp") -> Diagnostic:
        """A reply (multi-line replies joined by spaces), e.g. ``550 5.1.1 text``.

        ``type`` names the protocol of the attempt; a reply no peer sent is our own
        explanation (``X-Mailwright``) whatever the protocol.
        """
        if type.lower() in _REPLY_TYPES and not reply.from_peer:
            type = OWN_TYPE
        status = f" {reply.status}" if reply.status else ""
        return cls(type, f"{reply.code}{status} {' '.join(reply.lines)}".rstrip())

    @classmethod
    def own(cls, text: str) -> Diagnostic:
        """Our own explanation (no server said anything), e.g. ``Host not found``."""
        return cls(OWN_TYPE, text)

    @classmethod
    def coerce(cls, text: str) -> Diagnostic:
        """Read a stored last result: ``type; text``, a bare SMTP reply, or our own words."""
        if _SMTP_REPLY.match(text):
            return cls("smtp", text)
        typed = _TYPED.match(text)
        if typed:
            return cls(typed.group(1), typed.group(2))
        return cls.own(text)

    @property
    def is_reply(self) -> bool:
        """Is this a server's own reply (worth quoting as "the server said")?"""
        return self.type.lower() in _REPLY_TYPES

    def __str__(self) -> str:
        return f"{self.type}; {self.text}"


def remote_mta_name(remote: str) -> str:
    """The host name in ``mx.example.org [192.0.2.1]``; the bracketed address if no name."""
    remote = remote.strip()
    match = _REMOTE.match(remote)
    if match is None:
        return remote.split()[0] if remote else ""
    if match.group("name"):
        return match.group("name")
    addr = match.group("addr")
    return f"[{addr}]" if addr else ""


def said(reply: Reply, remote_mta: str) -> str:
    """A result for a sentence: ``mx.example.org [192.0.2.1] said: 451 4.3.0 busy`` when
    a peer sent it, our own text as it is (``connect to ...: Connection refused``)."""
    text = " ".join(reply.lines).strip()
    if not reply.from_peer:
        return text
    status = f" {reply.status}" if reply.status else ""
    return f"{remote_mta.strip() or 'the server'} said: {reply.code}{status} {text}".rstrip()
