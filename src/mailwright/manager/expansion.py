"""Alias expansion at delivery time: what the queue manager does with a local recipient.

The scheduler hands every claimed recipient to ``Expander.prepare`` before routing.
A recipient that already carries a target (a mailbox, program, file or error found
by an earlier expansion), or whose domain is not local, goes on unchanged. A local
one is resolved (``routing.resolution``) against the message's other recipients,
so that each final destination gets one copy per message, and then:

- it is simply a local user's mailbox: delivered now, nothing is written;
- it cannot be resolved now (a ``.forward`` on a dead file server): deferred;
- it is a single error (unknown user, a loop): failed (or deferred) now;
- it expands: one ``AddRecipients`` op marks it EXPANDED and, in the same
  transaction, adds the destinations that keep the sender to this message, queues
  one copy per mailing list (sender: the list owner; the members get no NOTIFY or
  ORCPT, as the list is a final destination), and the ``expanded`` report when the
  recipient asked for NOTIFY=SUCCESS. The new recipients are claimed like any other.

DSN parameters (RFC 3461 6.2.7): an alias with one destination passes NOTIFY and
ORCPT on unchanged; an alias with several, or a list, answers NOTIFY=SUCCESS with an
``expanded`` report and does not pass SUCCESS on (NEVER if nothing is left).
Destinations of a plain alias get ORCPT = the original recipient when none was
given, so reports about them name the address the sender used.

Trusts the resolver and the store. Settings: those of ``routing.resolution``, plus
``hostname`` for reports (through ``from_settings``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailwright.core import xtext
from mailwright.core.address import Address, AddressError, parse_mailbox
from mailwright.core.clock import Clock, SystemClock
from mailwright.core.delivery import DeliveryResult, Outcome
from mailwright.core.envelope import Envelope, MailParams, Notify, Recipient
from mailwright.core.headers import HeaderList
from mailwright.core.queueid import new_queue_id
from mailwright.core.reply import Reply
from mailwright.core.target import Mailer, Target
from mailwright.dsn import OriginalMessage, parse_notify
from mailwright.dsn.body import ReportBody
from mailwright.dsn.notices import Reporter
from mailwright.observability import maillog
from mailwright.queue.store import (
    AddRecipients,
    NewMessage,
    Origin,
    QueueStore,
    StoredMessage,
    StoredRecipient,
)
from mailwright.queue.writer import QueueWriter
from mailwright.routing.nexthop import NextHop, Transport
from mailwright.routing.resolution import AddressResolver, Group, Key, Resolution, target_reply

if TYPE_CHECKING:
    from mailwright.config.schema import Settings

log = logging.getLogger("mailwright.queue")

LIST_PROTOCOL = "list"  # Origin.protocol of a mailing list's copy
_TARGET_HOPS = {
    Mailer.LOCAL: NextHop(Transport.LOCAL),
    Mailer.PROG: NextHop(Transport.PIPE),
    Mailer.FILE: NextHop(Transport.FILE),
}


def target_hop(target: Target) -> NextHop:
    """The next hop of a resolved recipient: the local agent's transports, or an error."""
    if target.mailer is Mailer.ERROR:
        return NextHop(Transport.ERROR, error=target_reply(target))
    return _TARGET_HOPS[target.mailer]


@dataclass(slots=True)
class Prepared:
    """What to do with the claimed recipients of one message."""

    deliver: list[StoredRecipient] = field(default_factory=list)  # route these now
    failed: list[tuple[StoredRecipient, DeliveryResult]] = field(default_factory=list)
    expanded: int = 0  # replaced by others in the queue (already committed)


