"""What the PostgreSQL queue store does beyond the conformance suite, on a real server.

A database of a newer schema is refused, a connection lost in the middle of a batch fails
the batch with StoreError and leaves nothing half written (and the next batch reconnects),
errors never show the password, commits stay durable when the server's default says
``synchronous_commit = off``, a claim skips rows another transaction has locked
instead of waiting for them, every writer holds a queue id slot of its own, and a batch of
new messages or of delivery results costs one round trip (results exact all the same,
pipelined or redone op by op).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from mailwright.queue.store import (
    ClaimDue,
    DeleteIfDone,
    InsertMessage,
    Op,
    RecipientResult,
    RecipientState,
    RecordOutcome,
    RecordResults,
    StoreError,
)
from tests.support.postgres import sql_rows, sql_run

from .conftest import build_message


@pytest.fixture
def url(postgres_database: str) -> str:
    return postgres_database


@pytest.fixture
def pg_store(url: str) -> Iterator[object]:
    from mailwright.queue.postgres import PostgresQueueStore

    store = PostgresQueueStore(url, body_chunk_size=1024)
    store.open()
    yield store
    store.close()


def test_a_newer_schema_is_refused(url: str) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    first = PostgresQueueStore(url)
    first.open()
    first.close()
    sql_run(url, "UPDATE mailwright_schema SET version = 99")
    for opening in ("open", "open_for_reading"):
        store = PostgresQueueStore(url)
        with pytest.raises(StoreError, match="schema version 99, newer than"):
            getattr(store, opening)()
        store.close()


def test_reading_a_database_without_a_queue_fails(url: str) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    with pytest.raises(StoreError, match=r"no queue at postgresql://127\.0\.0\.1:"):
        PostgresQueueStore(url).open_for_reading()
    assert sql_rows(url, "SELECT to_regclass('messages')") == [(None,)]  # created nothing


class _KillingBody:
    """A body whose second chunk is read after the store's connections were killed."""

    def __init__(self, url: str, size: int) -> None:
        self.url = url
        self.size = size

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        yield b"x" * chunk_size
        sql_rows(
            self.url,
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        left = self.size - chunk_size
        while left > 0:
            yield b"y" * min(chunk_size, left)
            left -= chunk_size


def test_a_lost_connection_fails_the_batch_and_keeps_nothing(url: str, pg_store: object) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    msg = build_message("HALF")
    msg.body = _KillingBody(url, 4096)
    with pytest.raises(StoreError, match="queue store error"):
        pg_store.apply_batch([InsertMessage(msg), InsertMessage(build_message("OTHER"))])
    assert sql_rows(url, "SELECT count(*) FROM messages") == [(0,)]
    assert sql_rows(url, "SELECT count(*) FROM body_chunks") == [(0,)]
    # the store reconnects: the next batch and reads work
    assert pg_store.apply_batch([InsertMessage(build_message("AFTER"))]) == [None]
    assert pg_store.get_message("AFTER") is not None and pg_store.count_messages() == 1


def test_commits_are_durable_whatever_the_server_default(url: str) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    dbname = url.rsplit("/", 1)[1]
    sql_run(url, f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    assert sql_rows(url, "SELECT current_setting('synchronous_commit')") == [("off",)]
    store = PostgresQueueStore(url)
    store.open()
    try:
        assert store._conn is not None
        row = store._conn.execute("SELECT current_setting('synchronous_commit') AS m").fetchone()
        assert row == {"m": "on"}
    finally:
        store.close()


def test_a_claim_skips_rows_locked_by_another_node(url: str, pg_store: object) -> None:
    import psycopg

    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message("LOCK", ["a@x.test", "b@x.test"]))])
    with psycopg.connect(url) as other:  # another node's claim, not yet committed
        other.execute("SELECT 1 FROM recipients WHERE idx = 0 FOR UPDATE").fetchall()
        (claimed,) = pg_store.apply_batch([ClaimDue(2e9, 10, "B", 300.0)])
        assert isinstance(claimed, list) and [r.index for r in claimed] == [1]


def test_messages_name_the_database_without_its_password() -> None:
    from mailwright.queue.postgres import PostgresQueueStore, describe

    assert describe("postgresql://mw:s3cret@db.example:5433/mail") == (
        "postgresql://db.example:5433/mail"
    )
    assert "s3cret" not in describe("host=db.example password=s3cret dbname=mail")
    store = PostgresQueueStore("postgresql://mw:s3cret@127.0.0.1:1/mail", connect_timeout=1)
    with pytest.raises(StoreError) as failed:
        store.open()
    assert "s3cret" not in str(failed.value)


