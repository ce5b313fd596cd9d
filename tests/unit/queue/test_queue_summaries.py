"""The store's summaries for status and metrics: counts by state, deferred groups, a page."""

from __future__ import annotations

from typing import Any

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    ClaimDue,
    HoldMessage,
    InsertMessage,
    Op,
    QueueCounts,
    RecipientResult,
    RecipientState,
    RecordResults,
)
from tests.unit.queue.conftest import MakeMessage

T0 = 1_700_000_000.0


def run(store: SqliteQueueStore, op: Op[Any]) -> Any:
    (result,) = store.apply_batch([op])
    if isinstance(result, Exception):
        raise result
    return result


def defer(
    store: SqliteQueueStore,
    queue_id: str,
    index: int,
    status: str,
    reply: str,
    until: float,
    at: float = T0,
) -> None:
    result = RecipientResult(queue_id, index, RecipientState.QUEUED, until, at, status, reply)
    run(store, RecordResults([result]))


def test_an_empty_queue_counts_nothing(store: SqliteQueueStore) -> None:
    assert store.queue_counts(T0) == QueueCounts()
    assert store.deferred_groups() == []
    assert store.oldest_messages(10) == []


def test_queue_counts_split_recipients_by_their_next_step(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    due = make_message(received_at=T0, recipients=["a@x.test", "b@x.test"])
    held = make_message(received_at=T0 + 1, recipients=["c@x.test"])
    leased = make_message(received_at=T0 + 2, recipients=["d@x.test"])
    for message in (due, held, leased):
        run(store, InsertMessage(message))
    run(store, HoldMessage(held.queue_id, "admin"))
    defer(store, due.queue_id, 1, "4.4.1", "connection refused", until=T0 + 600)
    claimed = run(store, ClaimDue(T0 + 10, 1, "runner", 300))
    assert [(r.message_id, r.index) for r in claimed] == [(due.queue_id, 0)]
    counts = store.queue_counts(T0 + 10)
    assert counts == QueueCounts(
        active_messages=2, held_messages=1, due=1, deferred=1, delivering=1, held=1, oldest=T0
    )
    assert counts.messages == 3
    # later the lease has expired and the retry is due: everything active is due again
    later = store.queue_counts(T0 + 1000)
    assert (later.due, later.deferred, later.delivering, later.held) == (3, 0, 0, 1)


def test_deferred_groups_by_domain_and_reply_largest_first(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    ids = []
    for n in range(3):
        message = make_message(received_at=T0 + n, recipients=["a@x.test", "b@y.test"])
        run(store, InsertMessage(message))
        ids.append(message.queue_id)
        defer(store, message.queue_id, 0, "4.4.1", "refused", until=T0 + 600 + n, at=T0 + n)
        if n < 2:
            defer(store, message.queue_id, 1, "4.2.2", "mailbox full", until=T0 + 600)
    held = make_message(received_at=T0 + 9, recipients=["c@x.test"])
    run(store, InsertMessage(held))
    defer(store, held.queue_id, 0, "4.4.1", "refused", until=T0 + 600)
    run(store, HoldMessage(held.queue_id, "admin"))  # held mail is not "deferred"

    groups = store.deferred_groups(limit=10, samples=2)
    assert [(g.domain, g.status, g.reply, g.count) for g in groups] == [
        ("x.test", "4.4.1", "refused", 3),
        ("y.test", "4.2.2", "mailbox full", 2),
    ]
    assert groups[0].queue_ids == ids[:2]  # next due first, at most ``samples``
    assert groups[0].last_attempt == T0 + 2
    assert len(store.deferred_groups(limit=1)) == 1


def test_oldest_messages_is_a_page_of_the_queue(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    messages = [
        make_message(received_at=T0 + n, recipients=[f"r{n}@x.test", "s@y.test"]) for n in (3, 1, 2)
    ]
    for message in messages:
        run(store, InsertMessage(message))
    page = store.oldest_messages(2)
    assert [m.queue_id for m in page] == [messages[1].queue_id, messages[2].queue_id]
    assert [r.address for r in page[0].recipients] == ["r1@x.test", "s@y.test"]
    assert len(store.oldest_messages(10)) == 3
