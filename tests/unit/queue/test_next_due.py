"""``next_due``: when the scheduler should look again; leases count, held messages do not."""

from __future__ import annotations

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import ClaimDue, HoldMessage, InsertMessage

from .conftest import build_message

T0 = 1_700_000_000.0


def insert(store: SqliteQueueStore, due: float, **kw: object) -> str:
    msg = build_message(received_at=T0, **kw)  # type: ignore[arg-type]
    msg.first_attempt = due
    store.apply_batch([InsertMessage(msg)])
    return msg.queue_id


def test_empty_queue_has_nothing_due(store: SqliteQueueStore) -> None:
    assert store.next_due() is None


def test_the_earliest_queued_recipient(store: SqliteQueueStore) -> None:
    for due in (T0 + 300, T0 + 60, T0 + 900):
        insert(store, due)
    assert store.next_due() == T0 + 60


def test_a_lease_counts_until_it_expires_and_held_messages_not_at_all(
    store: SqliteQueueStore,
) -> None:
    insert(store, T0 + 10)
    insert(store, T0 + 500)
    held = insert(store, T0 + 5)
    store.apply_batch([HoldMessage(held, "quarantine")])
    assert store.next_due() == T0 + 10
    (claimed,) = store.apply_batch([ClaimDue(now=T0 + 20, limit=1, owner="w", lease_seconds=1000)])
    assert len(claimed) == 1  # the T0+10 recipient, leased until T0+1020
    assert store.next_due() == T0 + 500


def test_many_leases_before_the_first_free_recipient(store: SqliteQueueStore) -> None:
    for i in range(30):
        insert(store, T0 + i)
    late = T0 + 100
    insert(store, late)
    store.apply_batch([ClaimDue(now=T0 + 40, limit=30, owner="w", lease_seconds=30)])
    assert store.next_due() == T0 + 70  # the 30 leases end before the free recipient
