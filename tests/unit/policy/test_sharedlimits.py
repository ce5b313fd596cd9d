"""Limits shared by forked worker processes: each test forks real children that count in
the shared memory, then reads what they counted from the parent (another worker)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mailwright.config.schema import AuthSection
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.limits import AuthThrottle, ConnectionRateLimit
from mailwright.policy.sharedlimits import SharedState
from tests.support.forked import in_worker

IP = "192.0.2.1"
run = asyncio.run  # the throttle is async (its counters may be in a database)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_connections_of_one_address_add_up_across_processes() -> None:
    state = SharedState.create(3)

    def open_two(index: int) -> Callable[[], None]:
        def action() -> None:
            share = state.worker(index)
            share.opened(IP)
            share.opened(IP)
            share.opened("192.0.2.9")

        return action

    in_worker(open_two(1))
    in_worker(open_two(2))
    mine = state.worker(0)
    mine.opened(IP)
    assert mine.of_ip(IP) == 5 and mine.of_ip("192.0.2.9") == 2 and mine.total() == 7
    assert mine.of_ip("192.0.2.2") == 0
    mine.closed(IP)
    assert mine.of_ip(IP) == 4 and mine.total() == 6


def test_a_reset_worker_forgets_its_connections_not_its_events() -> None:
    state = SharedState.create(2)
    clock = Clock()

    def die_with_connections() -> None:
        share = state.worker(1, clock)
        share.opened(IP)
        share.connection_rate().add(IP)
        share.auth_failures(900.0)[0].add(IP)

    in_worker(die_with_connections)  # it exits without closing anything
    mine = state.worker(0, clock)
    assert mine.of_ip(IP) == 1 and mine.total() == 1
    state.reset_worker(1)  # what the supervisor does before starting a replacement
    assert mine.of_ip(IP) == 0 and mine.total() == 0
    # a client does not shed its AUTH failures (or its rate) because a worker died
    assert mine.connection_rate().count(IP) == 1 and mine.auth_failures(900.0)[0].count(IP) == 1
    replacement = state.worker(1, clock)  # writes on in the dead worker's row
    replacement.auth_failures(900.0)[0].add(IP)
    assert mine.auth_failures(900.0)[0].count(IP) == 2
    with pytest.raises(ValueError):
        state.reset_worker(2)


def info(ip: str) -> SessionInfo:
    return SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, ip, 1)


def test_connection_rate_counts_every_process() -> None:
    state = SharedState.create(2)
    clock = Clock()

    def connect_twice() -> None:
        limit = ConnectionRateLimit(3, "mx.test", share=state.worker(1, clock))

        async def main() -> None:
            assert [await limit.connect(info(IP)) for _ in range(2)] == [None, None]

        asyncio.run(main())

    in_worker(connect_twice)
    limit = ConnectionRateLimit(3, "mx.test", share=state.worker(0, clock))

    async def main() -> None:
        assert await limit.connect(info(IP)) is None  # the third this minute
        reply = await limit.connect(info(IP))
        assert reply is not None and reply.code == 421
        assert await limit.connect(info("192.0.2.2")) is None
        clock.now += 71  # a minute and a bucket later
        assert await limit.connect(info(IP)) is None

    asyncio.run(main())


def test_auth_failures_count_in_every_process() -> None:
    state = SharedState.create(2)
    section = AuthSection(max_failures_per_ip=4, max_failures_per_user=3, failure_delay=0)
    clock = Clock()

    def guess() -> None:
        throttle = AuthThrottle(section, share=state.worker(1, clock))
        for _ in range(3):
            run(throttle.failed(IP, "alice"))
        assert run(throttle.user_blocked("alice", IP)) and not run(throttle.ip_blocked(IP))

    in_worker(guess)
    throttle = AuthThrottle(section, share=state.worker(0, clock))
    assert run(throttle.user_blocked("alice", IP))  # counted by the other worker
    assert not run(throttle.user_blocked("alice", "192.0.2.2"))  # nobody locks alice out
    assert not run(throttle.user_blocked("bob", IP)) and not run(throttle.ip_blocked(IP))
    run(throttle.failed(IP, "bob"))
    assert run(throttle.ip_blocked(IP))  # 3 there + 1 here
    run(throttle.succeeded("alice", IP))  # clears what the other worker counted for alice
    assert not run(throttle.user_blocked("alice", IP))
    assert run(throttle.ip_blocked(IP))  # the address keeps its count

    def after_the_success() -> None:
        other = AuthThrottle(section, share=state.worker(1, clock))
        assert not run(other.user_blocked("alice", IP)) and run(other.ip_blocked(IP))

    in_worker(after_the_success)


def test_a_full_table_degrades_without_failing() -> None:
    state = SharedState.create(2, slots=4)
    addresses = [f"192.0.2.{n}" for n in range(1, 101)]

    def flood() -> None:
        share = state.worker(1)
        rate = share.connection_rate()
        for ip in addresses:
            share.opened(ip)
            assert share.of_ip(ip) == 1  # kept by this worker when there is no slot
            assert rate.add(ip) == 1

    in_worker(flood)
    mine = state.worker(0)
    assert mine.total() == 100  # the total is exact whatever the slots
    mine.opened(addresses[0])
    assert mine.of_ip(addresses[0]) >= 1  # this worker's own count at least
    assert mine.connection_rate().add(addresses[-1]) >= 1
    for ip in addresses:  # this worker too overflows, then closes everything
        mine.opened(ip)
    for ip in [addresses[0], *addresses]:
        mine.closed(ip)
    assert mine.total() == 100 and not mine.overflow
