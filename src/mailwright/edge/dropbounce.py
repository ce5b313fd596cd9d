"""Bounces for maildrop messages that the pickup could not queue for some recipients.

A message left in the maildrop while the daemon was down is checked only at
pickup; a recipient refused then for good (an unknown local user, a policy
refusal) can no longer be reported by ``sendmail``'s exit code, so its sender
gets an RFC 3464 failure report instead, as Sendmail's queue-only mode would
send. The report is built by ``mailwright.dsn`` from the maildrop file and
queued through the daemon's normal intake. Settings: ``hostname``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from mailwright.core.address import AddressError, parse_mailbox
from mailwright.core.envelope import BodyType, Envelope, MailParams, Notify, Recipient, Ret
from mailwright.core.headers import HeaderParser
from mailwright.core.queueid import new_queue_id
from mailwright.core.reply import Reply
from mailwright.core.submission import Rcpt
from mailwright.dsn import (
    Action,
    Diagnostic,
    OriginalMessage,
    RecipientReport,
    ReportKind,
    build_report,
)
from mailwright.queue import maildrop
from mailwright.queue.spool import Spool
from mailwright.queue.store import NewMessage, Origin

Enqueue = Callable[[NewMessage], Awaitable[None]]


def _recipient(rcpt: Rcpt) -> Recipient | None:
    try:
        address = parse_mailbox(rcpt.address, utf8=True, allow_bare_postmaster=True)
    except AddressError:
        return None
    notify = None
    if rcpt.notify:
        notify = frozenset(Notify(v.strip().upper()) for v in rcpt.notify.split(",") if v)
    return Recipient(address, notify, rcpt.orcpt)


def _envelope(entry: maildrop.Entry, refused: list[Recipient]) -> Envelope | None:
    env = entry.envelope
    if not env.sender:
        return None  # a null-sender message is never bounced
    try:
        sender = parse_mailbox(env.sender, utf8=True)
    except AddressError:
        return None
    params = MailParams(
        body=BodyType(env.body_type) if env.body_type else BodyType.SEVEN_BIT,
        smtputf8=env.smtputf8,
        ret=Ret(env.ret) if env.ret else None,
        envid=env.envid,
    )
    return Envelope(sender, params, refused)


def failure_report(
    entry: maildrop.Entry, refused: list[tuple[Rcpt, Reply]], hostname: str
) -> NewMessage | None:
    """The bounce for ``refused`` recipients of a maildrop entry, or None when none is due."""
    pairs = [(r, reply) for rcpt, reply in refused if (r := _recipient(rcpt)) is not None]
    envelope = _envelope(entry, [r for r, _ in pairs])
    if envelope is None or not pairs:
        return None
    parser = HeaderParser()
    body = Spool()
    for chunk in entry.chunks():
        body.write(parser.feed(chunk))
    body.write(parser.close())

    def read_body() -> Iterator[bytes]:
        return body.chunks()

    original = OriginalMessage(
        queue_id=entry.name,
        envelope=envelope,
        received_at=time.time(),
        headers=parser.headers,
        body=read_body,
        body_size=body.size,
        origin=Origin(protocol="local"),
    )
    reports = [
        RecipientReport.from_recipient(
            r,
            Action.FAILED,
            reply.status or "5.0.0",
            diagnostic=Diagnostic.from_reply(reply),
            last_attempt=time.time(),
        )
        for r, reply in pairs
    ]
    return build_report(
        original, ReportKind.FAILURE, reports, reporting_mta=hostname, queue_id=new_queue_id()
    )
