"""The operations the queue manager uses: claims and leases, results, bounces, admin ops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import Recipient
from mailwright.queue.sqlite import SqliteQueueStore
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
    RecipientResult,
    RecipientState,
    RecordOutcome,
    RecordResults,
    ReleaseLeases,
    ReleaseMessage,
    RescheduleNow,
    SetWarned,
    StoredRecipient,
    StoreError,
    UnknownMessageError,
)

MakeMessage = Callable[..., NewMessage]
T0 = 1_700_000_000.0
LEASE = 300.0


def run(store: SqliteQueueStore, op: Op[Any]) -> Any:
    """Apply one op; raise its error if it failed."""
    (result,) = store.apply_batch([op])
    if isinstance(result, Exception):
        raise result
    return result


def claim(
    store: SqliteQueueStore, now: float, owner: str = "runner-a", limit: int = 100
) -> list[StoredRecipient]:
    return run(store, ClaimDue(now=now, limit=limit, owner=owner, lease_seconds=LEASE))  # type: ignore[no-any-return]


def keys(recipients: list[StoredRecipient]) -> list[tuple[str, int]]:
    return [(r.message_id, r.index) for r in recipients]


def recipient(store: SqliteQueueStore, queue_id: str, index: int) -> StoredRecipient:
    message = store.get_message(queue_id)
    assert message is not None
    return message.recipients[index]


@pytest.fixture
def two_messages(
    store: SqliteQueueStore, make_message: MakeMessage
) -> tuple[NewMessage, NewMessage]:
    first = make_message(received_at=T0, recipients=["a@one.example", "b@two.example"])
    second = make_message(received_at=T0 + 100)
    run(store, InsertMessage(first))
    run(store, InsertMessage(second))
    return first, second


# ---- claims and leases ---------------------------------------------------------------------


def test_claim_takes_only_due_recipients_oldest_first(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    assert claim(store, T0 - 1) == []
    claimed = claim(store, T0 + 50)
    assert keys(claimed) == [(first.queue_id, 0), (first.queue_id, 1)]
    assert all(r.lease_owner == "runner-a" and r.lease_until == T0 + 50 + LEASE for r in claimed)
    # the lease is stored, not just returned
    assert recipient(store, first.queue_id, 1).lease_owner == "runner-a"
    assert keys(claim(store, T0 + 200)) == [(second.queue_id, 0)]


def test_claim_respects_the_limit(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    assert keys(claim(store, T0 + 200, limit=2)) == [(first.queue_id, 0), (first.queue_id, 1)]
    assert keys(claim(store, T0 + 200, limit=2)) == [(second.queue_id, 0)]


def test_a_lease_keeps_others_away_until_it_expires(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    assert len(claim(store, T0, owner="runner-a")) == 2
    # the second message is due by now; the first one's recipients are still leased
    assert keys(claim(store, T0 + LEASE - 1, owner="runner-b")) == [(second.queue_id, 0)]
    retaken = claim(store, T0 + LEASE, owner="runner-c")  # expired: at-least-once
    assert keys(retaken) == [(first.queue_id, 0), (first.queue_id, 1)]
    assert {r.lease_owner for r in retaken} == {"runner-c"}


def test_release_leases_gives_back_only_the_owners(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    claim(store, T0, owner="runner-a")
    claim(store, T0 + 200, owner="runner-b")
    assert run(store, ReleaseLeases("runner-a")) == 2
    assert len(claim(store, T0 + 200, owner="runner-c")) == 2
    assert run(store, ReleaseLeases("runner-a")) == 0


def test_held_messages_are_not_claimed_until_released(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    assert run(store, HoldMessage(first.queue_id, "admin")) is True
    held = store.get_message(first.queue_id)
    assert held is not None and held.state is MessageState.HOLD and held.hold_reason == "admin"
    assert keys(claim(store, T0 + 200)) == [(second.queue_id, 0)]
    assert run(store, ReleaseMessage(first.queue_id)) is True
    released = store.get_message(first.queue_id)
    assert released is not None and released.state is MessageState.ACTIVE
    assert released.hold_reason is None
    assert len(claim(store, T0 + 200)) == 2
    assert run(store, HoldMessage("NOSUCHMESSAGE00", "x")) is False
    assert run(store, ReleaseMessage("NOSUCHMESSAGE00")) is False


def test_leases_are_void_after_a_restart(store_path: Path, make_message: MakeMessage) -> None:
    store = SqliteQueueStore(store_path)
    store.open()
    message = make_message(received_at=T0)
    run(store, InsertMessage(message))
    assert len(claim(store, T0)) == 1
    store.close()  # as if the process died while delivering

    reopened = SqliteQueueStore(store_path)
    reopened.open()
    try:
        assert reopened.recovery is not None and reopened.recovery.leases_cleared == 1
        assert recipient(reopened, message.queue_id, 0).lease_owner is None
        assert len(claim(reopened, T0 + 1, owner="after-restart")) == 1
    finally:
        reopened.close()


# ---- results -------------------------------------------------------------------------------


def deferred(queue_id: str, index: int, until: float, at: float = T0 + 1) -> RecipientResult:
    return RecipientResult(
        queue_id,
        index,
        RecipientState.QUEUED,
        next_attempt=until,
        attempted_at=at,
        status="4.4.1",
        reply="connection refused",
        remote_mta="mx.two.example",
    )


def delivered(queue_id: str, index: int, at: float = T0 + 1) -> RecipientResult:
    return RecipientResult(
        queue_id,
        index,
        RecipientState.DELIVERED,
        attempted_at=at,
        status="2.0.0",
        reply="250 ok",
        remote_mta="mx.one.example",
    )


def test_deferral_reschedules_and_counts_the_attempt(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, _ = two_messages
    claim(store, T0)
    outcome = run(store, RecordResults([deferred(first.queue_id, 1, until=T0 + 900)]))
    assert outcome == RecordOutcome(stale=[], removed=[])
    r = recipient(store, first.queue_id, 1)
    assert (r.state, r.attempts, r.next_attempt, r.last_attempt) == (
        RecipientState.QUEUED,
        1,
        T0 + 900,
        T0 + 1,
    )
    assert (r.last_status, r.last_reply, r.remote_mta) == (
        "4.4.1",
        "connection refused",
        "mx.two.example",
    )
    assert (r.lease_owner, r.lease_until) == (None, None)
    run(store, RecordResults([deferred(first.queue_id, 1, until=T0 + 900, at=T0 + 2)]))
    assert recipient(store, first.queue_id, 1).attempts == 2
    second = two_messages[1]
    # index 1 is not due yet, index 0 is still leased by runner-a
    assert keys(claim(store, T0 + 299, owner="b")) == [(second.queue_id, 0)]
    # now everything is due, and the leases of runner-a and b have expired
    assert keys(claim(store, T0 + 900, owner="c")) == [
        (first.queue_id, 0),
        (second.queue_id, 0),
        (first.queue_id, 1),
    ]


def test_decision_without_an_attempt_keeps_the_count(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, _ = two_messages
    skipped = RecipientResult(
        first.queue_id,
        0,
        RecipientState.QUEUED,
        next_attempt=T0 + 60,
        reply="destination known to be down",
    )
    run(store, RecordResults([skipped]))
    r = recipient(store, first.queue_id, 0)
    assert (r.attempts, r.last_attempt, r.next_attempt) == (0, None, T0 + 60)
    assert r.last_reply == "destination known to be down"


def test_message_is_removed_in_the_commit_that_finishes_it(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    claim(store, T0 + 200)
    outcome = run(store, RecordResults([delivered(first.queue_id, 0)]))
    assert outcome.removed == []  # one recipient left
    outcome = run(
        store,
        RecordResults(
            [
                RecipientResult(first.queue_id, 1, RecipientState.RELAYED, attempted_at=T0 + 2),
                delivered(second.queue_id, 0),
            ]
        ),
    )
    assert outcome.removed == [first.queue_id, second.queue_id]
    assert store.count_messages() == 0
    with pytest.raises(UnknownMessageError):
        store.read_body(first.queue_id)


def test_result_for_a_finished_recipient_is_stale(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, _ = two_messages
    run(store, RecordResults([delivered(first.queue_id, 0)]))
    # a runner whose lease expired reports late: it must not bring the recipient back
    outcome = run(
        store,
        RecordResults(
            [deferred(first.queue_id, 0, until=T0 + 900), deferred("NOSUCHMESSAGE00", 0, until=T0)]
        ),
    )
    assert outcome.stale == [(first.queue_id, 0), ("NOSUCHMESSAGE00", 0)]
    r = recipient(store, first.queue_id, 0)
    assert (r.state, r.attempts, r.last_status) == (RecipientState.DELIVERED, 1, "2.0.0")


def test_bounce_commits_atomically_with_the_failure(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    original = make_message(received_at=T0)
    run(store, InsertMessage(original))
    claim(store, T0)
    failure = RecipientResult(
        original.queue_id,
        0,
        RecipientState.FAILED,
        attempted_at=T0 + 1,
        status="5.1.1",
        reply="550 no such user",
    )
    bounce = make_message(sender=None, recipients=["sender@example.com"], received_at=T0 + 1)
    outcome = run(store, RecordResults([failure], new_messages=[bounce]))
    assert outcome.removed == [original.queue_id]
    stored_bounce = store.get_message(bounce.queue_id)
    assert stored_bounce is not None and stored_bounce.envelope.sender is None
    assert store.get_message(original.queue_id) is None


def test_failing_bounce_insert_undoes_the_failure_too(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    original = make_message(received_at=T0)
    run(store, InsertMessage(original))
    claim(store, T0)
    failure = RecipientResult(
        original.queue_id,
        0,
        RecipientState.FAILED,
        attempted_at=T0 + 1,
        status="5.1.1",
        reply="550 no such user",
    )
    clashing_bounce = make_message(queue_id=original.queue_id, sender=None)
    with pytest.raises(StoreError):
        run(store, RecordResults([failure], new_messages=[clashing_bounce]))
    r = recipient(store, original.queue_id, 0)
    assert (r.state, r.attempts, r.lease_owner) == (RecipientState.QUEUED, 0, "runner-a")
    assert store.count_messages() == 1


# ---- alias expansion -----------------------------------------------------------------------


def test_add_recipients_expands_one_atomically(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, _ = two_messages
    claim(store, T0)
    members = [Recipient(Address("x", "list.example")), Recipient(Address("y", "list.example"))]
    indexes = run(store, AddRecipients(first.queue_id, members, now=T0 + 5, replaces=1))
    assert indexes == [2, 3]
    message = store.get_message(first.queue_id)
    assert message is not None
    states = [(r.address, r.state, r.lease_owner) for r in message.recipients]
    assert states == [
        ("a@one.example", RecipientState.QUEUED, "runner-a"),
        ("b@two.example", RecipientState.EXPANDED, None),
        ("x@list.example", RecipientState.QUEUED, None),
        ("y@list.example", RecipientState.QUEUED, None),
    ]
    assert message.recipients[2].next_attempt == T0 + 5
    assert message.envelope.recipients[2:] == members


def test_add_recipients_refuses_unknown_targets(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, _ = two_messages
    new = [Recipient(Address("x", "list.example"))]
    with pytest.raises(UnknownMessageError):
        run(store, AddRecipients("NOSUCHMESSAGE00", new, now=T0))
    run(store, RecordResults([delivered(first.queue_id, 0)]))
    with pytest.raises(ValueError, match="not queued"):
        run(store, AddRecipients(first.queue_id, new, now=T0, replaces=0))
    message = store.get_message(first.queue_id)
    assert message is not None and len(message.recipients) == 2  # nothing added


def test_expansion_to_nobody_finishes_the_message(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    message = make_message()
    run(store, InsertMessage(message))
    assert run(store, AddRecipients(message.queue_id, [], now=T0, replaces=0)) == []
    assert store.get_message(message.queue_id) is None


# ---- administration ------------------------------------------------------------------------


def test_delete_warned_and_delete_if_done(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    assert run(store, SetWarned(first.queue_id)) is True
    warned = store.get_message(first.queue_id)
    assert warned is not None and warned.warned
    assert run(store, DeleteIfDone([first.queue_id, "NOSUCHMESSAGE00"])) == []  # still queued
    assert run(store, DeleteMessage(second.queue_id)) is True
    assert run(store, DeleteMessage(second.queue_id)) is False
    assert run(store, SetWarned(second.queue_id)) is False
    assert [m.queue_id for m in store.list_messages()] == [first.queue_id]


def test_reschedule_now_with_and_without_filters(
    store: SqliteQueueStore, two_messages: tuple[NewMessage, NewMessage]
) -> None:
    first, second = two_messages
    later = T0 + 10_000
    run(
        store,
        RecordResults(
            [
                deferred(first.queue_id, 0, later),
                deferred(first.queue_id, 1, later),
                deferred(second.queue_id, 0, later),
            ]
        ),
    )
    assert run(store, RescheduleNow(T0 + 1, recipient_domain="TWO.example")) == 1
    assert keys(claim(store, T0 + 1)) == [(first.queue_id, 1)]
    assert run(store, RescheduleNow(T0 + 2, queue_ids=[second.queue_id])) == 1
    assert keys(claim(store, T0 + 2)) == [(second.queue_id, 0)]
    assert run(store, RescheduleNow(T0 + 3)) == 3  # leased ones too: results overwrite them
    assert keys(claim(store, T0 + 3)) == [(first.queue_id, 0)]
