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
again; an unknown user or a failing program is permanent. ``local_agents`` is the
registration the daemon's scheduler wiring uses.

Trusts the targets (made by ``routing.resolution``). Settings: ``local_delivery.*``
(through ``from_settings``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailwright.core.address import Address
from mailwright.core.reply import Reply
from mailwright.core.target import Mailer, Target
from mailwright.delivery import file as file_delivery
from mailwright.delivery import maildir, mbox, pipe, privileged
from mailwright.delivery.agent import (
    DeliveryAgent,
    DeliveryRecipient,
    DeliveryRequest,
    DeliveryResult,
    Outcome,
    message_chunks,
)
from mailwright.dsn.recipient import decode_orcpt
from mailwright.routing.localusers import LocalUser, LocalUsers, local_users
from mailwright.routing.nexthop import Transport
from mailwright.routing.resolution import target_reply

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.delivery")

MAX_PARALLEL = 8  # recipients of one message delivered at once
UNIX = "x-unix"  # RFC 3464 diagnostic type of local delivery (Sendmail's X-Unix)

Pieces = Callable[[], Iterator[bytes]]


@dataclass(frozen=True, slots=True)
class LocalOptions:
    mbox: mbox.MboxOptions = field(default_factory=mbox.MboxOptions)
    pipe_timeout: float = 1000.0
    default_user: str = "nobody"


class LocalAgent:
    name = "local"

    def __init__(self, users: LocalUsers, options: LocalOptions | None = None) -> None:
        self.users = users
        self.options = options or LocalOptions()

    @classmethod
    def from_settings(cls, settings: Settings, users: LocalUsers | None = None) -> LocalAgent:
        ld = settings.local_delivery
        if not privileged.is_root():
            ld.mail_spool.mkdir(parents=True, exist_ok=True)  # ./var/mail for `make run`
        options = LocalOptions(
            mbox=mbox.MboxOptions(
                lock_timeout=ld.lock_timeout,
                stale_lock_age=ld.stale_lock_age,
                size_limit=ld.mailbox_size_limit,
            ),
            pipe_timeout=ld.pipe_timeout,
            default_user=ld.default_user,
        )
        return cls(users or local_users(settings), options)

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        gate = asyncio.Semaphore(MAX_PARALLEL)

        async def one(recipient: DeliveryRecipient) -> DeliveryResult:
            async with gate:
                return await self._deliver_one(request, recipient)

        return list(await asyncio.gather(*(one(r) for r in request.recipients)))

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
        head = trace_head(request.sender, recipient.address)
        try:
            if target.mailer is Mailer.LOCAL:
                return await self._mailbox(request, recipient, target, head)
            if target.mailer is Mailer.PROG:
                return await self._program(request, recipient, target, head)
            return await self._file(request, recipient, target, head)
        except (LookupError, OSError) as exc:
            log.error("%s: local delivery to %s failed: %s", request.queue_id, target, exc)
            reply = Reply.of(451, "4.3.0", f"Local delivery to {target} failed: {exc}")
            return DeliveryResult(recipient.index, Outcome.DEFERRED, reply, diagnostic_type=UNIX)

    # ---- mailers -------------------------------------------------------------------------

    async def _mailbox(
        self, request: DeliveryRequest, recipient: DeliveryRecipient, target: Target, head: bytes
    ) -> DeliveryResult:
        user = await asyncio.to_thread(self.users.lookup, target.value)
        if user is None:
            return _failed(
                recipient, Reply.of(550, "5.1.1", f"<{recipient.address}>... User unknown")
            )
        if user.maildir:
            problem = await self._to_maildir(request, user, head)
        else:
            problem = await self._to_mbox(request, user, head)
        if problem is not None:
            return _result(recipient, problem)
        where = f"{'maildir' if user.maildir else 'mailbox'} {user.mailbox}"
        return _delivered(recipient, f"Delivered to {where}")

    async def _to_mbox(
        self, request: DeliveryRequest, user: LocalUser, head: bytes
    ) -> Reply | None:
        owner = (user.uid, user.gid) if privileged.is_root() else None
        options = _with_owner(self.options.mbox, owner)
        pieces = mbox.mbox_message(head, message_chunks(request), request.sender or "MAILER-DAEMON")
        try:
            await asyncio.to_thread(mbox.append, user.mailbox, pieces, options)
        except mbox.MailboxError as exc:
            return exc.reply
        return None

    async def _to_maildir(
        self, request: DeliveryRequest, user: LocalUser, head: bytes
    ) -> Reply | None:
        who = privileged.for_uid(user.uid, user.gid, "" if user.virtual else user.name, user.home)
        try:
            if who is None:
                await asyncio.to_thread(maildir.deliver, user.mailbox, _plain(request, head)())
                return None
            await asyncio.to_thread(maildir.prepare, user.mailbox, (user.uid, user.gid))
        except mbox.MailboxError as exc:
            return exc.reply
        command = ["maildir", str(user.mailbox)]
        return await privileged.write_as(
            who, command, _plain(request, head), self.options.mbox.lock_timeout + 60
        )

    async def _program(
        self, request: DeliveryRequest, recipient: DeliveryRecipient, target: Target, head: bytes
    ) -> DeliveryResult:
        who = privileged.identity(target.user, self.options.default_user)
        env = pipe.environment(
            who, request.sender, recipient.address, decode_orcpt(recipient.orcpt)
        )
        result = await pipe.run(
            target.value,
            _plain(request, head),
            who=who,
            env=env,
            timeout=self.options.pipe_timeout,
        )
        return DeliveryResult(recipient.index, result.outcome, result.reply, diagnostic_type=UNIX)

    async def _file(
        self, request: DeliveryRequest, recipient: DeliveryRecipient, target: Target, head: bytes
    ) -> DeliveryResult:
        who = privileged.identity(target.user, self.options.default_user)
        sender = request.sender or "MAILER-DAEMON"

        def pieces() -> Iterator[bytes]:
            return iter(mbox.mbox_message(head, message_chunks(request), sender))

        problem = await file_delivery.deliver(Path(target.value), pieces, self.options.mbox, who)
        if problem is not None:
            return _result(recipient, problem)
        return _delivered(recipient, f"Delivered to file {target.value}")


def local_agents(
    settings: Settings, users: LocalUsers | None = None
) -> dict[Transport, DeliveryAgent]:
    """The agents for resolved local recipients, for ``Scheduler(agents=...)``."""
    agent = LocalAgent.from_settings(settings, users)
    return {Transport.LOCAL: agent, Transport.PIPE: agent, Transport.FILE: agent}


# ---- helpers ----------------------------------------------------------------------------------


def trace_head(sender: str, recipient: str) -> bytes:
    """``Return-Path:`` and ``Delivered-To:``, LF-terminated, added at final delivery."""

    def clean(text: str) -> str:
        return "".join(c for c in text if c not in "\r\n")

    return f"Return-Path: <{clean(sender)}>\nDelivered-To: {clean(recipient)}\n".encode()


def _already_delivered(request: DeliveryRequest, recipient: str) -> bool:
    wanted = recipient.lower()
    return any(h.text.lower() == wanted for h in request.headers.all("Delivered-To"))


def _plain(request: DeliveryRequest, head: bytes) -> Pieces:
    """The message with LF line ends and no From_ line (programs, Maildir)."""

    def pieces() -> Iterator[bytes]:
        encoder = mbox.MboxEncoder(escape_from=False)
        yield head
        for chunk in message_chunks(request):
            out = encoder.feed(chunk)
            if out:
                yield out
        rest = encoder.finish()
        if rest:
            yield rest

    return pieces


def _with_owner(options: mbox.MboxOptions, owner: tuple[int, int] | None) -> mbox.MboxOptions:
    from dataclasses import replace

    return replace(options, owner=owner)


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
