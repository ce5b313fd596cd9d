"""The PostgreSQL queue store's batch engine: the writer side of ``PostgresQueueStore``.

``apply_batch`` runs a whole batch in one transaction on the write connection, each op
inside its own savepoint, so that an op that fails (a duplicate queue id, a message
without recipients) is rolled back alone and its error returned in its slot, as the
SQLite store's op-by-op path does. The COMMIT returns once PostgreSQL has made the batch
durable (``synchronous_commit`` is never ``off``: ``postgres_schema``); a failed COMMIT,
or a connection lost at any point, fails the whole batch with ``StoreError`` and is
never retried here: nothing of an unconfirmed transaction is kept by PostgreSQL, so no
message is half written. The next batch opens a new connection.

Claims lock the rows they lease with ``FOR UPDATE SKIP LOCKED``: writers on several
nodes claim different recipients without waiting for each other. A body goes in one
chunk per statement (``bytea`` rows), so memory stays bounded whatever its size.

Trusts: values already validated by the protocol layer. Settings read: none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import errors

from mailwright.core.envelope import Recipient
from mailwright.queue.postgres_schema import Conn, connection_lost, store_error, translate_error
from mailwright.queue.records import (
    QUEUED,
    RECIPIENT_COLUMNS,
    message_row,
    recipient_row,
    stored_recipient,
)
from mailwright.queue.sqlwrites import SharedWrites
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeleteIfDone,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    MessageState,
    NewMessage,
    Op,
    RecipientState,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    RenewLeases,
    RescheduleNow,
    SetWarned,
    StoredRecipient,
    StoreError,
    UnknownMessageError,
)

Handler = Callable[[Conn, Any], object]


class _BatchLostError(Exception):
    """An op's failure took the session (or the transaction) with it."""