class Expander:
    def __init__(
        self,
        resolver: AddressResolver,
        store: QueueStore,
        writer: QueueWriter,
        *,
        clock: Clock | None = None,
        reporting_mta: str = "localhost",
        double_bounce_recipient: str = "postmaster",
        max_return_size: int | None = None,
    ) -> None:
        self.resolver = resolver
        self.store = store
        self.writer = writer
        self.clock = clock or SystemClock()
        self.reporter = Reporter(reporting_mta, double_bounce_recipient, max_return_size)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: QueueStore,
        writer: QueueWriter,
        clock: Clock | None = None,
        resolver: AddressResolver | None = None,
    ) -> Expander:
        return cls(
            resolver or AddressResolver.from_settings(settings),
            store,
            writer,
            clock=clock,
            reporting_mta=settings.hostname,
            double_bounce_recipient=settings.queue.double_bounce_recipient,
        )

    def resolves(self, claimed: Sequence[StoredRecipient]) -> bool:
        """Has ``prepare`` anything to resolve among ``claimed`` (it may then write to the
        queue); False: it hands them all on as they are."""
        return any(r.target is None and self.resolver.handles(r.address) for r in claimed)

    async def prepare(
        self, message: StoredMessage, headers: HeaderList, claimed: Sequence[StoredRecipient]
    ) -> Prepared:
        out = Prepared()
        if not self.resolves(claimed):
            out.deliver.extend(claimed)  # nothing to resolve (a list's copy, remote mail)
            return out
        keys = {r.index: self.resolver.key(r.address, r.target) for r in message.recipients}
        added: set[Key] = set()
        for recipient in claimed:
            if recipient.target is not None or not self.resolver.handles(recipient.address):
                out.deliver.append(recipient)
                continue
            address = _address(recipient.address)
            if address is None:
                out.deliver.append(recipient)
                continue
            own = keys[recipient.index]
            if any(k == own for i, k in keys.items() if i < recipient.index):
                await self._drop_duplicate(message, recipient)  # the same address twice
                out.expanded += 1
                continue
            exclude = {k for i, k in keys.items() if i != recipient.index} | added
            resolution = await asyncio.to_thread(self.resolver.resolve, address, exclude)
            if await self._decide(message, headers, recipient, resolution, out):
                added |= resolution.seen
        return out

    async def _decide(
        self,
        message: StoredMessage,
        headers: HeaderList,
        recipient: StoredRecipient,
        resolution: Resolution,
        out: Prepared,
    ) -> bool:
        """Deliver, fail or expand ``recipient``; True when its expansion was committed."""
        if resolution.temporary is not None:
            out.failed.append((recipient, _result(recipient, resolution.temporary)))
            return False
        itself = resolution.itself()
        if itself is not None:
            out.deliver.append(dataclasses.replace(recipient, target=itself.target))
            return False
        leaves = resolution.leaves
        if len(leaves) == 1 and leaves[0].error is not None and not resolution.lists:
            error = leaves[0].error
            out.failed.append((recipient, _result(recipient, error)))
            return False
        await self._commit(message, headers, recipient, resolution)
        out.expanded += 1
        return True

    async def _commit(
        self,
        message: StoredMessage,
        headers: HeaderList,
        recipient: StoredRecipient,
        resolution: Resolution,
    ) -> None:
        now = self.clock.now()
        notify = parse_notify(recipient.notify)
        fan_out = len(resolution.leaves) > 1 or bool(resolution.lists)
        wants_success = notify is not None and Notify.SUCCESS in notify
        passed = notify
        if fan_out and notify is not None and Notify.SUCCESS in notify:
            passed = (notify - {Notify.SUCCESS}) or frozenset({Notify.NEVER})
        kind = "rfc822" if recipient.address.isascii() else "utf-8"  # RFC 6533
        orcpt = recipient.orcpt or f"{kind};{xtext.encode(recipient.address)}"
        plain = [
            Recipient(leaf.address, passed, orcpt, leaf.target)
            for leaf in resolution.groups[0].leaves
        ]
        copies = [self._list_copy(message, headers, group, now) for group in resolution.lists]
        reports = []
        if fan_out and wants_success:
            original = OriginalMessage.from_stored(
                message, headers, lambda: self.store.read_body(message.queue_id)
            )
            notice = self.reporter.expanded(original, recipient, now)
            if notice is not None:
                reports.append(notice.message)
        op = AddRecipients(
            message.queue_id,
            plain,
            now,
            replaces=recipient.index,
            new_messages=[*copies, *reports],
        )
        try:
            await self.writer.execute(op)
        except ValueError:
            log.info("%s: <%s> was finished meanwhile", message.queue_id, recipient.address)
            return
        self._log(message, recipient, plain, copies)

    async def _drop_duplicate(self, message: StoredMessage, recipient: StoredRecipient) -> None:
        op = AddRecipients(message.queue_id, [], self.clock.now(), replaces=recipient.index)
        try:
            await self.writer.execute(op)
        except ValueError:
            return
        maillog.emit(message.queue_id, to=f"<{recipient.address}>", stat="duplicate suppressed")

    def _list_copy(
        self, message: StoredMessage, headers: HeaderList, group: Group, now: float
    ) -> NewMessage:
        """The message again, from the list owner, to the list's members."""
        assert group.owner is not None
        queue_id = message.queue_id
        body_size = message.size - len(headers.encode()) - 2
        params = message.envelope.params
        return NewMessage(
            queue_id=new_queue_id(),
            envelope=Envelope(
                group.owner,
                # RFC 8689 4.1: every copy of a REQUIRETLS message is tagged the same
                MailParams(
                    body=params.body, smtputf8=params.smtputf8, requiretls=params.requiretls
                ),
                [Recipient(leaf.address, None, None, leaf.target) for leaf in group.leaves],
            ),
            headers=HeaderList(headers),
            body=ReportBody(b"", lambda: self.store.read_body(queue_id), b"", body_size),
            received_at=now,
            origin=Origin(protocol=LIST_PROTOCOL, client_name="localhost", helo=group.list_name),
        )

    def _log(
        self,
        message: StoredMessage,
        recipient: StoredRecipient,
        plain: list[Recipient],
        copies: list[NewMessage],
    ) -> None:
        maillog.emit(
            message.queue_id,
            to=f"<{recipient.address}>",
            stat=f"Expanded ({len(plain)} recipient(s) here, {len(copies)} list copy(ies))",
        )
        for copy in copies:
            maillog.emit(
                copy.queue_id,
                event="list copy",
                of=message.queue_id,
                **{"from": f"<{copy.envelope.sender_text}>"},
                nrcpts=len(copy.envelope.recipients),
            )


def _address(text: str) -> Address | None:
    if "@" not in text:
        return Address(text, "")  # bare postmaster
    try:
        return parse_mailbox(text, utf8=True)
    except AddressError:
        return None


def _result(recipient: StoredRecipient, reply: Reply) -> DeliveryResult:
    outcome = Outcome.FAILED if reply.permanent else Outcome.DEFERRED
    return DeliveryResult(recipient.index, outcome, reply, diagnostic_type="x-mailwright")
