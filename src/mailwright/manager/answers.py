"""LMTP transactions waiting for the local deliveries of their recipients (RFC 2033, mail.local).

An LMTP session commits a message as any other, then, instead of answering each
recipient ``250`` at once, waits until the queue manager has delivered the local ones
and answers each with its own outcome. This module is the meeting point:

- the session ``watch``es its message's local recipients (by index) before the commit
  and waits (``Waiting.outcomes``) up to a deadline;
- the scheduler, recording a local delivery's result, ``take``s the recipient when
  its client is still waiting. A delivered one is recorded as usual; a failed or
  deferred one is recorded FAILED *without a report*: the LMTP client gets the
  4xx/5xx and owns the recipient from then on. Only once that record is committed is
  the reply ``settle``d and given to the client;
- a recipient replaced by others (an alias) is ``kept``: answered ``250``, its new
  recipients are ours like any queued mail;
- past the deadline the session gives up: what was not taken yet is answered ``250``
  and stays queued (delivered, retried or bounced by us later: at-least-once), what
  is being committed is still awaited.

A recipient is never answered ``250`` after it was removed, nor with a failure while
it stays queued. Lives on the event loop thread; no I/O. Settings: none (the deadline
is the session's, ``server.timeouts.lmtp_delivery``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping

from mailwright.core.reply import Reply


class Waiting:
    """One LMTP transaction's local recipients and the replies settled for them so far."""

    def __init__(self, queue_id: str, addresses: Mapping[int, str]) -> None:
        self.queue_id = queue_id
        self.addresses = dict(addresses)  # index -> address, as the client gave them
        self.indexes = frozenset(addresses)
        self.replies: dict[int, Reply] = {}
        self.taken: set[int] = set()  # results being committed: settled once they are
        self.given_up = False  # the deadline passed: nothing more is taken
        self._changed = asyncio.Event()

    def takes(self, index: int, address: str) -> bool:
        # the address too: a milter may have changed the recipients since they were watched
        return (
            not self.given_up
            and self.addresses.get(index) == address
            and index not in self.replies
            and index not in self.taken
        )

    def settle(self, index: int, reply: Reply) -> None:
        self.taken.discard(index)
        self.replies[index] = reply
        self._changed.set()

    async def outcomes(self, timeout: float) -> dict[int, Reply]:
        """The replies settled within ``timeout`` (and those being committed then)."""
        try:
            async with asyncio.timeout(timeout):
                while self.indexes - self.replies.keys():
                    await self._change()
        except TimeoutError:
            pass
        finally:
            self.given_up = True
        while self.taken:  # decided already: the recipient may be gone, wait for its answer
            await self._change()
        return dict(self.replies)

    async def _change(self) -> None:
        self._changed.clear()
        await self._changed.wait()


class Answers:
    """Every waiting LMTP transaction, by queue id."""

    def __init__(self) -> None:
        self._waiting: dict[str, Waiting] = {}

    def watch(self, queue_id: str, addresses: Mapping[int, str]) -> Waiting:
        """Wait for these recipients (index -> address) of the message about to be queued."""
        waiting = self._waiting[queue_id] = Waiting(queue_id, addresses)
        return waiting

    def forget(self, waiting: Waiting) -> None:
        waiting.given_up = True
        if self._waiting.get(waiting.queue_id) is waiting:
            del self._waiting[waiting.queue_id]

    def take(self, queue_id: str, index: int, address: str) -> Waiting | None:
        """The client still waiting for this recipient, now committed to answering it."""
        waiting = self._waiting.get(queue_id)
        if waiting is None or not waiting.takes(index, address):
            return None
        waiting.taken.add(index)
        return waiting

    def kept(self, queue_id: str, recipients: Iterable[tuple[int, str]], reply: Reply) -> None:
        """These recipients (index, address) stay ours (replaced by others in the queue)."""
        waiting = self._waiting.get(queue_id)
        if waiting is None:
            return
        for index, address in recipients:
            if waiting.takes(index, address):
                waiting.settle(index, reply)
