"""The queue store interface: what every backend (SQLite now, PostgreSQL later) provides.

Callers never see SQL. Writes are expressed as *operations* (small dataclasses)
that the single ``QueueWriter`` hands to ``QueueStore.apply_batch`` so a backend
can put many of them in one transaction (group commit: one fsync for all).
Reads are plain methods that may run concurrently with the writer.

Recipients are the unit of work: each has its own state, attempt count, next
attempt time and last result. A worker that takes recipients to deliver holds a
*lease* on them (owner + expiry) so that several queue runners, possibly on
several hosts sharing one PostgreSQL store, never deliver the same recipient
twice at once; an expired lease makes the work due again (at-least-once).

Settings read: none (backends read ``queue.*``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from mailwright.core.envelope import Envelope
from mailwright.core.headers import HeaderList


class RecipientState(StrEnum):
    QUEUED = "queued"  # waiting for (another) delivery attempt
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a next hop that does not speak DSN
    EXPANDED = "expanded"  # alias or list expansion replaced it with others
    FAILED = "failed"  # permanent failure; a bounce was queued (or suppressed)


class MessageState(StrEnum):
    ACTIVE = "active"
    HOLD = "hold"  # held by an administrator or quarantined by a filter


class StoreError(Exception):
    """A backend failure (I/O error, failed fsync, corruption): answer 451 4.3.0."""


class StoreFullError(StoreError):
    """The disk or database is full: answer 452 4.3.1."""


class BodySource(Protocol):
    """The body of a message being queued, readable in bounded chunks."""

    @property
    def size(self) -> int: ...

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...


@dataclass(slots=True)
class Origin:
    """Where a message came from, for the log, the Received header and DSNs."""

    protocol: str = "ESMTP"  # ESMTP, ESMTPS, ESMTPA, SMTP, LMTP, local, bounce ...
    client_address: str = ""  # IP address, or "" for local submission
    client_name: str = ""  # reverse DNS name or "localhost"
    helo: str = ""
    auth_user: str = ""
    local_user: str = ""  # uid name for local submission


@dataclass(slots=True)
class NewMessage:
    """A complete message ready to be queued: envelope, headers and body."""

    queue_id: str
    envelope: Envelope
    headers: HeaderList
    body: BodySource
    received_at: float
    origin: Origin = field(default_factory=Origin)
    hold_reason: str | None = None  # queued on hold (e.g. quarantined by a milter)

    @property
    def size(self) -> int:
        return len(self.headers.encode()) + 2 + self.body.size


@dataclass(slots=True)
class StoredRecipient:
    message_id: str
    index: int  # position in the envelope; stable key together with message_id
    address: str
    orcpt: str | None
    notify: str | None  # "SUCCESS,FAILURE" etc.; None when the client gave none
    state: RecipientState
    attempts: int
    next_attempt: float
    last_attempt: float | None
    last_status: str | None  # enhanced status code of the last attempt, e.g. "4.4.1"
    last_reply: str | None  # the remote server's reply text or our own diagnostic
    remote_mta: str | None  # the host that gave last_reply
    lease_owner: str | None
    lease_until: float | None


@dataclass(slots=True)
class StoredMessage:
    queue_id: str
    envelope: Envelope
    received_at: float
    size: int
    state: MessageState
    hold_reason: str | None
    origin: Origin
    message_id_header: str | None
    subject: str | None
    warned: bool  # a delay warning was sent
    recipients: list[StoredRecipient]


# ---- write operations ---------------------------------------------------------------------


@dataclass(slots=True)
class InsertMessage:
    """Queue a new message with all its recipients QUEUED and due now."""

    message: NewMessage


Operation = InsertMessage  # widened as operations are added (a Union of dataclasses)


class QueueStore(Protocol):
    """A queue backend. ``apply_batch`` is only ever called by the QueueWriter."""

    def open(self) -> None:
        """Create or check the store (quick integrity check) and clean interrupted work."""
        ...

    def close(self) -> None: ...

    def apply_batch(self, ops: Sequence[Operation]) -> list[object]:
        """Apply ``ops`` durably in one commit; one result (or exception) per op.

        An op that fails alone is rolled back alone and its exception returned in
        its slot; a failed commit raises ``StoreError`` for the whole batch.
        """
        ...

    def get_message(self, queue_id: str) -> StoredMessage | None: ...

    def read_headers(self, queue_id: str) -> HeaderList: ...

    def read_body(self, queue_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    def list_messages(self) -> list[StoredMessage]: ...

    def count_messages(self) -> int: ...
