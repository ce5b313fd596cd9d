"""The queue store interface: what every backend (SQLite now, PostgreSQL later) provides.

Callers never see SQL. Writes are expressed as *operations* (small dataclasses)
that the single ``QueueWriter`` hands to ``QueueStore.apply_batch`` so a backend
can put many of them in one transaction (group commit: one fsync for all).
Reads are plain methods that may run concurrently with the writer.

Recipients are the unit of work: each has its own state, attempt count, next
attempt time and last result. A worker that takes recipients to deliver holds a
*lease* on them (owner + expiry) so that several queue runners, possibly on
several hosts sharing one PostgreSQL store, never deliver the same recipient
twice at once; an expired lease makes the work due again (at-least-once). A runner
renews its leases while its deliveries run (``RenewLeases``), so only the leases of a
runner that died (or hangs) expire. Owner names: ``queue.lease``.

Settings read: none (backends read ``queue.*``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from mailwright.core.envelope import Envelope, Recipient
from mailwright.core.headers import HeaderList
from mailwright.core.target import Target


class RecipientState(StrEnum):
    QUEUED = "queued"  # waiting for (another) delivery attempt
    DELIVERED = "delivered"
    RELAYED = "relayed"  # handed to a next hop that does not speak DSN
    EXPANDED = "expanded"  # alias or list expansion replaced it with others
    FAILED = "failed"  # permanent failure; a bounce was queued (or suppressed)

    @property
    def is_final(self) -> bool:
        return self is not RecipientState.QUEUED


class MessageState(StrEnum):
    ACTIVE = "active"
    HOLD = "hold"  # held by an administrator or quarantined by a filter


class StoreError(Exception):
    """A backend failure (I/O error, failed fsync, corruption): answer 451 4.3.0."""


class StoreFullError(StoreError):
    """The disk or database is full: answer 452 4.3.1."""


class NewerSchemaError(StoreError):
    """The store's schema is newer than this program's: it is never written (upgrade)."""


class UnknownMessageError(LookupError):
    """An operation named a queue id that is not (or no longer) in the queue."""


@dataclass(slots=True)
class Recovery:
    """What a store's ``open`` cleaned up after an unclean stop (every backend)."""

    leases_cleared: int = 0
    orphans_deleted: int = 0
    finished_deleted: int = 0


def failure(exc: Exception, *, full: bool, database: bool) -> Exception:
    """A backend's failure as callers see it: ``full`` (out of space) becomes
    StoreFullError, another ``database`` or I/O error StoreError; StoreError and
    UnknownMessageError stay as they are, and anything else (a caller's mistake:
    ValueError, TypeError) is passed on."""
    if isinstance(exc, StoreError | UnknownMessageError):
        return exc
    if full:
        error: StoreError = StoreFullError(f"queue store is full: {exc}")
    elif database:
        error = StoreError(f"queue store error: {exc}")
    else:
        return exc
    error.__cause__ = exc
    return error


def batch_failure(translated: Exception, exc: Exception) -> StoreError:
    """A failure of a whole batch (or of a read), always a StoreError: ``translated`` is
    ``exc`` as ``failure`` made it."""
    if isinstance(translated, StoreError):
        return translated
    error = StoreError(f"queue store error: {exc!r}")
    error.__cause__ = exc
    return error


class BodySource(Protocol):
    """The body of a message being queued, readable in bounded chunks.

    ``chunks`` may be called more than once: a backend may run a batch again.
    """

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
    # when the recipients are first due; None: at once (``received_at``). Later for a
    # queue-only submission (``sendmail -odq``): it waits for the next queue run
    first_attempt: float | None = None

    @property
    def due(self) -> float:
        return self.received_at if self.first_attempt is None else self.first_attempt

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
    target: Target | None = None  # a resolved local recipient (mailbox, program, file, error)


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


@dataclass(slots=True)
class QueueCounts:
    """The queue at a glance (status page, ``mailwright status``, metrics gauges).

    Queued recipients are split by what happens to them next: ``due`` (deliverable
    now), ``deferred`` (waiting for a retry), ``delivering`` (leased to a runner),
    ``held`` (their message is on hold).
    """

    active_messages: int = 0
    held_messages: int = 0
    due: int = 0
    deferred: int = 0
    delivering: int = 0
    held: int = 0
    oldest: float | None = None  # arrival time of the oldest message
    # since when a failed sync of the queue's log keeps every commit from being
    # acknowledged (SQLite's lost mark, ``queue.sqlite_schema.refusing_since``); None: not
    refusing_since: float | None = None

    @property
    def messages(self) -> int:
        return self.active_messages + self.held_messages

    def refusing_text(self) -> str | None:
        """What an operator reads while no commit is acknowledged; None otherwise."""
        if self.refusing_since is None:
            return None
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.refusing_since))
        return (
            f"REFUSING MAIL since {since}: a sync of the queue's log failed; every message"
            " gets 451 4.3.0 until a checkpoint has made every commit durable (see the log)"
        )


