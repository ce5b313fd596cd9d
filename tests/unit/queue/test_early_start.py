"""A message's delivery begun while its insert is synced (``Scheduler.insert_and_start``):
nothing leaves before the commit is durable, nothing is recorded for an insert that failed.

The store is the real SQLite one; only its ``fdatasync`` of the log is held back or failed
by the test (the disk's answer is the one thing a test cannot arrange). The agent is the
scripted one of the scheduler's tests; the SMTP agent's own wait is tested with a real peer
in ``tests/unit/delivery/test_smtp_agent.py``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailwright.core.address import Address
from mailwright.core.delivery import Outcome
from mailwright.core.envelope import Recipient
from mailwright.core.target import Mailer, Target
from mailwright.delivery.agent import DeliveryRequest
from mailwright.queue.spool import Spool
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, NewMessage, RecipientState, StoreError
from mailwright.routing.nexthop import Transport

from .conftest import build_message
from .test_queue_scheduler import OK, Harness, ScriptedAgent

WAIT = 30.0


class HeldSyncStore(SqliteQueueStore):
    """The real store, whose syncs of the log wait while ``held`` and fail with ``failure``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.go_on = threading.Event()
        self.go_on.set()
        self.syncing = threading.Event()
        self.failure: StoreError | None = None

    def sync_log(self) -> None:
        self.syncing.set()
        assert self.go_on.wait(WAIT)
        if self.failure is not None:
            raise self.failure
        super().sync_log()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(
        tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK), store_type=HeldSyncStore
    )
    yield harness
    harness.close()


def store_of(h: Harness) -> HeldSyncStore:
    assert isinstance(h.store, HeldSyncStore)
    return h.store


def message(h: Harness, **kw: object) -> NewMessage:
    return build_message(received_at=h.clock.now(), **kw)  # type: ignore[arg-type]


def inserting(h: Harness, msg: NewMessage) -> asyncio.Task[None]:
    """``msg`` inserted with the lease the daemon would take and delivered at once."""
    lease = h.scheduler.lease_new(msg)
    assert lease is not None
    return asyncio.create_task(h.scheduler.insert_and_start(msg, lease))


async def first_request(h: Harness) -> DeliveryRequest:
    await asyncio.wait_for(h.agent.called.wait(), WAIT)
    return h.agent.requests[0]


def test_the_delivery_begins_while_the_insert_is_synced_and_is_recorded_after(
    h: Harness,
) -> None:
    msg = message(h, recipients=["a@one.test"])
    store = store_of(h)
    store.go_on.clear()

    async def accept() -> None:
        insert = inserting(h, msg)
        request = await first_request(h)
        # the transaction is in, its log not yet synced: the client has no 250 yet
        assert store.syncing.is_set() and not insert.done()
        assert request.committed is not None and not request.committed.done()
        (r,) = h.recipients(msg.queue_id)
        assert r.state is RecipientState.QUEUED and r.lease_owner == h.scheduler.owner
        store.go_on.set()
        await insert
        assert request.committed.result() is True
        await h.scheduler.wait_idle()

    asyncio.run(accept())
    assert h.store.get_message(msg.queue_id) is None  # delivered, recorded
    assert h.scheduler.fresh.taken == 1


def test_a_failed_sync_ends_the_begun_delivery_without_recording_it(h: Harness) -> None:
    msg = message(h, recipients=["a@one.test"])
    store = store_of(h)
    store.go_on.clear()
    store.failure = StoreError("fdatasync failed: Input/output error")

    async def accept() -> None:
        insert = inserting(h, msg)
        request = await first_request(h)
        store.go_on.set()
        with pytest.raises(StoreError, match="fdatasync failed"):
            await insert
        assert request.committed is not None and request.committed.result() is False
        await h.scheduler.wait_idle()

    asyncio.run(accept())
    # the transaction was in before its sync failed: the client heard 451 and sends again;
    # the row waits, untried, for its lease to expire (at-least-once, as before)
    (r,) = h.recipients(msg.queue_id)
    assert (r.state, r.attempts) == (RecipientState.QUEUED, 0)
    assert r.lease_owner == h.scheduler.owner


def test_an_insert_failing_alone_starts_no_delivery(h: Harness) -> None:
    queued = message(h)
    h.writer.execute_sync(InsertMessage(queued))  # waiting in the queue, not leased
    again = message(h, queue_id=queued.queue_id)  # the same queue id: its insert fails alone

    async def accept() -> None:
        with pytest.raises(StoreError, match="already in the queue"):
            await inserting(h, again)
        await h.scheduler.wait_idle()

    asyncio.run(accept())
    assert h.agent.requests == []
    assert len(h.scheduler.fresh) == 0  # nothing left behind for a delivery never begun


def test_a_body_on_disk_is_delivered_after_the_commit(h: Harness, tmp_path: Path) -> None:
    msg = message(h)
    spool = Spool(tmp_path, memory_limit=16)
    spool.write(b"a body larger than the spool's memory\r\n")
    msg.body = spool
    assert not spool.in_memory

    async def accept() -> None:
        await inserting(h, msg)
        await h.scheduler.wait_idle()

    asyncio.run(accept())
    (request,) = h.agent.requests
    assert request.committed is None  # started by start_leased, after the commit
    assert h.store.get_message(msg.queue_id) is None


def test_other_agents_than_smtp_and_lmtp_wait_for_the_commit(h: Harness) -> None:
    local = ScriptedAgent(lambda r: (Outcome.DELIVERED, OK))
    agents = h.scheduler.agents
    assert isinstance(agents, dict)
    agents[Transport.FILE] = local
    box = Recipient(Address("box", "local.test"), target=Target(Mailer.FILE, "/tmp/box", "nobody"))
    msg = message(h, recipients=["a@one.test", box])
    store = store_of(h)
    store.go_on.clear()

    async def accept() -> None:
        insert = inserting(h, msg)
        await first_request(h)  # the SMTP agent has the request: the delivery has begun
        assert local.requests == []  # the file's agent waits for the commit
        store.go_on.set()
        await insert
        await asyncio.wait_for(local.called.wait(), WAIT)
        await h.scheduler.wait_idle()

    asyncio.run(accept())
    assert len(local.requests) == 1
    assert h.store.get_message(msg.queue_id) is None
