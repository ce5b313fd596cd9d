"""Abuse limits: sliding counters, the connection rate, AUTH failure throttling."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from mailwright.config.schema import AuthSection
from mailwright.policy.hooks import SessionInfo
from mailwright.policy.limits import (
    AuthThrottle,
    ClusterCounters,
    ConnectionRateLimit,
    SlidingCounter,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sliding_counter_forgets_old_events_and_old_keys() -> None:
    clock = Clock()
    counter = SlidingCounter(10.0, cap=5, max_keys=3, clock=clock)
    assert [counter.add("a") for _ in range(7)] == [1, 2, 3, 4, 5, 5, 5]  # capped
    clock.now += 10.5
    assert counter.count("a") == 0 and len(counter) == 0
    for key in ("a", "b", "c", "d"):
        counter.add(key)
    assert len(counter) == 3 and counter.count("a") == 0  # the oldest key went first
    counter.clear("b")
    assert counter.count("b") == 0


def info(ip: str) -> SessionInfo:
    return SessionInfo("1", "smtp-25", "smtp", "127.0.0.1", 25, ip, 1)


@pytest.fixture(params=["memory", "postgresql"])
def cluster(request: pytest.FixtureRequest, clock: Clock) -> Iterator[ClusterCounters | None]:
    """Where the counters are: this process's memory, or the cluster's database."""
    if request.param == "memory":
        yield None
        return
    from mailwright.policy.limits_postgres import PostgresLimits
    from tests.support.postgres import state_database

    database = state_database(request.getfixturevalue("postgres_database"))
    yield PostgresLimits(database, clock)
    database.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_connection_rate_per_address_per_minute(
    clock: Clock, cluster: ClusterCounters | None
) -> None:
    limit = ConnectionRateLimit(3, "mx.test", clock=clock, cluster=cluster)

    async def main() -> None:
        assert [await limit.connect(info("192.0.2.1")) for _ in range(3)] == [None] * 3
        reply = await limit.connect(info("192.0.2.1"))
        assert reply is not None and reply.code == 421 and reply.status == "4.7.0"
        assert await limit.connect(info("192.0.2.2")) is None  # another address
        assert await limit.connect(info("")) is None  # local submission
        clock.now += 61
        assert await limit.connect(info("192.0.2.1")) is None

    asyncio.run(main())


def test_auth_throttle_blocks_and_delays_exponentially(
    clock: Clock, cluster: ClusterCounters | None
) -> None:
    section = AuthSection(
        max_failures_per_ip=4, max_failures_per_user=3, failure_delay=0.5, max_failure_delay=3
    )
    throttle = AuthThrottle(section, clock=clock, cluster=cluster)

    async def main() -> None:
        delays = [await throttle.failed("192.0.2.1", f"user{i}") for i in range(4)]
        assert delays == [0.5, 1.0, 2.0, 3.0]
        assert await throttle.ip_blocked("192.0.2.1")
        assert not await throttle.ip_blocked("192.0.2.2")
        # one guess each from many addresses: slower and slower, but nobody is locked out
        delays = [await throttle.failed(f"192.0.2.{n}", "alice") for n in (5, 6, 7)]
        assert delays == [0.5, 1.0, 2.0]
        for n in (5, 6, 7, 8):
            assert not await throttle.user_blocked("alice", f"192.0.2.{n}")
        for _ in range(3):
            await throttle.failed("192.0.2.9", "alice")  # three guesses from one address
        assert await throttle.user_blocked("alice", "192.0.2.9")
        assert not await throttle.ip_blocked("192.0.2.9")  # other users may log in from there
        assert not await throttle.user_blocked("alice", "192.0.2.8")
        await throttle.succeeded("alice", "192.0.2.9")
        assert not await throttle.user_blocked("alice", "192.0.2.9")
        assert await throttle.failed("192.0.2.10", "alice") == 0.5  # success reset the name
        clock.now += section.failure_window + 1
        assert not await throttle.ip_blocked("192.0.2.1")

    asyncio.run(main())
