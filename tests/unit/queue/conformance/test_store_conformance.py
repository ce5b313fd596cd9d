"""The QueueStore conformance suite: what every queue backend must do, written against the
interface (``queue.store``), never against SQL. Each test runs once per backend
(``conftest.BACKENDS``).

Covers: enqueue and commit durability across a reopen, bodies and headers, per-op failure
isolation in a batch, claims and leases (two owners never hold one recipient, expiry,
renewal, release), results, holds, deletes, bounces queued with results, alias expansion,
listing, counts, next_due, flush, and crash recovery on reopen (exclusive and shared).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import Recipient
from mailwright.queue.lease import new_owner
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeleteIfDone,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    MessageState,
    Op,
    QueueStore,
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

from ..conftest import build_message
from .conftest import StoreFactory

R = TypeVar("R")
T0 = 1_700_000_000.0  # build_message's received_at: recipients are due from then
LEASE = 300.0
SRC = Path(__file__).resolve().parents[4] / "src"


def run(store: QueueStore, op: Op[R]) -> R:
    """Apply one op in its own batch; its failure is raised."""
    (result,) = store.apply_batch([op])
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[return-value]


def claim(
    store: QueueStore,
    owner: str,
    now: float = T0,
    limit: int = 100,
    queue_ids: tuple[str, ...] | None = None,
) -> list[StoredRecipient]:
    return run(store, ClaimDue(now, limit, owner, LEASE, queue_ids))


def deferred(queue_id: str, index: int, when: float, at: float = T0) -> RecipientResult:
    return RecipientResult(
        queue_id,
        index,
        RecipientState.QUEUED,
        next_attempt=when,
        attempted_at=at,
        status="4.4.1",
        reply="451 4.4.1 try later",
        remote_mta="mx.example.org",
    )


def final(
    queue_id: str, index: int, state: RecipientState = RecipientState.DELIVERED
) -> RecipientResult:
    return RecipientResult(queue_id, index, state, attempted_at=T0, status="2.0.0", reply="250 ok")


def dead_owner() -> str:
    """The owner name of a process of this host that has exited."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    code = "from mailwright.queue.lease import new_owner; print(new_owner())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


# ---- enqueue, durability, content --------------------------------------------------------


def test_insert_is_readable_with_envelope_headers_and_body(store: QueueStore) -> None:
    msg = build_message("QID1", ["a@example.org", "b@example.net"], body=b"Line.\r\n")
    run(store, InsertMessage(msg))
    stored = store.get_message("QID1")
    assert stored is not None and stored.state is MessageState.ACTIVE
    assert str(stored.envelope.sender) == "sender@example.com"
    assert [r.address for r in stored.recipients] == ["a@example.org", "b@example.net"]
    assert all(r.state is RecipientState.QUEUED and r.attempts == 0 for r in stored.recipients)
    assert stored.subject == "Test message" and stored.size == msg.size
    assert store.read_headers("QID1").encode() == msg.headers.encode()
    assert b"".join(store.read_body("QID1")) == b"Line.\r\n"


def test_a_nul_in_a_listed_header_is_kept_in_the_headers_only(store: QueueStore) -> None:
    # a client may send one; PostgreSQL's text refuses it: the listing drops it, the
    # header section keeps the message as sent
    from mailwright.queue.records import fresh_message

    msg = build_message("NUL1", subject="odd\0subject")
    run(store, InsertMessage(msg))
    stored = store.get_message("NUL1")
    assert stored is not None and stored.subject == "oddsubject"
    assert store.read_headers("NUL1").encode() == msg.headers.encode()
    assert b"odd\0subject" in msg.headers.encode()
    assert fresh_message(msg) == stored  # the first delivery's copy says the same


def test_committed_message_survives_close_and_reopen(new_store: StoreFactory) -> None:
    first = new_store()
    first.open()
    run(first, InsertMessage(build_message("DURABLE", body=b"x" * 5000)))
    first.close()
    second = new_store()
    second.open()
    stored = second.get_message("DURABLE")
    assert stored is not None and len(stored.recipients) == 1
    assert b"".join(second.read_body("DURABLE")) == b"x" * 5000


def test_large_body_comes_back_in_bounded_pieces(store: QueueStore) -> None:
    body = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB
    run(store, InsertMessage(build_message("BIG", body=body)))
    pieces = list(store.read_body("BIG", chunk_size=65536))
    assert max(map(len, pieces)) <= 65536 and b"".join(pieces) == body


