"""The PostgreSQL queue store's batch engine: the writer side of ``PostgresQueueStore``.

``apply_batch`` runs a whole batch in one transaction on the write connection, in
pipeline mode: statements are sent without waiting for their answers, so a batch of new
messages or of delivery results costs one round trip (its COMMIT's) however many it
holds: an op whose outcome is read from its statements' answers (the recipients a result
changed, the finished messages it deleted) gets them filled in when the pipeline has
ended. Only the ops that need an answer to go on wait for one (a claim's rows, a
count). The COMMIT's answer is read before ``apply_batch`` returns: the batch is durable
then (``synchronous_commit`` is never ``off``: ``postgres_schema``). A batch of new
messages whose bodies all fit in one statement (below) is that statement alone, without
BEGIN and COMMIT: in autocommit it is a transaction of its own, durable when its answer
comes. If an op fails (a duplicate queue id, a message without
recipients), the pipelined transaction is rolled back and the batch is done again op by
op, each op inside its own savepoint, so that the failing op is rolled back alone and its
error returned in its slot, as the SQLite store's op-by-op path does. A failed COMMIT, or
a connection lost at any point, fails the whole batch with ``StoreError`` and is never
retried here: nothing of an unconfirmed transaction is kept by PostgreSQL, so no message
is half written. The next batch opens a new connection.

The new messages of a batch (all of them first, or each run of them when the batch's
other ops may name them: ``sqlwrites.batch_steps``) go in with one statement whatever
their number (``_INSERT_NEW``): the queue ids, headers and bodies as array parameters
(binary: nothing escaped), every other column of the messages and of their recipients in
one JSON text each, a row an array (encoded in C by ``json``, read back with
``jsonb_array_elements``; psycopg adapts a list in Python, and one array per column, ~35,
took most of a one-message batch's client CPU). The rows of a message find it by its
queue id (UNIQUE) among the rows that statement inserted, so nothing waits for the id an
INSERT would return. Its text is the same for any number of messages: psycopg prepares
it once. A body of at most one chunk (and 256 KiB) is in the statement, up to 16 MiB of
them; a larger one is streamed after it, one chunk per statement (``bytea`` rows), and in
pipeline mode each chunk waits for the one before to be taken, so memory stays bounded
whatever the size. Claims lock the rows they lease with ``FOR UPDATE SKIP LOCKED``:
writers on several nodes claim different recipients without waiting for each other.
``bench/pg_roundtrips.py`` counts round trips, statements and CPU time per message.

Trusts: values already validated by the protocol layer. Settings read: none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, pq

from mailwright.core.envelope import Recipient
from mailwright.queue.postgres_schema import Conn, connection_lost, store_error, translate_error
from mailwright.queue.records import (
    QUEUED,
    RECIPIENT_COLUMNS,
    message_row,
    notify_text,
    recipient_row,
    stored_recipient,
    target_row,
)
from mailwright.queue.sqlwrites import (
    SharedWrites,
    batch_steps,
    result_row,
    result_waves,
    wave_lists,
)
from mailwright.queue.store import (
    NO_LEASE,
    AddRecipients,
    ClaimDue,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    Lease,
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

# the columns of ``message_row``, in its order, with their types
_MESSAGE_FIELDS = (
    ("queue_id", "text"),
    ("sender_local", "text"),
    ("sender_domain", "text"),
    ("mail_size", "bigint"),
    ("body_type", "text"),
    ("smtputf8", "integer"),
    ("ret", "text"),
    ("envid", "text"),
    ("auth", "text"),
    ("requiretls", "integer"),
    ("received_at", "float8"),
    ("size", "bigint"),
    ("body_size", "bigint"),
    ("state", "text"),
    ("hold_reason", "text"),
    ("protocol", "text"),
    ("client_address", "text"),
    ("client_name", "text"),
    ("helo", "text"),
    ("auth_user", "text"),
    ("local_user", "text"),
    ("message_id_header", "text"),
    ("subject", "text"),
)
# the columns of _new_recipient_rows, in its order, with their types
_RECIPIENT_FIELDS = (
    ("queue_id", "text"),
    ("idx", "integer"),
    ("local", "text"),
    ("domain", "text"),
    ("orcpt", "text"),
    ("notify", "text"),
    ("next_attempt", "float8"),
    ("lease_owner", "text"),
    ("lease_until", "float8"),
    ("mailer", "text"),
    ("target", "text"),
    ("ctl_user", "text"),
)
_MESSAGE_NAMES = ", ".join(name for name, _ in _MESSAGE_FIELDS)
# rows of these columns as JSON (``_INSERT_NEW``); Python's float repr reads back exactly
_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _columns_of(fields: Sequence[tuple[str, str]]) -> str:
    """The columns of ``fields`` (name, type) taken from a row's JSON array ``e``."""
    return ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(fields))


