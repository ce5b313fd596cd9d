"""A 100 MiB message goes through spool, store and back with bounded memory."""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage
from tests.support.peers import peer

MakeMessage = Callable[..., NewMessage]
MiB = 1 << 20
BODY_SIZE = 100 * MiB
BLOCK = 64 * 1024  # what a network read hands over


def resident_bytes() -> int:
    """The current (not peak) resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssWatch:
    """Samples the resident set size; keeps the highest value seen."""

    def __init__(self) -> None:
        self.start = resident_bytes()
        self.highest = self.start

    def sample(self) -> None:
        self.highest = max(self.highest, resident_bytes())

    @property
    def growth(self) -> int:
        return self.highest - self.start


class WatchedBody:
    """Passes a spool's chunks to the store, sampling memory while the store writes them."""

    def __init__(self, spool: Spool, watch: RssWatch) -> None:
        self._spool = spool
        self._watch = watch
        self.size = spool.size

    def chunks(self, chunk_size: int = MiB) -> Iterator[bytes]:
        for chunk in self._spool.chunks(chunk_size):
            self._watch.sample()
            yield chunk


@peer("/proc", os.path.exists("/proc/self/statm"), "reads the resident set size")
def test_100_mib_body_round_trip_in_bounded_memory(
    store: SqliteQueueStore, make_message: MakeMessage, tmp_path: Path
) -> None:
    written, read = hashlib.sha256(), hashlib.sha256()
    read_size = 0
    watch = RssWatch()
    tracemalloc.start()
    try:
        with Spool(tmp_path) as spool:
            for _ in range(BODY_SIZE // BLOCK):
                block = os.urandom(BLOCK)
                spool.write(block)
                written.update(block)
            watch.sample()
            assert not spool.in_memory
            message = make_message()
            message.body = WatchedBody(spool, watch)
            assert store.apply_batch([InsertMessage(message)]) == [None]

        for piece in store.read_body(message.queue_id, chunk_size=BLOCK):
            read.update(piece)
            read_size += len(piece)
            watch.sample()
        _, peak_traced = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert read_size == BODY_SIZE
    assert read.digest() == written.digest()
    stored = store.get_message(message.queue_id)
    assert stored is not None and stored.size == message.size
    assert peak_traced < 20 * MiB, f"peak traced Python memory {peak_traced / MiB:.1f} MiB"
    assert watch.growth < 64 * MiB, f"resident memory grew by {watch.growth / MiB:.1f} MiB"