def test_a_failing_op_fails_alone_in_its_batch(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("DUP")))
    results = store.apply_batch(
        [
            InsertMessage(build_message("OK1")),
            InsertMessage(build_message("DUP")),  # duplicate queue id
            InsertMessage(build_message("NORCPT", recipients=[])),
            InsertMessage(build_message("OK2")),
        ]
    )
    assert results[0] is None and results[3] is None
    assert isinstance(results[1], StoreError)
    assert isinstance(results[2], ValueError)
    assert store.get_message("OK1") and store.get_message("OK2")
    assert store.get_message("NORCPT") is None
    assert store.count_messages() == 3


def test_unknown_message_reads(store: QueueStore) -> None:
    assert store.get_message("NOPE") is None
    with pytest.raises(UnknownMessageError):
        store.read_headers("NOPE")
    with pytest.raises(UnknownMessageError):
        list(store.read_body("NOPE"))


# ---- claims and leases -------------------------------------------------------------------


def test_claim_leases_due_recipients_to_the_owner(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C1", ["a@x.test", "b@x.test"])))
    got = claim(store, "A", now=T0 + 1)
    assert [(r.message_id, r.index) for r in got] == [("C1", 0), ("C1", 1)]
    assert all(r.lease_owner == "A" and r.lease_until == T0 + 1 + LEASE for r in got)
    stored = store.get_message("C1")
    assert stored is not None and all(r.lease_owner == "A" for r in stored.recipients)


def test_an_insert_can_take_the_lease_itself(store: QueueStore) -> None:
    # the accepting process's first delivery starts without a claim (Scheduler.lease_new)
    run(store, InsertMessage(build_message("L1", ["a@x.test", "b@x.test"]), "A", T0 + LEASE))
    stored = store.get_message("L1")
    assert stored is not None
    assert [(r.lease_owner, r.lease_until) for r in stored.recipients] == [("A", T0 + LEASE)] * 2
    assert claim(store, "B", now=T0 + LEASE - 1) == []  # as if claimed by A
    assert run(store, RenewLeases("A", T0 + 10, LEASE)) == 2
    assert run(store, ReleaseLeases("A")) == 2
    assert len(claim(store, "B")) == 2


def test_leased_and_plain_inserts_in_one_batch(store: QueueStore) -> None:
    # several new messages in one group commit (SQLite's multi-row insert): each keeps its own
    ops = [
        InsertMessage(build_message("L2", ["a@x.test"]), "A", T0 + LEASE),
        InsertMessage(build_message("L3", ["b@x.test", "c@x.test"])),
        InsertMessage(build_message("L4", ["d@x.test"]), "A", T0 + LEASE),
    ]
    assert store.apply_batch(ops) == [None, None, None]
    got = claim(store, "B", now=T0 + 1)
    assert [(r.message_id, r.index) for r in got] == [("L3", 0), ("L3", 1)]
    assert len(claim(store, "B", now=T0 + LEASE)) == 2  # A's leases expired


def test_two_owners_never_hold_the_same_recipient(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C2", ["a@x.test", "b@x.test", "c@x.test"])))
    a = claim(store, "A", limit=2)
    b = claim(store, "B")
    keys_a = {(r.message_id, r.index) for r in a}
    keys_b = {(r.message_id, r.index) for r in b}
    assert len(keys_a) == 2 and len(keys_b) == 1 and not keys_a & keys_b
    assert claim(store, "C", now=T0 + LEASE - 1) == []  # every lease is live


def test_an_expired_lease_is_claimable_by_another_owner(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C3")))
    claim(store, "A")
    assert claim(store, "B", now=T0 + LEASE - 0.5) == []
    taken = claim(store, "B", now=T0 + LEASE)
    assert [(r.index, r.lease_owner) for r in taken] == [(0, "B")]


def test_renewal_extends_the_owners_leases(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C4", ["a@x.test", "b@x.test"])))
    claim(store, "A")
    assert run(store, RenewLeases("A", T0 + 200, LEASE)) == 2
    assert claim(store, "B", now=T0 + LEASE + 1) == []  # the old expiry has passed
    stored = store.get_message("C4")
    assert stored is not None and {r.lease_until for r in stored.recipients} == {T0 + 200 + LEASE}
    assert len(claim(store, "B", now=T0 + 200 + LEASE)) == 2


def test_renewal_does_not_take_back_a_lease_another_owner_took(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C5")))
    claim(store, "A")
    claim(store, "B", now=T0 + LEASE)
    assert run(store, RenewLeases("A", T0 + LEASE + 1, LEASE)) == 0
    stored = store.get_message("C5")
    assert stored is not None and stored.recipients[0].lease_owner == "B"
    assert stored.recipients[0].lease_until == T0 + 2 * LEASE


def test_released_leases_are_claimable_at_once(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("C6", ["a@x.test", "b@x.test"])))
    claim(store, "A")
    assert run(store, ReleaseLeases("A")) == 2
    assert run(store, ReleaseLeases("A")) == 0
    assert len(claim(store, "B")) == 2


def test_leases_of_a_stopped_node_s_processes_are_given_back(store: QueueStore) -> None:
    for n in range(3):
        run(store, InsertMessage(build_message(f"P{n}")))
    claim(store, "h_1:10:5:1", limit=1)  # "_" and "%" must not match like LIKE's
    claim(store, "h_1:10:5:2", limit=1)
    claim(store, "hx1:10:50:1", limit=1)  # another process: its prefix is longer
    assert run(store, ReleaseProcessLeases(("h_1:10:5", "gone:1:1"))) == 2
    assert run(store, ReleaseProcessLeases(("h_1:10:5",))) == 0
    assert len(claim(store, "B")) == 2  # the third is still hx1's


def test_claim_takes_oldest_first_up_to_the_limit(store: QueueStore) -> None:
    for n, at in enumerate([T0 + 30, T0 + 10, T0 + 20]):
        msg = build_message(f"ORD{n}", received_at=at)
        run(store, InsertMessage(msg))
    got = claim(store, "A", now=T0 + 100, limit=2)
    assert [r.message_id for r in got] == ["ORD1", "ORD2"]


def test_claim_skips_what_is_not_due_or_held(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("LATER", received_at=T0 + 500)))
    run(store, InsertMessage(build_message("HELD", hold_reason="quarantine")))
    run(store, InsertMessage(build_message("NOW")))
    assert [r.message_id for r in claim(store, "A", now=T0 + 1)] == ["NOW"]


def test_selective_claim_takes_only_the_named_messages(store: QueueStore) -> None:
    for queue_id in ("S1", "S2", "S3"):
        run(store, InsertMessage(build_message(queue_id)))
    got = claim(store, "A", queue_ids=("S3", "S1"))
    assert sorted(r.message_id for r in got) == ["S1", "S3"]


# ---- results, bounces, expansion ---------------------------------------------------------


def test_a_deferral_is_recorded_and_frees_the_lease(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("R1")))
    claim(store, "A")
    outcome = run(store, RecordResults([deferred("R1", 0, T0 + 600)]))
    assert outcome == RecordOutcome(stale=[], removed=[])
    stored = store.get_message("R1")
    assert stored is not None
    r = stored.recipients[0]
    assert (r.state, r.attempts, r.next_attempt, r.last_attempt) == (
        RecipientState.QUEUED,
        1,
        T0 + 600,
        T0,
    )
    assert (r.last_status, r.last_reply, r.remote_mta) == (
        "4.4.1",
        "451 4.4.1 try later",
        "mx.example.org",
    )
    assert r.lease_owner is None and r.lease_until is None
    assert claim(store, "B", now=T0 + 599) == []
    assert len(claim(store, "B", now=T0 + 600)) == 1


def test_a_message_whose_recipients_are_all_final_is_removed(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("R2", ["a@x.test", "b@x.test"])))
    claim(store, "A")
    first = run(store, RecordResults([final("R2", 0)]))
    assert first.removed == [] and store.get_message("R2") is not None
    second = run(store, RecordResults([final("R2", 1, RecipientState.RELAYED)]))
    assert second.removed == ["R2"]
    assert store.get_message("R2") is None
    with pytest.raises(UnknownMessageError):
        list(store.read_body("R2"))


def test_a_result_for_a_finished_recipient_is_stale(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("R3", ["a@x.test", "b@x.test"])))
    run(store, RecordResults([final("R3", 0)]))
    outcome = run(store, RecordResults([final("R3", 0, RecipientState.FAILED)]))
    assert outcome.stale == [("R3", 0)]
    stored = store.get_message("R3")
    assert stored is not None and stored.recipients[0].state is RecipientState.DELIVERED


