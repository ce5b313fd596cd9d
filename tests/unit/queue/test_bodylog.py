"""The SQLite store's body log: large bodies in segment files beside the database.

Real files and a real SQLite database in tmp_path; a real process killed with SIGKILL for
the crash test.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.queue import sqlite_batch
from mailwright.queue.bodylog import SPARE_SEQ, BodyLog, parse_name, read_segment, segment_name
from mailwright.queue.lease import new_owner, process_id
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.sqlite_batch import BODY_LOG_MIN, GRADUATE_AFTER
from mailwright.queue.store import (
    DeleteMessage,
    InsertMessage,
    ReleaseLeases,
    StoreError,
    UnknownMessageError,
)

from .conftest import build_message

LARGE = BODY_LOG_MIN


def body_of(tag: str, size: int) -> bytes:
    """A deterministic body of ``size`` bytes, different for every ``tag``."""
    line = (tag.encode() + b" " + b"x" * 70)[:70] + b"\r\n"
    return (line * (size // len(line) + 1))[:size]


def bodies_dir(path: Path) -> Path:
    return path.with_name(path.name + ".bodies")


def where(path: Path, queue_id: str) -> tuple[str | None, int]:
    """(segment, body chunks in the database) of one message."""
    with sqlite3.connect(path) as raw:
        mid, segment = raw.execute(
            "SELECT id, body_segment FROM messages WHERE queue_id = ?", (queue_id,)
        ).fetchone()
        chunks = raw.execute(
            "SELECT count(*) FROM body_chunks WHERE message_id = ?", (mid,)
        ).fetchone()[0]
    return segment, chunks


def listing(path: Path) -> list[str]:
    directory = bodies_dir(path)
    return sorted(os.listdir(directory)) if directory.exists() else []


def segments(path: Path) -> list[str]:
    """The segments beside the store, without spares (see ``spares``)."""
    return [name for name in listing(path) if not is_spare(name)]


def spares(path: Path) -> list[str]:
    return [name for name in listing(path) if is_spare(name)]


def is_spare(name: str) -> bool:
    parsed = parse_name(name)
    return parsed is not None and parsed[1] == SPARE_SEQ


def test_a_large_body_goes_to_a_segment_and_reads_back_exactly(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path)
    store.open()
    big, small = body_of("big", LARGE + 7), body_of("small", LARGE - 1)
    try:
        store.apply_batch(
            [
                InsertMessage(build_message("BIG", body=big)),
                InsertMessage(build_message("SMALL", body=small)),
            ]
        )
        assert b"".join(store.read_body("BIG", chunk_size=4096)) == big
        assert b"".join(store.read_body("SMALL")) == small
    finally:
        store.close()
    segment, chunks = where(path, "BIG")
    assert segment is not None and chunks == 0
    assert segments(path) == [segment]
    assert where(path, "SMALL") == (None, 1)
    reopened = SqliteQueueStore(path)
    reopened.open()
    try:  # durable: read back by another store after a close
        assert b"".join(reopened.read_body("BIG")) == big
    finally:
        reopened.close()


def test_without_a_body_log_every_body_is_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=None)
    store.open()
    try:
        store.apply_batch([InsertMessage(build_message("BIG", body=body_of("b", LARGE * 2)))])
    finally:
        store.close()
    assert where(path, "BIG")[0] is None
    assert segments(path) == []


def test_segments_rotate_and_the_delivered_ones_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=100_000)
    store.open()
    ids = [f"M{i}" for i in range(8)]
    try:
        for queue_id in ids:  # 40 KB each: three to a segment
            store.apply_batch(
                [InsertMessage(build_message(queue_id, body=body_of(queue_id, 40_000)))]
            )
        used = segments(path)
        assert len(used) == 3
        for queue_id in ids:
            assert b"".join(store.read_body(queue_id)) == body_of(queue_id, 40_000)
        for queue_id in ids[:6]:
            store.apply_batch([DeleteMessage(queue_id)])
        store.sweep_bodies(all_dead=False)
        # the first two segments are sealed and unreferenced; the current one stays
        assert segments(path) == used[2:]
        for queue_id in ids[6:]:
            store.apply_batch([DeleteMessage(queue_id)])
        store.sweep_bodies(all_dead=False)
        assert segments(path) == used[2:]  # still the one appends go to
    finally:
        store.close()
    store = SqliteQueueStore(path)
    store.open()  # the daemon's start: every writer before it is gone
    store.close()
    assert segments(path) == []


def test_only_segments_nobody_writes_or_needs_are_removed(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    directory = bodies_dir(path)
    directory.mkdir()
    dead = f"{socket.gethostname()}:1:000000000000.1:1"  # a process of another boot: dead
    live = f"{process_id()}:999"  # this process, another store: alive
    names = {
        "dead": segment_name(dead, 1),
        "live-sealed": segment_name(live, 1),
        "live-current": segment_name(live, 2),
    }
    for name in names.values():
        (directory / name).write_bytes(b"leftover")
    (directory / "not-a-segment").write_bytes(b"?")
    store = SqliteQueueStore(path, shared=True)
    store.open(exclusive=False)  # a worker's start beside live workers
    try:
        left = set(segments(path))
        assert names["live-current"] in left and "not-a-segment" in left
        assert names["live-sealed"] not in left
        assert names["dead"] not in left
    finally:
        store.close()


def two_segments_the_first_old(store: SqliteQueueStore, path: Path) -> tuple[str, str]:
    """Messages OLD and NEW in a segment each (store with 30 KB segments), OLD's segment
    last written before ``GRADUATE_AFTER``; the two segment names."""
    store.apply_batch([InsertMessage(build_message("OLD", body=body_of("o", 40_000)))])
    store.apply_batch([InsertMessage(build_message("NEW", body=body_of("n", 40_000)))])
    old, current = segments(path)
    assert where(path, "OLD")[0] == old
    past = time.time() - GRADUATE_AFTER - 60
    os.utime(bodies_dir(path) / old, (past, past))
    return old, current


def test_bodies_left_in_an_old_segment_move_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=30_000)
    store.open()
    try:
        old, current = two_segments_the_first_old(store, path)
        # the sweeps that look for a spare every second leave that to the full ones
        store.sweep_bodies(all_dead=False, graduate=False)
        assert where(path, "OLD")[0] == old
        store.sweep_bodies(all_dead=False)
        assert segments(path) == [current]
        segment, chunks = where(path, "OLD")
        assert segment is None and chunks == 1
        assert b"".join(store.read_body("OLD")) == body_of("o", 40_000)
        assert where(path, "NEW")[0] == current  # young: stays where it is
    finally:
        store.close()


def test_a_body_log_that_cannot_be_written_leaves_the_body_to_the_database(
    tmp_path: Path,
) -> None:
    path = tmp_path / "queue.db"
    bodies_dir(path).write_bytes(b"a file where the directory should be")
    store = SqliteQueueStore(path)
    store.open()
    big = body_of("big", LARGE * 3)
    try:
        store.apply_batch([InsertMessage(build_message("BIG", body=big))])
        assert b"".join(store.read_body("BIG")) == big
    finally:
        store.close()
    assert where(path, "BIG")[0] is None


def test_a_missing_segment_is_an_error_not_an_unknown_message(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path)
    store.open()
    try:
        store.apply_batch([InsertMessage(build_message("BIG", body=body_of("b", LARGE)))])
        (name,) = segments(path)
        os.unlink(bodies_dir(path) / name)
        with pytest.raises(StoreError) as caught:
            store.read_body("BIG")
        assert not isinstance(caught.value, UnknownMessageError)
    finally:
        store.close()


_WRITER = r"""
import sys
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage
sys.path.insert(0, sys.argv[2])
from conftest import build_message
def body_of(tag, size):
    line = (tag.encode() + b" " + b"x" * 70)[:70] + b"\r\n"
    return (line * (size // len(line) + 1))[:size]
store = SqliteQueueStore(__import__("pathlib").Path(sys.argv[1]), segment_bytes=300_000)
store.open()
n = 0
while True:
    ids = [f"K{n + i}" for i in range(3)]
    n += 3
    batch = [InsertMessage(build_message(q, body=body_of(q, 40_000 + len(q)))) for q in ids]
    store.apply_batch(batch)
    print(" ".join(ids), flush=True)
"""


def test_acknowledged_bodies_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(here)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    acknowledged: list[str] = []
    try:
        assert child.stdout is not None
        while len(acknowledged) < 60:  # across several segments
            line = child.stdout.readline()
            assert line, "the writer stopped early"
            acknowledged.extend(line.split())
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = SqliteQueueStore(path)
    store.open()
    try:
        for queue_id in acknowledged:
            assert b"".join(store.read_body(queue_id)) == body_of(queue_id, 40_000 + len(queue_id))
        assert len(segments(path)) >= 2
    finally:
        store.close()


def test_new_owner_names_make_segment_names_that_parse(tmp_path: Path) -> None:
    owner = new_owner()
    assert parse_name(segment_name(owner, 12)) == (owner, 12)
    assert parse_name("queue.db") is None
    assert sqlite_batch.BODY_LOG_MIN > 0


def test_a_batch_across_segments_is_durable_in_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "queue.db"
    synced: list[str] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", recording)
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=50_000)
    store.open()
    try:  # 30 KB each: the second starts a new segment in the middle of the batch
        ids = ["S1", "S2", "S3"]
        store.apply_batch([InsertMessage(build_message(q, body=body_of(q, 30_000))) for q in ids])
        used = {where(path, q)[0] for q in ids}
        assert len(used) == 2
        assert used <= set(synced)
    finally:
        store.close()


def test_moving_a_body_out_of_a_segment_commits_durably(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=30_000)
    store.open()
    try:
        two_segments_the_first_old(store, path)
        store.apply_batch([ReleaseLeases("nobody")])  # lease-only: synchronous=NORMAL
        store.sweep_bodies(all_dead=False)
        conn = store._conn
        assert conn is not None
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert where(path, "OLD")[0] is None
    finally:
        store.close()


def test_a_batch_is_written_in_few_calls_and_reads_back_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many bodies, one spilled to a file and larger than one call's bound: every byte at
    its offset, with one pwritev per megabyte or so rather than one per piece."""
    path = tmp_path / "queue.db"
    calls: list[int] = []
    real = os.pwritev

    def counting(fd: int, buffers: list[memoryview], offset: int) -> int:
        calls.append(len(buffers))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", counting)
    store = SqliteQueueStore(path, body_log_min=LARGE)
    store.open()
    try:
        sizes = {"P1": LARGE, "P2": 100_000, "P3": 3_000_000, "P4": 40_000, "P5": LARGE + 1}
        ops = [InsertMessage(build_message(q, body=body_of(q, n))) for q, n in sizes.items()]
        store.apply_batch(ops)
        assert 3 <= len(calls) <= 6  # 3.2 MB in all
        for queue_id, size in sizes.items():
            assert b"".join(store.read_body(queue_id)) == body_of(queue_id, size)
            assert where(path, queue_id)[0] is not None
    finally:
        store.close()


def test_short_writes_continue_where_they_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may write less than asked (a signal, a full pipe of a filesystem): each
    call here writes at most 7,000 bytes, mid-piece, and every byte still lands at its
    offset."""
    path = tmp_path / "queue.db"
    real = os.pwritev

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        first = bytes(buffers[0])[:7_000] if len(buffers[0]) else b""
        rest = b"".join(bytes(b) for b in buffers[1:])[: 7_000 - len(first)]
        return real(fd, [first + rest], offset)

    monkeypatch.setattr(os, "pwritev", short)
    store = SqliteQueueStore(path, body_log_min=LARGE)
    store.open()
    try:
        sizes = {"S1": LARGE + 3, "S2": 100_001, "S3": LARGE}
        ops = [InsertMessage(build_message(q, body=body_of(q, n))) for q, n in sizes.items()]
        store.apply_batch(ops)
        for queue_id, size in sizes.items():
            assert b"".join(store.read_body(queue_id)) == body_of(queue_id, size)
            assert where(path, queue_id)[0] is not None
    finally:
        store.close()


class Body:
    """A body in memory, as ``BodyLog.append`` takes it."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        for start in range(0, len(self.data), chunk_size):
            yield self.data[start : start + chunk_size]


def read_back(directory: Path, place: tuple[str, int], size: int) -> bytes:
    return b"".join(read_segment(directory, place[0], place[1], size))


def test_a_new_segment_is_the_spare_written_before(tmp_path: Path) -> None:
    """The first segment is a new file; meanwhile a spare is written with zeros, and the
    next segment is that file renamed, written into rather than appended to."""
    log = BodyLog(tmp_path, new_owner(), segment_bytes=64_000)
    try:
        (first,) = log.append([Body(b"a" * 70_000)])
        assert first == (segment_name(log.owner, 1), 0)
        log.settle()
        spare = tmp_path / segment_name(log.owner, SPARE_SEQ)
        before = spare.stat()
        assert before.st_size == 64_000 and spare.read_bytes() == bytes(64_000)
        assert not log.wants_spare
        (second,) = log.append([Body(b"b" * 10_000)])  # the first is full: a rotation
        assert second == (segment_name(log.owner, 2), 0)
        after = (tmp_path / second[0]).stat()
        assert not spare.exists()
        assert after.st_ino == before.st_ino and after.st_size == 64_000
        assert read_back(tmp_path, first, 70_000) == b"a" * 70_000
        assert read_back(tmp_path, second, 10_000) == b"b" * 10_000
        assert log.wants_spare  # zeros only once: the next spare is recycled
    finally:
        log.close()


def test_a_segment_nobody_needs_becomes_the_next_spare(tmp_path: Path) -> None:
    log = BodyLog(tmp_path, new_owner(), segment_bytes=64_000)
    try:
        log.append([Body(b"a" * 70_000)])
        log.settle()
        log.append([Body(b"b" * 70_000)])  # into the zero-filled spare
        (third,) = log.append([Body(b"c" * 1_000)])
        assert third[0] == segment_name(log.owner, 3)  # no spare ready: a new file
        first, second = segment_name(log.owner, 1), segment_name(log.owner, 2)
        inode = (tmp_path / first).stat().st_ino
        assert log.removable(log.listing(), {second}, all_dead=False) == [first]
        assert log.remove([first]) == 1
        spare = tmp_path / segment_name(log.owner, SPARE_SEQ)
        assert not (tmp_path / first).exists() and spare.stat().st_ino == inode
        assert not log.wants_spare
        assert log.removable(log.listing(), {second}, all_dead=True) == []  # mine
        log.append([Body(b"d" * 70_000)])
        (fourth,) = log.append([Body(b"e" * 5_000)])
        assert (tmp_path / fourth[0]).stat().st_ino == inode
        assert read_back(tmp_path, fourth, 5_000) == b"e" * 5_000  # old bodies after it
        # a spare is wanted again: one too small to spare a sync is removed, not kept
        small = segment_name(f"{socket.gethostname()}:1:000000000000.1:1", 7)
        (tmp_path / small).write_bytes(b"x" * 1_000)
        assert log.wants_spare and log.remove([small]) == 1
        assert not (tmp_path / small).exists() and not spare.exists()
        inode = (tmp_path / third[0]).stat().st_ino
        assert log.remove([third[0]]) == 1 and spare.stat().st_ino == inode
    finally:
        log.close()


def test_a_spare_is_its_owners_until_the_owner_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    directory = bodies_dir(path)
    directory.mkdir()
    dead = f"{socket.gethostname()}:1:000000000000.1:1"  # a process of another boot
    live = f"{process_id()}:999"  # this process, another store
    dead_spare, live_spare = segment_name(dead, SPARE_SEQ), segment_name(live, SPARE_SEQ)
    for name in (dead_spare, live_spare):
        (directory / name).write_bytes(bytes(50_000))
    inode = (directory / dead_spare).stat().st_ino
    log = BodyLog(directory, new_owner(), segment_bytes=50_000)
    listed = log.listing()
    assert log.removable(listed, set(), all_dead=False) == [dead_spare]
    assert sorted(log.removable(listed, set(), all_dead=True)) == sorted(listed)
    log.close()
    store = SqliteQueueStore(path, segment_bytes=50_000, shared=True)
    store.open(exclusive=False)  # a worker's start: the dead one's spare becomes its own
    try:
        assert live_spare in listing(path) and dead_spare not in listing(path)
        (mine,) = [name for name in spares(path) if name != live_spare]
        assert (directory / mine).stat().st_ino == inode
        store.apply_batch([InsertMessage(build_message("BIG", body=body_of("b", LARGE)))])
        segment, _ = where(path, "BIG")
        assert segment is not None and (directory / segment).stat().st_ino == inode
        assert b"".join(store.read_body("BIG")) == body_of("b", LARGE)
    finally:
        store.close()


def test_bodies_read_back_exactly_through_recycled_segments(tmp_path: Path) -> None:
    """Many rounds of queueing and delivering through a store whose segments are
    recycled: each body reads back exactly, also after the store is reopened."""
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path, body_log_min=0, segment_bytes=100_000)
    store.open()
    kept: dict[str, int] = {}
    names: dict[int, set[str]] = {}  # inode -> the segment names it has had
    try:
        for round_ in range(12):
            ids = [f"R{round_}M{i}" for i in range(4)]
            for n, queue_id in enumerate(ids):
                size = 30_000 + 997 * n + round_
                body = body_of(queue_id, size)
                store.apply_batch([InsertMessage(build_message(queue_id, body=body))])
                kept[queue_id] = size
            assert store._bodylog is not None
            store._bodylog.settle()
            for name in segments(path):
                names.setdefault((bodies_dir(path) / name).stat().st_ino, set()).add(name)
            for queue_id in list(kept)[:-1]:  # delivered; the newest stays queued a while
                store.apply_batch([DeleteMessage(queue_id)])
                del kept[queue_id]
            store.sweep_bodies(all_dead=False)
            for queue_id, size in kept.items():
                assert b"".join(store.read_body(queue_id)) == body_of(queue_id, size)
        assert len(spares(path)) <= 1
        assert max(len(seen) for seen in names.values()) >= 3  # files used again and again
    finally:
        store.close()
    reopened = SqliteQueueStore(path)
    reopened.open()
    try:
        for queue_id, size in kept.items():
            assert b"".join(reopened.read_body(queue_id)) == body_of(queue_id, size)
    finally:
        reopened.close()


def three_segments(log: BodyLog) -> tuple[str, str]:
    """Segments 1 (a new file) and 2 (the zero-filled spare) full, 3 current (a new file,
    since the spare is used): a spare is wanted again. The names of 1 and 2."""
    log.append([Body(b"a" * 70_000)])
    log.settle()
    log.append([Body(b"b" * 70_000)])
    log.append([Body(b"c" * 1_000)])
    assert log.wants_spare
    return segment_name(log.owner, 1), segment_name(log.owner, 2)


def test_a_segment_being_read_is_removed_not_recycled(tmp_path: Path) -> None:
    """Its reader, a delivery of a message deleted meanwhile, reads the old bytes to the
    end: the file is unlinked, never written into again."""
    log = BodyLog(tmp_path, new_owner(), segment_bytes=64_000)
    try:
        first, second = three_segments(log)
        reader = read_segment(tmp_path, first, 0, 70_000, chunk_size=10_000)
        assert log.remove([first]) == 1
        spare = tmp_path / segment_name(log.owner, SPARE_SEQ)
        assert not spare.exists() and not (tmp_path / first).exists()
        assert b"".join(reader) == b"a" * 70_000
        assert log.remove([second]) == 1 and spare.exists()  # nobody reads that one
    finally:
        log.close()


def test_a_reader_that_comes_as_its_segment_is_recycled_finds_it_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened before the recycling, locked after it: the name no longer leads to the
    file, so the reader reports the segment missing instead of reading new bodies."""
    log = BodyLog(tmp_path, new_owner(), segment_bytes=64_000)
    try:
        first, _ = three_segments(log)
        real = fcntl.flock

        def recycled_first(fd: int, operation: int) -> None:
            if operation == fcntl.LOCK_SH:  # the reader, between its open and its lock
                assert log.remove([first]) == 1
                assert (tmp_path / segment_name(log.owner, SPARE_SEQ)).exists()
            real(fd, operation)

        monkeypatch.setattr(fcntl, "flock", recycled_first)
        with pytest.raises(FileNotFoundError):
            read_segment(tmp_path, first, 0, 70_000)
    finally:
        log.close()


def test_a_spare_the_disk_has_no_room_for_is_not_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite

    def full(fd: int, data: bytes, offset: int) -> int:
        spare = os.readlink(f"/proc/self/fd/{fd}").endswith(segment_name("", SPARE_SEQ))
        if spare and offset > 0:  # the first piece fits, the second does not
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full)
    log = BodyLog(tmp_path, new_owner(), segment_bytes=3 << 20)
    try:
        (first,) = log.append([Body(b"a" * 70_000)])
        log.settle()
        assert listing_of(tmp_path) == [first[0]]  # no spare, not even part of one
        assert log.wants_spare  # a recycled segment may still become one
        assert read_back(tmp_path, first, 70_000) == b"a" * 70_000
    finally:
        log.close()


def listing_of(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))
