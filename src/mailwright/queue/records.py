"""Rows of the queue store, whatever the backend: new messages to column values, and
stored rows back to ``StoredMessage``/``StoredRecipient``.

Both backends (``sqlite_rows``, ``postgres_rows``) share the column names of the
``messages`` and recipients tables, so one mapping serves both. A row is anything indexed
by column name (``sqlite3.Row``, a psycopg ``dict_row``). Trusts: its own database's rows.
Settings read: none.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from mailwright.core.address import Address
from mailwright.core.envelope import BodyType, Envelope, MailParams, Notify, Recipient, Ret
from mailwright.core.target import Mailer, Target
from mailwright.queue.store import (
    NO_LEASE,
    Lease,
    MessageState,
    NewMessage,
    Origin,
    RecipientState,
    StoredMessage,
    StoredRecipient,
)

# the columns every backend selects for ``stored_message`` and ``stored_recipient``
MESSAGE_COLUMNS = """m.id, m.queue_id, m.sender_local, m.sender_domain, m.mail_size,
    m.body_type, m.smtputf8, m.ret, m.envid, m.auth, m.requiretls, m.received_at, m.size,
    m.state, m.hold_reason, m.protocol, m.client_address, m.client_name, m.helo,
    m.auth_user, m.local_user, m.message_id_header, m.subject, m.warned"""

RECIPIENT_COLUMNS = """m.queue_id, r.idx, r.local, r.domain, r.orcpt, r.notify, r.state,
    r.attempts, r.next_attempt, r.last_attempt, r.last_status, r.last_reply, r.remote_mta,
    r.lease_owner, r.lease_until, r.mailer, r.target, r.ctl_user"""

QUEUED = RecipientState.QUEUED.value


class Row(Protocol):
    """A result row read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


def recipient_row(
    mid: int | None, index: int, r: Recipient, due: float, lease: Lease = NO_LEASE
) -> tuple[object, ...]:
    return (
        mid,
        index,
        r.address.local,
        r.address.domain,
        r.orcpt,
        notify_text(r.notify),
        QUEUED,
        due,
        *lease,
    )


def target_row(r: Recipient) -> tuple[str | None, str | None, str | None]:
    """A recipient's resolved target as its columns (mailer, target, ctl_user): usually
    none, set by alias expansion."""
    t = r.target
    return (None, None, None) if t is None else (t.mailer.value, t.value, t.user)


def summary(msg: NewMessage, name: str) -> str | None:
    """A header field's text as the queue lists it (``Message-ID``, ``Subject``), without
    NUL characters: a client may put them in a header, and PostgreSQL's text refuses them
    (the header section itself is kept as sent)."""
    field = msg.headers.get(name)
    return None if field is None else field.text.replace("\0", "")


def message_row(msg: NewMessage, header_bytes: bytes) -> tuple[object, ...]:
    env, params, origin = msg.envelope, msg.envelope.params, msg.origin
    held = msg.hold_reason is not None
    return (
        msg.queue_id,
        None if env.sender is None else env.sender.local,
        None if env.sender is None else env.sender.domain,
        params.size,
        params.body.value,
        int(params.smtputf8),
        None if params.ret is None else params.ret.value,
        params.envid,
        params.auth,
        int(params.requiretls),
        msg.received_at,
        len(header_bytes) + 2 + msg.body.size,
        msg.body.size,
        (MessageState.HOLD if held else MessageState.ACTIVE).value,
        msg.hold_reason,
        origin.protocol,
        origin.client_address,
        origin.client_name,
        origin.helo,
        origin.auth_user,
        origin.local_user,
        summary(msg, "Message-ID"),
        summary(msg, "Subject"),
    )


def notify_text(notify: frozenset[Notify] | None) -> str | None:
    return None if notify is None else ",".join(sorted(n.value for n in notify))


def notify_set(text: str | None) -> frozenset[Notify] | None:
    if text is None:
        return None
    return frozenset(Notify(part) for part in text.split(",") if part)


def stored_recipient(row: Row) -> StoredRecipient:
    return StoredRecipient(
        message_id=row["queue_id"],
        index=row["idx"],
        address=str(Address(row["local"], row["domain"])),
        orcpt=row["orcpt"],
        notify=row["notify"],
        state=RecipientState(row["state"]),
        attempts=row["attempts"],
        next_attempt=row["next_attempt"],
        last_attempt=row["last_attempt"],
        last_status=row["last_status"],
        last_reply=row["last_reply"],
        remote_mta=row["remote_mta"],
        lease_owner=row["lease_owner"],
        lease_until=row["lease_until"],
        target=target(row),
    )


def target(row: Row) -> Target | None:
    mailer = row["mailer"]
    if mailer is None:
        return None
    return Target(Mailer(mailer), row["target"] or "", row["ctl_user"] or "")


def stored_message(row: Row, recipient_rows: Sequence[Row]) -> StoredMessage:
    sender = None
    if row["sender_local"] is not None:
        sender = Address(row["sender_local"], row["sender_domain"])
    params = MailParams(
        size=row["mail_size"],
        body=BodyType(row["body_type"]),
        smtputf8=bool(row["smtputf8"]),
        ret=None if row["ret"] is None else Ret(row["ret"]),
        envid=row["envid"],
        auth=row["auth"],
        requiretls=bool(row["requiretls"]),
    )
    return StoredMessage(
        queue_id=row["queue_id"],
        envelope=Envelope(sender, params, [envelope_recipient(r) for r in recipient_rows]),
        received_at=row["received_at"],
        size=row["size"],
        state=MessageState(row["state"]),
        hold_reason=row["hold_reason"],
        origin=Origin(
            protocol=row["protocol"],
            client_address=row["client_address"],
            client_name=row["client_name"],
            helo=row["helo"],
            auth_user=row["auth_user"],
            local_user=row["local_user"],
        ),
        message_id_header=row["message_id_header"],
        subject=row["subject"],
        warned=bool(row["warned"]),
        recipients=[stored_recipient(r) for r in recipient_rows],
    )


def envelope_recipient(row: Row) -> Recipient:
    return Recipient(
        Address(row["local"], row["domain"]),
        notify_set(row["notify"]),
        row["orcpt"],
        target(row),
    )


def fresh_message(msg: NewMessage, lease: Lease = NO_LEASE) -> StoredMessage:
    """What ``stored_message`` reads back for ``msg`` just after its insert, before any
    attempt: every recipient QUEUED, due at ``msg.due``, never tried, leased as inserted.

    Lets the process that queued a message deliver it without reading it back
    (``manager.fresh``); kept next to ``message_row`` so the two stay in step."""
    held = msg.hold_reason is not None
    due = msg.due
    recipients = [
        StoredRecipient(
            message_id=msg.queue_id,
            index=index,
            address=str(r.address),
            orcpt=r.orcpt,
            notify=notify_text(r.notify),
            state=RecipientState.QUEUED,
            attempts=0,
            next_attempt=due,
            last_attempt=None,
            last_status=None,
            last_reply=None,
            remote_mta=None,
            lease_owner=lease[0],
            lease_until=lease[1],
            target=r.target,
        )
        for index, r in enumerate(msg.envelope.recipients)
    ]
    return StoredMessage(
        queue_id=msg.queue_id,
        envelope=msg.envelope,
        received_at=msg.received_at,
        size=msg.size,
        state=MessageState.HOLD if held else MessageState.ACTIVE,
        hold_reason=msg.hold_reason,
        origin=msg.origin,
        message_id_header=summary(msg, "Message-ID"),
        subject=summary(msg, "Subject"),
        warned=False,
        recipients=recipients,
    )
