"""The local delivery agent: mailboxes, programs and files on this host.

``LocalAgent`` takes the recipients the queue manager resolved (each carries a
``core.target.Target``) and delivers each one by its mailer:

- ``local``: the user's mailbox (``routing.localusers``): mbox (``delivery.mbox``)
  or Maildir (``delivery.maildir``), as the user when we are root;
- ``prog``: a command (``delivery.pipe``), as the controlling user;
- ``file``: an mbox append to a path (``delivery.file``), as the controlling user;
- ``error``: refused with the reply the resolver chose.

A recipient without a target (no expander configured) is taken as a local user
named by its local part. Every copy starts with ``Return-Path: <sender>`` and
``Delivered-To: <recipient>``; a message that already carries that same
``Delivered-To:`` is refused as a loop (554 5.4.6). Failures to write are
temporary (mailbox full 4.2.2, disk full 4.3.1, locked 4.2.0) so the queue tries
again; an unknown user or a failing program is permanent. The writes themselves go
through a ``delivery.deposit.Deposit``: in this process, or through the privileged
helper when the daemon runs without root. ``local_agents`` is the registration the
daemon's scheduler wiring uses.

Deliveries to one mbox mailbox or file go one at a time (``workers.Gates``): while a
mailbox is locked, the deliveries waiting for it hold no thread and no delivery slot,
and mail for others goes on. At most ``delivery.max_per_destination`` writes and
programs run at once (the scheduler leaves local deliveries to this limit). Each
recipient delivered is reported at once (``DeliveryRequest.on_delivered``) so the queue
can record it before the message's other recipients are done. At shutdown
(``interrupt``) waits for a mailbox's locks end at once; the recipient stays queued.

Trusts the targets (made by ``routing.resolution``). Settings: ``local_delivery.*``,
``delivery.max_per_destination`` (through ``from_settings``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from mailwright.core.address import Address
from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.reply import Reply
from mailwright.core.target import Mailer, Target
from mailwright.delivery import privileged
from mailwright.delivery.agent import DeliveryAgent, DeliveryRequest, message_chunks
from mailwright.delivery.deposit import (
    Deposit,
    DepositOptions,
    DirectDeposit,
    Parcel,
    trace_head,
)
from mailwright.delivery.workers import WRITES, Gates
from mailwright.dsn.recipient import decode_orcpt
from mailwright.routing.localusers import LocalUsers, local_users
from mailwright.routing.nexthop import Transport
from mailwright.routing.resolution import target_reply

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.delivery")

MAX_PARALLEL = 8  # recipients of one message delivered at once
UNIX = "x-unix"  # RFC 3464 diagnostic type of local delivery (Sendmail's X-Unix)

__all__ = ["LocalAgent", "local_agents", "trace_head"]


class LocalAgent:
    name = "local"

    def __init__(
        self,
        users: LocalUsers,
        options: DepositOptions | None = None,
        deposit: Deposit | None = None,
        max_active: int = 20,
    ) -> None:
        self.users = users
        # the writes: in this process, or by the privileged helper for a daemon without root
        self.deposit = deposit or DirectDeposit(options or DepositOptions())
        self.gates = Gates()  # one delivery at a time per mbox mailbox or file
        # writes and programs running at once (the scheduler's limits do not apply here);
        # deliveries queued at a mailbox's gate do not count
        self.active = asyncio.Semaphore(max_active)

    @classmethod
    def from_settings(
        cls, settings: Settings, users: LocalUsers | None = None, deposit: Deposit | None = None
    ) -> LocalAgent:
        ld = settings.local_delivery
        if deposit is None and not privileged.is_root():
            ld.mail_spool.mkdir(parents=True, exist_ok=True)  # ./var/mail for `make run`
        options = DepositOptions.from_settings(settings)
        limit = settings.delivery.max_per_destination
        return cls(users or local_users(settings), options, deposit, limit)

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        gate = asyncio.Semaphore(MAX_PARALLEL)

        async def one(recipient: DeliveryRecipient) -> DeliveryResult:
            async with gate:
                result = await self._deliver_one(request, recipient)
            if result.outcome is Outcome.DELIVERED and request.on_delivered is not None:
                await request.on_delivered(result)  # recorded now, not with the last one
            return result

        return list(await asyncio.gather(*(one(r) for r in request.recipients)))

    def interrupt(self) -> None:
        """Shutdown: deliveries waiting for a mailbox's locks give up (4.2.0) at once."""
        self.deposit.interrupt()

    async def close(self) -> None:
        return None

    async def _deliver_one(
        self, request: DeliveryRequest, recipient: DeliveryRecipient
    ) -> DeliveryResult:
        target = recipient.target or _default_target(recipient.address)
        if target.mailer is Mailer.ERROR:
            return _failed(recipient, target_reply(target))
        if _already_delivered(request, recipient.address):
            loop = Reply.of(554, "5.4.6", f"<{recipient.address}>... mail forwarding loop")
            return _failed(recipient, loop)
        parcel = Parcel(
            queue_id=request.queue_id,
            sender=request.sender,
            recipient=recipient.address,
            original_recipient=decode_orcpt(recipient.orcpt),
            message=lambda: message_chunks(request),
        )
        try:
            if target.mailer is Mailer.LOCAL:
                return await self._mailbox(parcel, recipient, target)
            if target.mailer is Mailer.PROG:
                return await self._program(parcel, recipient, target)
            return await self._file(parcel, recipient, target)
        except (LookupError, OSError) as exc:
            log.error("%s: local delivery to %s failed: %s", request.queue_id, target, exc)
            reply = Reply.of(451, "4.3.0", f"Local delivery to {target} failed: {exc}")
            return DeliveryResult(recipient.index, Outcome.DEFERRED, reply, diagnostic_type=UNIX)

    # ---- mailers -------------------------------------------------------------------------

    async def _mailbox(
        self, parcel: Parcel, recipient: DeliveryRecipient, target: Target
    ) -> DeliveryResult:
        user = await WRITES.run(self.users.lookup, target.value)
        if user is None:
            return _failed(
                recipient, Reply.of(550, "5.1.1", f"<{recipient.address}>... User unknown")
            )
        if user.maildir:  # no locks: deliveries to one Maildir run side by side
            async with self.active:
                problem = await self.deposit.mailbox(parcel, user)
        else:
            async with self.gates.hold(str(user.mailbox)), self.active:
                problem = await self.deposit.mailbox(parcel, user)
        if problem is not None:
            return _result(recipient, problem)
        where = f"{'maildir' if user.maildir else 'mailbox'} {user.mailbox}"
        return _delivered(recipient, f"Delivered to {where}")

    async def _program(
        self, parcel: Parcel, recipient: DeliveryRecipient, target: Target
    ) -> DeliveryResult:
        async with self.active:
            result = await self.deposit.program(parcel, target.value, target.user)
        return DeliveryResult(recipient.index, result.outcome, result.reply, diagnostic_type=UNIX)

    async def _file(
        self, parcel: Parcel, recipient: DeliveryRecipient, target: Target
    ) -> DeliveryResult:
        async with self.gates.hold(target.value), self.active:
            problem = await self.deposit.file(parcel, target.value, target.user)
        if problem is not None:
            return _result(recipient, problem)
        return _delivered(recipient, f"Delivered to file {target.value}")


