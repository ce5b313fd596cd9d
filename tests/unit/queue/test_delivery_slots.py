"""Delivery slots across worker processes (``manager.slots``): each test forks a real
worker that holds slots in the shared pool while the parent (another worker) asks for
more; pipes say when the child holds and when it may let go."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

import pytest

from mailwright.manager.slots import SharedSlots, WorkerSlots
from tests.support.forked import child

REFUSED = 0.3  # how long a refused take is given to show it stays refused


def fork(action: Callable[[int, int], None]) -> tuple[int, int, int]:
    """``action(say, hear)`` in a child; its pid, and the pipe ends the parent uses."""
    to_parent, from_child = os.pipe()[::-1]
    from_parent, to_child = os.pipe()
    pid = child(lambda: action(to_parent, from_parent))
    os.close(to_parent)
    os.close(from_parent)
    return pid, from_child, to_child


def holder(
    pool: SharedSlots, index: int, keys: list[str], release: bool = True
) -> Callable[[int, int], None]:
    """A worker that takes a slot for each of ``keys``, says "held", and waits for "go"."""

    def action(say: int, hear: int) -> None:
        async def run() -> None:
            slots = pool.worker(index)
            holds = [slots.hold(key) for key in keys]
            for hold in holds:
                await hold.__aenter__()
            os.write(say, b"held")
            await asyncio.to_thread(os.read, hear, 2)
            if not release:
                os._exit(0)  # dies holding them
            for hold in reversed(holds):
                await hold.__aexit__(None, None, None)

        asyncio.run(run())

    return action


def finish(pid: int, to_child: int) -> None:
    os.write(to_child, b"go")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked worker failed"


async def takes(slots: WorkerSlots, key: str, timeout: float) -> bool:
    """Does a slot for ``key`` come within ``timeout``? (Given back at once.)"""

    async def take() -> None:
        async with slots.hold(key):
            pass

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        return False
    return True


def test_a_limit_of_one_holds_across_two_workers() -> None:
    pool = SharedSlots.create(2, max_concurrency=10, max_per_destination=1)
    pid, from_child, to_child = fork(holder(pool, 1, ["mx.a.test"]))
    assert os.read(from_child, 4) == b"held"
    assert pool.borrowed("mx.a.test") == 1  # 1 // 2 = 0 own slots: it borrowed the pool's
    mine = pool.worker(0)
    assert not asyncio.run(takes(mine, "mx.a.test", REFUSED))
    assert asyncio.run(takes(mine, "mx.b.test", 5))  # another destination is free
    finish(pid, to_child)
    assert pool.borrowed("mx.a.test") == 0
    assert asyncio.run(takes(mine, "mx.a.test", 5))


def test_each_worker_uses_its_own_share_without_the_pool() -> None:
    pool = SharedSlots.create(2, max_concurrency=10, max_per_destination=3)  # 1 each + 1
    pid, from_child, to_child = fork(holder(pool, 1, ["mx.a.test"]))
    assert os.read(from_child, 4) == b"held"
    assert pool.borrowed("mx.a.test") == 0  # its own slot

    async def parent() -> None:
        mine = pool.worker(0)
        async with mine.hold("mx.a.test"), mine.hold("mx.a.test"):  # own, then borrowed
            assert pool.borrowed("mx.a.test") == 1
            assert not await takes(mine, "mx.a.test", REFUSED)  # 3 in flight: the limit
        assert pool.borrowed("mx.a.test") == 0

    asyncio.run(parent())
    finish(pid, to_child)


def test_the_global_limit_holds_across_workers() -> None:
    pool = SharedSlots.create(2, max_concurrency=1, max_per_destination=20)
    pid, from_child, to_child = fork(holder(pool, 1, ["mx.a.test"]))
    assert os.read(from_child, 4) == b"held"
    assert pool.borrowed() == 1
    assert not asyncio.run(takes(pool.worker(0), "mx.b.test", REFUSED))
    finish(pid, to_child)
    assert asyncio.run(takes(pool.worker(0), "mx.b.test", 5))


def test_a_dead_workers_slots_are_freed_by_reset() -> None:
    pool = SharedSlots.create(2, max_concurrency=1, max_per_destination=1)
    pid, from_child, to_child = fork(holder(pool, 1, ["mx.a.test"], release=False))
    assert os.read(from_child, 4) == b"held"
    finish(pid, to_child)
    assert pool.borrowed() == 1 and pool.borrowed("mx.a.test") == 1  # died holding it
    pool.reset_worker(1)
    assert pool.borrowed() == 0
    assert asyncio.run(takes(pool.worker(0), "mx.a.test", 5))


def test_a_waiting_delivery_gets_the_slot_its_worker_frees() -> None:
    """One process of two with a limit of 1: its deliveries take turns, none is lost."""
    pool = SharedSlots.create(2, max_concurrency=4, max_per_destination=1)
    mine = pool.worker(0)
    order: list[str] = []

    async def deliver(name: str) -> None:
        async with mine.hold("mx.a.test"):
            order.append(f"{name} in")
            assert pool.borrowed("mx.a.test") == 1
            await asyncio.sleep(0)  # let the others try meanwhile
            order.append(f"{name} out")

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(*(deliver(str(n)) for n in range(5))), 10)

    asyncio.run(run())
    assert len(order) == 10
    assert all(order[i].endswith("in") and order[i + 1].endswith("out") for i in range(0, 10, 2))


def test_limits_and_workers_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SharedSlots.create(2, max_concurrency=0, max_per_destination=1)
    with pytest.raises(ValueError):
        SharedSlots.create(2, max_concurrency=1, max_per_destination=1).worker(2)
