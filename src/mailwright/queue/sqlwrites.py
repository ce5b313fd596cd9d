"""Queue operations whose logic is the same on every SQL backend (SQLite, PostgreSQL).

``SharedWrites`` is a mixin of the backends' batch engines (``sqlite_batch``,
``postgres_batch``): each handler here runs the statements the backend names in its class
constants (``_RECORD_RESULT``, ``_HOLD``, ...; written in its SQL dialect) on the backend's
DB-API connection, and calls the backend's own ``_insert`` and ``_delete_if_done``. Only
the backend's writer thread calls them, inside its batch transaction. ``batch_steps`` is the
order in which both backends' fast paths run a batch, its new messages grouped to be
inserted together. Trusts values already validated by the protocol layer; reads no
settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from mailwright.queue.records import QUEUED
from mailwright.queue.store import (
    NO_LEASE,
    AddRecipients,
    ClaimDue,
    DeleteIfDone,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    Lease,
    NewMessage,
    Op,
    RecipientResult,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    ReleaseProcessLeases,
    RenewLeases,
    RescheduleNow,
    SetWarned,
)

_T = TypeVar("_T")

# each operation's handler, by method name: the shared ones below or the backend's own
HANDLERS: dict[type[Any], str] = {
    InsertMessage: "_insert_message",
    ClaimDue: "_claim_due",
    RecordResults: "_record_results",
    ReleaseLeases: "_release_leases",
    ReleaseProcessLeases: "_release_process_leases",
    RenewLeases: "_renew_leases",
    HoldMessage: "_hold_message",
    ReleaseMessage: "_release_message",
    DeleteMessage: "_delete_message",
    SetWarned: "_set_warned",
    RescheduleNow: "_reschedule_now",
    AddRecipients: "_add_recipients",
    DeleteIfDone: "_delete_if_done_op",
}

# Operations that commute with inserting new messages: they never name a message that is
# not yet in the queue (a claim may take the new messages' recipients, as it would have
# one commit later), so a batch's new messages may all go in first, together.
_COMMUTE_WITH_INSERTS = (ClaimDue, RecordResults, ReleaseLeases, RenewLeases)


def batch_steps(ops: Sequence[Op[Any]]) -> list[int | list[int]]:
    """The order of a fast path: op indexes, with the InsertMessage ops grouped (a list)
    to be inserted together. They move ahead of the other ops when all of these commute
    with them; otherwise only consecutive inserts are grouped and the order is kept."""
    inserts = [i for i, op in enumerate(ops) if type(op) is InsertMessage]
    if not inserts:
        return list(range(len(ops)))
    others = [i for i, op in enumerate(ops) if type(op) is not InsertMessage]
    if all(type(ops[i]) in _COMMUTE_WITH_INSERTS for i in others) and not _names_new(ops):
        return [inserts, *others]
    steps: list[int | list[int]] = []
    for i, op in enumerate(ops):
        last = steps[-1] if steps else None
        if type(op) is not InsertMessage:
            steps.append(i)
        elif isinstance(last, list):
            last.append(i)
        else:
            steps.append([i])
    return steps


def _names_new(ops: Sequence[Op[Any]]) -> bool:
    """Whether a result in the batch is for a message the batch inserts (never in practice)."""
    new = {op.message.queue_id for op in ops if isinstance(op, InsertMessage)}
    return any(
        res.queue_id in new for op in ops if isinstance(op, RecordResults) for res in op.results
    )


def result_waves(results: Sequence[RecipientResult]) -> list[int]:
    """Each result's wave: how many results for its recipient come before it. A wave is
    one statement, run in order, so that a second result for a recipient applies after
    the first, as one by one; a result is stale if its own wave did not change it."""
    seen: dict[tuple[str, int], int] = {}
    waves: list[int] = []
    for res in results:
        key = (res.queue_id, res.index)
        waves.append(seen.get(key, 0))
        seen[key] = waves[-1] + 1
    return waves


def wave_lists(results: Sequence[_T], waves: Sequence[int]) -> list[list[_T]]:
    """The results (or their positions) of each wave (``result_waves``), in order."""
    lists: list[list[_T]] = [[] for _ in range(max(waves, default=-1) + 1)]
    for res, wave in zip(results, waves, strict=True):
        lists[wave].append(res)
    return lists


def result_row(res: RecipientResult) -> tuple[object, ...]:
    """A result's values as both backends' grouped UPDATE takes them: queue id, index,
    state, next attempt (None when final), attempts to add, attempt time, status, reply,
    remote MTA."""
    return (
        res.queue_id,
        res.index,
        res.state.value,
        None if res.state.is_final else res.next_attempt,
        0 if res.attempted_at is None else 1,
        res.attempted_at,
        res.status,
        res.reply,
        res.remote_mta,
    )


class SharedWrites:
    """The handlers both SQL backends share (a mixin; see the module docstring)."""

    _RECORD_RESULT: str  # the backend's UPDATE of one recipient's result, in its dialect

    def _handler_table(self) -> dict[type[Any], Any]:
        """Each operation type's bound handler (``HANDLERS``); a backend without one of
        them fails here, at open, not at its first such operation."""
        return {op: getattr(self, name) for op, name in HANDLERS.items()}

    def _insert(self, conn: Any, msg: NewMessage, lease: Lease = NO_LEASE) -> None:
        raise NotImplementedError

    def _delete_if_done(self, conn: Any, queue_ids: list[str]) -> list[str]:
        raise NotImplementedError

    def _insert_message(self, conn: Any, op: InsertMessage) -> None:
        self._insert(conn, op.message, op.lease)

    def _record_results(self, conn: Any, op: RecordResults) -> RecordOutcome:
        stale: list[tuple[str, int]] = []
        touched: dict[str, None] = {}  # an ordered set
        for res in op.results:
            queued = not res.state.is_final
            cur = conn.execute(
                self._RECORD_RESULT,
                (
                    res.state.value,
                    res.next_attempt if queued else None,
                    0 if res.attempted_at is None else 1,
                    res.attempted_at,
                    res.status,
                    res.reply,
                    res.remote_mta,
                    res.queue_id,
                    res.index,
                    QUEUED,
                ),
            )
            if cur.rowcount == 0:
                stale.append((res.queue_id, res.index))
            else:
                touched[res.queue_id] = None
        for msg in op.new_messages:
            self._insert(conn, msg)
        return RecordOutcome(stale=stale, removed=self._delete_if_done(conn, list(touched)))

    def _delete_if_done_op(self, conn: Any, op: DeleteIfDone) -> list[str]:
        return self._delete_if_done(conn, op.queue_ids)
