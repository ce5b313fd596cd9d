"""A message's first delivery from memory (manager.fresh): what it hands out must be what
the store would have read back, once, and within its bounds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailwright.core.address import Address
from mailwright.core.envelope import Notify, Recipient
from mailwright.core.target import Mailer, Target
from mailwright.manager.fresh import FreshMessages
from mailwright.queue.records import fresh_message
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage, Origin
from mailwright.queue.writer import QueueWriter

from .conftest import build_message
from .test_queue_scheduler import OK, Harness, Outcome


def _rich_message() -> NewMessage:
    recipients = [
        Recipient(
            Address("a", "one.test"), frozenset({Notify.SUCCESS, Notify.FAILURE}), "rfc822;a@x"
        ),
        Recipient(Address("b", "two.test")),
        Recipient(Address("c", "three.test"), target=Target(Mailer.FILE, "/tmp/box", "nobody")),
    ]
    origin = Origin("ESMTPSA", "192.0.2.7", "client.test", "helo.test", "joe", "")
    return build_message(recipients=recipients, origin=origin, body=b"x" * 5000 + b"\r\n")


def test_fresh_message_is_what_the_store_reads_back(
    store: SqliteQueueStore, writer: QueueWriter
) -> None:
    msg = _rich_message()
    writer.execute_sync(InsertMessage(msg))
    assert fresh_message(msg) == store.get_message(msg.queue_id)


def test_a_message_is_handed_out_once_with_its_headers_and_body() -> None:
    fresh = FreshMessages()
    msg = build_message(body=b"Hello there.\r\n")
    fresh.remember(msg)
    loaded = fresh.take(msg.queue_id)
    assert loaded is not None
    stored, headers, body = loaded
    assert stored.queue_id == msg.queue_id and headers is msg.headers
    assert body == b"Hello there.\r\n"
    assert fresh.take(msg.queue_id) is None  # a retry reads the store


def test_held_or_not_yet_due_messages_are_not_kept() -> None:
    fresh = FreshMessages()
    held = build_message(hold_reason="quarantined")
    later = build_message()
    later.first_attempt = later.received_at + 600
    fresh.remember(held)
    fresh.remember(later)
    assert len(fresh) == 0


def test_a_body_on_disk_is_left_to_the_store(tmp_path: Path) -> None:
    fresh = FreshMessages()
    msg = build_message()
    msg.body = Spool(tmp_path, memory_limit=10)
    msg.body.write(b"a body longer than ten bytes\r\n")
    fresh.remember(msg)
    loaded = fresh.take(msg.queue_id)
    assert loaded is not None and loaded[2] is None


def test_bounds_evict_the_oldest_first() -> None:
    now = [0.0]
    fresh = FreshMessages(max_entries=2, max_bytes=1000, max_age=30, clock=lambda: now[0])
    first, second, third = (build_message(body=b"x" * 400) for _ in range(3))
    for msg in (first, second, third):
        fresh.remember(msg)
    assert fresh.take(first.queue_id) is None  # two entries at most
    assert fresh.take(second.queue_id) is not None
    now[0] = 31.0
    assert fresh.take(third.queue_id) is None  # too old: its first claim went elsewhere
    big = build_message(body=b"x" * 2000)
    fresh.remember(big)
    assert len(fresh) == 0  # larger than all the room there is


def test_the_scheduler_delivers_a_remembered_message_without_reading_it(tmp_path: Path) -> None:
    h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK))
    try:
        msg = build_message(received_at=h.clock.now(), recipients=["a@one.test"], body=b"Hi.\r\n")
        h.writer.execute_sync(InsertMessage(msg))
        h.scheduler.remember(msg)
        assert asyncio.run(h.scheduler.run_once()) == 1
        assert h.scheduler.fresh.taken == 1
        (request,) = h.agent.requests
        assert b"".join(request.body()) == b"Hi.\r\n"
        assert h.store.get_message(msg.queue_id) is None
    finally:
        h.close()
