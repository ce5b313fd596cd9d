"""The queue runs a queue-only daemon owes (``daemon.queueruns``): merged requests."""

from __future__ import annotations

import asyncio

from mailwright.daemon.queueruns import QueueRuns


def test_selective_requests_merge_and_a_full_one_wins() -> None:
    async def scenario() -> None:
        runs = QueueRuns()
        runs.ask(["B"])
        runs.ask(["A", "B"])
        run = await runs.next(None)
        assert run is not None and run.queue_ids == ("A", "B") and not run.full
        runs.ask(["A"])
        runs.ask()
        run = await runs.next(None)
        assert run is not None and run.full
        runs.interrupt()
        assert await runs.next(None) is None
        run = await runs.next(0.01)  # the interval passed: a full run
        assert run is not None and run.full

    asyncio.run(scenario())
