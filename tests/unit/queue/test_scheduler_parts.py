"""A reload gives the scheduler new parts (route, agents, settings) as a whole: deliveries
started before keep the parts they started with to the end, new ones get the new parts
(issue 13 section 2)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mailwright.core.delivery import Outcome
from mailwright.manager.backoff import RetryPolicy
from mailwright.manager.scheduler import DeliveryParts, SchedulerSettings
from mailwright.routing.nexthop import NextHop, Transport

from .test_queue_scheduler import OK, T0, TEMP, Harness, ScriptedAgent


def test_a_delivery_keeps_the_parts_it_started_with(tmp_path: Path) -> None:
    h = Harness(tmp_path / "q.db", lambda r: (Outcome.DEFERRED, TEMP), retry=RetryPolicy(first=60))
    gate = asyncio.Event()
    h.agent.gate = gate
    new_agent = ScriptedAgent(lambda r: (Outcome.DELIVERED, OK))
    new_parts = DeliveryParts(
        route=lambda address: NextHop(Transport.SMTP, host="new.test"),
        agents={Transport.SMTP: new_agent},
        settings=SchedulerSettings(
            reporting_mta="mx.test", retry=RetryPolicy(first=7200), host_status_timeout=42
        ),
    )
    first = h.insert()

    async def scenario() -> None:
        run = asyncio.create_task(h.scheduler.run_once())
        await h.agent.called.wait()  # the first message is being delivered: old parts
        h.scheduler.use(new_parts)  # SIGHUP
        gate.set()
        await run

    try:
        asyncio.run(scenario())
        # delivered (deferred) by the old agent, recorded with the old retry policy
        assert [r.next_hop.host for r in h.agent.requests] == ["example.org"]
        assert not new_agent.requests
        [deferred] = h.recipients(first)
        assert deferred.next_attempt == T0 + 60
        # the next delivery starts with the new parts
        h.clock.advance(60)
        assert h.run_once() == 1
        assert [r.next_hop.host for r in new_agent.requests] == ["new.test"]
        assert len(h.agent.requests) == 1
        assert h.scheduler.hosts.ttl == 42  # the cache stays, with the new lifetime
    finally:
        h.close()
