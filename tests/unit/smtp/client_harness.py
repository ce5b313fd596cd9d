"""Drive the client core in tests: against the real server core, or against scripted replies."""

from __future__ import annotations

from mailwright.core.reply import Reply
from mailwright.smtp.client import (
    ClientConnection,
    ClientEvent,
    ClientSettings,
    SendContent,
    Transaction,
    TransactionDone,
    TransactionRecipient,
    TransactionResult,
)
from mailwright.smtp.server import ServerSettings
from tests.unit.smtp.driver import Decider, Driver


def txn(*rcpts: str, sender: str = "a@x.test") -> Transaction:
    return Transaction(sender, [TransactionRecipient(r) for r in rcpts])


class Pair:
    """A client core wired to a server core in memory; every write is recorded."""

    def __init__(
        self,
        server: ServerSettings | None = None,
        decide: Decider | None = None,
        client: ClientSettings | None = None,
    ) -> None:
        self.server = Driver(server or ServerSettings(hostname="mx.test"), decide)
        lmtp = self.server.conn.settings.lmtp
        self.client = ClientConnection(client or ClientSettings("client.test", lmtp=lmtp))
        self.writes: list[bytes] = []  # each data_to_send() of the client
        self.events: list[ClientEvent] = []
        self.client.receive(self.server.greeting)
        self.pump()

    def pump(self) -> list[ClientEvent]:
        """Exchange bytes until both sides are quiet; returns the new client events."""
        new: list[ClientEvent] = []
        while True:
            event = self.client.next_event()
            if event is not None:
                new.append(event)
                continue
            out = self.client.data_to_send()
            if not out:
                break
            self.writes.append(out)
            self.client.receive(self.server.feed(out))
        self.events += new
        return new

    def send(self, transaction: Transaction, *content: bytes) -> TransactionResult:
        self.client.begin(transaction)
        events = self.pump()
        if any(isinstance(e, SendContent) for e in events):
            for chunk in content:
                self.client.send_content(chunk)
                events += self.pump()
                assert not self.client.content_blocked
            self.client.end_content()
            events += self.pump()
        done = next(e for e in events if isinstance(e, TransactionDone))
        return done.result

    @property
    def wire(self) -> bytes:
        return b"".join(self.writes)


class Scripted:
    """A client core fed with canned server bytes."""

    def __init__(self, settings: ClientSettings | None = None) -> None:
        self.client = ClientConnection(settings or ClientSettings("client.test"))
        self.sent = bytearray()

    def feed(self, data: bytes) -> list[ClientEvent]:
        self.client.receive(data)
        events = []
        while (event := self.client.next_event()) is not None:
            events.append(event)
        self.sent += self.client.data_to_send()
        return events

    def take(self) -> bytes:
        out = bytes(self.sent) + self.client.data_to_send()
        self.sent.clear()
        return out


EHLO_FULL = (
    b"250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n250-DSN\r\n250 SMTPUTF8\r\n"
)
EHLO_PLAIN = b"250-mx.test\r\n250 8BITMIME\r\n"


def reply_codes(result: TransactionResult) -> list[int]:
    return [r.reply.code for r in result.replies]


def r(code: int, status: str | None, text: str) -> Reply:
    return Reply.of(code, status, text)