def test_a_bounce_is_queued_with_the_failure_in_one_step(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("R4")))
    bounce = build_message("BOUNCE4", ["sender@example.com"], sender=None)
    failed = final("R4", 0, RecipientState.FAILED)
    outcome = run(store, RecordResults([failed], new_messages=[bounce]))
    assert outcome.removed == ["R4"]
    stored = store.get_message("BOUNCE4")
    assert stored is not None and stored.envelope.sender is None
    assert [r.address for r in stored.recipients] == ["sender@example.com"]


def test_stale_and_removed_are_exact_when_some_results_are_stale(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("S1", ["a@x.test", "b@x.test"])))
    run(store, InsertMessage(build_message("S2", ["a@x.test", "b@x.test"])))
    run(store, InsertMessage(build_message("S3")))
    run(store, RecordResults([final("S1", 0), final("S2", 0)]))
    results = [
        final("S3", 0),
        final("S2", 0, RecipientState.FAILED),  # stale: already delivered
        deferred("S2", 1, T0 + 600),
        final("S1", 0),  # stale
        final("S1", 1),
        final("NOPE", 0),  # stale: no such message
    ]
    outcome = run(store, RecordResults(results))
    assert outcome == RecordOutcome(stale=[("S2", 0), ("S1", 0), ("NOPE", 0)], removed=["S3", "S1"])
    stored = store.get_message("S2")
    assert stored is not None
    assert [r.state for r in stored.recipients] == [RecipientState.DELIVERED, RecipientState.QUEUED]


