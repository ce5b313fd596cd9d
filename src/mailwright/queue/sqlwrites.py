"""Queue operations whose logic is the same on every SQL backend (SQLite, PostgreSQL).

``SharedWrites`` is a mixin of the backends' batch engines (``sqlite_batch``,
``postgres_batch``): each handler here runs the statements the backend names in its class
constants (``_RECORD_RESULT``, ``_HOLD``, ...; written in its SQL dialect) on the backend's
DB-API connection, and calls the backend's own ``_insert`` and ``_delete_if_done``. Only
the backend's writer thread calls them, inside its batch transaction. Trusts values already
validated by the protocol layer; reads no settings.
"""

from __future__ import annotations

from typing import Any

from mailwright.queue.records import NO_LEASE, QUEUED, Lease
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeleteIfDone,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    NewMessage,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    ReleaseProcessLeases,
    RenewLeases,
    RescheduleNow,
    SetWarned,
)

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
        self._insert(conn, op.message, (op.lease_owner, op.lease_until))

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