class PostgresWrites(SharedWrites):
    """The write side of ``PostgresQueueStore`` (a mixin: the store opens the connection)."""

    _conn: Conn | None
    _body_chunk: int
    _handlers: dict[type[Any], Handler]

    def _writer(self) -> Conn:
        raise NotImplementedError

    def _handler_table(self) -> dict[type[Any], Handler]:
        return {
            InsertMessage: self._insert_message,
            ClaimDue: self._claim_due,
            RecordResults: self._record_results,
            ReleaseLeases: self._release_leases,
            RenewLeases: self._renew_leases,
            HoldMessage: self._hold_message,
            ReleaseMessage: self._release_message,
            DeleteMessage: self._delete_message,
            SetWarned: self._set_warned,
            RescheduleNow: self._reschedule_now,
            AddRecipients: self._add_recipients,
            DeleteIfDone: self._delete_if_done_op,
        }

    # ---- writing ----------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        conn = self._writer()  # reconnects after a lost connection
        try:
            with conn.transaction():
                return [self._apply_one(conn, op) for op in ops]
        except _BatchLostError as lost:
            self._drop_writer(conn)
            cause = lost.__cause__
            raise store_error(cause if isinstance(cause, Exception) else lost) from cause
        except psycopg.Error as exc:  # BEGIN or COMMIT failed: the whole batch did
            self._drop_writer(conn)
            raise store_error(exc) from exc

    def _apply_one(self, conn: Conn, op: Op[Any]) -> object:
        handler = self._handlers.get(type(op))
        if handler is None:
            return TypeError(f"not a queue operation: {op!r}")
        try:
            with conn.transaction():  # a savepoint: a failing op is undone alone
                return handler(conn, op)
        except Exception as exc:
            if connection_lost(exc, conn):
                raise _BatchLostError() from exc
            return translate_error(exc)

    def _drop_writer(self, conn: Conn) -> None:
        """Forget a write connection that failed a batch; the next batch opens another."""
        if conn.broken or conn.closed:
            conn.close()
            if self._conn is conn:
                self._conn = None

    # -- InsertMessage

    _INSERT_MESSAGE = """INSERT INTO messages (queue_id, sender_local, sender_domain, mail_size,
        body_type, smtputf8, ret, envid, auth, received_at, size, body_size, state,
        hold_reason, protocol, client_address, client_name, helo, auth_user, local_user,
        message_id_header, subject)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
        %s, %s) RETURNING id"""
    _INSERT_HEADERS = "INSERT INTO headers (message_id, data) VALUES (%s, %s)"
    _INSERT_CHUNK = "INSERT INTO body_chunks (message_id, seq, data) VALUES (%s, %s, %s)"
    _INSERT_RECIPIENT = """INSERT INTO recipients (message_id, idx, local, domain, orcpt, notify,
        state, next_attempt) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"""

    def _insert(self, conn: Conn, msg: NewMessage) -> None:
        if not msg.envelope.recipients:
            raise ValueError(f"message {msg.queue_id} has no recipients")
        header_bytes = msg.headers.encode()
        try:
            row = conn.execute(self._INSERT_MESSAGE, message_row(msg, header_bytes)).fetchone()
        except errors.UniqueViolation as exc:
            raise StoreError(f"queue id {msg.queue_id} is already in the queue") from exc
        assert row is not None
        mid = int(row["id"])
        conn.execute(self._INSERT_HEADERS, (mid, header_bytes))
        written = 0
        for seq, chunk in enumerate(msg.body.chunks(self._body_chunk)):
            conn.execute(self._INSERT_CHUNK, (mid, seq, chunk))
            written += len(chunk)
        if written != msg.body.size:
            raise StoreError(
                f"body of {msg.queue_id}: read {written} bytes, expected {msg.body.size}"
            )
        self._insert_recipients(conn, mid, 0, msg.envelope.recipients, msg.due)

    def _insert_recipients(
        self, conn: Conn, mid: int, first_index: int, recipients: Sequence[Recipient], due: float
    ) -> None:
        rows = [recipient_row(mid, first_index + i, r, due) for i, r in enumerate(recipients)]
        with conn.cursor() as cur:
            cur.executemany(self._INSERT_RECIPIENT, rows)
        self._set_targets(conn, mid, first_index, recipients)

    _SET_TARGET = """UPDATE recipients SET mailer = %s, target = %s, ctl_user = %s
        WHERE message_id = %s AND idx = %s"""

    def _set_targets(
        self, conn: Conn, mid: int, first_index: int, recipients: Sequence[Recipient]
    ) -> None:
        """Store the resolved targets (alias expansion's recipients; usually none)."""
        rows = [
            (r.target.mailer.value, r.target.value, r.target.user, mid, first_index + i)
            for i, r in enumerate(recipients)
            if r.target is not None
        ]
        if rows:
            with conn.cursor() as cur:
                cur.executemany(self._SET_TARGET, rows)

    # -- ClaimDue

    # The rows to lease are locked as they are chosen; rows another writer is leasing
    # right now are skipped, not waited for. RETURNING comes in no particular order:
    # the claim is sorted afterwards, oldest next_attempt first as chosen.
    _CLAIM = f"""WITH due AS (
            SELECT r.message_id, r.idx FROM recipients r JOIN messages m ON m.id = r.message_id
            WHERE r.state = %(queued)s AND r.next_attempt <= %(now)s AND m.state = %(active)s
              AND (r.lease_until IS NULL OR r.lease_until <= %(now)s)
              AND (%(ids)s::text[] IS NULL OR m.queue_id = ANY(%(ids)s::text[]))
            ORDER BY r.next_attempt, r.message_id, r.idx LIMIT %(limit)s
            FOR UPDATE OF r SKIP LOCKED)
        UPDATE recipients r SET lease_owner = %(owner)s, lease_until = %(until)s
        FROM due, messages m
        WHERE r.message_id = due.message_id AND r.idx = due.idx AND m.id = r.message_id
        RETURNING r.message_id AS mid, {RECIPIENT_COLUMNS}"""

    def _claim_due(self, conn: Conn, op: ClaimDue) -> list[StoredRecipient]:
        args = {
            "queued": QUEUED,
            "now": op.now,
            "active": MessageState.ACTIVE.value,
            "ids": None if op.queue_ids is None else list(op.queue_ids),
            "limit": op.limit,
            "owner": op.owner,
            "until": op.now + op.lease_seconds,
        }
        rows = conn.execute(self._CLAIM, args).fetchall()
        rows.sort(key=lambda row: (row["next_attempt"], row["mid"], row["idx"]))
        return [stored_recipient(row) for row in rows]

    # -- RecordResults and DeleteIfDone

    _RECORD_RESULT = """UPDATE recipients SET state = %s,
            next_attempt = coalesce(%s, next_attempt),
            attempts = attempts + %s,
            last_attempt = coalesce(%s, last_attempt),
            last_status = %s, last_reply = %s, remote_mta = %s,
            lease_owner = NULL, lease_until = NULL
        WHERE message_id = (SELECT id FROM messages WHERE queue_id = %s)
          AND idx = %s AND state = %s"""
    _DELETE_DONE = """DELETE FROM messages WHERE queue_id = %s AND NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND r.state = %s)"""

    def _delete_if_done(self, conn: Conn, queue_ids: Sequence[str]) -> list[str]:
        return [
            queue_id
            for queue_id in queue_ids
            if conn.execute(self._DELETE_DONE, (queue_id, QUEUED)).rowcount > 0
        ]

    # -- AddRecipients

    _EXPAND = """UPDATE recipients SET state = %s, lease_owner = NULL, lease_until = NULL
        WHERE message_id = %s AND idx = %s AND state = %s"""
    _NEXT_INDEX = "SELECT coalesce(max(idx), -1) + 1 AS idx FROM recipients WHERE message_id = %s"

    def _add_recipients(self, conn: Conn, op: AddRecipients) -> list[int]:
        # the message row stays locked until the commit: two expansions of one message
        # take their recipient indexes one after the other
        row = conn.execute(
            "SELECT id FROM messages WHERE queue_id = %s FOR UPDATE", (op.queue_id,)
        ).fetchone()
        if row is None:
            raise UnknownMessageError(op.queue_id)
        mid = int(row["id"])
        if op.replaces is not None:
            args = (RecipientState.EXPANDED.value, mid, op.replaces, QUEUED)
            if conn.execute(self._EXPAND, args).rowcount == 0:
                raise ValueError(f"recipient {op.replaces} of {op.queue_id} is not queued")
        got = conn.execute(self._NEXT_INDEX, (mid,)).fetchone()
        first = 0 if got is None else int(got["idx"])
        if op.recipients:
            self._insert_recipients(conn, mid, first, op.recipients, op.now)
        for msg in op.new_messages:  # a list's copy, an "expanded" report
            self._insert(conn, msg)
        if op.replaces is not None:
            self._delete_if_done(conn, [op.queue_id])  # expanded to nobody: finished
        return list(range(first, first + len(op.recipients)))

    # -- message-level administration

    # -- leases and schedule

    def _release_leases(self, conn: Conn, op: ReleaseLeases) -> int:
        sql = """UPDATE recipients SET lease_owner = NULL, lease_until = NULL
            WHERE lease_owner = %s"""
        return conn.execute(sql, (op.owner,)).rowcount

    _RESCHEDULE = """UPDATE recipients r SET next_attempt = %(now)s
        WHERE r.state = %(queued)s AND (%(domain)s::text IS NULL OR r.domain = %(domain)s)
          AND (%(ids)s::text[] IS NULL OR r.message_id IN
               (SELECT id FROM messages WHERE queue_id = ANY(%(ids)s::text[])))"""

    def _reschedule_now(self, conn: Conn, op: RescheduleNow) -> int:
        domain = None if op.recipient_domain is None else op.recipient_domain.lower()
        args = {
            "now": op.now,
            "queued": QUEUED,
            "domain": domain,
            "ids": None if op.queue_ids is None else list(op.queue_ids),
        }
        return conn.execute(self._RESCHEDULE, args).rowcount

    def _hold_message(self, conn: Conn, op: HoldMessage) -> bool:
        sql = "UPDATE messages SET state = %s, hold_reason = %s WHERE queue_id = %s"
        return conn.execute(sql, (MessageState.HOLD.value, op.reason, op.queue_id)).rowcount > 0

    def _release_message(self, conn: Conn, op: ReleaseMessage) -> bool:
        sql = "UPDATE messages SET state = %s, hold_reason = NULL WHERE queue_id = %s"
        return conn.execute(sql, (MessageState.ACTIVE.value, op.queue_id)).rowcount > 0

    def _delete_message(self, conn: Conn, op: DeleteMessage) -> bool:
        sql = "DELETE FROM messages WHERE queue_id = %s"
        return conn.execute(sql, (op.queue_id,)).rowcount > 0

    def _set_warned(self, conn: Conn, op: SetWarned) -> bool:
        sql = "UPDATE messages SET warned = 1 WHERE queue_id = %s"
        return conn.execute(sql, (op.queue_id,)).rowcount > 0

    def _renew_leases(self, conn: Conn, op: RenewLeases) -> int:
        sql = "UPDATE recipients SET lease_until = %s WHERE lease_owner = %s"
        return conn.execute(sql, (op.now + op.lease_seconds, op.owner)).rowcount
