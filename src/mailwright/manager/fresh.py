"""Messages this process has just queued, kept in memory for their first delivery attempt.

In background delivery a message is usually claimed by the process that accepted it a
few milliseconds after its commit. Reading it back from the store then costs a trip to
a worker thread and three queries (the message row with its recipients, the header
section, the body) for what this process still holds. ``FreshMessages.remember`` keeps
the message as the store would return it (``queue.records.fresh_message``: every
recipient queued and never tried) with its header section and, when the body is in
memory, the body (as ``smtp.encoder.CrlfLines`` when the spool says its line breaks
are all CRLF, so that the SMTP client does not check them again); ``take`` hands it out
once, to the first delivery of that message.

Only the first attempt uses it: the entry is removed when taken, so a later claim (a
retry, the rest of a partly claimed message, another worker's claim) reads the store as
before. What is kept is bounded by count, bytes and age (``MAX_ENTRIES``, ``MAX_BYTES``,
``MAX_AGE``; the oldest go first), so mail claimed by another worker or held meanwhile
costs nothing but its eviction. A message on hold or not due at once is not kept.

Trusts its caller to remember a message only once its insert is committed, or while it
is being committed for a delivery that waits for the commit before anything leaves
(``Scheduler.insert_and_start``), and the claim to hand out only recipients that are
still queued (a message deleted or held after its commit is never claimed). Reads no
settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeGuard

from mailwright.core.headers import HeaderList
from mailwright.queue.records import fresh_message
from mailwright.queue.spool import Spool
from mailwright.queue.store import NO_LEASE, Lease, NewMessage, StoredMessage
from mailwright.smtp.encoder import CrlfLines

MAX_ENTRIES = 1024
MAX_BYTES = 16 << 20  # bodies kept at once, per process
MAX_AGE = 30.0  # seconds: past this a message's first claim went elsewhere

Loaded = tuple[StoredMessage, HeaderList, bytes | None]


class FreshMessages:
    def __init__(
        self,
        max_entries: int = MAX_ENTRIES,
        max_bytes: int = MAX_BYTES,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._clock = clock
        self._entries: dict[str, tuple[float, Loaded]] = {}  # insertion order: oldest first
        self._bytes = 0
        self.taken = 0  # first deliveries served from memory (statistics, tests)

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, message: NewMessage, lease: Lease = NO_LEASE) -> StoredMessage | None:
        """Keep ``message`` (just committed, its recipients with ``lease``) for its first
        delivery, if it is due now; returns it as kept (None: not kept)."""
        if not _due_now(message):
            return None
        body = _body_in_memory(message)
        size = 0 if body is None else len(body)
        if size > self.max_bytes:
            return None
        now = self._clock()
        self._evict(now, size)
        stored = fresh_message(message, lease)
        self._entries[message.queue_id] = (now, (stored, message.headers, body))
        self._bytes += size
        return stored

    def keeps(self, message: NewMessage) -> bool:
        """Would ``remember`` keep ``message`` with its body (due now, the body in memory
        and within the bound)?"""
        body = message.body
        return _due_now(message) and _spool_in_memory(body) and body.size <= self.max_bytes

    def take(self, queue_id: str) -> Loaded | None:
        """The message as remembered, once; None when not (or no longer) kept."""
        entry = self._entries.pop(queue_id, None)
        if entry is None:
            return None
        added, loaded = entry
        self._bytes -= _size(loaded)
        if self._clock() - added > self.max_age:
            return None
        self.taken += 1
        return loaded

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _evict(self, now: float, incoming: int) -> None:
        entries = self._entries
        while entries:
            queue_id, (added, loaded) = next(iter(entries.items()))
            full = len(entries) >= self.max_entries or self._bytes + incoming > self.max_bytes
            if not full and now - added <= self.max_age:
                return
            del entries[queue_id]
            self._bytes -= _size(loaded)


def _due_now(message: NewMessage) -> bool:
    return message.hold_reason is None and message.first_attempt is None


def _spool_in_memory(body: object) -> TypeGuard[Spool]:
    return isinstance(body, Spool) and body.in_memory


def _body_in_memory(message: NewMessage) -> bytes | None:
    # a body already spilled to a file would cost a read here, on the event loop; the
    # delivery streams it from the store instead
    body = message.body
    if not _spool_in_memory(body):
        return None
    data = b"".join(body.chunks())
    # the SMTP client then skips its check of the line ends (a copy of 100 KiB costs
    # ~3 us; the check ~80 us)
    return CrlfLines(data) if body.crlf_lines else data


def _size(loaded: Loaded) -> int:
    body = loaded[2]
    return 0 if body is None else len(body)