def _held_id_slots(url: str) -> list[int]:
    from mailwright.queue.postgres_schema import ID_SLOT_LOCK

    rows = sql_rows(
        url,
        "SELECT objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        f" AND classid = {ID_SLOT_LOCK} AND granted ORDER BY objid",
    )
    return [int(row[0]) for row in rows]  # type: ignore[call-overload]


def test_each_writer_holds_its_own_queue_id_slot_while_connected(url: str) -> None:
    """Two writers (two nodes) hold different slots, and this process's ids use its
    last one; a slot is given back on close, and claimed again after a lost connection."""
    from mailwright.core import queueid
    from mailwright.queue.postgres import PostgresQueueStore

    first, second = PostgresQueueStore(url), PostgresQueueStore(url)
    first.open()
    second.open(exclusive=False)
    try:
        assert first.id_slot is not None and second.id_slot is not None
        assert first.id_slot != second.id_slot
        assert _held_id_slots(url) == sorted([first.id_slot, second.id_slot])
        span = 32**5 // 1024
        for _ in range(100):
            value = 0
            for char in queueid.new_queue_id()[10:]:  # the tail, in base 32
                value = value * 32 + queueid.ALPHABET.index(char)
            assert value // span == second.id_slot  # the last store opened here
        first.close()
        assert _held_id_slots(url) == [second.id_slot]
        sql_rows(
            url,
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        with pytest.raises(StoreError):
            second.apply_batch([InsertMessage(build_message("LOST"))])
        assert _held_id_slots(url) == []
        assert second.apply_batch([InsertMessage(build_message("BACK"))]) == [None]
        assert second.id_slot is not None
        assert _held_id_slots(url) == [second.id_slot]
    finally:
        first.close()
        second.close()


def test_a_batch_of_new_messages_costs_one_round_trip(url: str, pg_store: object) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    before = pg_store.round_trips.count
    ops = [InsertMessage(build_message(f"RT{i}", ["a@x.test", "b@x.test"])) for i in range(10)]
    assert pg_store.apply_batch(ops) == [None] * 10
    assert pg_store.round_trips.count - before == 1  # BEGIN ... COMMIT, one pipeline
    assert sql_rows(url, "SELECT count(*) FROM recipients") == [(20,)]


def test_a_batch_of_results_costs_one_round_trip(pg_store: object) -> None:
    """The results' UPDATEs and DELETEs are sent with the rest of the batch; their
    answers come with the COMMIT's, and only then are the outcomes filled in."""
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message(f"R{i}")) for i in range(3)])
    pg_store.apply_batch([InsertMessage(build_message("TWO", ["a@x.test", "b@x.test"]))])
    (claimed,) = pg_store.apply_batch([ClaimDue(2e9, 10, "A", 300.0)])
    assert isinstance(claimed, list) and len(claimed) == 5
    before = pg_store.round_trips.count
    done, later = RecipientState.DELIVERED, RecipientState.QUEUED
    ops: list[Op[Any]] = [
        RecordResults([RecipientResult(f"R{i}", 0, done, 0.0, 1.0)]) for i in range(3)
    ]
    ops.append(
        RecordResults(
            [
                RecipientResult("TWO", 0, later, 5.0, 1.0),
                RecipientResult("TWO", 0, done, 0.0, 1.0),  # a second wave
                RecipientResult("R0", 0, done, 0.0, 1.0),  # stale: done just before
            ],
            new_messages=[build_message("REPORT")],
        )
    )
    outcomes = pg_store.apply_batch(ops)
    assert pg_store.round_trips.count - before == 1  # BEGIN ... COMMIT, one pipeline
    assert outcomes == [
        RecordOutcome(stale=[], removed=["R0"]),
        RecordOutcome(stale=[], removed=["R1"]),
        RecordOutcome(stale=[], removed=["R2"]),
        RecordOutcome(stale=[("R0", 0)], removed=[]),
    ]
    assert pg_store.get_message("REPORT") is not None
    before = pg_store.round_trips.count
    (removed,) = pg_store.apply_batch([DeleteIfDone(["TWO"])])
    assert removed == [] and pg_store.round_trips.count - before == 1


