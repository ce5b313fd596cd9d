"""A failed sync of the SQLite store's log: answered, never retried, recovered by a checkpoint.

The store, its file, its log and the checkpoint are the real ones; only the answer of
the one ``fdatasync`` that makes the log durable is the test's (a disk that fails a
write-back cannot be had here: no device mapper in this kernel).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.sqlite_schema import lost_mark
from mailwright.queue.store import InsertMessage, NewMessage, StoreError
from tests.unit.queue.conftest import MakeMessage


class FailingDisk(SqliteQueueStore):
    """Its next ``failures`` syncs of the log fail as a disk's write-back error does."""

    failures = 0
    syncs = 0

    def _fdatasync(self, fd: int) -> None:  # type: ignore[override]
        self.syncs += 1
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EIO, "Input/output error")
        os.fdatasync(fd)


def insert(store: SqliteQueueStore, message: NewMessage) -> None:
    (result,) = store.apply_batch([InsertMessage(message)])
    assert not isinstance(result, BaseException), result


def in_database_file(path: Path, tmp_path: Path) -> set[str]:
    """The queue ids the database file holds by itself, without its log."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(path, alone)
    conn = sqlite3.connect(alone)
    try:
        return {row[0] for row in conn.execute("SELECT queue_id FROM messages")}
    finally:
        conn.close()


def wal_of(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def test_a_failed_sync_fails_its_batch_and_a_checkpoint_makes_every_commit_durable(
    store_path: Path, tmp_path: Path, make_message: MakeMessage
) -> None:
    store = FailingDisk(store_path)
    store.open()
    first, second, third = make_message(), make_message(), make_message()
    insert(store, first)
    store.failures = 1
    with pytest.raises(StoreError, match=r"cannot sync the log: .*Input/output error"):
        insert(store, second)
    # the failed sync is not asked again: everything committed went into the database
    # file, synced there, and the log started afresh
    assert store.syncs == 2
    assert wal_of(store_path).stat().st_size == 0
    assert not lost_mark(store_path).exists()  # none left
    assert in_database_file(store_path, tmp_path) == {first.queue_id, second.queue_id}
    insert(store, third)  # acknowledged again, through the log
    assert store.syncs == 3
    assert store.count_messages() == 3
    store.close()


def test_nothing_is_acknowledged_while_the_checkpoint_cannot_finish(
    store_path: Path, tmp_path: Path, make_message: MakeMessage
) -> None:
    store = FailingDisk(store_path, busy_timeout=0.05)
    store.open()
    messages = [make_message() for _ in range(4)]
    insert(store, messages[0])
    reader = sqlite3.connect(store_path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM messages").fetchone() == (1,)  # a snapshot
    store.failures = 1
    with pytest.raises(StoreError, match="cannot sync the log"):
        insert(store, messages[1])
    # the disk answers again, but frames before the reader's snapshot's end cannot be
    # copied while it reads: no commit may count as durable yet
    with pytest.raises(StoreError, match="not durable"):
        insert(store, messages[2])
    assert store.syncs == 2  # the log is not synced again: that would prove nothing
    assert wal_of(store_path).stat().st_size > 0  # still needed: the checkpoint stopped short
    reader.execute("ROLLBACK")
    reader.close()
    insert(store, messages[3])
    assert in_database_file(store_path, tmp_path) == {m.queue_id for m in messages}
    store.close()


def test_the_queue_counts_say_since_when_no_commit_is_acknowledged(
    store_path: Path, make_message: MakeMessage
) -> None:
    """What ``mailwright status``, the status page and the metrics read: the lost mark's
    time while the store refuses, nothing once a checkpoint has completed."""
    store = FailingDisk(store_path, busy_timeout=0.05)
    store.open()
    insert(store, make_message())
    assert store.queue_counts(time.time()).refusing_since is None
    reader = sqlite3.connect(store_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # holds the checkpoint back
    store.failures = 1
    before = time.time()
    with pytest.raises(StoreError, match="cannot sync the log"):
        insert(store, make_message())
    counts = store.queue_counts(time.time())
    assert counts.refusing_since is not None
    assert before - 1 <= counts.refusing_since <= time.time() + 1  # the file system's clock
    text = counts.refusing_text()
    assert text is not None and text.startswith("REFUSING MAIL since ") and "451 4.3.0" in text
    reader.execute("ROLLBACK")
    reader.close()
    insert(store, make_message())  # its sync completes the checkpoint: acknowledged again
    counts = store.queue_counts(time.time())
    assert counts.refusing_since is None and counts.refusing_text() is None
    assert counts.active_messages == 3
    store.close()


def test_a_store_that_opens_the_log_after_another_lost_it_acknowledges_nothing_either(
    store_path: Path, tmp_path: Path, make_message: MakeMessage
) -> None:
    """As a worker started after another worker's sync failed: its own descriptor, opened
    later, is never told of the error; the mark beside the database tells it instead."""
    first = FailingDisk(store_path, busy_timeout=0.05, shared=True)
    first.open()
    messages = [make_message() for _ in range(5)]
    insert(first, messages[0])
    reader = sqlite3.connect(store_path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # holds the checkpoint back
    first.failures = 1
    with pytest.raises(StoreError, match="cannot sync the log"):
        insert(first, messages[1])
    mark = lost_mark(store_path)
    assert mark.exists()
    later = SqliteQueueStore(store_path, busy_timeout=0.05, shared=True)
    later.open(exclusive=False)
    with pytest.raises(StoreError, match="not durable"):
        insert(later, messages[2])  # its own fdatasync would have succeeded
    reader.execute("ROLLBACK")
    reader.close()
    insert(later, messages[3])  # its checkpoint finished: the mark goes
    assert not mark.exists()
    insert(first, messages[4])  # the first store checkpoints once more, then goes on
    assert in_database_file(store_path, tmp_path) >= {m.queue_id for m in messages[:4]}
    later.close()
    first.close()
    assert in_database_file(store_path, tmp_path) == {m.queue_id for m in messages}


class HeldDisk(SqliteQueueStore):
    """Once ``armed``, the sync of the thread named "first" fails, after waiting a while
    for the other thread's sync to start."""

    armed = False

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.calls: list[tuple[str, str]] = []
        self.first_in = threading.Event()
        self.second_in = threading.Event()

    def _fdatasync(self, fd: int) -> None:  # type: ignore[override]
        name = threading.current_thread().name
        if not self.armed:
            os.fdatasync(fd)
            return
        self.calls.append(("sync", name))
        if name == "first":
            self.first_in.set()
            self.second_in.wait(timeout=0.5)  # it gets here meanwhile unless syncs queue
            self.calls.append(("failed", name))
            raise OSError(errno.EIO, "Input/output error")
        self.second_in.set()
        os.fdatasync(fd)


def test_syncs_run_one_at_a_time_so_a_failure_is_not_heard_by_the_wrong_caller(
    store_path: Path, make_message: MakeMessage
) -> None:
    """The kernel reports a write-back error once per open file, to whichever sync asks
    first: the two threads' syncs share one descriptor, so they must not overlap."""
    store = HeldDisk(store_path)
    store.open()
    insert(store, make_message())
    store.armed = True
    outcome: dict[str, BaseException | None] = {}

    def sync() -> None:
        try:
            store.sync_log()
            outcome[threading.current_thread().name] = None
        except StoreError as exc:
            outcome[threading.current_thread().name] = exc

    first = threading.Thread(target=sync, name="first")
    first.start()
    assert store.first_in.wait(timeout=10)
    second = threading.Thread(target=sync, name="second")
    second.start()
    first.join()
    second.join()
    assert store.calls == [("sync", "first"), ("failed", "first"), ("sync", "second")]
    assert isinstance(outcome["first"], StoreError)
    assert outcome["second"] is None  # after the checkpoint, which covered its commits
    store.close()
