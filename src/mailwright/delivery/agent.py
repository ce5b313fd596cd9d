"""The delivery agent interface: ``deliver(request) -> one result per recipient``.

An agent never touches queue state: the scheduler commits the results it
returns (per recipient), so a crash between delivery and commit means the
recipient is tried again (at-least-once). An agent that delivers recipients one by
one (the local agent) awaits ``request.on_delivered`` for each as soon as it is
delivered, and the scheduler records it then: a crash repeats only the deliveries
in flight. Agents may keep connections open between requests (connection reuse) and
release them in ``close``; an ``Interruptible`` agent gives up its waits (for a
mailbox's locks) when the daemon stops.

A delivery may begin while the message's insert is still being committed (an early
start, ``manager.scheduler``): ``request.committed`` then resolves True once the
insert is durable, False if it never was. Nothing but the envelope may leave for the
next hop before it says True: the SMTP and LMTP agents send MAIL, RCPT and DATA and
wait for it before the content (``delivery.session``); the scheduler waits for it
before any other agent. A False ends the delivery with ``NotQueuedError`` (an SMTP
peer discards a transaction without its end of data) and nothing is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.envelope import MailParams
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.routing.nexthop import NextHop


@dataclass(slots=True)
class DeliveryRequest:
    queue_id: str
    sender: str  # "" is the null reverse-path
    params: MailParams  # BODY, SMTPUTF8, RET, ENVID of the original MAIL FROM
    recipients: list[DeliveryRecipient]
    next_hop: NextHop
    headers: HeaderList
    body: Callable[[], Iterator[bytes]]  # a fresh iterator over the body each call
    size: int  # headers + separator + body, in octets
    received_at: float = 0.0
    # awaited with each DELIVERED result as soon as that delivery is durable (local agent)
    on_delivered: Callable[[DeliveryResult], Awaitable[None]] | None = None
    # sent on by alias expansion, a list or a .forward: ARC sealing applies (delivery.arcseal)
    forwarded: bool = False
    # an early start's commit: True once the insert is durable (see the module's text)
    committed: asyncio.Future[bool] | None = None


class NotQueuedError(Exception):
    """The message's insert failed after its delivery began: nothing was handed on."""


async def queued(committed: asyncio.Future[bool] | None) -> bool:
    """Whether an early start's message is durably queued (waiting for its commit);
    True when there is nothing to wait for. Our cancellation leaves the commit alone."""
    return committed is None or await asyncio.shield(committed)


class DeliveryAgent(Protocol):
    name: str  # the mailer name in log lines: esmtp, relay, lmtp, local, prog, file

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]: ...

    async def close(self) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """An agent whose deliveries may wait (for a mailbox's locks) and can stop waiting."""

    def interrupt(self) -> None: ...


def message_chunks(request: DeliveryRequest) -> Iterator[bytes]:
    """The whole message as it is sent: headers, empty line, body."""
    yield request.headers.encode() + b"\r\n"
    yield from request.body()


def all_results(
    request: DeliveryRequest, outcome: Outcome, reply: Reply, remote_mta: str = ""
) -> list[DeliveryResult]:
    """The same result for every recipient (a connection-level failure, say)."""
    return [DeliveryResult(r.index, outcome, reply, remote_mta) for r in request.recipients]
