"""The message a report is about: envelope, arrival, origin, headers, and a way to read its body.

The body is never held: ``body`` is a callable returning a fresh iterator over the
body's chunks each time it is called (``QueueStore.read_body`` bound to the queue id,
or ``Spool.chunks``), so the report can stream it, more than once if the queue
writer runs its batch again. ``body_size`` (octets of the body alone) lets the report
know its size without reading; when unknown, the body is read once to count it.

Trusts the caller that the headers and body are the queued message's. Reads no
settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from mailwright.core.envelope import Envelope
from mailwright.core.headers import HeaderList
from mailwright.queue.store import Origin, QueueStore, StoredMessage, UnknownMessageError

BodyReader = Callable[[], Iterator[bytes]]


@dataclass(slots=True)
class OriginalMessage:
    queue_id: str
    envelope: Envelope
    received_at: float  # seconds since the epoch: the report's Arrival-Date
    headers: HeaderList
    body: BodyReader
    body_size: int | None = None  # octets of the body (after the empty line), if known
    origin: Origin = field(default_factory=Origin)  # protocol "bounce"/"double-bounce": a report

    @classmethod
    def from_stored(
        cls, stored: StoredMessage, headers: HeaderList, body: BodyReader
    ) -> OriginalMessage:
        """From the queue's view of a message; its body size follows from its total size."""
        return cls(
            queue_id=stored.queue_id,
            envelope=stored.envelope,
            received_at=stored.received_at,
            headers=headers,
            body=body,
            body_size=stored.size - len(headers.encode()) - 2,
            origin=stored.origin,
        )

    @classmethod
    def from_store(cls, store: QueueStore, queue_id: str) -> OriginalMessage:
        """Read a queued message's envelope and headers; its body is read only when needed.

        Raises ``UnknownMessageError`` when the message is not in the queue.
        """
        stored = store.get_message(queue_id)
        if stored is None:
            raise UnknownMessageError(queue_id)
        return cls.from_stored(
            stored, store.read_headers(queue_id), lambda: store.read_body(queue_id)
        )

    @property
    def is_report(self) -> bool:
        """Is this message itself a report we made (a bounce or a double bounce)?"""
        return self.origin.protocol in (BOUNCE_PROTOCOL, DOUBLE_BOUNCE_PROTOCOL)

    @property
    def is_double_bounce(self) -> bool:
        """A report about a report, sent to the postmaster: if it fails, drop it."""
        return self.origin.protocol == DOUBLE_BOUNCE_PROTOCOL

    def message_chunks(self) -> Iterator[bytes]:
        """The whole message: header section, the empty line, the body."""
        yield self.headers.encode() + b"\r\n"
        yield from self.body()


BOUNCE_PROTOCOL = "bounce"  # Origin.protocol of a report sent to a message's sender
DOUBLE_BOUNCE_PROTOCOL = "double-bounce"  # ... and of one sent to the postmaster