@dataclass(slots=True)
class DeferredGroup:
    """Deferred recipients of active messages sharing a destination domain and last reply."""

    domain: str
    status: str | None
    reply: str | None
    count: int
    last_attempt: float | None
    queue_ids: list[str] = field(default_factory=list)  # a few of them, next due first


# ---- write operations ---------------------------------------------------------------------
#
# Each operation is a small dataclass; ``Op[R]`` records the type of its result so that
# ``await writer.execute(op)`` is typed. A backend applies each op in its own savepoint.

R_co = TypeVar("R_co", covariant=True)


class Op(Generic[R_co]):
    """Base of every write operation; ``R_co`` is the type of its result.

    ``durable``: the batch that carries it must be on disk when its commit returns (the
    default). Only the leases are not (``ClaimDue``, ``RenewLeases``, ``ReleaseLeases``):
    a lease lost with a power failure leaves its recipients due, which at-least-once
    delivery allows, so a batch of only those commits without waiting for the disk (the
    next durable commit writes it out with its own, in order).
    """

    __slots__ = ()
    durable: ClassVar[bool] = True


# a new recipient's lease (owner, until): none, or taken at insert (``InsertMessage``)
Lease = tuple[str | None, float | None]
NO_LEASE: Lease = (None, None)


@dataclass(slots=True)
class InsertMessage(Op[None]):
    """Queue a new message with all its recipients QUEUED and due at ``received_at``
    (or its ``first_attempt``, when set).

    A message with ``hold_reason`` is queued on hold. A duplicate queue id fails.
    With ``lease_owner``, its recipients are inserted already leased to that owner until
    ``lease_until``, as if claimed in the same transaction: the process that accepted a
    message due now starts its first delivery without a claim (``Scheduler.lease_new``).
    """

    message: NewMessage
    lease_owner: str | None = None
    lease_until: float | None = None

    @property
    def lease(self) -> Lease:
        return (self.lease_owner, self.lease_until)


@dataclass(slots=True)
class ClaimDue(Op[list[StoredRecipient]]):
    """Lease up to ``limit`` due recipients to ``owner`` for ``lease_seconds``.

    Due means: QUEUED, ``next_attempt <= now``, the message ACTIVE (not held) and no
    lease, or only an expired one. Oldest ``next_attempt`` first. The returned
    recipients carry their new lease. With ``queue_ids``, only recipients of those
    messages (a selective queue run: ``queue flush ID``, ``sendmail -qI``). Claims are
    serialised: two owners never hold a live lease on the same recipient.
    """

    durable: ClassVar[bool] = False

    now: float
    limit: int
    owner: str
    lease_seconds: float
    queue_ids: tuple[str, ...] | None = None


@dataclass(slots=True)
class RecipientResult:
    """The outcome of one delivery attempt (or a decision without one) for one recipient.

    ``state`` QUEUED means deferred until ``next_attempt``; any other state is final.
    ``attempted_at`` None means no attempt was made (the attempt count stays).
    ``status``, ``reply`` and ``remote_mta`` replace the recipient's last result.
    A result for a recipient that is no longer QUEUED (another runner finished it
    after this runner's lease expired) changes nothing and is reported as stale.
    """

    queue_id: str
    index: int
    state: RecipientState
    next_attempt: float = 0.0
    attempted_at: float | None = None
    status: str | None = None
    reply: str | None = None
    remote_mta: str | None = None


@dataclass(slots=True)
class RecordOutcome:
    stale: list[tuple[str, int]]  # (queue id, index) of results that changed nothing
    removed: list[str]  # queue ids of messages now finished and deleted


@dataclass(slots=True)
class RecordResults(Op[RecordOutcome]):
    """Record delivery results, clear their leases, and queue ``new_messages`` (bounces,
    delay warnings) in the same transaction; then delete every touched message whose
    recipients are all final (the DeleteIfDone step)."""

    results: list[RecipientResult]
    new_messages: list[NewMessage] = field(default_factory=list)


@dataclass(slots=True)
class ReleaseLeases(Op[int]):
    """Give back every lease ``owner`` holds (a runner shutting down); returns how many."""

    durable: ClassVar[bool] = False

    owner: str


@dataclass(slots=True)
class ReleaseProcessLeases(Op[int]):
    """Give back every lease held by a runner of these processes (``host:pid:start``,
    ``queue.lease.process_id``: the owners ``host:pid:start:n``), whatever its expiry: a
    node whose heartbeat stopped (``daemon.heartbeat``). Returns how many."""

    durable: ClassVar[bool] = False

    processes: tuple[str, ...]


@dataclass(slots=True)
class RenewLeases(Op[int]):
    """Extend every lease ``owner`` still holds to ``now + lease_seconds`` (the runner's
    heartbeat, while its deliveries run); returns how many. A lease that expired and was
    claimed by another owner is no longer this owner's and stays as it is."""

    durable: ClassVar[bool] = False

    owner: str
    now: float
    lease_seconds: float


@dataclass(slots=True)
class HoldMessage(Op[bool]):
    """Put a message on hold; False when there is no such message."""

    queue_id: str
    reason: str


