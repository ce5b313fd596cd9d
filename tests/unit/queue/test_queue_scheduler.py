"""The queue manager's scheduling logic with a real SQLite store, a settable clock and
a scripted delivery agent (real peers are exercised by the integration tests)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from mailwright.core.address import Address
from mailwright.core.clock import ManualClock
from mailwright.core.delivery import DeliveryResult, Outcome
from mailwright.core.envelope import Notify, Recipient
from mailwright.core.reply import Reply
from mailwright.delivery.agent import DeliveryRequest
from mailwright.manager.backoff import RetryPolicy
from mailwright.manager.scheduler import DeliveryParts, Scheduler, SchedulerSettings
from mailwright.queue.sqlite import SqliteQueueStore
from mailwright.queue.store import InsertMessage, Op, RecipientState, StoreError, Sync
from mailwright.queue.writer import QueueWriter
from mailwright.routing.nexthop import NextHop, Transport

from .conftest import build_message

T0 = 1_700_000_000.0
OK = Reply.of(250, "2.0.0", "ok queued as X")
TEMP = Reply.of(451, "4.3.0", "try later")
REFUSED = Reply.of(421, "4.4.1", "Connection refused")
UNKNOWN = Reply.of(550, "5.1.1", "<x>... User unknown")

Script = Callable[[DeliveryRequest], list[tuple[Outcome, Reply]] | tuple[Outcome, Reply]]


class ScriptedAgent:
    """A DeliveryAgent whose answers the test decides; records every request."""

    name = "esmtp"

    def __init__(self, script: Script, gate: asyncio.Event | None = None) -> None:
        self.script = script
        self.requests: list[DeliveryRequest] = []
        self.gate = gate
        self.active: dict[str, int] = defaultdict(int)
        self.peak: dict[str, int] = defaultdict(int)
        self.called = asyncio.Event()
        self.reports: list[email.message.EmailMessage] = []  # type: ignore[name-defined]

    async def deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        self.requests.append(request)
        self.called.set()
        if request.sender == "":  # a report: keep what was sent
            raw = request.headers.encode() + b"\r\n" + b"".join(request.body())
            self.reports.append(email.message_from_bytes(raw, policy=email.policy.default))
        key = request.next_hop.key
        self.active[key] += 1
        self.peak[key] = max(self.peak[key], self.active[key])
        try:
            if self.gate is not None:
                await self.gate.wait()
            answer = self.script(request)
        finally:
            self.active[key] -= 1
        answers = answer if isinstance(answer, list) else [answer] * len(request.recipients)
        return [
            DeliveryResult(r.index, outcome, reply, "mx.test [127.0.0.1]")
            for r, (outcome, reply) in zip(request.recipients, answers, strict=True)
        ]

    async def close(self) -> None:
        return None


def route(address: str) -> NextHop:
    domain = address.rpartition("@")[2]
    if domain == "error.test":
        return NextHop(Transport.ERROR, error=Reply.of(550, "5.1.2", "no mail for error.test"))
    return NextHop(Transport.SMTP, host=domain)


class Harness:
    def __init__(
        self,
        path: Path,
        script: Script,
        *,
        store_type: type[SqliteQueueStore] = SqliteQueueStore,
        **settings: object,
    ) -> None:
        self.store = store_type(path)
        self.store.open()
        self.writer = QueueWriter(self.store)
        self.writer.start()
        self.clock = ManualClock(T0)
        self.agent = ScriptedAgent(script)
        self.scheduler = Scheduler(
            self.store,
            self.writer,
            DeliveryParts(
                route,
                {Transport.SMTP: self.agent},
                SchedulerSettings(reporting_mta="mx.test", **settings),  # type: ignore[arg-type]
            ),
            clock=self.clock,
        )

    def insert(self, **kw: object) -> str:
        msg = build_message(received_at=self.clock.now(), **kw)  # type: ignore[arg-type]
        self.writer.execute_sync(InsertMessage(msg))
        return msg.queue_id

    def run_once(self) -> int:
        return asyncio.run(self.scheduler.run_once())

    def recipients(self, qid: str) -> list:  # type: ignore[type-arg]
        msg = self.store.get_message(qid)
        return [] if msg is None else msg.recipients

    def reports(self) -> list[email.message.EmailMessage]:  # type: ignore[name-defined]
        """Reports (null-sender messages) that were delivered, in order."""
        return self.agent.reports

    def close(self) -> None:
        self.writer.stop()
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(script: Script, **settings: object) -> Harness:
        h = Harness(tmp_path / f"q{len(made)}.db", script, **settings)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def test_delivered_message_is_removed(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.DELIVERED, OK))
    qid = h.insert(recipients=["a@one.test", "b@one.test", "c@two.test"])
    assert h.run_once() == 3
    assert h.store.get_message(qid) is None
    # one transaction per next hop carries all its recipients
    assert sorted(len(r.recipients) for r in h.agent.requests) == [1, 2]


def test_retry_schedule_backs_off_and_caps(harness: Callable[..., Harness]) -> None:
    h = harness(
        lambda r: (Outcome.DEFERRED, TEMP),
        retry=RetryPolicy(first=300, max_interval=3600, max_lifetime=10 * 86400),
    )
    qid = h.insert()
    waits = []
    for _ in range(7):
        attempts_before = len(h.agent.requests)
        assert h.run_once() == 1
        assert len(h.agent.requests) == attempts_before + 1
        (r,) = h.recipients(qid)
        wait = r.next_attempt - h.clock.now()
        waits.append(wait)
        h.clock.advance(wait - 1)
        assert h.run_once() == 0  # not due yet: nothing is dialled
        h.clock.advance(1)
    assert waits == [300, 600, 1200, 2400, 3600, 3600, 3600]
    (r,) = h.recipients(qid)
    assert r.attempts == 7 and r.last_status == "4.3.0" and r.last_reply == "try later"


def test_permanent_failure_queues_bounce_in_same_commit(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.FAILED, UNKNOWN) if r.sender else (Outcome.DELIVERED, OK))
    qid = h.insert(recipients=["a@one.test", "b@one.test"])
    h.run_once()
    assert h.store.get_message(qid) is None
    (bounce,) = h.reports()
    assert bounce["To"] == "<sender@example.com>" or "sender@example.com" in bounce["To"]
    status = next(p for p in bounce.walk() if p.get_content_type() == "message/delivery-status")
    text = status.as_string()
    assert "Final-Recipient: rfc822; a@one.test" in text
    assert "Final-Recipient: rfc822; b@one.test" in text
    assert "Status: 5.1.1" in text and "User unknown" in text
    assert h.agent.requests[-1].sender == ""  # the bounce itself was delivered next


def test_partial_failure_one_bounce_rest_retried(harness: Callable[..., Harness]) -> None:
    def script(r: DeliveryRequest) -> list[tuple[Outcome, Reply]]:
        return [
            (Outcome.FAILED, UNKNOWN) if x.address.startswith("bad") else (Outcome.DEFERRED, TEMP)
            for x in r.recipients
        ]

    h = harness(script)
    qid = h.insert(recipients=["bad@one.test", "good@one.test"])
    h.run_once()
    states = {r.address: r.state for r in h.recipients(qid)}
    assert states == {"bad@one.test": RecipientState.FAILED, "good@one.test": RecipientState.QUEUED}
    assert len(h.reports()) == 1


def test_expiry_bounces_with_4_4_7(harness: Callable[..., Harness]) -> None:
    h = harness(
        lambda r: (Outcome.DEFERRED, REFUSED),
        retry=RetryPolicy(first=3600, max_interval=3600, max_lifetime=7200, delay_warning=0),
    )
    qid = h.insert()
    h.run_once()
    h.clock.advance(3600)
    h.run_once()
    assert h.store.get_message(qid) is not None
    h.clock.advance(3600)
    h.run_once()
    assert h.store.get_message(qid) is None
    (bounce,) = h.reports()
    text = bounce.as_string()
    assert "Status: 4.4.7" in text and "Connection refused" in text and "Action: failed" in text


def test_delay_warning_once_and_honours_notify(harness: Callable[..., Harness]) -> None:
    h = harness(
        lambda r: (Outcome.DEFERRED, TEMP) if r.sender else (Outcome.DELIVERED, OK),
        retry=RetryPolicy(first=3600, max_interval=3600, delay_warning=4 * 3600),
    )
    never = Recipient(Address("n", "one.test"), frozenset({Notify.NEVER}))
    h.insert(recipients=["a@one.test"])
    h.insert(recipients=[never])
    for _ in range(6):
        h.run_once()
        h.clock.advance(3600)
    reports = h.reports()
    assert len(reports) == 1  # one warning, and none for NOTIFY=NEVER
    text = reports[0].as_string()
    assert "n@one.test" not in text
    assert "Action: delayed" in text and "Will-Retry-Until:" in text


def test_dead_host_not_dialled_again(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.DEFERRED, REFUSED), host_status_timeout=600)
    first = h.insert(recipients=["a@dead.test"])
    h.run_once()
    second = h.insert(recipients=["b@dead.test"])
    h.run_once()
    assert len(h.agent.requests) == 1
    (r,) = h.recipients(second)
    assert "host status cached" in (r.last_reply or "")
    h.clock.advance(601 + 3600)
    h.run_once()
    assert len(h.agent.requests) == 2  # the cache expired: dialled once more, for both
    assert len(h.agent.requests[1].recipients) == 1 or first


def test_per_destination_concurrency_limit(tmp_path: Path) -> None:
    async def scenario() -> ScriptedAgent:
        h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK), max_per_destination=3)
        gate = asyncio.Event()
        h.agent.gate = gate
        for _ in range(10):
            h.insert(recipients=["x@busy.test"])
        run = asyncio.create_task(h.scheduler.run_once())
        while sum(h.agent.active.values()) < 3:
            await asyncio.sleep(0)
        gate.set()
        await run
        h.close()
        return h.agent

    agent = asyncio.run(scenario())
    assert agent.peak["smtp:busy.test"] == 3
    assert len(agent.requests) == 10


def test_relayed_with_notify_success_gives_success_dsn(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.RELAYED, OK))
    rcpt = Recipient(Address("a", "one.test"), frozenset({Notify.SUCCESS}), "rfc822;a@one.test")
    h.insert(recipients=[rcpt, "b@one.test"])
    h.run_once()
    (report,) = h.reports()
    text = report.as_string()
    assert "Action: relayed" in text and "Original-Recipient: rfc822;a@one.test" in text
    assert "b@one.test" not in text.split("message/delivery-status", 1)[1].split("--")[0]


def test_error_transport_and_null_sender_double_bounce(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.DELIVERED, OK))
    h.insert(recipients=["x@error.test"], sender=None)
    h.run_once()
    (report,) = h.reports()
    assert "postmaster@mx.test" in report["To"]
    assert "no mail for error.test" in report.as_string()
    assert [r.sender for r in h.agent.requests] == [""]  # only the double bounce was sent


def test_admin_bounce(harness: Callable[..., Harness]) -> None:
    h = harness(lambda r: (Outcome.DEFERRED, TEMP))
    qid = h.insert(recipients=["a@one.test"])
    ok = asyncio.run(h.scheduler.bounce(qid, Reply.of(550, "5.0.0", "bounced by admin")))
    assert ok and h.store.get_message(qid) is None
    h.run_once()
    assert "bounced by admin" in h.reports()[0].as_string()
    assert not asyncio.run(h.scheduler.bounce("0" * 15, UNKNOWN))


def test_run_loop_delivers_when_woken(tmp_path: Path) -> None:
    async def scenario() -> int:
        h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK))
        loop_task = asyncio.create_task(h.scheduler.run())
        qid = h.insert()
        h.scheduler.wake()
        await h.agent.called.wait()
        await h.scheduler.wait_idle()
        assert h.store.get_message(qid) is None
        await h.scheduler.stop()
        await loop_task
        h.close()
        return len(h.agent.requests)

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 1


def test_run_loop_wakes_for_a_retry_due_before_its_next_look(tmp_path: Path) -> None:
    # the loop sleeps (up to a minute) while the first attempt is in flight; the deferral,
    # due at once, must wake it rather than wait for that minute
    async def scenario() -> list[DeliveryRequest]:
        second = asyncio.Event()

        def script(request: DeliveryRequest) -> tuple[Outcome, Reply]:
            if len(h.agent.requests) == 1:
                return Outcome.DEFERRED, TEMP
            second.set()
            return Outcome.DELIVERED, OK

        h = Harness(tmp_path / "q.db", script, retry=RetryPolicy(first=0.0))
        loop_task = asyncio.create_task(h.scheduler.run())
        h.insert()
        h.scheduler.wake()
        await asyncio.wait_for(second.wait(), 10)
        await h.scheduler.stop()
        await loop_task
        h.close()
        return h.agent.requests

    assert len(asyncio.run(scenario())) == 2


class AwayStore(SqliteQueueStore):
    """A store that fails like a database that went away, while ``away`` is set."""

    away = False
    failures = 0

    def apply_batch_unsynced(self, ops: Sequence[Op[Any]]) -> tuple[list[object], Sync | None]:
        self._check()  # what the QueueWriter calls
        return super().apply_batch_unsynced(ops)

    def next_due(self) -> float | None:
        self._check()
        return super().next_due()

    def _check(self) -> None:
        if self.away:
            self.failures += 1
            raise StoreError("queue store error: the database is away")


def test_run_loop_resumes_by_itself_when_the_store_is_back(tmp_path: Path) -> None:
    async def scenario() -> int:
        h = Harness(tmp_path / "q.db", lambda r: (Outcome.DELIVERED, OK), store_type=AwayStore)
        store = h.store
        assert isinstance(store, AwayStore)
        qid = h.insert()
        store.away = True
        loop_task = asyncio.create_task(h.scheduler.run())
        while not store.failures:  # the claim failed: the loop must not end with it
            await asyncio.sleep(0.01)
        assert not loop_task.done()
        store.away = False  # no wake: the loop looks again by itself
        await asyncio.wait_for(h.agent.called.wait(), 10)
        await h.scheduler.wait_idle()
        assert h.store.get_message(qid) is None
        await h.scheduler.stop()
        await loop_task
        h.close()
        return len(h.agent.requests)

    assert asyncio.run(asyncio.wait_for(scenario(), 20)) == 1


def test_run_loop_at_capacity_claims_again_when_a_slot_frees(tmp_path: Path) -> None:
    # max_concurrency 1 lets four recipients be in flight: the other six wait for slots
    async def scenario() -> int:
        all_sent = asyncio.Event()

        def script(request: DeliveryRequest) -> tuple[Outcome, Reply]:
            if len(h.agent.requests) == 10:
                all_sent.set()
            return Outcome.DELIVERED, OK

        h = Harness(tmp_path / "q.db", script, max_concurrency=1)
        for _ in range(10):
            h.insert()
        loop_task = asyncio.create_task(h.scheduler.run())
        h.scheduler.wake()
        await asyncio.wait_for(all_sent.wait(), 10)
        await h.scheduler.wait_idle()
        await h.scheduler.stop()
        await loop_task
        h.close()
        return len(h.agent.requests)

    assert asyncio.run(scenario()) == 10


def test_a_selective_run_delivers_only_the_named_messages(
    harness: Callable[..., Harness],
) -> None:
    h = harness(lambda r: (Outcome.DELIVERED, OK))
    a = h.insert(recipients=["a@one.test", "b@two.test"])
    b = h.insert(recipients=["c@one.test"])
    assert asyncio.run(h.scheduler.run_once([a])) == 2
    assert h.store.get_message(a) is None
    assert [r.attempts for r in h.recipients(b)] == [0]
    assert asyncio.run(h.scheduler.run_once([])) == 0  # a selection of nothing
    assert h.run_once() == 1
    assert h.store.get_message(b) is None
