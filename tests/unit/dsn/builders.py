"""Builders for the DSN tests: an original message with a body read through a callable."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from mailwright.core.address import Address
from mailwright.core.envelope import Envelope, MailParams, Notify, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.core.reply import Reply
from mailwright.dsn import OriginalMessage
from mailwright.queue.store import Origin
from mailwright.smtp.reply import ReplyParser

HOST = "mail.example.com"
ARRIVED = 1_700_000_000.0
NOW = ARRIVED + 5 * 3600 + 7 * 60
SENDER = Address("alice", "example.com")
BODY = b"Hello Bob,\r\n\r\nthe figures are attached.\r\n-- \r\nAlice\r\n"


def original_headers(subject: str = "Quarterly figures") -> HeaderList:
    return HeaderList(
        [
            Header.make("Received", "from client.example.com by mail.example.com; " + "x" * 10),
            Header.make("From", "Alice <alice@example.com>"),
            Header.make("To", "bob@example.org, carol@example.net"),
            Header.make("Subject", subject),
            Header.make("Message-ID", "<figures.42@example.com>"),
        ]
    )


def make_original(
    recipients: Sequence[Recipient] = (),
    *,
    sender: Address | None = SENDER,
    params: MailParams | None = None,
    headers: HeaderList | None = None,
    body: bytes = BODY,
    origin: Origin | None = None,
    known_size: bool = True,
) -> OriginalMessage:
    def read_body() -> Iterator[bytes]:
        # small pieces, as a store or spool would hand them over
        for start in range(0, len(body), 16):
            yield body[start : start + 16]

    return OriginalMessage(
        queue_id="01HF3K7Q2M4XK9A",
        envelope=Envelope(sender, params or MailParams(), list(recipients)),
        received_at=ARRIVED,
        headers=headers if headers is not None else original_headers(),
        body=read_body,
        body_size=len(body) if known_size else None,
        origin=origin or Origin(),
    )


def rcpt(text: str, notify: str | None = None, orcpt: str | None = None) -> Recipient:
    local, domain = text.rsplit("@", 1)
    kinds = None if notify is None else frozenset(Notify(n) for n in notify.split(","))
    return Recipient(Address(local, domain), kinds, orcpt)


def peer_reply(wire: bytes) -> Reply:
    """A reply as read off the wire from a server (``from_peer``)."""
    parser = ReplyParser()
    parser.feed(wire)
    reply = parser.next_reply()
    assert reply is not None
    return reply