def test_results_redone_op_by_op_are_exact(url: str, pg_store: object) -> None:
    """A batch whose pipelined attempt failed (a duplicate queue id) is redone op by op,
    each statement waiting for its answer: the outcomes are the same."""
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message(q, ["a@x.test", "b@x.test"])) for q in "AB"])
    done = RecipientState.DELIVERED
    results = [RecipientResult(q, i, done, 0.0, 1.0) for q, i in (("A", 0), ("A", 1), ("B", 0))]
    ops: list[Op[Any]] = [
        RecordResults([*results, results[0]]),
        InsertMessage(build_message("B")),  # fails: already in the queue
    ]
    outcome, failed = pg_store.apply_batch(ops)
    assert outcome == RecordOutcome(stale=[("A", 0)], removed=["A"])
    assert isinstance(failed, StoreError)
    assert sql_rows(url, "SELECT queue_id FROM messages") == [("B",)]


def test_a_result_deletes_a_message_two_nodes_left_finished(url: str, pg_store: object) -> None:
    """A message left with every recipient finished (by a version that did not lock the
    message before recording: two nodes finishing its last two recipients at once each
    saw the other's still queued) is deleted by a result for it, stale: its DELETE takes
    every message the op names."""
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message("LEFT", ["a@x.test", "b@x.test"]))])
    sql_run(url, "UPDATE recipients SET state = 'delivered'")
    done = RecipientState.DELIVERED
    (outcome,) = pg_store.apply_batch([RecordResults([RecipientResult("LEFT", 1, done)])])
    assert outcome == RecordOutcome(stale=[("LEFT", 1)], removed=["LEFT"])
    assert sql_rows(url, "SELECT count(*) FROM messages") == [(0,)]


def test_two_runners_finishing_one_message_at_once_delete_it(url: str, pg_store: object) -> None:
    """Runner A records recipient 0 as the store does (the message locked first) and has
    not committed yet; runner B's results for recipient 1 wait for A's commit, then see
    recipient 0 finished and delete the message: nothing is left behind."""
    import threading

    import psycopg

    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message("RACE", ["a@x.test", "b@x.test"]))])
    done = RecipientState.DELIVERED
    outcomes: list[object] = []
    with psycopg.connect(url) as runner_a:
        runner_a.execute(pg_store._LOCK_MESSAGES, (["RACE"],))
        runner_a.execute("UPDATE recipients SET state = 'delivered' WHERE idx = 0")
        runner_b = threading.Thread(
            target=lambda: outcomes.extend(
                pg_store.apply_batch([RecordResults([RecipientResult("RACE", 1, done)])])
            )
        )
        runner_b.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted"
        while sql_rows(url, waiting) == [(0,)] and runner_b.is_alive():
            runner_b.join(0.01)  # until B waits for A's lock
        assert runner_b.is_alive() and not outcomes  # B waits for A's commit
        runner_a.execute(pg_store._DELETE_DONE, (["RACE"], "queued"))  # A's own: nothing yet
        runner_a.commit()
        runner_b.join(30)
    assert outcomes == [RecordOutcome(stale=[], removed=["RACE"])]
    assert sql_rows(url, "SELECT count(*) FROM messages") == [(0,)]


def test_a_body_of_many_chunks_is_written_whole_in_a_pipelined_batch(pg_store: object) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    body = bytes(range(256)) * 20  # five chunks of 1024 and a part
    ops = [InsertMessage(build_message("BIG", body=body)), InsertMessage(build_message("SMALL"))]
    assert pg_store.apply_batch(ops) == [None, None]
    assert b"".join(pg_store.read_body("BIG")) == body