class _BatchLostError(Exception):
    """An op's failure took the session (or the transaction) with it."""


class _RedoError(Exception):
    """The pipelined batch failed (and was rolled back); do it again op by op."""


@dataclass(slots=True)
class _NewRows:
    """New messages as ``_INSERT_NEW``'s arguments, and those whose bodies it leaves out."""

    args: dict[str, object]
    streamed: list[NewMessage]


class PostgresWrites(SharedWrites):
    """The write side of ``PostgresQueueStore`` (a mixin: the store opens the connection)."""

    _conn: Conn | None
    _body_chunk: int
    _pipe: psycopg.Pipeline | None = None  # while a batch runs in pipeline mode
    _fills: list[Callable[[], None]]  # outcomes to fill in when the pipeline has ended
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
        this returns. A batch of new messages whose bodies all fit in the insert is that
        one statement alone, a transaction of its own (autocommit), durable too when
        it returns. Any failure rolls everything back; a lost connection fails the
        batch, anything else raises ``_RedoError`` (the caller redoes it op by op, each
        op in a savepoint, to give each failure to its op)."""
        handlers: list[Handler] = []
        for op in ops:
            handler = self._handlers.get(type(op))
            if handler is None:
                raise _RedoError()  # not a queue operation: the op-by-op path says so
            handlers.append(handler)
        results: list[object] = [None] * len(ops)
        steps = batch_steps(ops)
        self._fills = []
        try:
            first = self._new_rows(ops, steps[0]) if steps and isinstance(steps[0], list) else None
            if first is not None and len(steps) == 1 and not first.streamed:
                # one statement, a transaction of its own: BEGIN and COMMIT would add two
                # statements' cost, in the client and in the server, for nothing
                conn.execute(self._INSERT_NEW, first.args)
                return results
            with conn.pipeline() as pipe:
                self._pipe = pipe
                # BEGIN and COMMIT by hand: psycopg's transaction() syncs the pipeline
                # when it starts and ends (three more round trips)
                conn.execute("BEGIN")
                _relax(conn, ops)
                for step in steps:
                    if isinstance(step, list):  # new messages, inserted together
                        new = first if step is steps[0] else None
                        self._write_new(conn, new or self._new_rows(ops, step))
                    else:
                        results[step] = handlers[step](conn, ops[step])
                conn.execute("COMMIT")
        except Exception as exc:
            self._fills = []
            if connection_lost(exc, conn):
                raise _BatchLostError() from exc
            if conn.info.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise _RedoError() from exc
        finally:
            self._pipe = None
        # committed (outside the try: nothing here may redo the batch): the pipeline's end
        # read every answer, and the outcomes of the ops that did not wait for theirs
        # are filled in from them
        fills, self._fills = self._fills, []
        for fill in fills:
            fill()
        return results

    def _when_answered(self, fill: Callable[[], None]) -> None:
        """Run ``fill`` (which reads statements' answers into an op's outcome) once the
        answers are in: at once outside pipeline mode, where every statement waited for
        its answer, else when the batch's pipeline has ended (its COMMIT's round trip
        brings them), so that the op costs no round trip of its own."""
        if self._pipe is None:
            fill()
        else:
            self._fills.append(fill)

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

    # New messages, any number of them, in one statement (the module docstring): the
    # messages' ids come back from the INSERT into messages, and the other rows join
    # them by queue id. A body of at most one chunk and _INLINE_BODY is in it, until
    # the statement holds _INLINE_BATCH of them; any other is streamed after it.
    _INLINE_BODY = 256 << 10
    _INLINE_BATCH = 16 << 20
    _INSERT_NEW = f"""WITH m AS (
            INSERT INTO messages ({_MESSAGE_NAMES})
            SELECT {_columns_of(_MESSAGE_FIELDS)}
            FROM jsonb_array_elements(%(messages)s::jsonb) AS e
            RETURNING id, queue_id),
        c AS (SELECT m.id, v.headers, v.body
            FROM unnest(%(queue_id)b::text[], %(headers)b::bytea[], %(body)b::bytea[])
                AS v(queue_id, headers, body)
            JOIN m USING (queue_id)),
        h AS (INSERT INTO headers (message_id, data) SELECT id, headers FROM c),
        b AS (INSERT INTO body_chunks (message_id, seq, data)
            SELECT id, 0, body FROM c WHERE body IS NOT NULL)
        INSERT INTO recipients (message_id, idx, local, domain, orcpt, notify, state,
            next_attempt, lease_owner, lease_until, mailer, target, ctl_user)
        SELECT m.id, r.idx, r.local, r.domain, r.orcpt, r.notify, %(queued)s, r.next_attempt,
            r.lease_owner, r.lease_until, r.mailer, r.target, r.ctl_user
        FROM (SELECT {_columns_of(_RECIPIENT_FIELDS)}
            FROM jsonb_array_elements(%(recipients)s::jsonb) AS e) AS r
        JOIN m USING (queue_id)"""
    # a streamed body's chunks, after the statement above
    _INSERT_CHUNK = """INSERT INTO body_chunks (message_id, seq, data)
        VALUES ((SELECT id FROM messages WHERE queue_id = %s), %s, %b)"""

    def _insert(self, conn: Conn, msg: NewMessage, lease: Lease = NO_LEASE) -> None:
        try:
            self._write_new(conn, self._rows_of([(msg, lease)]))
        except errors.UniqueViolation as exc:  # raised here outside pipeline mode only
            raise StoreError(f"queue id {msg.queue_id} is already in the queue") from exc

    def _new_rows(self, ops: Sequence[Op[Any]], indexes: list[int]) -> _NewRows:
        return self._rows_of([_new_of(ops[i]) for i in indexes])

    def _rows_of(self, new: Sequence[tuple[NewMessage, Lease]]) -> _NewRows:
        """The arguments of ``_INSERT_NEW`` for new messages, each with its lease, and the
        messages whose bodies are to be streamed after it."""
        messages: list[tuple[object, ...]] = []
        headers: list[bytes] = []
        bodies: list[bytes | None] = []
        recipients: list[tuple[object, ...]] = []
        streamed: list[NewMessage] = []
        inline = 0
        limit = min(self._INLINE_BODY, self._body_chunk)
        for msg, lease in new:
            if not msg.envelope.recipients:
                raise ValueError(f"message {msg.queue_id} has no recipients")
            header_bytes = msg.headers.encode()
            messages.append(message_row(msg, header_bytes))
            headers.append(header_bytes)
            size = msg.body.size
            if size == 0 or size > limit or inline + size > self._INLINE_BATCH:
                bodies.append(None)
                if size:
                    streamed.append(msg)
            else:
                inline += size
                body = b"".join(msg.body.chunks(self._body_chunk))
                if len(body) != size:
                    raise StoreError(f"body of {msg.queue_id}: read {len(body)}, expected {size}")
                bodies.append(body)
            recipients.extend(_new_recipient_rows(msg, lease))
        args: dict[str, object] = {
            "messages": _json(messages),
            "recipients": _json(recipients),
            "queue_id": [row[0] for row in messages],
            "headers": headers,
            "body": bodies,
            "queued": QUEUED,
        }
        return _NewRows(args, streamed)

    def _write_new(self, conn: Conn, new: _NewRows) -> None:
        conn.execute(self._INSERT_NEW, new.args)
        for msg in new.streamed:
            self._stream_body(conn, msg)

    def _stream_body(self, conn: Conn, msg: NewMessage) -> None:
        """A large body, one statement per chunk; in pipeline mode each chunk waits for
        the one before to be taken: at most one chunk is held, whatever the size."""
        written = 0
        for seq, chunk in enumerate(msg.body.chunks(self._body_chunk)):
            if seq and self._pipe is not None:
                self._pipe.sync()
            conn.execute(self._INSERT_CHUNK, (msg.queue_id, seq, chunk))
            written += len(chunk)
        if written != msg.body.size:
            raise StoreError(
                f"body of {msg.queue_id}: read {written} bytes, expected {msg.body.size}"
            )

    _INSERT_RECIPIENT = """INSERT INTO recipients (message_id, idx, local, domain, orcpt,
        notify, state, next_attempt, lease_owner, lease_until, mailer, target, ctl_user)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""

    def _insert_recipients(
        self, conn: Conn, mid: int, first_index: int, recipients: Sequence[Recipient], due: float
    ) -> None:
        """Recipients added to a stored message (an expansion), with their targets."""
        rows = [
            (*recipient_row(mid, first_index + i, r, due), *target_row(r))
            for i, r in enumerate(recipients)
        ]
        with conn.cursor() as cur:
            cur.executemany(self._INSERT_RECIPIENT, rows)

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

    # The results of one op in one statement per wave (``sqlwrites.result_waves``); what
    # it returns are the recipients it changed (the others are stale: no longer queued).
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
    # Two runners recording the last results of one message at once must not each see the
    # other's recipient still QUEUED and leave the finished message behind: each locks the
    # messages it has results for first, so the second waits for the first's commit and
    # its UPDATE and DELETE, each with a snapshot of its own (READ COMMITTED), see what
    # the first did. An op locks its messages in id order; two batches of several such
    # ops may still lock in opposite orders (rare: both need results for the same two
    # messages at once), and PostgreSQL then fails one after ``deadlock_timeout``, which
    # is redone op by op. NO KEY UPDATE: inserting rows that refer to a message (its KEY
    # SHARE) does not wait for it.
    _LOCK_MESSAGES = """SELECT 1 FROM messages WHERE queue_id = ANY(%s) ORDER BY id
        FOR NO KEY UPDATE"""
    _DELETE_DONE = """DELETE FROM messages WHERE queue_id = ANY(%s) AND NOT EXISTS
        (SELECT 1 FROM recipients r WHERE r.message_id = messages.id AND r.state = %s)
        RETURNING queue_id"""

    def _record_results(self, conn: Conn, op: RecordResults) -> RecordOutcome:
        """The results' UPDATEs and the DELETE of finished messages are sent together,
        the outcome filled in from their answers when they are in (``_when_answered``):
        in pipeline mode the op waits for nothing of its own."""
        waves = result_waves(op.results)
        queue_ids = list(dict.fromkeys(res.queue_id for res in op.results))
        if queue_ids:
            conn.execute(self._LOCK_MESSAGES, (queue_ids,))
        cursors = [
            conn.execute(self._RECORD_RESULTS, (*_result_columns(wave), QUEUED))
            for wave in wave_lists(op.results, waves)
        ]
        for msg in op.new_messages:
            self._insert(conn, msg)
        # The DELETE takes every message the op has a result for, not only those its
        # UPDATEs changed (their answers are not in yet): a message with no QUEUED
        # recipient left is finished whoever finished it, and a runner that finishes a
        # message deletes it in the same transaction, so deleting any finished message
        # among them is safe. ``removed`` is what this DELETE deleted.
        outcome = RecordOutcome(stale=[], removed=self._delete_if_done(conn, queue_ids))

        def fill() -> None:
            changed = [{(row["queue_id"], row["idx"]) for row in cur.fetchall()} for cur in cursors]
            outcome.stale.extend(
                (res.queue_id, res.index)
                for res, wave in zip(op.results, waves, strict=True)
                if (res.queue_id, res.index) not in changed[wave]
            )

        self._when_answered(fill)
        return outcome

    def _delete_if_done(self, conn: Conn, queue_ids: Sequence[str]) -> list[str]:
        """Delete those of ``queue_ids`` that are finished; the list returned (in their
        order) is filled in when the DELETE's answer is in (``_when_answered``)."""
        removed: list[str] = []
        if not queue_ids:
            return removed
        ids = list(queue_ids)
        cur = conn.execute(self._DELETE_DONE, (ids, QUEUED))

        def fill() -> None:
            gone = {row["queue_id"] for row in cur.fetchall()}
            removed.extend(queue_id for queue_id in ids if queue_id in gone)

        self._when_answered(fill)
        return removed

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