def local_agents(
    settings: Settings, users: LocalUsers | None = None, deposit: Deposit | None = None
) -> dict[Transport, DeliveryAgent]:
    """The agents for resolved local recipients, for ``DeliveryParts.agents``; ``deposit``
    is the privileged helper's when the daemon gave up root."""
    agent = LocalAgent.from_settings(settings, users, deposit)
    return {Transport.LOCAL: agent, Transport.PIPE: agent, Transport.FILE: agent}


# ---- helpers ----------------------------------------------------------------------------------


def _already_delivered(request: DeliveryRequest, recipient: str) -> bool:
    wanted = recipient.lower()
    return any(h.text.lower() == wanted for h in request.headers.all("Delivered-To"))


def _default_target(address: str) -> Target:
    local = address.rpartition("@")[0] or address
    return Target(Mailer.LOCAL, Address(local, "").local.lower())


def _delivered(recipient: DeliveryRecipient, text: str) -> DeliveryResult:
    return DeliveryResult(
        recipient.index, Outcome.DELIVERED, Reply.of(250, "2.0.0", text), diagnostic_type=UNIX
    )


def _failed(recipient: DeliveryRecipient, reply: Reply) -> DeliveryResult:
    return _result(recipient, reply)


def _result(recipient: DeliveryRecipient, reply: Reply) -> DeliveryResult:
    outcome = Outcome.FAILED if reply.permanent else Outcome.DEFERRED
    return DeliveryResult(recipient.index, outcome, reply, diagnostic_type=UNIX)
