"""Child process of test_queue_crash.py: queue work until killed, reporting what is durable.

Usage: queue_crash_child.py STORE_PATH SPOOL_DIR

Producers queue messages through the QueueWriter and print ``Q <id> <sha256> <size>``
only after ``execute`` returned. A deliverer claims due recipients and, per message,
either records delivery or a failure plus a bounce; it prints ``R <id> <bounce id or ->``
before recording and ``D <id>`` after the commit. Every line is one write(2), so a kill
never leaves half a line that looks whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time
from pathlib import Path

from mailwright.core.address import Address
from mailwright.core.envelope import Envelope, Recipient
from mailwright.core.headers import Header, HeaderList
from mailwright.core.queueid import new_queue_id
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import (
    ClaimDue,
    InsertMessage,
    NewMessage,
    RecipientResult,
    RecipientState,
    RecordResults,
)
from mailwright.queue.writer import QueueWriter

PRODUCERS = 8
SENDER = Address("sender", "example.com")


def report(line: str) -> None:
    os.write(1, (line + "\n").encode())


def message(queue_id: str, body: bytes, spool_dir: Path, sender: Address | None) -> NewMessage:
    headers = HeaderList([Header.make("Subject", f"crash test {queue_id}")])
    recipients = [Recipient(Address(f"user{i}", "example.org")) for i in range(3)]
    spool = Spool(spool_dir)
    spool.write(body)
    return NewMessage(
        queue_id, Envelope(sender, recipients=recipients), headers, spool, time.time()
    )


async def produce(writer: QueueWriter, spool_dir: Path, queued: asyncio.Event) -> None:
    while True:
        queue_id = new_queue_id()
        body = os.urandom(random.choice([0, 100, 5000, 300_000]))
        new = message(queue_id, body, spool_dir, SENDER)
        await writer.execute(InsertMessage(new))
        assert isinstance(new.body, Spool)
        new.body.close()
        report(f"Q {queue_id} {hashlib.sha256(body).hexdigest()} {len(body)}")
        queued.set()


async def deliver(writer: QueueWriter, spool_dir: Path, queued: asyncio.Event) -> None:
    while True:
        await queued.wait()
        queued.clear()
        claimed = await writer.execute(
            ClaimDue(now=time.time(), limit=100_000, owner="child", lease_seconds=300)
        )
        for queue_id in sorted({r.message_id for r in claimed}):
            indexes = [r.index for r in claimed if r.message_id == queue_id]
            assert len(indexes) == 3, "the claim split a message"  # the test expects whole ones
            await finish(writer, spool_dir, queue_id, indexes)


async def finish(writer: QueueWriter, spool_dir: Path, queue_id: str, indexes: list[int]) -> None:
    bounce = None
    if random.random() < 0.5:
        bounce = message(new_queue_id(), f"bounce of {queue_id}\r\n".encode(), spool_dir, None)
    state = RecipientState.DELIVERED if bounce is None else RecipientState.FAILED
    results = [RecipientResult(queue_id, i, state, attempted_at=time.time()) for i in indexes]
    report(f"R {queue_id} {bounce.queue_id if bounce else '-'}")
    await writer.execute(RecordResults(results, [bounce] if bounce else []))
    report(f"D {queue_id}")


async def main(store_path: Path, spool_dir: Path) -> None:
    store = SqliteQueueStore(store_path)
    store.open()
    writer = QueueWriter(store)
    writer.start()
    queued = asyncio.Event()
    tasks = [produce(writer, spool_dir, queued) for _ in range(PRODUCERS)]
    await asyncio.gather(*tasks, deliver(writer, spool_dir, queued))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
