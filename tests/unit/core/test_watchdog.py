"""The read watchdog: one timer per connection, moved lazily, cancelling only late reads."""

from __future__ import annotations

import asyncio

import pytest

from mailwright.core.watchdog import ReadWatchdog


async def _guarded_wait(watchdog: ReadWatchdog, seconds: float, done: asyncio.Future[None]) -> str:
    """Wait for ``done`` as a read would, within ``seconds``."""
    watchdog.start_in(seconds)
    try:
        await done
        return "done"
    except asyncio.CancelledError:
        if watchdog.expired():
            return "timed out"
        raise
    finally:
        watchdog.stop()


def test_a_read_past_its_deadline_times_out() -> None:
    async def main() -> str:
        watchdog = ReadWatchdog(asyncio.get_running_loop())
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return await _guarded_wait(watchdog, 0.05, never)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == "timed out"


def test_reads_that_end_in_time_leave_the_timer_where_it_was() -> None:
    """Three quick reads with ever later deadlines arm one timer, not three; after them,
    a read with a short deadline moves it earlier and still times out."""

    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        watchdog = ReadWatchdog(loop)
        made: list[asyncio.TimerHandle] = []
        call_at = loop.call_at

        def counted(when: float, callback: object, *args: object) -> asyncio.TimerHandle:
            handle = call_at(when, callback, *args)  # type: ignore[arg-type]
            made.append(handle)
            return handle

        loop.call_at = counted  # type: ignore[method-assign,assignment]
        outcomes = []
        for _ in range(3):
            ready: asyncio.Future[None] = loop.create_future()
            ready.set_result(None)
            outcomes.append(await _guarded_wait(watchdog, 30, ready))
        assert len(made) == 1
        never: asyncio.Future[None] = loop.create_future()
        outcomes.append(await _guarded_wait(watchdog, 0.05, never))
        assert len(made) == 2
        watchdog.close()
        return outcomes

    assert asyncio.run(asyncio.wait_for(main(), 10)) == ["done", "done", "done", "timed out"]


def test_someone_elses_cancellation_is_not_a_timeout() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        watchdog = ReadWatchdog(loop)
        never: asyncio.Future[None] = loop.create_future()
        reading = asyncio.ensure_future(_guarded_wait(watchdog, 30, never))
        await asyncio.sleep(0)  # the read starts
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        watchdog.close()

    asyncio.run(asyncio.wait_for(main(), 10))


def test_a_timer_that_fires_between_reads_does_nothing() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        watchdog = ReadWatchdog(loop)
        ready: asyncio.Future[None] = loop.create_future()
        ready.set_result(None)
        assert await _guarded_wait(watchdog, 0.01, ready) == "done"
        idle: asyncio.Future[None] = loop.create_future()
        loop.call_later(0.1, idle.set_result, None)  # the timer fires while nothing reads
        await idle
        later: asyncio.Future[None] = loop.create_future()
        loop.call_soon(later.set_result, None)
        return await _guarded_wait(watchdog, 30, later)

    assert asyncio.run(asyncio.wait_for(main(), 10)) == "done"