def _new_recipient_rows(msg: NewMessage, lease: Lease) -> Iterator[tuple[object, ...]]:
    """The recipients of a new message as the columns of ``_RECIPIENT_FIELDS``: those of
    ``recipient_row`` with the queue id for the message, and the resolved targets."""
    queue_id, due = msg.queue_id, msg.due
    for i, r in enumerate(msg.envelope.recipients):
        address = r.address
        yield (
            queue_id,
            i,
            address.local,
            address.domain,
            r.orcpt,
            notify_text(r.notify),
            due,
            *lease,
            *target_row(r),
        )


def _new_of(op: Op[Any]) -> tuple[NewMessage, Lease]:
    assert isinstance(op, InsertMessage)
    return op.message, op.lease


def _result_columns(results: Sequence[RecipientResult]) -> tuple[list[object], ...]:
    """The columns of ``_RECORD_RESULTS``'s unnest, one list each."""
    columns: tuple[list[object], ...] = tuple([] for _ in range(9))
    for res in results:
        row = result_row(res)
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return columns


def _relax(conn: Conn, ops: Sequence[Op[Any]]) -> None:
    """A batch of lease operations only (``Op.durable``) does not wait for the WAL flush:
    a lease lost with the server leaves its recipients due again. PostgreSQL keeps the
    commits in order, so the next durable commit's flush covers it too."""
    if not any(getattr(op, "durable", True) for op in ops):
        conn.execute("SET LOCAL synchronous_commit TO off")