@dataclass(slots=True)
class ReleaseMessage(Op[bool]):
    """Take a message off hold (its recipients keep their schedule); False when unknown."""

    queue_id: str


@dataclass(slots=True)
class DeleteMessage(Op[bool]):
    """Remove a message, its recipients and its body; False when unknown."""

    queue_id: str


@dataclass(slots=True)
class SetWarned(Op[bool]):
    """Note that a delay warning was sent for a message; False when unknown."""

    queue_id: str


@dataclass(slots=True)
class RescheduleNow(Op[int]):
    """Make QUEUED recipients due at ``now`` (``queue flush``); returns how many.

    With neither filter, every queued recipient; ``queue_ids`` limits it to those
    messages, ``recipient_domain`` to recipients in that domain (case-insensitive).
    """

    now: float
    queue_ids: list[str] | None = None
    recipient_domain: str | None = None


@dataclass(slots=True)
class AddRecipients(Op[list[int]]):
    """Add QUEUED recipients due at ``now`` to a message; returns their indexes.

    With ``replaces``, that recipient (which must still be QUEUED) becomes EXPANDED and
    loses its lease in the same step: alias expansion is atomic. ``new_messages`` (a
    mailing list's copy with the list owner as sender, an ``expanded`` DSN) are queued
    in the same transaction. Raises ``UnknownMessageError`` for an unknown message,
    ``ValueError`` when ``replaces`` is not a QUEUED recipient.
    """

    queue_id: str
    recipients: list[Recipient]
    now: float
    replaces: int | None = None
    new_messages: list[NewMessage] = field(default_factory=list)


@dataclass(slots=True)
class DeleteIfDone(Op[list[str]]):
    """Delete those of ``queue_ids`` whose recipients are all final; returns the deleted."""

    queue_ids: list[str]


Operation = (
    InsertMessage
    | ClaimDue
    | RecordResults
    | ReleaseLeases
    | ReleaseProcessLeases
    | RenewLeases
    | HoldMessage
    | ReleaseMessage
    | DeleteMessage
    | SetWarned
    | RescheduleNow
    | AddRecipients
    | DeleteIfDone
)


class QueueStore(Protocol):
    """A queue backend. ``apply_batch`` is only ever called by the QueueWriter."""

    def open(self, recover: bool = True, *, exclusive: bool = True) -> None:
        """Create or check the store (quick integrity check) and, with ``recover``,
        clean interrupted work (only the daemon may do that).

        Leases at recovery: with ``exclusive`` the caller knows no other process holds
        any (it holds the queue lock, ``daemon.queuelock``) and every lease found is
        left over from a crash: all are cleared, so the work is due at once. Without
        it, only the leases of owners known dead (``queue.lease.owner_is_dead``: a
        previous process of this host) are cleared; the others are left to expire.
        """
        ...

    def open_for_reading(self) -> None:
        """Read-only access for tools while the daemon runs."""
        ...

    def next_due(self) -> float | None:
        """Earliest time a queued recipient of an active message becomes due, or None."""
        ...

    def close(self) -> None: ...

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        """Apply ``ops`` durably in one commit; one result (or exception) per op.

        An op that fails alone is rolled back alone and its exception returned in
        its slot; a failed commit raises ``StoreError`` for the whole batch. Only
        one thread at a time may call it (the writer's).
        """
        ...

    def get_message(self, queue_id: str) -> StoredMessage | None: ...

    def read_headers(self, queue_id: str) -> HeaderList: ...

    def read_body(self, queue_id: str, chunk_size: int = 1 << 20) -> Iterator[bytes]: ...

    def list_messages(self) -> list[StoredMessage]:
        """Every message, oldest first, with its recipients."""
        ...

    def oldest_messages(self, limit: int) -> list[StoredMessage]:
        """The ``limit`` oldest messages with their recipients (a page of the queue)."""
        ...

    def count_messages(self) -> int: ...

    def queue_counts(self, now: float) -> QueueCounts:
        """Messages per state and queued recipients per next step (cheap: no rows)."""
        ...

    def deferred_groups(self, limit: int = 20, samples: int = 5) -> list[DeferredGroup]:
        """Deferred recipients grouped by domain and last reply, largest groups first."""
        ...


# Makes every commit before it durable (whichever process made it); raises on failure.
Sync = Callable[[], None]


@runtime_checkable
class SyncDeferring(Protocol):
    """A store whose commits can return before they are on disk (SQLite's WAL).

    ``apply_batch_unsynced`` is ``apply_batch`` without the wait for the disk: it returns
    the results and, when the batch holds a durable op (``Op.durable``), the ``Sync``
    to call before anyone hears of them; None when there is nothing to wait for. One
    ``Sync`` covers every commit made before it, so the ``QueueWriter`` calls it once
    for several batches, on a thread of its own, while it commits the next ones.
    """

    def apply_batch_unsynced(self, ops: Sequence[Op[Any]]) -> tuple[list[object], Sync | None]: ...
