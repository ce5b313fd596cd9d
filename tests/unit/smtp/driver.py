"""A tiny synchronous driver of the server core for tests: accepts every decision."""

from __future__ import annotations

from collections.abc import Callable

from mailwright.core.reply import Reply
from mailwright.smtp import events as ev
from mailwright.smtp.server import ServerConnection, ServerSettings

DECISIONS = (ev.Hello, ev.MailFrom, ev.RcptTo, ev.DataStart, ev.ContentEnd, ev.StartTls, ev.Auth)
Decider = Callable[[ev.Event], "Reply | None"]


class Driver:
    def __init__(self, settings: ServerSettings | None = None, decide: Decider | None = None):
        self.conn = ServerConnection(settings or ServerSettings(hostname="mx.test"))
        self.decide = decide or (lambda e: None)
        self.events: list[ev.Event] = []
        self.content = bytearray()
        self.messages: list[bytes] = []
        self.conn.greet()
        self.greeting = self.conn.data_to_send()

    def feed(self, data: bytes) -> bytes:
        self.conn.receive(data)
        while (event := self.conn.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, ev.Content):
                self.content += event.data
            if isinstance(event, ev.ContentEnd):
                if event.problem is None:
                    self.messages.append(bytes(self.content))
                self.content.clear()
            if isinstance(event, DECISIONS):
                self.conn.respond(self.decide(event))
        return self.conn.data_to_send()

    def replies(self, data: bytes) -> list[str]:
        """Feed and return the reply lines (final lines only for multi-line replies)."""
        out = self.feed(data).decode()
        return [line for line in out.split("\r\n") if line and line[3:4] != "-"]


def codes(lines: list[str]) -> list[int]:
    return [int(line[:3]) for line in lines]