def test_a_late_result_for_a_message_another_runner_finished(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("L1")))
    run(store, InsertMessage(build_message("L2", ["a@x.test", "b@x.test"])))
    assert len(claim(store, "A")) == 3
    assert len(claim(store, "B", now=T0 + LEASE)) == 3  # A's leases expired
    # B finished L1 (and deleted it) and one recipient of L2
    assert run(store, RecordResults([final("L1", 0), final("L2", 1)])).removed == ["L1"]
    late = run(store, RecordResults([final("L1", 0), final("L2", 1)]))  # A's, late
    assert late == RecordOutcome(stale=[("L1", 0), ("L2", 1)], removed=[])
    # A's result for L2's other recipient finishes the message B began
    last = run(store, RecordResults([final("L2", 1), final("L2", 0, RecipientState.RELAYED)]))
    assert last == RecordOutcome(stale=[("L2", 1)], removed=["L2"])
    assert store.count_messages() == 0


def test_two_results_for_one_recipient_apply_in_order(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("T1")))
    run(store, InsertMessage(build_message("T2", ["a@x.test", "b@x.test"])))
    twice = [
        deferred("T1", 0, T0 + 600),
        final("T2", 0),
        final("T1", 0),  # after the deferral: not stale, and T1 is finished
        final("T2", 0, RecipientState.FAILED),  # after the delivery: stale
    ]
    outcome = run(store, RecordResults(twice))
    assert outcome == RecordOutcome(stale=[("T2", 0)], removed=["T1"])
    stored = store.get_message("T2")
    assert stored is not None
    assert [r.state for r in stored.recipients] == [RecipientState.DELIVERED, RecipientState.QUEUED]
    assert stored.recipients[0].attempts == 1


def test_expansion_replaces_a_recipient_atomically(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("X1", ["list@x.test"])))
    claim(store, "A")
    new = [Recipient(Address("m1", "y.test")), Recipient(Address("m2", "y.test"))]
    indexes = run(store, AddRecipients("X1", new, now=T0 + 5, replaces=0))
    assert indexes == [1, 2]
    stored = store.get_message("X1")
    assert stored is not None
    assert [r.state for r in stored.recipients] == [
        RecipientState.EXPANDED,
        RecipientState.QUEUED,
        RecipientState.QUEUED,
    ]
    assert stored.recipients[0].lease_owner is None
    with pytest.raises(ValueError):
        run(store, AddRecipients("X1", new, now=T0, replaces=0))  # no longer queued
    with pytest.raises(UnknownMessageError):
        run(store, AddRecipients("NOPE", new, now=T0))


def test_expansion_to_nobody_finishes_the_message(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("X2")))
    assert run(store, AddRecipients("X2", [], now=T0, replaces=0)) == []
    assert store.get_message("X2") is None


def test_delete_if_done_removes_only_finished_messages(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("D1")))
    assert run(store, DeleteIfDone(["D1", "NOPE"])) == []
    assert store.get_message("D1") is not None


