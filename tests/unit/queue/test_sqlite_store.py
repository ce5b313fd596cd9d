"""SqliteQueueStore on real database files: round trips, batches, failures, re-open."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.envelope import BodyType, MailParams, Notify, Recipient, Ret
from mailwright.core.headers import Header, HeaderList
from mailwright.queue.sqlite import SCHEMA_VERSION, SqliteQueueStore
from mailwright.queue.store import (
    DeleteMessage,
    InsertMessage,
    MessageState,
    NewMessage,
    Operation,
    Origin,
    RecipientState,
    StoreError,
    StoreFullError,
    UnknownMessageError,
)

MakeMessage = Callable[..., NewMessage]
T0 = 1_700_000_000.0


def insert(store: SqliteQueueStore, *messages: NewMessage) -> None:
    results = store.apply_batch([InsertMessage(m) for m in messages])
    assert results == [None] * len(messages)


def body_of(store: SqliteQueueStore, queue_id: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(store.read_body(queue_id, chunk_size))


# ---- round trips ---------------------------------------------------------------------------


def test_full_message_round_trip(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    body = bytes(range(256)) * 4 + b"\r\n.\r\nend\r\n"  # every octet, 8-bit and NUL included
    recipients = [
        Recipient(Address("plain", "example.org")),
        Recipient(
            Address("dsn", "example.org"),
            notify=frozenset({Notify.SUCCESS, Notify.DELAY}),
            orcpt="rfc822;dsn+2Bext@example.org",
        ),
        Recipient(Address("never", "example.net"), notify=frozenset({Notify.NEVER})),
        Recipient(Address("jürgen", "bücher.example")),
        Recipient(Address("john doe", "example.org")),
        Recipient(Address("postmaster", "")),
    ]
    params = MailParams(
        size=4096,
        body=BodyType.EIGHT_BIT,
        smtputf8=True,
        ret=Ret.HDRS,
        envid="QQ314159",
        auth="<>",
    )
    origin = Origin("ESMTPSA", "192.0.2.7", "client.example", "helo.example", "alice", "")
    message = make_message(
        recipients=recipients,
        body=body,
        params=params,
        subject="Grüße",
        origin=origin,
        received_at=T0,
    )
    message.headers.append(Header("X-Folded", b" first line\r\n\tsecond line"))
    message.headers.append(Header("X-Raw-8bit", b" caf\xc3\xa9 \xff"))
    insert(store, message)

    stored = store.get_message(message.queue_id)
    assert stored is not None
    assert stored.envelope == message.envelope
    assert stored.origin == origin
    assert stored.received_at == T0
    assert stored.size == message.size
    assert stored.state is MessageState.ACTIVE
    assert stored.hold_reason is None
    assert stored.subject == "Grüße"
    assert stored.message_id_header == f"<{message.queue_id}@test.example>"
    assert not stored.warned
    assert [r.index for r in stored.recipients] == list(range(len(recipients)))
    assert [r.address for r in stored.recipients] == [str(r.address) for r in recipients]
    assert stored.recipients[1].notify == "DELAY,SUCCESS"
    assert stored.recipients[1].orcpt == "rfc822;dsn+2Bext@example.org"
    for r in stored.recipients:
        assert r.state is RecipientState.QUEUED
        assert (r.attempts, r.next_attempt, r.lease_owner) == (0, T0, None)
    assert store.read_headers(message.queue_id) == message.headers
    assert body_of(store, message.queue_id) == body


def test_null_sender_and_hold_round_trip(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    message = make_message(sender=None, hold_reason="quarantined by milter")
    insert(store, message)
    stored = store.get_message(message.queue_id)
    assert stored is not None
    assert stored.envelope.sender is None
    assert stored.state is MessageState.HOLD
    assert stored.hold_reason == "quarantined by milter"


def test_body_is_stored_in_chunks_and_read_in_any_piece_size(
    store_path: Path, make_message: MakeMessage
) -> None:
    store = SqliteQueueStore(store_path, body_chunk_size=1000)
    store.open()
    try:
        body = os.urandom(10_007)
        message = make_message(body=body)
        insert(store, message)
        pieces = list(store.read_body(message.queue_id, chunk_size=333))
        assert b"".join(pieces) == body
        assert all(0 < len(p) <= 333 for p in pieces)
        with sqlite3.connect(store_path) as raw:
            assert raw.execute("SELECT count(*) FROM body_chunks").fetchone()[0] == 11
    finally:
        store.close()


def test_empty_body_and_unknown_ids(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    message = make_message(body=b"")
    insert(store, message)
    assert body_of(store, message.queue_id) == b""
    assert store.get_message("NOSUCHMESSAGE00") is None
    with pytest.raises(UnknownMessageError):
        store.read_headers("NOSUCHMESSAGE00")
    with pytest.raises(UnknownMessageError):
        store.read_body("NOSUCHMESSAGE00")


def test_list_and_count(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    later = make_message(received_at=T0 + 10, recipients=["a@x.example", "b@y.example"])
    earlier = make_message(received_at=T0)
    insert(store, later, earlier)
    listed = store.list_messages()
    assert [m.queue_id for m in listed] == [earlier.queue_id, later.queue_id]
    assert [r.address for r in listed[1].recipients] == ["a@x.example", "b@y.example"]
    assert listed[1] == store.get_message(later.queue_id)
    assert store.count_messages() == 2


def test_reopen_keeps_everything(store_path: Path, make_message: MakeMessage) -> None:
    first = SqliteQueueStore(store_path)
    first.open()
    messages = [
        make_message(body=os.urandom(n), recipients=["a@x.example"] * 2) for n in (0, 5, 3000)
    ]
    insert(first, *messages)
    before = first.list_messages()
    first.close()
    first.close()  # idempotent

    second = SqliteQueueStore(store_path)
    second.open()
    try:
        assert second.list_messages() == before
        for m in messages:
            assert body_of(second, m.queue_id) == b"".join(m.body.chunks())
            assert second.read_headers(m.queue_id) == m.headers
    finally:
        second.close()


def test_database_file_is_private(store: SqliteQueueStore, store_path: Path) -> None:
    assert stat.S_IMODE(store_path.stat().st_mode) == 0o600


# ---- batches and failures ------------------------------------------------------------------


def test_duplicate_queue_id_fails_alone(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    original = make_message(body=b"original\r\n")
    duplicate = make_message(queue_id=original.queue_id, body=b"impostor\r\n")
    other = make_message()
    results = store.apply_batch(
        [InsertMessage(original), InsertMessage(duplicate), InsertMessage(other)]
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StoreError)
    assert original.queue_id in str(results[1])
    assert store.count_messages() == 2
    assert body_of(store, original.queue_id) == b"original\r\n"


class FailingBody:
    """A body source whose reader fails after the first chunk (a broken spool file)."""

    def __init__(self, size: int, error: Exception) -> None:
        self.size = size
        self._error = error

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        yield b"x" * min(chunk_size, self.size)
        raise self._error


def test_failed_op_leaves_no_partial_message(store_path: Path, make_message: MakeMessage) -> None:
    store = SqliteQueueStore(store_path, body_chunk_size=100)
    store.open()
    try:
        broken = make_message()
        broken.body = FailingBody(1000, OSError(errno.EIO, "read error"))
        good = make_message()
        results = store.apply_batch([InsertMessage(broken), InsertMessage(good)])
        assert isinstance(results[0], StoreError)
        assert results[1] is None
        assert store.get_message(broken.queue_id) is None
        assert store.count_messages() == 1
        with sqlite3.connect(store_path) as raw:  # no stray rows of the failed insert
            assert raw.execute("SELECT count(*) FROM body_chunks").fetchone()[0] == 1
            assert raw.execute("SELECT count(*) FROM recipients").fetchone()[0] == 1
    finally:
        store.close()


def test_message_without_recipients_is_refused(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    (result,) = store.apply_batch([InsertMessage(make_message(recipients=[]))])
    assert isinstance(result, ValueError)
    assert store.count_messages() == 0


def test_unknown_op_fails_alone(store: SqliteQueueStore, make_message: MakeMessage) -> None:
    message = make_message()
    results = store.apply_batch([object(), InsertMessage(message)])  # type: ignore[list-item]
    assert isinstance(results[0], TypeError)
    assert results[1] is None


def test_full_database_fails_only_the_op_that_does_not_fit(
    store_path: Path, make_message: MakeMessage
) -> None:
    store = SqliteQueueStore(store_path, max_bytes=300_000)
    store.open()
    try:
        small1, small2 = make_message(), make_message()
        big = make_message(body=os.urandom(1_000_000))
        results = store.apply_batch(
            [InsertMessage(small1), InsertMessage(big), InsertMessage(small2)]
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], StoreFullError)
        assert store.get_message(big.queue_id) is None
        assert {m.queue_id for m in store.list_messages()} == {small1.queue_id, small2.queue_id}
        insert(store, make_message())  # the connection is still usable
        assert store.count_messages() == 3
    finally:
        store.close()


def test_batch_that_cannot_start_fails_as_a_whole(
    store_path: Path, make_message: MakeMessage
) -> None:
    store = SqliteQueueStore(store_path, busy_timeout=0.05)
    store.open()
    blocker = sqlite3.connect(store_path, isolation_level=None)
    try:
        insert(store, make_message())
        # a lock held outside the writer (it never should be) makes BEGIN time out
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError):
            store.apply_batch([InsertMessage(make_message()), InsertMessage(make_message())])
        blocker.execute("ROLLBACK")
        insert(store, make_message())  # usable again
        assert store.count_messages() == 2
    finally:
        blocker.close()
        store.close()


def test_reads_run_while_the_writer_is_inside_a_transaction(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    committed = make_message()
    insert(store, committed)
    entered, release = threading.Event(), threading.Event()

    class SlowBody:
        size = 5

        def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
            entered.set()
            assert release.wait(timeout=30)
            yield b"slow\n"

    pending = make_message()
    pending.body = SlowBody()
    results: list[object] = []
    thread = threading.Thread(
        target=lambda: results.extend(store.apply_batch([InsertMessage(pending)]))
    )
    thread.start()
    try:
        assert entered.wait(timeout=30)
        # the write transaction is open: readers see the last commit, without waiting
        assert store.count_messages() == 1
        assert store.get_message(pending.queue_id) is None
        assert body_of(store, committed.queue_id) == b"Hello.\r\n"
    finally:
        release.set()
        thread.join()
    assert results == [None]
    assert store.count_messages() == 2


def test_reading_a_body_that_is_deleted_midway_raises(
    store_path: Path, make_message: MakeMessage
) -> None:
    store = SqliteQueueStore(store_path, body_chunk_size=100)
    store.open()
    try:
        message = make_message(body=b"y" * 1000)
        insert(store, message)
        pieces = store.read_body(message.queue_id)
        assert next(pieces) == b"y" * 100
        assert store.apply_batch([DeleteMessage(message.queue_id)]) == [True]
        with pytest.raises(UnknownMessageError):
            list(pieces)
    finally:
        store.close()


# ---- opening -------------------------------------------------------------------------------


def test_open_rejects_a_corrupt_database(store_path: Path, make_message: MakeMessage) -> None:
    store = SqliteQueueStore(store_path)
    store.open()
    many = [f"user{i}@example.org" for i in range(50)]
    insert(store, *(make_message(recipients=many) for _ in range(50)))
    store.close()
    with sqlite3.connect(store_path) as raw:
        (root,) = raw.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'recipients_due'"
        ).fetchone()
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
    with open(store_path, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\x00")  # an invalid b-tree page type
    reopened = SqliteQueueStore(store_path)
    with pytest.raises(StoreError, match="integrity check"):
        reopened.open()


def test_open_rejects_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match=str(path)):
        SqliteQueueStore(path).open()


def test_open_rejects_a_newer_schema(store_path: Path) -> None:
    SqliteQueueStore(store_path).open()
    with sqlite3.connect(store_path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        SqliteQueueStore(store_path).open()


def test_store_settings(store: SqliteQueueStore, store_path: Path) -> None:
    with sqlite3.connect(store_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_deleted_envelopes_are_overwritten_but_freed_pages_are_not_rewritten(
    store: SqliteQueueStore, store_path: Path, make_message: MakeMessage
) -> None:
    # secure_delete = FAST: zeroes what is deleted from b-tree pages (no extra I/O) but does
    # not write whole freed pages again, which doubled the I/O of large relayed bodies
    message = make_message(subject="MARKER-4711", body=b"MARKER-4712\r\n")
    insert(store, message)
    assert store.apply_batch([DeleteMessage(message.queue_id)]) == [True]
    with sqlite3.connect(store_path) as raw:
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert b"MARKER-471" not in store_path.read_bytes()
    writer = store._conn
    assert writer is not None and writer.execute("PRAGMA secure_delete").fetchone()[0] == 2


def descriptors_of(path: Path) -> int:
    """How many of this process's descriptors lead to the file now at ``path`` (and
    still do once it is removed: SQLite removes its log when the last connection closes)."""
    info = os.stat(path)
    return sum(1 for fd in open_descriptors() if same_file(fd, info))


def open_descriptors() -> list[int]:
    return [int(name) for name in os.listdir("/proc/self/fd")]


def same_file(fd: int, info: os.stat_result) -> bool:
    try:
        mine = os.fstat(fd)
    except OSError:  # the listing's own descriptor, closed since
        return False
    return (mine.st_dev, mine.st_ino) == (info.st_dev, info.st_ino)


def test_the_log_is_synced_through_one_kept_descriptor_closed_with_the_store(
    store_path: Path, make_message: MakeMessage
) -> None:
    store = SqliteQueueStore(store_path)
    store.open()
    wal = store_path.with_name(store_path.name + "-wal")
    insert(store, make_message())  # a durable commit: the log is synced
    info = os.stat(wal)
    kept = descriptors_of(wal)
    for _ in range(5):
        insert(store, make_message())
    assert descriptors_of(wal) == kept  # the same descriptors: none opened per sync and left
    store.close()
    assert not any(same_file(fd, info) for fd in open_descriptors())


def test_closed_store_refuses_work(store_path: Path, make_message: MakeMessage) -> None:
    store = SqliteQueueStore(store_path)
    store.open()
    store.close()
    with pytest.raises(StoreError):
        store.apply_batch([InsertMessage(make_message())])
    with pytest.raises(StoreError):
        store.count_messages()


def test_headers_round_trip_through_the_parser(
    store: SqliteQueueStore, make_message: MakeMessage
) -> None:
    message = make_message()
    message.headers = HeaderList(
        [Header("Received", b" from a\r\n by b; " + b"x" * 2000), Header("Empty", b"")]
    )
    insert(store, message)
    assert store.read_headers(message.queue_id) == message.headers


def test_every_operation_has_an_implementation(store: SqliteQueueStore) -> None:
    assert set(typing.get_args(Operation)) == set(store._handlers)