def _statements(store: object, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements the store's write connection runs from now on (their texts)."""
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(store, PostgresQueueStore) and store._conn is not None
    conn, seen = store._conn, []
    execute = conn.execute

    def spy(query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(query))
        return execute(query, *args, **kwargs)

    monkeypatch.setattr(conn, "execute", spy)
    return seen


def test_new_messages_go_in_with_one_statement_whatever_their_number(
    url: str, pg_store: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    seen = _statements(pg_store, monkeypatch)
    texts = set()
    for size in (1, 5, 20):
        seen.clear()
        ops = [
            InsertMessage(build_message(f"N{size}.{i}", ["a@x.test", "b@x.test"]))
            for i in range(size)
        ]
        assert pg_store.apply_batch(ops) == [None] * size
        assert len(seen) == 1  # not even BEGIN and COMMIT: a transaction of its own
        texts.update(seen)
    assert len(texts) == 1  # one text: prepared once
    assert sql_rows(url, "SELECT count(*) FROM recipients") == [(52,)]


def test_bodies_beyond_the_inline_bound_are_streamed_chunk_by_chunk(
    url: str, pg_store: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)  # chunks of 1024
    monkeypatch.setattr(pg_store, "_INLINE_BATCH", 2048)  # two bodies of 1000 in the insert
    bodies = {f"S{i}": bytes([65 + i]) * 1000 for i in range(4)} | {"LARGE": b"L" * 2500}
    ops = [InsertMessage(build_message(q, body=body)) for q, body in bodies.items()]
    seen = _statements(pg_store, monkeypatch)
    assert pg_store.apply_batch(ops) == [None] * 5
    chunks = [q for q in seen if q.lstrip().startswith("INSERT INTO body_chunks")]
    assert len(chunks) == 2 + 3  # S2 and S3 in one chunk each, LARGE in three
    assert seen[0] == "BEGIN" and seen[-1] == "COMMIT"  # several statements: a transaction
    for queue_id, body in bodies.items():
        assert b"".join(pg_store.read_body(queue_id)) == body
    assert sql_rows(url, "SELECT count(*), max(seq) FROM body_chunks") == [(7, 2)]


def test_a_failing_op_is_redone_alone_after_the_pipelined_attempt(
    url: str, pg_store: object
) -> None:
    from mailwright.queue.postgres import PostgresQueueStore

    assert isinstance(pg_store, PostgresQueueStore)
    pg_store.apply_batch([InsertMessage(build_message("TWICE"))])
    ops = [InsertMessage(build_message(q)) for q in ("FIRST", "TWICE", "LAST")]
    first, twice, last = pg_store.apply_batch(ops)
    assert first is None and last is None
    assert isinstance(twice, StoreError) and "already in the queue" in str(twice)
    assert sql_rows(url, "SELECT queue_id FROM messages ORDER BY queue_id") == [
        ("FIRST",), ("LAST",), ("TWICE",)
    ]  # fmt: skip
    # the connection is clean: the next batch goes through the pipeline again
    before = pg_store.round_trips.count
    assert pg_store.apply_batch([InsertMessage(build_message("NEXT"))]) == [None]
    assert pg_store.round_trips.count - before == 1


def test_only_batches_of_leases_commit_without_waiting_for_the_wal_flush() -> None:
    """A lost lease only makes its recipients due again: a claim, a renewal or a release
    alone does not wait for the WAL flush; a batch with anything else does. Seen on a
    server of its own whose WAL writer waits 10 s: the WAL written but not flushed."""
    import shutil
    import tempfile
    from pathlib import Path

    from mailwright.queue.postgres import PostgresQueueStore
    from mailwright.queue.store import ReleaseLeases, RenewLeases
    from tests.support.postgres import PrivatePostgres

    root = Path(tempfile.mkdtemp(prefix="mailwright-pg-"))
    server = PrivatePostgres(root).start()
    try:
        url = server.url()
        sql_run(url, "ALTER SYSTEM SET wal_writer_delay = '10s'")
        sql_run(url, "ALTER SYSTEM SET wal_writer_flush_after = '64MB'")
        sql_run(url, "SELECT pg_reload_conf()")
        store = PostgresQueueStore(url)
        store.open()

        def unflushed() -> bool:
            lsn = "pg_current_wal_insert_lsn() > pg_current_wal_flush_lsn()"
            return bool(sql_rows(url, f"SELECT {lsn}")[0][0])

        try:
            store.apply_batch([InsertMessage(build_message("SYNC", ["a@x.test"]))])
            assert not unflushed()
            (claimed,) = store.apply_batch([ClaimDue(2e9, 10, "A", 300.0)])
            assert isinstance(claimed, list) and len(claimed) == 1
            assert unflushed()
            store.apply_batch([RenewLeases("A", 2e9, 300.0), InsertMessage(build_message("S2"))])
            assert not unflushed()  # one durable op: the whole batch, and what came before
            store.apply_batch([ReleaseLeases("A")])
            assert unflushed()
        finally:
            store.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