# ---- administration ----------------------------------------------------------------------


def test_hold_and_release(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("H1")))
    assert run(store, HoldMessage("H1", "by admin")) is True
    assert run(store, HoldMessage("NOPE", "x")) is False
    stored = store.get_message("H1")
    assert stored is not None and (stored.state, stored.hold_reason) == (
        MessageState.HOLD,
        "by admin",
    )
    assert claim(store, "A") == [] and store.next_due() is None
    assert run(store, ReleaseMessage("H1")) is True
    assert run(store, ReleaseMessage("NOPE")) is False
    stored = store.get_message("H1")
    assert stored is not None and stored.state is MessageState.ACTIVE
    assert stored.hold_reason is None
    assert len(claim(store, "A")) == 1


def test_a_message_can_be_queued_on_hold(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("H2", hold_reason="milter quarantine")))
    stored = store.get_message("H2")
    assert stored is not None and stored.state is MessageState.HOLD
    assert stored.hold_reason == "milter quarantine"


def test_delete_removes_message_and_content(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("DEL")))
    claim(store, "A")
    assert run(store, DeleteMessage("DEL")) is True
    assert run(store, DeleteMessage("DEL")) is False
    assert store.get_message("DEL") is None and store.count_messages() == 0
    with pytest.raises(UnknownMessageError):
        store.read_headers("DEL")
    outcome = run(store, RecordResults([final("DEL", 0)]))  # the runner's late result
    assert outcome.stale == [("DEL", 0)]


def test_set_warned(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("W1")))
    assert run(store, SetWarned("W1")) is True and run(store, SetWarned("NOPE")) is False
    stored = store.get_message("W1")
    assert stored is not None and stored.warned


def test_reschedule_now_by_message_and_by_domain(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("F1", ["a@one.test", "b@two.test"])))
    run(store, InsertMessage(build_message("F2", ["c@one.test"])))
    run(store, RecordResults([deferred("F1", 0, T0 + 900), deferred("F1", 1, T0 + 900)]))
    run(store, RecordResults([deferred("F2", 0, T0 + 900)]))
    assert run(store, RescheduleNow(T0 + 1, recipient_domain="ONE.test")) == 2
    assert sorted((r.message_id, r.index) for r in claim(store, "A", now=T0 + 1)) == [
        ("F1", 0),
        ("F2", 0),
    ]
    assert run(store, RescheduleNow(T0 + 2, queue_ids=["F1"])) == 2
    assert [(r.message_id, r.index) for r in claim(store, "B", now=T0 + 2)] == [("F1", 1)]


# ---- listing, counts, next_due -------------------------------------------------------------


def test_listing_is_oldest_first_and_counts_agree(store: QueueStore) -> None:
    for queue_id, at in (("L2", T0 + 2), ("L1", T0 + 1), ("L3", T0 + 3)):
        run(store, InsertMessage(build_message(queue_id, received_at=at)))
    assert [m.queue_id for m in store.list_messages()] == ["L1", "L2", "L3"]
    assert [m.queue_id for m in store.oldest_messages(2)] == ["L1", "L2"]
    assert store.count_messages() == 3


def test_queue_counts_split_recipients_by_next_step(store: QueueStore) -> None:
    run(store, InsertMessage(build_message("Q1", ["a@x.test", "b@x.test", "c@x.test"])))
    run(store, InsertMessage(build_message("Q2", ["d@x.test"], hold_reason="held")))
    claim(store, "A", limit=1)  # Q1 #0: delivering
    run(store, RecordResults([deferred("Q1", 1, T0 + 900)]))  # Q1 #1: deferred; #2 due
    counts = store.queue_counts(T0 + 10)
    assert (counts.active_messages, counts.held_messages, counts.messages) == (1, 1, 2)
    assert (counts.due, counts.deferred, counts.delivering, counts.held) == (1, 1, 1, 1)
    assert counts.oldest == T0
    groups = store.deferred_groups()
    assert [(g.domain, g.status, g.count, g.queue_ids) for g in groups] == [
        ("x.test", "4.4.1", 1, ["Q1"]),
    ]


def test_next_due(store: QueueStore) -> None:
    assert store.next_due() is None
    run(store, InsertMessage(build_message("N1", received_at=T0 + 50)))
    run(store, InsertMessage(build_message("N2", received_at=T0 + 80)))
    assert store.next_due() == T0 + 50
    claim(store, "A", now=T0 + 60, limit=1)  # N1 leased until T0 + 60 + LEASE
    assert store.next_due() == T0 + 80
    run(store, HoldMessage("N2", "x"))
    assert store.next_due() == T0 + 60 + LEASE  # a lease expiry makes work due again


