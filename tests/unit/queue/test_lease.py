"""Lease owners and their heartbeat: owner names tell a dead process of this host from a
live one, the scheduler renews its leases while a delivery runs, and the schema
migration to version 3 keeps an existing queue (and its leases)."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

from mailwright.core.clock import ManualClock
from mailwright.core.reply import Reply
from mailwright.delivery.agent import DeliveryRequest, DeliveryResult, Outcome
from mailwright.manager.scheduler import DeliveryParts, Scheduler, SchedulerSettings
from mailwright.queue.lease import new_owner, owner_is_dead, process_id
from mailwright.queue.sqlite import SCHEMA_VERSION, SqliteQueueStore
from mailwright.queue.store import ClaimDue, InsertMessage
from mailwright.queue.writer import QueueWriter
from mailwright.routing.nexthop import NextHop, Transport

from .conftest import build_message

T0 = 1_700_000_000.0
SRC = Path(__file__).resolve().parents[3] / "src"


def test_owner_names_are_unique_per_runner_and_alive() -> None:
    first, second = new_owner(), new_owner()
    assert first != second and first.startswith(process_id() + ":")
    assert first.split(":")[:2] == [socket.gethostname(), str(os.getpid())]
    assert not owner_is_dead(first)


def test_an_exited_process_is_dead_and_another_host_is_unknown() -> None:
    code = "from mailwright.queue.lease import new_owner; print(new_owner())"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert owner_is_dead(done.stdout.strip())
    host, pid, start, n = new_owner().split(":")
    assert owner_is_dead(f"{host}:{pid}:{start}0:{n}")  # this pid, an earlier incarnation
    assert not owner_is_dead(f"elsewhere.example:{pid}:{start}:{n}")
    assert not owner_is_dead("cli")  # not an owner name: left to expire


def test_a_zombie_is_dead() -> None:
    """A killed worker whose parent was killed as well stays a zombie until adopted and
    reaped: it holds no work, its leases are a dead owner's."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: say who it is and exit at once
        os.close(read)
        os.write(write, new_owner().encode())
        os._exit(0)
    os.close(write)
    try:
        with os.fdopen(read, "rb") as pipe:
            owner = pipe.read().decode()
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        with open(f"/proc/{pid}/stat", "rb") as stat:
            assert stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"  # a zombie, in /proc
        assert owner.split(":")[1] == str(pid)
        assert owner_is_dead(owner)
    finally:
        os.waitpid(pid, 0)


class GatedAgent:
    name = "esmtp"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        self.started.set()
        await self.gate.wait()
        ok = Reply.of(250, "2.0.0", "ok")
        return [DeliveryResult(r.index, Outcome.DELIVERED, ok, "mx") for r in request.recipients]

    async def close(self) -> None:
        return None


def test_scheduler_renews_its_leases_while_a_delivery_runs(tmp_path: Path) -> None:
    store = SqliteQueueStore(tmp_path / "queue.db")
    store.open()
    writer = QueueWriter(store)
    writer.start()
    clock = ManualClock(T0)
    agent = GatedAgent()
    lease = 0.3  # renewed every 0.1 s
    scheduler = Scheduler(
        store,
        writer,
        DeliveryParts(
            lambda address: NextHop(Transport.SMTP, host="x.test"),
            {Transport.SMTP: agent},
            SchedulerSettings(lease_seconds=lease),
        ),
        clock=clock,
    )
    msg = build_message(received_at=T0)
    writer.execute_sync(InsertMessage(msg))

    def lease_until() -> float | None:
        stored = store.get_message(msg.queue_id)
        assert stored is not None
        return stored.recipients[0].lease_until

    async def scenario() -> None:
        run = asyncio.create_task(scheduler.run_once())
        await agent.started.wait()
        assert lease_until() == T0 + lease
        clock.advance(100)  # far past the first expiry: only a renewal keeps the lease
        async with asyncio.timeout(10):
            while lease_until() != T0 + 100 + lease:
                await asyncio.sleep(0.05)
        other = await writer.execute(ClaimDue(T0 + 100, 10, "other", 60))
        assert other == []  # still ours
        agent.gate.set()
        assert await run == 1
        await scheduler.stop(grace=1)

    try:
        asyncio.run(scenario())
        assert store.get_message(msg.queue_id) is None  # delivered
    finally:
        writer.stop()
        store.close()


def test_a_version_2_queue_is_migrated_keeping_messages_and_leases(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    store = SqliteQueueStore(path)
    store.open()
    store.apply_batch([InsertMessage(build_message("OLD", received_at=T0))])
    store.apply_batch([ClaimDue(T0, 10, "old-owner", 1e9)])
    store.close()
    with sqlite3.connect(path) as raw:  # as version 2 left it: no lease index, no segments
        raw.execute("ALTER TABLE messages DROP COLUMN requiretls")  # version 5's
        raw.execute("DROP INDEX recipients_lease")
        raw.execute("DROP INDEX messages_segment")
        raw.execute("ALTER TABLE messages DROP COLUMN body_offset")
        raw.execute("ALTER TABLE messages DROP COLUMN body_segment")
        raw.execute("PRAGMA user_version = 2")
    store = SqliteQueueStore(path)
    store.open(recover=False)
    try:
        stored = store.get_message("OLD")
        assert stored is not None and stored.recipients[0].lease_owner == "old-owner"
    finally:
        store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        plan = raw.execute(
            "EXPLAIN QUERY PLAN UPDATE recipients SET lease_until = 1 WHERE lease_owner = 'x'"
        ).fetchall()
        assert "recipients_lease" in str(plan)
