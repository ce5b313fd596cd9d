"""QueueWriter: group commit, per-op and per-batch failures, bounds, stop, sync callers,
the sync stage."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    ClaimDue,
    InsertMessage,
    NewMessage,
    Op,
    ReleaseLeases,
    RenewLeases,
    StoredRecipient,
    StoreError,
    Sync,
)
from mailwright.queue.writer import QueueWriter

MakeMessage = Callable[..., NewMessage]
WAIT = 30.0  # generous upper bound for events that normally fire at once


def in_event_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class GatedBody:
    """A body whose reading (inside the writer's transaction) waits for the test."""

    def __init__(self, data: bytes = b"gated\r\n") -> None:
        self.data = data
        self.size = len(data)
        self.entered = threading.Event()
        self.release = threading.Event()

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        self.entered.set()
        assert self.release.wait(WAIT)
        yield self.data


@contextlib.contextmanager
def running(writer: QueueWriter) -> Iterator[QueueWriter]:
    """``writer``, started, and stopped at the end of the block."""
    writer.start()
    try:
        yield writer
    finally:
        writer.stop()


def gated_message(make_message: MakeMessage) -> tuple[NewMessage, GatedBody]:
    message = make_message()
    gate = GatedBody()
    message.body = gate
    return message, gate


async def commit_in_progress(
    writer: QueueWriter, make_message: MakeMessage
) -> tuple[asyncio.Future[None], GatedBody]:
    """A first message submitted, the writer thread held inside its commit until the
    test releases the gate; its future and the gate."""
    first, gate = gated_message(make_message)
    first_done = writer.submit(InsertMessage(first))
    assert await asyncio.to_thread(gate.entered.wait, WAIT)
    return first_done, gate


@in_event_loop
async def test_concurrent_inserts_share_commits(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    messages = [make_message(body=f"message {i}\r\n".encode()) for i in range(200)]
    results = await asyncio.gather(*(writer.execute(InsertMessage(m)) for m in messages))
    assert results == [None] * 200
    assert store.count_messages() == 200
    assert writer.stats.ops == 200
    assert writer.commits <= 20, f"{writer.commits} commits for 200 messages"


@in_event_loop
async def test_everything_that_waits_goes_into_the_next_commit(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    first_done, gate = await commit_in_progress(writer, make_message)
    waiting = [writer.submit(InsertMessage(make_message())) for _ in range(199)]
    gate.release.set()
    await first_done
    assert await asyncio.gather(*waiting) == [None] * 199
    assert writer.commits == 2
    assert writer.stats.largest_batch == 199
    assert store.count_messages() == 200


@in_event_loop
async def test_batches_are_bounded_by_op_count(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(store, max_ops=10)) as writer:
        first_done, gate = await commit_in_progress(writer, make_message)
        waiting = [writer.submit(InsertMessage(make_message())) for _ in range(25)]
        gate.release.set()
        await asyncio.gather(first_done, *waiting)
        assert writer.commits == 1 + 3  # 10 + 10 + 5
        assert writer.stats.largest_batch == 10


@in_event_loop
async def test_batches_are_bounded_by_body_bytes(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(store, max_body_bytes=1000)) as writer:
        first_done, gate = await commit_in_progress(writer, make_message)
        waiting = [writer.submit(InsertMessage(make_message(body=b"x" * 400))) for _ in range(6)]
        gate.release.set()
        await asyncio.gather(first_done, *waiting)
        assert writer.commits == 1 + 3  # two 400-byte bodies per batch
        assert store.count_messages() == 7


@in_event_loop
async def test_a_failing_op_fails_only_its_caller(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    original = make_message()
    duplicate = make_message(queue_id=original.queue_id)
    other = make_message()
    first_done, gate = await commit_in_progress(writer, make_message)
    futures = [writer.submit(InsertMessage(m)) for m in (original, duplicate, other)]
    gate.release.set()
    await first_done
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreError)
    assert writer.commits == 2  # the three shared one commit
    assert store.count_messages() == 3


class FailingCommitStore:
    """A stand-in store whose second batch fails as a whole (as a failed COMMIT does)."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def apply_batch(self, ops: Sequence[Op[Any]]) -> list[object]:
        self.batches.append(len(ops))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(WAIT)
            return [None] * len(ops)
        raise StoreError("fsync failed")


@in_event_loop
async def test_a_failed_commit_reaches_every_caller_of_the_batch(
    make_message: MakeMessage,
) -> None:
    store = FailingCommitStore()
    with running(
        QueueWriter(store)  # type: ignore[arg-type]
    ) as writer:
        first_done = writer.submit(InsertMessage(make_message()))
        assert await asyncio.to_thread(store.entered.wait, WAIT)
        failing = [writer.submit(InsertMessage(make_message())) for _ in range(3)]
        store.release.set()
        assert await first_done is None
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert [str(r) for r in results] == ["fsync failed"] * 3
        assert all(isinstance(r, StoreError) for r in results)
        assert store.batches == [1, 3]
        assert (writer.commits, writer.stats.failed_batches) == (1, 1)
        # the writer carries on after a failed batch
        with pytest.raises(StoreError):
            await writer.execute(InsertMessage(make_message()))


@in_event_loop
async def test_a_cancelled_caller_still_gets_its_op_applied(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    first_done, gate = await commit_in_progress(writer, make_message)
    abandoned = make_message()
    writer.submit(InsertMessage(abandoned)).cancel()
    gate.release.set()
    await first_done
    after = make_message()
    await writer.execute(InsertMessage(after))  # ordered after the abandoned one
    assert store.get_message(abandoned.queue_id) is not None


@in_event_loop
async def test_stop_applies_everything_already_submitted(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    writer = QueueWriter(store)
    writer.start()
    first, gate = gated_message(make_message)
    futures = [writer.submit(InsertMessage(first))]
    assert await asyncio.to_thread(gate.entered.wait, WAIT)
    futures += [writer.submit(InsertMessage(make_message())) for _ in range(50)]
    stopping = asyncio.ensure_future(asyncio.to_thread(writer.stop))
    gate.release.set()
    await stopping
    assert store.count_messages() == 51  # committed before stop() returned
    assert await asyncio.gather(*futures) == [None] * 51
    with pytest.raises(RuntimeError):
        writer.submit(InsertMessage(make_message()))
    writer.stop()  # idempotent


def test_sync_callers_from_many_threads(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    errors: list[BaseException] = []

    def submit_some() -> None:
        try:
            for _ in range(20):
                assert writer.execute_sync(InsertMessage(make_message())) is None
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit_some) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count_messages() == 100
    claimed: list[StoredRecipient] = writer.execute_sync(
        ClaimDue(now=2e9, limit=1000, owner="cli", lease_seconds=60)
    )
    assert len(claimed) == 100


def test_sync_caller_gets_its_own_error(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    message = make_message()
    writer.execute_sync(InsertMessage(message))
    with pytest.raises(StoreError, match="already in the queue"):
        writer.execute_sync(InsertMessage(message))


def test_writer_must_be_running(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    writer = QueueWriter(store)
    with pytest.raises(RuntimeError):
        writer.execute_sync(InsertMessage(make_message()))
    writer.start()
    with pytest.raises(RuntimeError):
        writer.start()
    writer.stop()
    with pytest.raises(RuntimeError):
        writer.execute_sync(InsertMessage(make_message()))


@in_event_loop
async def test_a_deferrable_op_waits_for_an_urgent_one_and_shares_its_commit(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(store, defer_seconds=WAIT)) as writer:
        results = make_message()
        deferred = writer.submit(InsertMessage(results), deferrable=True)
        with pytest.raises(TimeoutError):  # alone, it is not committed yet
            await asyncio.wait_for(asyncio.shield(deferred), 0.2)
        assert writer.commits == 0
        await asyncio.wait_for(writer.execute(ReleaseLeases("nobody")), WAIT)
        await asyncio.wait_for(deferred, WAIT)
        assert (writer.commits, writer.stats.ops) == (1, 2)  # one commit carried both
        assert store.get_message(results.queue_id) is not None


@in_event_loop
async def test_a_deferrable_op_alone_is_committed_when_its_wait_is_over(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(store, defer_seconds=0.05)) as writer:
        started = time.monotonic()
        first = writer.submit(InsertMessage(make_message()), deferrable=True)
        second = writer.submit(InsertMessage(make_message()), deferrable=True)
        await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        assert time.monotonic() - started >= 0.05
        assert (writer.commits, writer.stats.ops) == (1, 2)


@in_event_loop
async def test_stop_commits_a_deferred_op_at_once(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    writer = QueueWriter(store, defer_seconds=3600)
    writer.start()
    message = make_message()
    deferred = writer.submit(InsertMessage(message), deferrable=True)
    await asyncio.wait_for(asyncio.to_thread(writer.stop), WAIT)
    await asyncio.wait_for(deferred, WAIT)
    assert store.get_message(message.queue_id) is not None


@in_event_loop
async def test_deferrable_ops_are_held_until_an_urgent_op_takes_them_along(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """The writer thread is not woken for ops it may not start yet: they wait on the
    submitting side, then go to it in the order submitted, ahead of the urgent op."""
    with running(QueueWriter(store, defer_seconds=3600)) as writer:
        held = [make_message() for _ in range(3)]
        futures = [writer.submit(InsertMessage(m), deferrable=True) for m in held]
        assert writer._inbox.queue.qsize() == 0  # nothing handed over, nobody woken
        # from a plain thread: an admin command's op does not overtake them either
        urgent = ReleaseLeases("nobody")
        await asyncio.wait_for(asyncio.to_thread(writer.execute_sync, urgent), WAIT)
        await asyncio.wait_for(asyncio.gather(*futures), WAIT)
        assert (writer.commits, writer.stats.ops) == (1, 4)
        assert all(store.get_message(m.queue_id) for m in held)


def wait_idle(writer: QueueWriter) -> None:
    """Until the writer thread waits for work (it gets there on its own, at once)."""
    deadline = time.monotonic() + WAIT
    while not writer._idle:
        assert time.monotonic() < deadline, "the writer thread never came to wait"
        time.sleep(0.001)


@in_event_loop
async def test_a_new_message_finding_the_writer_idle_commits_without_held_ops(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """Its client waits for that commit alone; the held ops wait for their timer (or,
    here, for an urgent op that is not a new message, which takes them along)."""
    with running(QueueWriter(store, defer_seconds=3600)) as writer:
        held = writer.submit(InsertMessage(make_message()), deferrable=True)
        await asyncio.to_thread(wait_idle, writer)
        await asyncio.wait_for(writer.execute(InsertMessage(make_message())), WAIT)
        assert (writer.commits, writer.stats.ops) == (1, 1)
        assert not held.done() and len(writer._held) == 1
        await asyncio.wait_for(writer.execute(ReleaseLeases("nobody")), WAIT)
        await asyncio.wait_for(held, WAIT)
        assert (writer.commits, writer.stats.ops) == (2, 3)


@in_event_loop
async def test_a_new_message_finding_the_writer_busy_takes_held_ops_along(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """It waits for the batch in progress anyway: the held ops share its commit."""
    with running(QueueWriter(store, defer_seconds=3600)) as writer:
        first_done, gate = await commit_in_progress(writer, make_message)
        held = writer.submit(InsertMessage(make_message()), deferrable=True)
        second = writer.submit(InsertMessage(make_message()))
        assert not writer._held  # handed over with the new message
        gate.release.set()
        await asyncio.wait_for(asyncio.gather(first_done, held, second), WAIT)
        assert (writer.commits, writer.stats.ops, writer.stats.largest_batch) == (2, 3, 2)


@in_event_loop
async def test_held_deferrable_ops_that_fill_a_batch_go_at_once(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(store, max_ops=2, defer_seconds=3600)) as writer:
        first = writer.submit(InsertMessage(make_message()), deferrable=True)
        second = writer.submit(InsertMessage(make_message()), deferrable=True)
        await asyncio.wait_for(asyncio.gather(first, second), WAIT)
        assert (writer.commits, writer.stats.ops) == (1, 2)


@in_event_loop
async def test_a_timer_firing_for_ops_already_gone_keeps_a_later_op_held(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """One timer serves the held ops: firing for ops an urgent one took along, it
    leaves an op held since then waiting (armed again for its wait), not the writer."""
    with running(QueueWriter(store, defer_seconds=3600)) as writer:
        early = writer.submit(InsertMessage(make_message()), deferrable=True)  # arms it
        await asyncio.wait_for(writer.execute(ReleaseLeases("nobody")), WAIT)
        await asyncio.wait_for(early, WAIT)
        late = writer.submit(InsertMessage(make_message()), deferrable=True)
        writer._held_wait_over(asyncio.get_running_loop())  # the first timer fires
        assert writer._inbox.queue.qsize() == 0 and len(writer._held) == 1
        assert writer._held_timer is not None  # armed again, for the late op's wait
        await asyncio.wait_for(writer.execute(ReleaseLeases("nobody")), WAIT)
        await asyncio.wait_for(late, WAIT)
        assert writer.commits == 2


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux scheduling policy")
def test_the_writer_threads_run_as_batch_work(store: SqliteQueueStore) -> None:
    """Woken, they must not preempt the event loop thread that holds the GIL they need."""
    refused: list[OSError] = []

    def probe() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
        except OSError as exc:
            refused.append(exc)

    prober = threading.Thread(target=probe)
    prober.start()
    prober.join()
    if refused:  # a sandbox's seccomp filter; the writer then runs as before
        pytest.skip(f"this system refuses SCHED_BATCH: {refused[0]}")
    with running(QueueWriter(store)) as writer:
        threads = [t for t in (writer._thread, writer._sync_thread) if t is not None]
        assert len(threads) == 2  # the SQLite store defers its syncs to the second one
        for thread in threads:
            assert thread.native_id is not None
            assert os.sched_getscheduler(thread.native_id) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's own is untouched


class SyncStore(SqliteQueueStore):
    """The real store, whose syncs of the log the test holds back or fails (the disk's
    answer to ``fdatasync`` is the one thing a test cannot arrange)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.syncing = threading.Event()  # a sync has started
        self.release = threading.Event()  # syncs may go on
        self.failure: StoreError | None = None
        self.commits = 0
        self.second_commit = threading.Event()

    def apply_batch_unsynced(self, ops: Sequence[Op[Any]]) -> tuple[list[object], Sync | None]:
        outcome = super().apply_batch_unsynced(ops)
        self.commits += 1
        if self.commits == 2:
            self.second_commit.set()
        return outcome

    def sync_log(self) -> None:
        self.syncing.set()
        assert self.release.wait(WAIT)
        if self.failure is not None:
            raise self.failure
        super().sync_log()


@pytest.fixture
def sync_store(store_path: Path) -> Iterator[SyncStore]:
    s = SyncStore(store_path)
    s.open()
    s.syncing.clear()
    yield s
    s.close()


@in_event_loop
async def test_the_next_batch_commits_while_the_last_one_is_synced(
    sync_store: SyncStore, make_message: MakeMessage
) -> None:
    with running(QueueWriter(sync_store)) as writer:
        first_done, gate = await commit_in_progress(writer, make_message)
        second_done = writer.submit(InsertMessage(make_message()))
        gate.release.set()
        # commit 1's sync waits for the disk (the test); commit 2 goes on meanwhile
        assert await asyncio.to_thread(sync_store.second_commit.wait, WAIT)
        assert sync_store.syncing.is_set()
        assert not first_done.done() and not second_done.done()  # nobody hears of it yet
        sync_store.release.set()
        assert await asyncio.gather(first_done, second_done) == [None, None]
        assert sync_store.count_messages() == 2


@in_event_loop
async def test_a_failed_sync_reaches_every_caller_and_the_writer_goes_on(
    sync_store: SyncStore, make_message: MakeMessage
) -> None:
    sync_store.failure = StoreError("fdatasync failed: Input/output error")
    sync_store.release.set()
    with running(QueueWriter(sync_store)) as writer:
        first_done, gate = await commit_in_progress(writer, make_message)
        waiting = [writer.submit(InsertMessage(make_message())) for _ in range(3)]
        gate.release.set()
        results = await asyncio.gather(first_done, *waiting, return_exceptions=True)
        assert [str(r) for r in results] == ["fdatasync failed: Input/output error"] * 4
        sync_store.failure = None
        assert await writer.execute(InsertMessage(make_message())) is None


def test_only_batches_of_leases_need_no_sync(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """A lost lease only makes its recipients due again; everything else is synced."""
    claim = ClaimDue(now=2e9, limit=10, owner="h:1:1:1", lease_seconds=60)
    _, sync = store.apply_batch_unsynced([InsertMessage(make_message())])
    assert sync is not None
    sync()
    (claimed,), sync = store.apply_batch_unsynced([claim])
    assert claimed and sync is None
    for lease_only in (RenewLeases("h:1:1:1", 2e9, 60), ReleaseLeases("h:1:1:1")):
        _, sync = store.apply_batch_unsynced([lease_only])
        assert sync is None
    _, sync = store.apply_batch_unsynced([claim, InsertMessage(make_message())])
    assert sync is not None  # one durable op: all of it
    sync()
    conn = store._conn
    assert conn is not None  # every commit leaves the fsync to the sync: NORMAL
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1


@in_event_loop
async def test_on_postgresql_a_new_message_takes_held_ops_along_even_when_idle(
    postgres_server: Any, make_message: MakeMessage
) -> None:
    """A batch there is one round trip, and while the database is away every batch waits
    for the connection pool: the held ops ride with the new message, as before."""
    from mailwright.queue.postgres import PostgresQueueStore

    store = PostgresQueueStore(postgres_server.new_database())
    store.open()
    try:
        with running(QueueWriter(store, defer_seconds=3600)) as writer:
            held = writer.submit(InsertMessage(make_message()), deferrable=True)
            await asyncio.to_thread(wait_idle, writer)
            await asyncio.wait_for(writer.execute(InsertMessage(make_message())), WAIT)
            await asyncio.wait_for(held, WAIT)
            assert (writer.commits, writer.stats.ops) == (1, 2)
    finally:
        store.close()


def test_held_ops_get_a_timer_of_their_own_loop_when_an_old_loop_has_ended(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    """A queue run with ``asyncio.run`` may end while its timer is pending (an urgent op
    took the held ops along): the next run's held ops must not wait for that timer."""
    with running(QueueWriter(store, defer_seconds=0.05)) as writer:

        async def first_run() -> None:
            held = writer.submit(InsertMessage(make_message()), deferrable=True)  # arms it
            await asyncio.wait_for(writer.execute(ReleaseLeases("nobody")), WAIT)
            await asyncio.wait_for(held, WAIT)  # taken along; the timer is still pending

        async def second_run() -> None:
            held = writer.submit(InsertMessage(make_message()), deferrable=True)
            await asyncio.wait_for(held, WAIT)  # committed when its own wait is over

        asyncio.run(first_run())
        asyncio.run(second_run())
        assert writer.commits == 2


@in_event_loop
async def test_on_applied_comes_in_the_callers_loop_before_the_sync_answers(
    sync_store: SyncStore, make_message: MakeMessage
) -> None:
    applied = asyncio.Event()
    threads: list[int] = []

    def on_applied() -> None:
        threads.append(threading.get_ident())
        applied.set()

    with running(QueueWriter(sync_store)) as writer:
        done = writer.submit(InsertMessage(make_message()), on_applied=on_applied)
        await asyncio.wait_for(applied.wait(), WAIT)
        assert await asyncio.to_thread(sync_store.syncing.wait, WAIT)
        assert not done.done()  # the transaction is in, not yet durable
        sync_store.release.set()
        assert await done is None
    assert threads == [threading.get_ident()]  # the event loop's thread


@in_event_loop
async def test_on_applied_is_not_called_for_an_op_that_failed(
    store: SqliteQueueStore, writer: QueueWriter, make_message: MakeMessage
) -> None:
    called: list[str] = []
    original = make_message()
    duplicate = make_message(queue_id=original.queue_id)
    first_done, gate = await commit_in_progress(writer, make_message)
    futures = [
        writer.submit(InsertMessage(m), on_applied=functools.partial(called.append, name))
        for m, name in ((original, "original"), (duplicate, "duplicate"))
    ]
    gate.release.set()
    await first_done
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] is None and isinstance(results[1], StoreError)
    assert called == ["original"]
