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
from mailwright.smtp.encoder import CrlfLines

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


def test_a_body_the_session_checked_is_handed_out_marked_crlf_only() -> None:
    # the SMTP client skips its check of the line ends for a ``CrlfLines`` body: only a
    # spool whose writer said so gives one, and a filter's rewrite takes the word back
    fresh = FreshMessages()
    checked, unchecked, rewritten = build_message(), build_message(), build_message()
    assert isinstance(checked.body, Spool) and isinstance(rewritten.body, Spool)
    checked.body.crlf_lines = rewritten.body.crlf_lines = True
    rewritten.body.replace([b"new\nbody\r\n"])
    bodies = []
    for msg in (checked, unchecked, rewritten):
        fresh.remember(msg)
        loaded = fresh.take(msg.queue_id)
        assert loaded is not None and loaded[2] is not None
        bodies.append(loaded[2])
    assert [type(body) for body in bodies] == [CrlfLines, bytes, bytes]
    assert bodies[0] == b"".join(checked.body.chunks())
    assert bodies[2] == b"new\nbody\r\n"


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


class _CountingStore(SqliteQueueStore):
    """The real SQLite store, noting the type of every op it applies."""

    applied: list[str]

    def apply_batch_unsynced(self, ops):  # type: ignore[no-untyped-def]
        self.__dict__.setdefault("applied", []).extend(type(op).__name__ for op in ops)
        return super().apply_batch_unsynced(ops)  # what the QueueWriter calls


def test_a_message_inserted_leased_is_delivered_without_a_claim(tmp_path: Path) -> None:
    h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK), store_type=_CountingStore)
    try:

        async def accept() -> None:
            msg = build_message(received_at=h.clock.now(), recipients=["a@one.test", "b@two.test"])
            lease = h.scheduler.lease_new(msg)
            assert lease == (h.scheduler.owner, h.clock.now() + h.scheduler.settings.lease_seconds)
            await h.writer.execute(InsertMessage(msg, *lease))
            h.scheduler.start_leased(msg, lease)
            await h.scheduler.wait_idle()

        asyncio.run(accept())
        assert sorted(r.recipients[0].address for r in h.agent.requests) == [
            "a@one.test",
            "b@two.test",
        ]
        assert h.store.list_messages() == []
        assert "ClaimDue" not in h.store.applied  # type: ignore[attr-defined]
        assert h.scheduler.fresh.taken == 1
    finally:
        h.close()


def test_no_lease_at_insert_when_held_not_due_stopping_or_full(tmp_path: Path) -> None:
    h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK), max_concurrency=1)
    try:
        assert h.scheduler.lease_new(build_message(hold_reason="quarantined")) is None
        later = build_message()
        later.first_attempt = later.received_at + 600
        assert h.scheduler.lease_new(later) is None
        many = build_message(recipients=[f"r{i}@one.test" for i in range(5)])
        assert h.scheduler.lease_new(many) is None  # more than 4 x max_concurrency in flight
        assert h.scheduler.lease_new(build_message()) is not None
        asyncio.run(h.scheduler.stop(grace=0))
        assert h.scheduler.lease_new(build_message()) is None
    finally:
        h.close()


def test_a_lease_taken_at_insert_is_given_back_by_stop(tmp_path: Path) -> None:
    h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK))
    msg = build_message(received_at=h.clock.now())
    try:

        async def accept_while_stopping() -> None:
            lease = h.scheduler.lease_new(msg)
            assert lease is not None
            inserted = h.writer.submit(InsertMessage(msg, *lease))  # before stop's release
            await h.scheduler.stop(grace=0)
            await inserted
            h.scheduler.start_leased(msg, lease)  # too late: nothing starts

        asyncio.run(accept_while_stopping())
        assert h.agent.requests == []
        (r,) = h.recipients(msg.queue_id)
        assert r.lease_owner is None  # due again, for whoever claims next
    finally:
        h.close()
