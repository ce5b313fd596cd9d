"""The PostgreSQL queue store's batch engine: the writer side of ``PostgresQueueStore``.

``apply_batch`` runs a whole batch in one transaction on the write connection, in
pipeline mode: statements are sent without waiting for their answers, so a batch of new
messages costs one round trip (its COMMIT's) however many messages it holds, and only
the ops that need an answer to go on wait for one (a claim's rows, the recipients a
result changed, a count). The COMMIT's answer is read before ``apply_batch`` returns:
the batch is durable then (``synchronous_commit`` is never ``off``: ``postgres_schema``).
If an op fails (a duplicate queue id, a message without recipients), the pipelined
transaction is rolled back and the batch is done again op by op, each op inside its own
savepoint, so that the failing op is rolled back alone and its error returned in its
slot, as the SQLite store's op-by-op path does. A failed COMMIT, or a connection lost at
any point, fails the whole batch with ``StoreError`` and is never retried here: nothing
of an unconfirmed transaction is kept by PostgreSQL, so no message is half written. The
next batch opens a new connection.

Claims lock the rows they lease with ``FOR UPDATE SKIP LOCKED``: writers on several
nodes claim different recipients without waiting for each other. A body goes in one
chunk per statement (``bytea`` rows), and in pipeline mode a body of several chunks
waits for each chunk to be taken before it sends the next, so memory stays bounded
whatever its size. The rows of a message find it by its queue id (UNIQUE), so nothing
waits for the id an INSERT would return. ``bench/pg_roundtrips.py`` counts round trips
and statements per message.

Trusts: values already validated by the protocol layer. Settings read: none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import errors, pq

from mailwright.core.envelope import Recipient
from mailwright.queue.postgres_schema import Conn, connection_lost, store_error, translate_error
from mailwright.queue.records import (
    NO_LEASE,
    QUEUED,
    RECIPIENT_COLUMNS,
    Lease,
    message_row,
    recipient_row,
    stored_recipient,
)
from mailwright.queue.sqlwrites import SharedWrites
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeleteMessage,
    HoldMessage,
    MessageState,
    NewMessage,
    Op,
    RecipientResult,
    RecipientState,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    ReleaseProcessLeases,
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


class _RedoError(Exception):
    """The pipelined batch failed (and was rolled back); do it again op by op."""


class PostgresWrites(SharedWrites):
    """The write side of ``PostgresQueueStore`` (a mixin: the store opens the connection)."""

    _conn: Conn | None
    _body_chunk: int
    _pipe: psycopg.Pipeline | None = None  # while a batch runs in pipeline mode
    _handlers: dict[type[Any], Handler]

    def _writer(self) -> Conn:
        raise NotImplementedError

    # ---- writing ----------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        conn = self._writer()  # reconnects after a lost connection
        try:
            try:
                return self._apply_pipelined(conn, ops)
            except _RedoError:
                pass  # an op failed: nothing was kept, the batch is done again op by op
            with conn.transaction():
                _relax(conn, ops)
                return [self._apply_one(conn, op) for op in ops]
        except _BatchLostError as lost:
            self._drop_writer(conn)
            cause = lost.__cause__
            raise store_error(cause if isinstance(cause, Exception) else lost) from cause
        except psycopg.Error as exc:  # BEGIN or COMMIT failed: the whole batch did
            self._drop_writer(conn)
            raise store_error(exc) from exc

    def _apply_pipelined(self, conn: Conn, ops: Sequence[Op[Any]]) -> list[object]:
        """The whole batch in pipeline mode, without savepoints: one round trip for the
        batch plus one per op that needs an answer before it goes on (a claim, a count).
        The COMMIT's answer is read when the pipeline ends: the batch is durable when
        this returns. Any failure rolls everything back; a lost connection fails the
        batch, anything else raises ``_RedoError`` (the caller redoes it op by op, each
        op in a savepoint, to give each failure to its op)."""
        handlers: list[Handler] = []
        for op in ops:
            handler = self._handlers.get(type(op))
            if handler is None:
                raise _RedoError()  # not a queue operation: the op-by-op path says so
            handlers.append(handler)
        try:
            with conn.pipeline() as pipe:
                self._pipe = pipe
                # BEGIN and COMMIT by hand: psycopg's transaction() syncs the pipeline
                # when it starts and ends (three more round trips)
                conn.execute("BEGIN")
                _relax(conn, ops)
                results = [handler(conn, op) for handler, op in zip(handlers, ops, strict=True)]
                conn.execute("COMMIT")
            return results  # the pipeline's end read every answer, the COMMIT's too
        except Exception as exc:
            if connection_lost(exc, conn):
                raise _BatchLostError() from exc
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise _RedoError() from exc
        finally:
            self._pipe = None

    def _count(self, conn: Conn, sql: str, args: Sequence[object] | Mapping[str, object]) -> int:
        """Run a statement and return the rows it changed (in pipeline mode, this waits
        for its answer: a round trip)."""
        cur = conn.execute(sql, args)
        if self._pipe is not None:
            self._pipe.sync()
        return cur.rowcount

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

    # Rows of a message find it by queue id (UNIQUE), not by an id the INSERT would
    # return: every statement of an insert goes in the pipeline without waiting.
    _MID = "(SELECT id FROM messages WHERE queue_id = %s)"
    _INSERT_MESSAGE = """INSERT INTO messages (queue_id, sender_local, sender_domain, mail_size,
        body_type, smtputf8, ret, envid, auth, received_at, size, body_size, state,
        hold_reason, protocol, client_address, client_name, helo, auth_user, local_user,
        message_id_header, subject)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
        %s, %s)"""
    _INSERT_HEADERS = f"INSERT INTO headers (message_id, data) VALUES ({_MID}, %s)"
    _INSERT_CHUNK = f"INSERT INTO body_chunks (message_id, seq, data) VALUES ({_MID}, %s, %s)"
    _INSERT_RECIPIENT = f"""INSERT INTO recipients (message_id, idx, local, domain, orcpt, notify,
        state, next_attempt, lease_owner, lease_until)
        VALUES ({_MID}, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""

    def _insert(self, conn: Conn, msg: NewMessage, lease: Lease = NO_LEASE) -> None:
        if not msg.envelope.recipients:
            raise ValueError(f"message {msg.queue_id} has no recipients")
        header_bytes = msg.headers.encode()
        try:
            conn.execute(self._INSERT_MESSAGE, message_row(msg, header_bytes))
        except errors.UniqueViolation as exc:  # raised here outside pipeline mode only
            raise StoreError(f"queue id {msg.queue_id} is already in the queue") from exc
        conn.execute(self._INSERT_HEADERS, (msg.queue_id, header_bytes))
        written = 0
        for seq, chunk in enumerate(msg.body.chunks(self._body_chunk)):
            if seq and self._pipe is not None:
                self._pipe.sync()  # a large body: at most one chunk waits to be sent
            conn.execute(self._INSERT_CHUNK, (msg.queue_id, seq, chunk))
            written += len(chunk)
        if written != msg.body.size:
            raise StoreError(
                f"body of {msg.queue_id}: read {written} bytes, expected {msg.body.size}"
            )
        self._insert_recipients(conn, msg.queue_id, 0, msg.envelope.recipients, msg.due, lease)

    def _insert_recipients(
        self,
        conn: Conn,
        queue_id: str,
        first_index: int,
        recipients: Sequence[Recipient],
        due: float,
        lease: Lease = NO_LEASE,
    ) -> None:
        rows = [
            (queue_id, *recipient_row(None, first_index + i, r, due, lease)[1:])
            for i, r in enumerate(recipients)
        ]
        with conn.cursor() as cur:
            cur.executemany(self._INSERT_RECIPIENT, rows)
        self._set_targets(conn, queue_id, first_index, recipients)

    _SET_TARGET = f"""UPDATE recipients SET mailer = %s, target = %s, ctl_user = %s
        WHERE message_id = {_MID} AND idx = %s"""

    def _set_targets(
        self, conn: Conn, queue_id: str, first_index: int, recipients: Sequence[Recipient]
    ) -> None:
        """Store the resolved targets (alias expansion's recipients; usually none)."""
        rows = [
            (r.target.mailer.value, r.target.value, r.target.user, queue_id, first_index + i)
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

    # The results of one op in one statement; what it returns are the recipients it
    # changed (the others are stale: no longer queued).
    _RECORD_RESULTS = """UPDATE recipients r SET state = v.state,
            next_attempt = coalesce(v.next_attempt, r.next_attempt),
            attempts = r.attempts + v.tried,
            last_attempt = coalesce(v.last_attempt, r.last_attempt),
            last_status = v.status, last_reply = v.reply, remote_mta = v.mta,
            lease_owner = NULL, lease_until = NULL
        FROM unnest(%s::text[], %s::integer[], %s::text[], %s::float8[], %s::integer[],
                    %s::float8[], %s::text[], %s::text[], %s::text[])
             AS v(queue_id, idx, state, next_attempt, tried, last_attempt, status, reply, mta),
             messages m
        WHERE m.queue_id = v.queue_id AND r.message_id = m.id AND r.idx = v.idx
          AND r.state = %s
        RETURNING m.queue_id, r.idx"""
    _DELETE_DONE = """DELETE FROM messages WHERE queue_id = ANY(%s) AND NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND r.state = %s)
        RETURNING queue_id"""

    def _record_results(self, conn: Conn, op: RecordResults) -> RecordOutcome:
        changed: set[tuple[str, int]] = set()
        for wave in _waves(op.results):
            rows = conn.execute(self._RECORD_RESULTS, (*_result_columns(wave), QUEUED))
            changed.update((row["queue_id"], row["idx"]) for row in rows.fetchall())
        stale: list[tuple[str, int]] = []
        touched: dict[str, None] = {}  # an ordered set
        for res in op.results:
            key = (res.queue_id, res.index)
            if key in changed:
                touched[res.queue_id] = None
            else:
                stale.append(key)
        for msg in op.new_messages:
            self._insert(conn, msg)
        return RecordOutcome(stale=stale, removed=self._delete_if_done(conn, list(touched)))

    def _delete_if_done(self, conn: Conn, queue_ids: Sequence[str]) -> list[str]:
        if not queue_ids:
            return []
        rows = conn.execute(self._DELETE_DONE, (list(queue_ids), QUEUED)).fetchall()
        gone = {row["queue_id"] for row in rows}
        return [queue_id for queue_id in queue_ids if queue_id in gone]

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
            if self._count(conn, self._EXPAND, args) == 0:
                raise ValueError(f"recipient {op.replaces} of {op.queue_id} is not queued")
        got = conn.execute(self._NEXT_INDEX, (mid,)).fetchone()
        first = 0 if got is None else int(got["idx"])
        if op.recipients:
            self._insert_recipients(conn, op.queue_id, first, op.recipients, op.now)
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
        return self._count(conn, sql, (op.owner,))

    def _release_process_leases(self, conn: Conn, op: ReleaseProcessLeases) -> int:
        sql = """UPDATE recipients SET lease_owner = NULL, lease_until = NULL
            FROM unnest(%s::text[]) AS p(process)
            WHERE lease_owner IS NOT NULL
            AND left(lease_owner, length(p.process) + 1) = p.process || ':'"""
        return self._count(conn, sql, (list(op.processes),))

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
        return self._count(conn, self._RESCHEDULE, args)

    def _hold_message(self, conn: Conn, op: HoldMessage) -> bool:
        sql = "UPDATE messages SET state = %s, hold_reason = %s WHERE queue_id = %s"
        return self._count(conn, sql, (MessageState.HOLD.value, op.reason, op.queue_id)) > 0

    def _release_message(self, conn: Conn, op: ReleaseMessage) -> bool:
        sql = "UPDATE messages SET state = %s, hold_reason = NULL WHERE queue_id = %s"
        return self._count(conn, sql, (MessageState.ACTIVE.value, op.queue_id)) > 0

    def _delete_message(self, conn: Conn, op: DeleteMessage) -> bool:
        sql = "DELETE FROM messages WHERE queue_id = %s"
        return self._count(conn, sql, (op.queue_id,)) > 0

    def _set_warned(self, conn: Conn, op: SetWarned) -> bool:
        sql = "UPDATE messages SET warned = 1 WHERE queue_id = %s"
        return self._count(conn, sql, (op.queue_id,)) > 0

    def _renew_leases(self, conn: Conn, op: RenewLeases) -> int:
        sql = "UPDATE recipients SET lease_until = %s WHERE lease_owner = %s"
        return self._count(conn, sql, (op.now + op.lease_seconds, op.owner))


def _waves(results: Sequence[RecipientResult]) -> Iterator[list[RecipientResult]]:
    """The results in runs without a recipient twice (one statement each, in order), so
    that a second result for a recipient applies after the first, as one by one."""
    pending = list(results)
    while pending:
        seen: set[tuple[str, int]] = set()
        wave: list[RecipientResult] = []
        rest: list[RecipientResult] = []
        for res in pending:
            key = (res.queue_id, res.index)
            (rest if key in seen else wave).append(res)
            seen.add(key)
        yield wave
        pending = rest


def _result_columns(results: Sequence[RecipientResult]) -> tuple[list[object], ...]:
    """The columns of ``_RECORD_RESULTS``'s unnest, one list each."""
    columns: tuple[list[object], ...] = tuple([] for _ in range(9))
    for res in results:
        final = res.state.is_final
        row = (
            res.queue_id,
            res.index,
            res.state.value,
            None if final else res.next_attempt,
            0 if res.attempted_at is None else 1,
            res.attempted_at,
            res.status,
            res.reply,
            res.remote_mta,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _relax(conn: Conn, ops: Sequence[Op[Any]]) -> None:
    """A batch of lease operations only (``Op.durable``) does not wait for the WAL flush:
    a lease lost with the server leaves its recipients due again. PostgreSQL keeps the
    commits in order, so the next durable commit's flush covers it too."""
    if not any(getattr(op, "durable", True) for op in ops):
        conn.execute("SET LOCAL synchronous_commit TO off")
