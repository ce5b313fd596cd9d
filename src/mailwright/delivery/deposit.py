"""Putting one copy of a message where local delivery puts it: a mailbox, a program, a file.

``Deposit`` is the seam between the local agent (``delivery.local``: which recipient
goes where, loops, unknown users) and the writes that may need another user's
rights. ``DirectDeposit`` does them in this process: as root it acts for the
recipient (``delivery.privileged``: a mailbox created for its owner, programs and
files as the controlling user), as anyone else as itself (``make run``). A daemon
that gave up root uses ``privhelper.client.HelperDeposit`` instead, which hands the
same three requests to the privileged helper, where a ``DirectDeposit`` runs them.

Every copy gets ``Return-Path:`` and ``Delivered-To:`` in front (``trace_head``); a
mailbox or file gets mbox format (From_ line, ``>From`` quoting), a program and a
Maildir the plain message with LF line ends. ``DepositOptions.from_settings`` reads
``local_delivery.*`` and ``service.root_programs``; the rest reads no settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from mailwright.config.schema import Settings
from mailwright.core.reply import Reply
from mailwright.delivery import file as file_delivery
from mailwright.delivery import lockwait, maildir, mbox, pipe, privileged
from mailwright.delivery.workers import WRITES, Interrupts
from mailwright.routing.localusers import LocalUser

Pieces = Callable[[], Iterator[bytes]]


def trace_head(sender: str, recipient: str) -> bytes:
    """``Return-Path:`` and ``Delivered-To:``, LF-terminated, added at final delivery."""

    def clean(text: str) -> str:
        return "".join(c for c in text if c not in "\r\n")

    return f"Return-Path: <{clean(sender)}>\nDelivered-To: {clean(recipient)}\n".encode()


@dataclass(frozen=True, slots=True)
class Parcel:
    """One copy to deposit: who it is for, and the message as queued."""

    queue_id: str
    sender: str  # "" is the null sender
    recipient: str  # the address being delivered (Delivered-To:, $RECIPIENT)
    original_recipient: str | None  # ORCPT, decoded ($ORIGINAL_RECIPIENT)
    message: Pieces  # header section, empty line, body; CRLF line ends

    @property
    def head(self) -> bytes:
        return trace_head(self.sender, self.recipient)

    def mbox(self) -> Iterator[bytes]:
        """The copy as an mbox entry (mailboxes and files)."""
        return iter(mbox.mbox_message(self.head, self.message(), self.sender or "MAILER-DAEMON"))

    def plain(self) -> Iterator[bytes]:
        """The copy with LF line ends and no From_ line (programs, Maildir)."""
        encoder = mbox.MboxEncoder(escape_from=False)
        yield self.head
        for chunk in self.message():
            out = encoder.feed(chunk)
            if out:
                yield out
        rest = encoder.finish()
        if rest:
            yield rest


class Deposit(Protocol):
    async def mailbox(self, parcel: Parcel, user: LocalUser) -> Reply | None:
        """Into ``user``'s mailbox; None when delivered, else the (failure) reply."""
        ...

    async def program(self, parcel: Parcel, command: str, controller: str) -> pipe.PipeResult:
        """On the standard input of ``command``, run as ``controller`` (a login name)."""
        ...

    async def file(self, parcel: Parcel, path: str, controller: str) -> Reply | None:
        """Appended to the file ``path`` as ``controller``; None when delivered."""
        ...

    def interrupt(self) -> None:
        """Shutdown: lock waits in flight (and from now on) give up (4.2.0)."""
        ...


@dataclass(frozen=True, slots=True)
class DepositOptions:
    mbox: mbox.MboxOptions = field(default_factory=mbox.MboxOptions)
    pipe_timeout: float = 1000.0
    default_user: str = "nobody"
    root_programs: bool = False  # a root controller keeps root (else: the default user)

    @classmethod
    def from_settings(cls, settings: Settings) -> DepositOptions:
        """The same options for the local agent and for the privileged helper."""
        ld = settings.local_delivery
        return cls(
            mbox=mbox.MboxOptions(
                lock_timeout=ld.lock_timeout,
                stale_lock_age=ld.stale_lock_age,
                size_limit=ld.mailbox_size_limit,
            ),
            pipe_timeout=ld.pipe_timeout,
            default_user=ld.default_user,
            root_programs=settings.service.root_programs,
        )


class DirectDeposit:
    """The writes done by this process (as the recipient when it is root)."""

    def __init__(self, options: DepositOptions | None = None) -> None:
        self.options = options or DepositOptions()
        self.interrupts = Interrupts()

    def interrupt(self) -> None:
        self.interrupts.interrupt()

    async def mailbox(self, parcel: Parcel, user: LocalUser) -> Reply | None:
        if user.maildir:
            return await self._to_maildir(parcel, user)
        owner = (user.uid, user.gid) if privileged.is_root() else None
        options = replace(self.options.mbox, owner=owner)
        try:
            await lockwait.append(user.mailbox, parcel.mbox, options, self.interrupts)
        except mbox.MailboxError as exc:
            return exc.reply
        return None

    async def _to_maildir(self, parcel: Parcel, user: LocalUser) -> Reply | None:
        who = privileged.for_uid(user.uid, user.gid, "" if user.virtual else user.name, user.home)
        clean = maildir.cleanup_due(user.mailbox)  # tmp/ looked at once an hour per Maildir
        try:
            if who is None:
                await WRITES.run(maildir.deliver, user.mailbox, parcel.plain(), clean_tmp=clean)
                return None
            await WRITES.run(maildir.prepare, user.mailbox, (user.uid, user.gid))
        except mbox.MailboxError as exc:
            return exc.reply
        command = ["maildir", str(user.mailbox), *(["--clean-tmp"] if clean else [])]
        return await privileged.write_as(
            who, command, parcel.plain, self.options.mbox.lock_timeout + 60
        )

    async def program(self, parcel: Parcel, command: str, controller: str) -> pipe.PipeResult:
        who = self.identity(controller)
        env = pipe.environment(who, parcel.sender, parcel.recipient, parcel.original_recipient)
        return await pipe.run(
            command, parcel.plain, who=who, env=env, timeout=self.options.pipe_timeout
        )

    async def file(self, parcel: Parcel, path: str, controller: str) -> Reply | None:
        who = self.identity(controller)
        return await file_delivery.deliver(
            Path(path), parcel.mbox, self.options.mbox, who, self.interrupts
        )

    def identity(self, controller: str) -> privileged.Identity | None:
        """Whose rights a program or file delivery uses (None: ours, we are not root)."""
        return privileged.identity(
            controller, self.options.default_user, allow_root=self.options.root_programs
        )
