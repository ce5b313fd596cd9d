"""Batches: the fast path (new messages inserted together, no savepoints) stores and
answers exactly what op by op would, on both backends (SQLite: multi-row INSERTs;
PostgreSQL: one statement fed by arrays and JSON, in pipeline mode), values exact."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import BodyType, MailParams, Notify, Recipient, Ret
from mailwright.core.target import Mailer, Target
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    AddRecipients,
    ClaimDue,
    DeleteMessage,
    HoldMessage,
    InsertMessage,
    MessageState,
    NewMessage,
    Op,
    Origin,
    QueueStore,
    RecipientResult,
    RecipientState,
    RecordOutcome,
    RecordResults,
    StoredRecipient,
    StoreError,
    UnknownMessageError,
)

MakeMessage = Callable[..., NewMessage]
Stores = Callable[[], QueueStore]
CHUNK = 64 << 10  # bodies above it are streamed on PostgreSQL, not in the insert


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    """A factory of open stores of one backend, each on storage of its own."""
    made: list[QueueStore] = []

    def make() -> QueueStore:
        store: QueueStore
        if request.param == "sqlite":
            path = tmp_path / f"queue{len(made)}.db"
            store = SqliteQueueStore(path, body_chunk_size=CHUNK)
        else:
            from mailwright.queue.postgres import PostgresQueueStore

            url = request.getfixturevalue("postgres_server").new_database()
            store = PostgresQueueStore(url, body_chunk_size=CHUNK)
        made.append(store)
        store.open()
        return store

    yield make
    for store in made:
        store.close()


@pytest.fixture
def store(stores: Stores) -> QueueStore:
    return stores()


def stored(store: QueueStore, message: NewMessage) -> tuple[object, ...]:
    got = store.get_message(message.queue_id)
    assert got is not None
    body = b"".join(store.read_body(message.queue_id))
    headers = store.read_headers(message.queue_id).encode()
    return (got.envelope, got.size, got.subject, got.origin, body, headers)


def test_a_batch_stores_what_single_inserts_store(
    stores: Stores, make_message: MakeMessage
) -> None:
    # small bodies go in the insert, large ones are streamed after it: both in one batch
    def batch() -> list[NewMessage]:
        many = [f"r{i}@example.org" for i in range(5)]
        dsn = Recipient(Address("d", "example.net"), frozenset({Notify.FAILURE}), "rfc822;d@x")
        return [
            make_message(queue_id="Q1", body=b"small\r\n"),
            make_message(queue_id="Q2", body=b"x" * 300_000, recipients=many),  # streamed
            make_message(queue_id="Q3", body=b"", recipients=[dsn]),
            make_message(queue_id="Q4", body=b"y\r\n" * 50_000, hold_reason="quarantine"),
            make_message(queue_id="Q5", body=b"z" * CHUNK),  # the largest inline body
        ]

    together, one_by_one = stores(), stores()
    messages = batch()
    assert together.apply_batch([InsertMessage(m) for m in messages]) == [None] * 5
    for m in batch():
        assert one_by_one.apply_batch([InsertMessage(m)]) == [None]
    for m in messages:
        assert stored(together, m) == stored(one_by_one, m)
    for store in (together, one_by_one):
        listed = store.list_messages()
        assert sorted(m.queue_id for m in listed) == ["Q1", "Q2", "Q3", "Q4", "Q5"]
        assert sum(len(m.recipients) for m in listed) == 9


def test_a_failing_op_in_a_batch_fails_alone(store: QueueStore, make_message: MakeMessage) -> None:
    good = [make_message() for _ in range(3)]
    bad = make_message(recipients=[])
    results = store.apply_batch([InsertMessage(m) for m in (good[0], bad, *good[1:])])
    assert results[0] is None and results[2] is None and results[3] is None
    assert isinstance(results[1], ValueError)
    assert store.count_messages() == 3


def test_a_duplicate_queue_id_fails_alone_in_a_batch_of_new_messages(
    store: QueueStore, make_message: MakeMessage
) -> None:
    first = make_message(queue_id="DUP", body=b"first\r\n")
    assert store.apply_batch([InsertMessage(first)]) == [None]
    names = ["A", "B", "DUP", "C", "A"]  # one already queued, one twice in the batch
    batch = [make_message(queue_id=q, body=f"{i}\r\n".encode()) for i, q in enumerate(names)]
    results = store.apply_batch([InsertMessage(m) for m in batch])
    assert results[:2] == [None, None] and results[3] is None
    for failed in (results[2], results[4]):
        assert isinstance(failed, StoreError) and "already in the queue" in str(failed)
    assert sorted(m.queue_id for m in store.list_messages()) == ["A", "B", "C", "DUP"]
    assert b"".join(store.read_body("DUP")) == b"first\r\n"  # not overwritten
    assert b"".join(store.read_body("A")) == b"0\r\n"  # the first A
    assert b"".join(store.read_body("C")) == b"3\r\n"


def test_new_messages_keep_their_leases_and_targets(
    store: QueueStore, make_message: MakeMessage
) -> None:
    prog = Target(Mailer.PROG, "/usr/bin/true", "alice")
    local = Target(Mailer.LOCAL, "bob", "bob")
    leased = make_message(
        queue_id="LEASED",
        recipients=[Recipient(Address("alice", "h.test"), target=prog), "x@example.org"],
    )
    plain = make_message(
        queue_id="PLAIN",
        recipients=["y@example.org", Recipient(Address("bob", "h.test"), target=local)],
    )
    ops: list[Op[Any]] = [InsertMessage(leased, "me", T1 + 60), InsertMessage(plain)]
    assert store.apply_batch(ops) == [None, None]
    got = store.get_message("LEASED")
    assert got is not None
    assert [(r.target, r.lease_owner, r.lease_until) for r in got.recipients] == [
        (prog, "me", T1 + 60),
        (None, "me", T1 + 60),
    ]
    got = store.get_message("PLAIN")
    assert got is not None
    assert [(r.target, r.lease_owner, r.lease_until) for r in got.recipients] == [
        (None, None, None),
        (local, None, None),
    ]
    assert [r.target for r in got.envelope.recipients] == [None, local]


def test_values_come_back_exactly(store: QueueStore, make_message: MakeMessage) -> None:
    # on PostgreSQL the non-bytea columns travel as JSON text: quoting, non-ASCII text,
    # text that looks like JSON, full float precision and large integers must survive
    tricky = 'é "q" \\ {} [null] \t ☃ 😀 null'
    when = 1_700_000_000.123_456_7
    params = MailParams(3_000_000_000, BodyType.EIGHT_BIT, True, Ret.HDRS, "id+2B\\", "<>")
    origin = Origin("ESMTPA", "2001:db8::1", "höst.example", '[{"x": 1}]', "usér", "")
    dsn = Recipient(Address("d", "example.net"), frozenset({Notify.DELAY}), "rfc822;d@x")
    msgs = [
        make_message(
            queue_id="EXACT",
            recipients=[dsn, "null@example.org"],
            subject=tricky,
            received_at=when,
            params=params,
            origin=origin,
            hold_reason='quarantine: "{}"',
        ),
        make_message(queue_id="NULLS", sender=None, received_at=0.1 + 0.2),
    ]
    ops: list[Op[Any]] = [InsertMessage(msgs[0], "owner ☃", when + 1e-6), InsertMessage(msgs[1])]
    assert store.apply_batch(ops) == [None, None]
    got = store.get_message("EXACT")
    assert got is not None
    assert (got.subject, got.received_at, got.origin) == (tricky, when, origin)
    assert got.envelope.params == params and got.hold_reason == 'quarantine: "{}"'
    assert got.envelope == msgs[0].envelope
    assert [(r.lease_owner, r.lease_until, r.next_attempt) for r in got.recipients] == [
        ("owner ☃", when + 1e-6, when)
    ] * 2
    got = store.get_message("NULLS")
    assert got is not None and got.envelope.sender is None and got.received_at == 0.1 + 0.2


def test_many_messages_in_one_batch(store: QueueStore, make_message: MakeMessage) -> None:
    # more rows than one SQLite statement may bind (the insert is split); on PostgreSQL
    # still one statement
    messages = [make_message(body=b"m%d\r\n" % i) for i in range(1500)]
    assert store.apply_batch([InsertMessage(m) for m in messages]) == [None] * 1500
    assert store.count_messages() == 1500
    assert b"".join(store.read_body(messages[1234].queue_id)) == b"m1234\r\n"


# ---- mixed batches: the fast path (no savepoints, new messages inserted together) -------

T1 = 1_700_000_100.0


def delivered(recipient: StoredRecipient) -> RecipientResult:
    return RecipientResult(
        recipient.message_id, recipient.index, RecipientState.DELIVERED, 0.0, T1, "2.0.0", "ok"
    )


def apply(store: QueueStore, ops: list[Op[Any]], together: bool) -> list[object]:
    """``ops`` as one batch, or one batch each."""
    if together:
        return store.apply_batch(ops)
    return [store.apply_batch([op])[0] for op in ops]


def test_a_relay_batch_gives_what_op_by_op_gives(stores: Stores, make_message: MakeMessage) -> None:
    # new mail, a claim and the results of the previous claim in one commit, as relaying does
    def run(store: QueueStore, together: bool) -> list[object]:
        first = [make_message(queue_id=f"A{i}", received_at=T1 - 10) for i in range(3)]
        insert_all = [InsertMessage(m) for m in first]
        assert store.apply_batch(insert_all) == [None] * 3
        claimed = store.apply_batch([ClaimDue(T1, 2, "me", 60.0)])[0]
        assert isinstance(claimed, list) and len(claimed) == 2
        later = [make_message(queue_id=f"B{i}", received_at=T1) for i in range(2)]
        ops: list[Op[Any]] = [
            InsertMessage(later[0]),
            RecordResults([delivered(r) for r in claimed]),
            ClaimDue(T1, 10, "me", 60.0),
            InsertMessage(later[1]),
        ]
        results = apply(store, ops, together)
        left = sorted(m.queue_id for m in store.list_messages())
        return [results[0], results[1], left, store.get_message("B1") is not None]

    a, b = run(stores(), True), run(stores(), False)
    assert a == b
    assert a[1] == RecordOutcome(stale=[], removed=["A0", "A1"])


def test_a_failing_op_in_a_mixed_batch_fails_alone(
    store: QueueStore, make_message: MakeMessage
) -> None:
    new = make_message()
    nobody = AddRecipients("0" * 15, [Recipient(Address("x", "example.org"))], T1)
    results = store.apply_batch([InsertMessage(new), nobody, ClaimDue(T1, 10, "me", 60.0)])
    assert results[0] is None
    assert isinstance(results[1], UnknownMessageError)
    claimed = results[2]
    assert isinstance(claimed, list) and [r.message_id for r in claimed] == [new.queue_id]


def test_ops_naming_a_new_message_see_it_inserted_first(
    store: QueueStore, make_message: MakeMessage
) -> None:
    # kept in order: the delete comes after the insert it names, the hold before its own
    gone, held = make_message(), make_message()
    results = store.apply_batch(
        [
            InsertMessage(gone),
            DeleteMessage(gone.queue_id),
            HoldMessage(held.queue_id, "early"),
            InsertMessage(held),
        ]
    )
    assert results == [None, True, False, None]
    assert store.get_message(gone.queue_id) is None
    stored = store.get_message(held.queue_id)
    assert stored is not None and stored.state is MessageState.ACTIVE


def test_new_messages_with_resolved_targets_keep_them(
    store: QueueStore, make_message: MakeMessage
) -> None:
    target = Target(Mailer.PROG, "/usr/bin/true", "alice")
    message = make_message(recipients=[Recipient(Address("alice", "h.test"), target=target)])
    assert store.apply_batch([InsertMessage(message), InsertMessage(make_message())]) == [None] * 2
    stored = store.get_message(message.queue_id)
    assert stored is not None and stored.recipients[0].target == target


# ---- several results in one batch: as op by op, stale ones and repeats included ---------


def result(
    queue_id: str, index: int, state: RecipientState, next_attempt: float = 0.0
) -> RecipientResult:
    return RecipientResult(queue_id, index, state, next_attempt, T1, "x.0.0", f"{state.value}")


def snapshot(store: QueueStore) -> list[tuple[object, ...]]:
    return [
        (m.queue_id, r.index, r.state, r.attempts, r.next_attempt, r.last_status, r.lease_owner)
        for m in store.list_messages()
        for r in m.recipients
    ]


def compare_runs(
    stores: Stores,
    make_message: MakeMessage,
    batches: Callable[[], list[list[Op[Any]]]],
) -> list[object]:
    """Apply ``batches`` (after queueing and claiming A with two recipients, B and C) as
    batches and one op at a time; both must give the same results and the same queue."""
    seen = []
    for together in (True, False):
        store = stores()
        store.apply_batch(
            [
                InsertMessage(make_message(queue_id="A", recipients=["a@x.org", "b@x.org"])),
                InsertMessage(make_message(queue_id="B")),
                InsertMessage(make_message(queue_id="C")),
            ]
        )
        store.apply_batch([ClaimDue(T1, 10, "me", 60.0)])
        outcomes = [apply(store, batch, together) for batch in batches()]
        seen.append((outcomes, snapshot(store)))
    assert seen[0] == seen[1]
    return seen[0][0]


def test_a_run_of_results_gives_what_op_by_op_gives(
    stores: Stores, make_message: MakeMessage
) -> None:
    done, deferred, failed = RecipientState.DELIVERED, RecipientState.QUEUED, RecipientState.FAILED
    outcomes = compare_runs(
        stores,
        make_message,
        lambda: [
            [
                RecordResults([result("A", 0, done), result("B", 0, deferred, T1 + 300)]),
                RecordResults([result("A", 1, failed), result("C", 0, done)]),
            ]
        ],
    )
    assert outcomes == [
        [RecordOutcome([], []), RecordOutcome([], ["A", "C"])],
    ]


def test_a_stale_result_in_a_run_is_reported(stores: Stores, make_message: MakeMessage) -> None:
    done = RecipientState.DELIVERED
    outcomes = compare_runs(
        stores,
        make_message,
        lambda: [
            [RecordResults([result("A", 0, done)])],
            [RecordResults([result("A", 0, done), result("A", 1, done)])],  # A 0 is final
        ],
    )
    assert outcomes[1] == [RecordOutcome([("A", 0)], ["A"])]


def test_two_results_for_one_recipient_in_a_run_apply_in_order(
    stores: Stores, make_message: MakeMessage
) -> None:
    outcomes = compare_runs(
        stores,
        make_message,
        lambda: [
            [
                RecordResults([result("B", 0, RecipientState.QUEUED, T1)]),
                RecordResults([result("B", 0, RecipientState.DELIVERED)]),
            ]
        ],
    )
    assert outcomes == [[RecordOutcome([], []), RecordOutcome([], ["B"])]]


def test_results_that_finish_a_message_delete_it_without_updating_its_recipients(
    tmp_path: Path, make_message: MakeMessage
) -> None:
    # a message whose last queued recipients one op finishes is deleted outright: the
    # update of rows about to be deleted with it was a third of a relayed message's SQL
    store = SqliteQueueStore(tmp_path / "queue.db", body_chunk_size=CHUNK)
    store.open()
    try:
        store.apply_batch(
            [
                InsertMessage(make_message(queue_id="A", recipients=["a@x.org", "b@x.org"])),
                InsertMessage(make_message(queue_id="B")),
                InsertMessage(make_message(queue_id="C")),
            ]
        )
        store.apply_batch([ClaimDue(T1, 10, "me", 60.0)])
        statements: list[str] = []
        assert store._conn is not None
        store._conn.set_trace_callback(statements.append)
        done, failed = RecipientState.DELIVERED, RecipientState.FAILED
        outcomes = store.apply_batch(
            [
                RecordResults([result("A", 1, failed), result("A", 0, done)]),
                RecordResults([result("C", 0, done)]),
            ]
        )
        store._conn.set_trace_callback(None)
        assert outcomes == [RecordOutcome([], ["A"]), RecordOutcome([], ["C"])]
        assert [s for s in statements if s.lstrip().upper().startswith("UPDATE")] == []
        assert [m.queue_id for m in store.list_messages()] == ["B"]
    finally:
        store.close()


def test_results_for_a_message_no_longer_queued_are_stale_in_a_run(
    stores: Stores, make_message: MakeMessage
) -> None:
    # C deleted meanwhile (queue delete), A with one recipient left queued, B finished
    # twice in one op: none of them is deleted outright; each gets what op by op gives
    done = RecipientState.DELIVERED
    outcomes = compare_runs(
        stores,
        make_message,
        lambda: [
            [DeleteMessage("C")],
            [
                RecordResults([result("C", 0, done)]),
                RecordResults([result("A", 0, done)]),
                RecordResults([result("B", 0, done), result("B", 0, done)]),
            ],
        ],
    )
    assert outcomes[1] == [
        RecordOutcome([("C", 0)], []),
        RecordOutcome([], []),
        RecordOutcome([("B", 0)], ["B"]),
    ]