# ---- crash recovery and readers --------------------------------------------------------------


def test_reopen_holding_the_queue_lock_clears_every_lease(new_store: StoreFactory) -> None:
    first = new_store()
    first.open()
    run(first, InsertMessage(build_message("K1", ["a@x.test", "b@x.test"])))
    claim(first, "other-host:1:x:1", limit=1)
    claim(first, new_owner())
    first.close()  # a crash: nothing released
    second = new_store()
    second.open()  # exclusive: no other process can hold a lease
    assert len(claim(second, "B")) == 2


def test_shared_reopen_clears_only_dead_owners_leases(new_store: StoreFactory) -> None:
    first = new_store()
    first.open()
    run(first, InsertMessage(build_message("K2", ["a@x.test", "b@x.test", "c@x.test"])))
    dead, alive = dead_owner(), new_owner()
    claim(first, dead, limit=1)
    claim(first, alive, limit=1)
    claim(first, "elsewhere.example:4242:abc.1:1", limit=1)  # another host's: cannot tell
    first.close()
    second = new_store()
    second.open(exclusive=False)
    assert [(r.index, r.lease_owner) for r in claim(second, "B")] == [(0, "B")]
    stored = second.get_message("K2")
    assert stored is not None
    assert [r.lease_owner for r in stored.recipients] == [
        "B",
        alive,
        "elsewhere.example:4242:abc.1:1",
    ]


def test_a_second_writer_without_recovery_keeps_leases(new_store: StoreFactory) -> None:
    daemon = new_store()
    daemon.open()
    run(daemon, InsertMessage(build_message("K3")))
    claim(daemon, "A")
    admin = new_store()
    admin.open(recover=False)
    assert claim(admin, "B") == []
    assert run(admin, HoldMessage("K3", "admin")) is True
    stored = daemon.get_message("K3")
    assert stored is not None and stored.state is MessageState.HOLD


def test_a_reader_sees_committed_state(new_store: StoreFactory) -> None:
    writer = new_store()
    writer.open()
    reader = new_store()
    reader.open_for_reading()
    assert reader.count_messages() == 0
    run(writer, InsertMessage(build_message("V1")))
    assert [m.queue_id for m in reader.list_messages()] == ["V1"]
    assert b"".join(reader.read_body("V1")) == b"Hello.\r\n"


def test_results_in_one_batch_are_recorded_as_if_one_after_another(store: QueueStore) -> None:
    for queue_id, rcpts in (("A", ["a@x.test", "b@x.test"]), ("B", ["c@x.test"])):
        run(store, InsertMessage(build_message(queue_id, rcpts)))
    for queue_id in ("C", "D"):
        run(store, InsertMessage(build_message(queue_id)))
    claim(store, "A", limit=10)
    ops = [
        RecordResults([deferred("A", 0, T0 + 600)]),
        RecordResults([final("A", 0)]),  # after the deferral: still queued, so it applies
        RecordResults([final("B", 0)]),  # finishes B
        RecordResults([final("B", 0)]),  # B is gone: stale
        RecordResults([final("A", 1)]),  # finishes A
        RecordResults([deferred("C", 0, T0 + 60), final("C", 0)]),  # in order, in one op
        RecordResults([deferred("D", 0, T0 + 600)]),
        RecordResults([deferred("D", 0, T0 + 700)]),
    ]
    outcomes = store.apply_batch(ops)
    assert outcomes == [
        RecordOutcome(stale=[], removed=[]),
        RecordOutcome(stale=[], removed=[]),
        RecordOutcome(stale=[], removed=["B"]),
        RecordOutcome(stale=[("B", 0)], removed=[]),
        RecordOutcome(stale=[], removed=["A"]),
        RecordOutcome(stale=[], removed=["C"]),
        RecordOutcome(stale=[], removed=[]),
        RecordOutcome(stale=[], removed=[]),
    ]
    assert [store.get_message(q) for q in ("A", "B", "C")] == [None, None, None]
    stored = store.get_message("D")
    assert stored is not None
    r = stored.recipients[0]
    assert (r.state, r.attempts, r.next_attempt) == (RecipientState.QUEUED, 2, T0 + 700)
