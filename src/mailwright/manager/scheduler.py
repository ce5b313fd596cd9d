"""The queue manager: takes due recipients, delivers them, records the results.

Claims due recipients (with a lease) from the store, groups them per message and
next hop (one transaction per next hop carries all of a message's recipients
for it), and delivers with a global and a per-destination concurrency limit (local
mailboxes, programs and files: the local agent's own limits instead); one of several
worker processes holds them for the whole daemon through ``manager.slots``.
The results of one message are committed together, with at most one report per
kind (failure, delay, success; built by ``dsn.notices``) queued in the same
transaction. Temporary failures are retried with back-off; a next hop that failed
at connection level is remembered for a while (host-status cache) instead of being
dialled for every message. Delivery is at-least-once: a crash before the commit leaves the
recipients leased, and the lease is voided at start-up (or, when another process may
hold leases, expires: the runner renews its leases every third of ``delivery.lease``
while its deliveries run, so only a dead runner's leases expire). A recipient the local agent
delivered is recorded at once (``DeliveryRequest.on_delivered``, through the writer's
group commit), unless it asked for a success DSN (that is made with the message's
results): a crash repeats only the deliveries that were in flight. ``stop`` makes an
``Interruptible`` agent give up its lock waits at once. A queue store that fails (a
database that went away) stops nothing: a delivery whose message cannot be read or whose
results cannot be recorded is tried again when its leases expire, and the loop keeps
looking until the store answers again.

A message this process has just accepted is delivered at once (``insert_and_start``),
beginning while its insert is synced when its body is in memory: the envelope goes to the
next hop meanwhile, the content only once the commit is durable, and nothing is recorded
before (``DeliveryRequest.committed``).

Local recipients are first given to the ``Expander`` (``manager.expansion``), when
there is one: aliases, ``.forward`` and virtual users are resolved there, at delivery
time, and a recipient that resolved to a mailbox, program or file goes to the local
agent without routing.

An LMTP session may wait for the local deliveries of its message (``manager.answers``):
a local recipient whose client still waits is answered by it, and a failure then
becomes that client's reply instead of a bounce (recorded FAILED without a report).

Trusts the agents to return one result per recipient; an agent that raises
defers its recipients. Settings: ``queue.*`` (retry policy), ``delivery.*``.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from mailwright.core.clock import Clock, SystemClock
from mailwright.core.delivery import DeliveryRecipient, DeliveryResult, Outcome
from mailwright.core.durations import hhmmss
from mailwright.core.envelope import Notify
from mailwright.core.headers import HeaderList
from mailwright.core.reply import Reply
from mailwright.delivery.agent import (
    DeliveryAgent,
    DeliveryRequest,
    Interruptible,
    all_results,
    queued,
)
from mailwright.dsn import OriginalMessage, parse_notify
from mailwright.dsn.notices import MessageReports, Notice, Reporter, expired
from mailwright.manager.answers import Answers, Waiting
from mailwright.manager.backoff import RetryPolicy
from mailwright.manager.expansion import LIST_PROTOCOL, Expander, target_hop
from mailwright.manager.fresh import FreshMessages
from mailwright.manager.hoststatus import HostStatus, HostStatusCache
from mailwright.manager.slots import WorkerSlots
from mailwright.observability import maillog, metrics
from mailwright.queue.lease import new_owner
from mailwright.queue.records import fresh_message
from mailwright.queue.store import (
    ClaimDue,
    InsertMessage,
    Lease,
    NewMessage,
    QueueStore,
    RecipientResult,
    RecipientState,
    RecordResults,
    ReleaseLeases,
    RenewLeases,
    SetWarned,
    StoredMessage,
    StoredRecipient,
    StoreError,
)
from mailwright.queue.writer import QueueWriter
from mailwright.routing.nexthop import NextHop, Transport

log = logging.getLogger("mailwright.queue")

# delivered on this host by the local agent, which limits its own concurrency; their
# results can answer a waiting LMTP client
LOCAL_TRANSPORTS = frozenset({Transport.LOCAL, Transport.PIPE, Transport.FILE})
NO_AGENT = Reply.of(451, "4.3.0", "No delivery agent for this destination")
AGENT_FAILED = Reply.of(451, "4.3.0", "Internal error in delivery agent")
NOT_QUEUED = Reply.of(451, "4.3.0", "Not delivered: the message was not queued")
KEPT = Reply.of(250, "2.0.0", "Recipient expanded, queued for delivery")
MAX_IDLE_WAIT = 60.0
# after a failed claim (the queue store, e.g. a database, is away) the loop looks again
# after the first, doubling up to the second: it resumes by itself once the store is back
STORE_RETRY = (0.5, 10.0)
# Messages up to this size are read whole, with their envelope, in the worker thread: the
# event loop then never waits on SQLite (and the GIL after it) to stream them. Larger ones
# are read chunk by chunk as they are sent. Up to 4 x max_concurrency messages are loaded
# at once, so this bounds the memory held for their bodies.
PREFETCH_SIZE = 64 << 10


Router = Callable[[str], NextHop]


@dataclass(slots=True)
class SchedulerSettings:
    max_concurrency: int = 100
    max_per_destination: int = 20
    lease_seconds: float = 900.0
    claim_batch: int = 200
    host_status_timeout: float = 300.0
    reporting_mta: str = "localhost"  # our host name in DSNs
    double_bounce_recipient: str = "postmaster"
    max_return_size: int | None = None  # return only headers of larger originals
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def reporter(self) -> Reporter:
        """What builds this host's reports (bounces, delay warnings, success notices)."""
        return Reporter(self.reporting_mta, self.double_bounce_recipient, self.max_return_size)


@dataclass(frozen=True, slots=True)
class DeliveryParts:
    """What a delivery uses from its start to its end, replaced as a whole on reload."""

    route: Router
    agents: Mapping[Transport, DeliveryAgent]
    settings: SchedulerSettings
    expander: Expander | None = None


def domain_of(address: str) -> str:
    local, at, domain = address.rpartition("@")
    return domain.lower() if at and local else ""


class Scheduler:
    def __init__(
        self,
        store: QueueStore,
        writer: QueueWriter,
        parts: DeliveryParts,
        clock: Clock | None = None,
        hosts: HostStatus | None = None,
        slots: WorkerSlots | None = None,
    ) -> None:
        """Delivers with ``parts`` until ``use`` gives it others; ``hosts``: the
        host-status cache (default: this process's, ``manager.hoststatus``); within
        ``slots`` (one of several workers: the daemon's limits, ``manager.slots``), else
        within the limits of ``parts``' settings."""
        self.store = store
        self.writer = writer
        self._current = parts
        # the parts a delivery started with, set in its task: a reload does not reach it
        self._held: contextvars.ContextVar[DeliveryParts] = contextvars.ContextVar("parts")
        self.clock = clock or SystemClock()
        self.hosts: HostStatus = hosts or HostStatusCache(self.settings.host_status_timeout)
        self.owner = new_owner()  # host:pid:start:n (queue.lease)
        self._heartbeat: asyncio.Task[None] | None = None  # renews leases while delivering
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._global = asyncio.Semaphore(self.settings.max_concurrency)
        self._per_destination: dict[str, asyncio.Semaphore] = {}
        self.slots = slots
        self._idle = asyncio.Event()
        self._idle.set()
        self._held_back = False  # due work may wait for a free slot: wake when one frees
        self._more_due = False  # the last claim was full: claim again before sleeping
        # while the loop looks for the next due time and sleeps: when it will look again
        # (inf until it knows); a retry due earlier than that wakes it
        self._sleep_until = 0.0
        self.answers = Answers()  # LMTP sessions waiting for local deliveries
        self.fresh = FreshMessages()  # just queued here: their first delivery reads no store

    # ---- the parts of a delivery ---------------------------------------------------------
    @property
    def parts(self) -> DeliveryParts:
        """The parts of the delivery running in this task (taken when it started), or the
        current ones outside a delivery."""
        return self._held.get(self._current)

    @property
    def route(self) -> Router:
        return self.parts.route

    @property
    def agents(self) -> Mapping[Transport, DeliveryAgent]:
        return self.parts.agents

    @property
    def expander(self) -> Expander | None:
        return self.parts.expander

    @property
    def settings(self) -> SchedulerSettings:
        return self.parts.settings

    def use(self, parts: DeliveryParts) -> None:
        """New deliveries get ``parts`` (SIGHUP); those in flight keep theirs, and the idle
        pooled connections of the old agents close on their own timers. What the
        scheduler learnt (dead hosts) stays; only its lifetime is the new one's."""
        self._current = parts
        self.hosts.ttl = parts.settings.host_status_timeout

    # ---- control ------------------------------------------------------------------------
    def wake(self) -> None:
        """New mail, a flush, or a freed slot: look at the queue now."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until ``stop``.

        A claim that took fewer recipients than it could took everything due: more work
        comes with a wake (new mail, a freed slot after a full claim, a flush) or when
        the next recipient falls due, so the loop sleeps rather than claim again. A store
        that fails (a database that is away) is looked at again after ``STORE_RETRY``.
        """
        pause = STORE_RETRY[0]
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self._claim_and_dispatch()
                pause = STORE_RETRY[0]
                if self._more_due and not self._at_capacity():
                    continue
                await self._sleep_until_due()
            except StoreError as exc:  # the database is away: look again, never give up
                log.warning("cannot read the queue (looking again in %g s): %s", pause, exc)
                await self._pause(pause)
                pause = min(pause * 2, STORE_RETRY[1])

    async def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if woken (``stop`` wakes)."""
        if self._stopping:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def run_once(self, queue_ids: Sequence[str] | None = None) -> int:
        """Deliver everything due now and wait for the results: one queue run (``queue
        flush``, ``sendmail -q``; tests). With ``queue_ids``, only what is due of those
        messages (a selective run). Returns the number of recipients attempted."""
        selection = None if queue_ids is None else tuple(queue_ids)
        total = 0
        while True:
            claimed, _ = await self._claim_and_dispatch(selection)
            total += claimed
            if not claimed and not self._tasks:
                return total
            if self._tasks:
                await asyncio.wait(set(self._tasks), return_when=asyncio.FIRST_COMPLETED)

    async def deliver_now(self, queue_id: str) -> int:
        """Try what is due of one message now and wait for just its results, recipients
        that alias expansion added included (``sendmail -odi``). Returns the number of
        recipients tried; 0 when all slots are taken (the message then waits its turn)."""
        total = 0
        while True:
            claimed, tasks = await self._claim_and_dispatch((queue_id,))
            if not claimed:
                return total
            total += claimed
            await asyncio.wait(tasks)

    async def wait_idle(self) -> None:
        """Wait until no delivery is in flight (tests, shutdown)."""
        await self._idle.wait()

    async def stop(self, grace: float = 30.0) -> None:
        """Stop claiming; let deliveries in flight finish within ``grace``; give back leases."""
        self._stopping = True
        self.wake()
        for agent in {id(a): a for a in self.agents.values()}.values():
            if isinstance(agent, Interruptible):
                agent.interrupt()  # lock waits end now, not after the grace
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        for agent in self.agents.values():
            try:
                await agent.close()
            except Exception:
                log.exception("closing delivery agent %s", agent.name)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        try:
            await self.writer.execute(ReleaseLeases(self.owner))
        except StoreError as exc:  # e.g. the database is down: the leases expire instead
            log.warning("could not release the delivery leases (they expire): %s", exc)

    async def bounce(self, queue_id: str, reply: Reply) -> bool:
        """Fail every waiting recipient of a message now (``queue bounce``), with one
        bounce to the sender. False when the message is not in the queue."""
        message = await asyncio.to_thread(self.store.get_message, queue_id)
        if message is None:
            return False
        waiting = [r for r in message.recipients if r.state is RecipientState.QUEUED]
        if waiting:
            headers = await asyncio.to_thread(self.store.read_headers, queue_id)
            results: list[tuple[DeliveryRequest | None, DeliveryResult]] = [
                (
                    None,
                    DeliveryResult(r.index, Outcome.FAILED, reply, diagnostic_type="x-mailwright"),
                )
                for r in waiting
            ]
            await self._record(message, headers, waiting, results, self.clock.now())
        return True

    def delivers_locally(self, address: str) -> bool:
        """Is ``address`` delivered (or refused) here rather than handed to a next hop?
        An alias may still expand to remote addresses: it is then answered once expanded."""
        if self.expander is not None and self.expander.resolver.handles(address):
            return True
        return self.route(address).transport not in (Transport.SMTP, Transport.LMTP)

    # ---- the loop -----------------------------------------------------------------------
    def _at_capacity(self) -> bool:
        return self._inflight >= self.settings.max_concurrency * 4

    async def _claim_and_dispatch(
        self, queue_ids: tuple[str, ...] | None = None
    ) -> tuple[int, list[asyncio.Task[None]]]:
        """Claim due recipients (of ``queue_ids`` only, when given) and start delivering
        them: how many, and the tasks delivering them."""
        self._more_due = False
        room = self.settings.max_concurrency * 4 - self._inflight
        if self._stopping:
            return 0, []
        if room <= 0:
            self._held_back = True
            return 0, []
        now = self.clock.now()
        limit = min(room, self.settings.claim_batch)
        claimed = await self.writer.execute(
            ClaimDue(now, limit, self.owner, self.settings.lease_seconds, queue_ids)
        )
        self._more_due = len(claimed) >= limit  # a full claim: more may be due
        if len(claimed) >= room:
            self._held_back = True  # the slots ran out, not the due work
        by_message: dict[str, list[StoredRecipient]] = defaultdict(list)
        for recipient in claimed:
            by_message[recipient.message_id].append(recipient)
        tasks = [self._start(queue_id, recipients) for queue_id, recipients in by_message.items()]
        return len(claimed), tasks

    def _start(
        self,
        queue_id: str,
        recipients: list[StoredRecipient],
        committed: asyncio.Future[bool] | None = None,
    ) -> asyncio.Task[None]:
        self._inflight += len(recipients)
        self._idle.clear()
        task = asyncio.create_task(self._process(queue_id, recipients, committed))
        self._tasks.add(task)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._renew_leases())

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._inflight -= len(recipients)
            if not self._tasks:
                self._idle.set()
            if self._held_back:  # a slot is free for work that waited for one
                self._held_back = False
                self.wake()

        task.add_done_callback(done)
        return task

    async def _renew_leases(self) -> None:
        """The heartbeat: while deliveries run, extend all this runner's leases every
        third of the lease time (one statement for all), so that a delivery longer than
        the lease keeps its recipients and only a dead runner's leases expire."""
        lease = self.settings.lease_seconds
        while self._tasks:
            await asyncio.sleep(lease / 3)
            if not self._tasks:
                return
            try:
                await self.writer.execute(RenewLeases(self.owner, self.clock.now(), lease))
            except StoreError as exc:
                log.warning("cannot renew leases: %s", exc)

    async def _sleep_until_due(self) -> None:
        if self._stopping or self._wakeup.is_set():
            return  # woken meanwhile: claim again at once
        self._sleep_until = math.inf  # a retry recorded from now on may be due before we wake
        try:
            timeout = MAX_IDLE_WAIT
            if not self._at_capacity():
                due = await asyncio.to_thread(self.store.next_due)
                if due is not None:
                    timeout = min(MAX_IDLE_WAIT, max(0.0, due - self.clock.now()))
            if timeout <= 0:
                return
            self._sleep_until = self.clock.now() + timeout
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        finally:
            self._sleep_until = 0.0

    # ---- one message --------------------------------------------------------------------
    async def _process(
        self,
        queue_id: str,
        recipients: list[StoredRecipient],
        committed: asyncio.Future[bool] | None = None,
    ) -> None:
        maillog.current_queue_id.set(queue_id)  # this task's lines are this message's
        self._held.set(self._current)  # this message is delivered with the parts of now
        try:
            await self._deliver_message(queue_id, recipients, committed)
        except StoreError as exc:  # not read or not recorded: tried again when leases expire
            log.warning("%s: queue store failed, delivery tried again later: %s", queue_id, exc)
        except Exception:
            # the recipients keep their lease until it expires: at-least-once
            log.exception("%s: delivery failed unexpectedly", queue_id)

    def _load(self, queue_id: str) -> tuple[StoredMessage, HeaderList, bytes | None] | None:
        """The message, its headers and (when small) its body, in one trip to a worker
        thread (not the event loop's)."""
        message = self.store.get_message(queue_id)
        if message is None:
            return None
        headers = self.store.read_headers(queue_id)
        body = None
        if message.size <= PREFETCH_SIZE:
            body = b"".join(self.store.read_body(queue_id))
        return message, headers, body

    def remember(self, message: NewMessage) -> None:
        """``message`` was just committed by this process: its first delivery may take it
        from memory (``manager.fresh``) rather than read it back from the store."""
        self.fresh.remember(message)

    def lease_new(self, message: NewMessage) -> Lease | None:
        """The lease ``message``'s insert should take (``InsertMessage.lease_owner``) when
        this process is to start its first delivery right after the commit, without a
        claim: the message is due now, not held, and there is room for it. None: the loop
        claims it as usual.

        Saves the claim's write transaction per message when mail arrives a few at a time.
        The insert is submitted to the writer before any later ``stop`` submits its
        ``ReleaseLeases``, which then gives such a lease back if the delivery never starts.
        """
        if self._stopping or message.hold_reason is not None or message.first_attempt is not None:
            return None
        if self._inflight + len(message.envelope.recipients) > self.settings.max_concurrency * 4:
            return None
        return (self.owner, self.clock.now() + self.settings.lease_seconds)

    def start_leased(self, message: NewMessage, lease: Lease) -> None:
        """``message`` was committed with ``lease`` (``lease_new``): deliver it now."""
        if self._stopping:
            return  # ``stop`` gives the lease back
        stored = self.fresh.remember(message, lease) or fresh_message(message, lease)
        self._start(message.queue_id, list(stored.recipients))

    async def insert_and_start(self, message: NewMessage, lease: Lease) -> None:
        """Insert ``message`` with ``lease`` (``lease_new``) and deliver it at once;
        returns (or raises, as ``QueueWriter.execute``) once the insert is durable.

        When its body is in memory (``FreshMessages.keeps``: the store has nothing to
        read before the commit), the delivery begins as soon as the insert's transaction
        is in, while the log is synced (the writer thread then needs no GIL): a lone
        message's next hop has the envelope by the time the commit is durable, and the
        content follows the client's 250 at once instead of two round trips after it.
        Nothing but the envelope leaves before the commit is durable
        (``DeliveryRequest.committed``, ``delivery.agent``), and nothing is recorded or
        written for the message before it: a delivery whose insert then fails ends without
        effect. Otherwise the delivery starts after the commit (``start_leased``).
        """
        op = InsertMessage(message, *lease)
        stored = None
        if not self._stopping and self.fresh.keeps(message):
            stored = self.fresh.remember(message, lease)
        if stored is None:
            await self.writer.execute(op)
            self.start_leased(message, lease)
            return
        queue_id, recipients = message.queue_id, list(stored.recipients)
        committed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        begun = False

        def begin() -> None:
            nonlocal begun
            if not begun and not self._stopping:  # stopping: ``stop`` gives the lease back
                begun = True
                self._start(queue_id, recipients, committed)

        try:
            await self.writer.submit(op, on_applied=begin)  # before any op of the delivery
        except BaseException:
            committed.set_result(False)
            raise
        else:
            begin()  # done already: the writer calls it before it answers
            committed.set_result(True)
        finally:
            if not begun:
                self.fresh.take(queue_id)  # nobody else will

    async def _deliver_message(
        self,
        queue_id: str,
        recipients: list[StoredRecipient],
        committed: asyncio.Future[bool] | None = None,
    ) -> None:
        loaded = self.fresh.take(queue_id)
        if loaded is None:
            if not await queued(committed):
                return  # an early start whose insert failed: not in the queue
            loaded = await asyncio.to_thread(self._load, queue_id)
        if loaded is None:
            return  # deleted meanwhile
        message, headers, body = loaded
        early: list[tuple[DeliveryRequest | None, DeliveryResult]] = []
        routable = recipients
        if self.expander is not None and self.expander.resolves(recipients):
            if not await queued(committed):
                return  # expanding writes to the queue: not before the insert
            prepared = await self.expander.prepare(message, headers, recipients)
            if prepared.expanded:
                self.wake()  # the new recipients are due now
            early = [(None, result) for _, result in prepared.failed]
            routable = prepared.deliver
            left = {r.index for r in prepared.deliver} | {r.index for r, _ in prepared.failed}
            gone = [(r.index, r.address) for r in recipients if r.index not in left]
            self.answers.kept(queue_id, gone, KEPT)  # an alias: its new recipients are ours
            recipients = [*prepared.deliver, *(r for r, _ in prepared.failed)]
            if not recipients:
                return
        requests, errors = self._requests(message, headers, routable, body, committed)
        on_delivered = self._recorder(message, recipients)
        for request in requests:
            request.on_delivered = on_delivered
        errors = [*early, *errors]
        started = self.clock.now()
        if len(requests) == 1:  # the usual case: no task of its own, no loop iteration
            batches = [await self._deliver(requests[0])]
        else:
            batches = await asyncio.gather(*(self._deliver(r) for r in requests))
        results = [*errors]
        for request, batch in zip(requests, batches, strict=True):
            results.extend((request, r) for r in batch)
        if not await queued(committed):
            return  # an early start whose insert failed: nothing happened to record
        await self._record(message, headers, recipients, results, started)

    def _requests(
        self,
        message: StoredMessage,
        headers: HeaderList,
        recipients: list[StoredRecipient],
        body: bytes | None = None,
        committed: asyncio.Future[bool] | None = None,
    ) -> tuple[list[DeliveryRequest], list[tuple[DeliveryRequest | None, DeliveryResult]]]:
        groups: dict[str, tuple[NextHop, list[StoredRecipient]]] = {}
        errors: list[tuple[DeliveryRequest | None, DeliveryResult]] = []
        for recipient in recipients:
            hop = self._hop(recipient)
            if hop.transport is Transport.ERROR:
                reply = hop.error or Reply.of(550, "5.1.2", "Mail for this domain is refused")
                outcome = Outcome.FAILED if reply.permanent else Outcome.DEFERRED
                errors.append(
                    (
                        None,
                        DeliveryResult(
                            recipient.index, outcome, reply, diagnostic_type="x-mailwright"
                        ),
                    )
                )
                continue
            groups.setdefault(hop.key, (hop, []))[1].append(recipient)
        size = message.size
        queue_id = message.queue_id
        # sent on by a list, an alias or a .forward (delivery.arcseal seals such mail)
        forwarded = message.origin.protocol == LIST_PROTOCOL or any(
            r.state is RecipientState.EXPANDED for r in message.recipients
        )

        def read_body() -> Iterator[bytes]:
            if body is None:
                return self.store.read_body(queue_id)
            return iter((body,) if body else ())

        requests = [
            DeliveryRequest(
                queue_id=queue_id,
                sender=message.envelope.sender_text,
                params=message.envelope.params,
                recipients=[
                    DeliveryRecipient(r.index, r.address, r.orcpt, parse_notify(r.notify), r.target)
                    for r in rcpts
                ],
                next_hop=hop,
                headers=headers,
                body=read_body,
                size=size,
                received_at=message.received_at,
                forwarded=forwarded,
                committed=committed,
            )
            for hop, rcpts in groups.values()
        ]
        return requests, errors

    def _hop(self, recipient: StoredRecipient) -> NextHop:
        if recipient.target is not None:
            return target_hop(recipient.target)
        return self.route(recipient.address)

    def _semaphore(self, key: str) -> asyncio.Semaphore:
        sem = self._per_destination.get(key)
        if sem is None:
            sem = self._per_destination[key] = asyncio.Semaphore(self.settings.max_per_destination)
        return sem

    async def _deliver(self, request: DeliveryRequest) -> list[DeliveryResult]:
        hop = request.next_hop
        dead = self.hosts.dead(hop.key, self.clock.now())
        if dead is not None:
            reply = Reply.of(
                dead.reply.code, dead.reply.status, f"{dead.reply.text} (host status cached)"
            )
            return [
                DeliveryResult(r.index, Outcome.DEFERRED, reply, dead.remote_mta)
                for r in request.recipients
            ]
        agent = self.agents.get(hop.transport)
        if agent is None:
            return [DeliveryResult(r.index, Outcome.DEFERRED, NO_AGENT) for r in request.recipients]
        # an early start's commit: the SMTP and LMTP agents wait for it after the envelope
        waits_itself = hop.transport in (Transport.SMTP, Transport.LMTP)
        if not waits_itself and not await queued(request.committed):
            return all_results(request, Outcome.DEFERRED, NOT_QUEUED)
        if hop.transport in LOCAL_TRANSPORTS:
            # the local agent limits itself, per mailbox and in all: a delivery waiting
            # for a locked mailbox must not hold a slot that other mailboxes need
            results = await self._run_agent(agent, request)
        elif self.slots is not None:  # one of several workers
            async with self.slots.hold(hop.key):
                results = await self._run_agent(agent, request)
        else:
            async with self._global, self._semaphore(hop.key):
                results = await self._run_agent(agent, request)
        self._note_host_status(hop, results)
        return results

    async def _run_agent(
        self, agent: DeliveryAgent, request: DeliveryRequest
    ) -> list[DeliveryResult]:
        log.debug(
            "%s: delivering to %s for %d recipient(s) via %s",
            request.queue_id,
            request.next_hop,
            len(request.recipients),
            agent.name,
        )
        try:
            return await agent.deliver(request)
        except Exception:
            log.exception("%s: agent %s failed", request.queue_id, agent.name)
            return [
                DeliveryResult(r.index, Outcome.DEFERRED, AGENT_FAILED) for r in request.recipients
            ]

    def _note_host_status(self, hop: NextHop, results: list[DeliveryResult]) -> None:
        if hop.transport not in (Transport.SMTP, Transport.LMTP):
            return
        connection_failure = results and all(
            r.outcome is Outcome.DEFERRED and (r.reply.status or "").startswith("4.4.")
            for r in results
        )
        if connection_failure:
            first = results[0]
            self.hosts.mark_dead(hop.key, first.reply, first.remote_mta, self.clock.now())
        else:
            self.hosts.mark_alive(hop.key)

    # ---- results ------------------------------------------------------------------------
    async def _record(
        self,
        message: StoredMessage,
        headers: HeaderList,
        recipients: list[StoredRecipient],
        results: list[tuple[DeliveryRequest | None, DeliveryResult]],
        started: float,
    ) -> None:
        now = self.clock.now()
        policy = self.settings.retry
        by_index = {r.index: r for r in recipients}
        records: list[RecipientResult] = []
        reports = MessageReports()
        answering: list[tuple[Waiting, StoredRecipient, DeliveryResult]] = []
        for request, attempt in results:
            recipient = by_index[attempt.index]
            state, result = self._final_state(message, recipient, attempt, now)
            waiting = self._waiting_client(message.queue_id, recipient, request, attempt)
            if waiting is not None:
                answering.append((waiting, recipient, attempt))
                if state is not RecipientState.DELIVERED:
                    state = RecipientState.FAILED  # the LMTP client's now: no bounce
            next_attempt = 0.0
            if state is RecipientState.QUEUED:
                next_attempt = policy.next_attempt(recipient.attempts + 1, now, message.received_at)
            records.append(
                RecipientResult(
                    queue_id=message.queue_id,
                    index=result.index,
                    state=state,
                    next_attempt=next_attempt,
                    attempted_at=now,
                    status=result.reply.status,
                    reply=result.reply.text,
                    remote_mta=result.remote_mta or None,
                )
            )
            self._log_attempt(message, recipient, result, request, started, now)
            transport = request.next_hop.transport.value if request is not None else None
            metrics.recorded(message, recipient, state, result, transport, now)
            if waiting is None or state is RecipientState.DELIVERED:
                # final delivery here (a DSN-capable SMTP hop reports itself)
                here = request is not None and request.next_hop.transport is not Transport.SMTP
                reports.add(recipient, result, state, final_here=here, now=now)
        notices, warned = self._notices(message, headers, reports, now)
        new_messages = [n.message for n in notices]
        try:
            # unless an LMTP client waits for them, they may ride with the next commit
            op = RecordResults(records, new_messages)
            await self.writer.execute(op, deferrable=not answering)
        except BaseException:
            for waiting, _, taken in answering:  # nothing recorded: the recipients stay ours
                waiting.settle(taken.index, accepted(message.queue_id))
            raise
        self._answer(message.queue_id, answering)
        retries = [r.next_attempt for r in records if r.state is RecipientState.QUEUED]
        if retries and min(retries) < self._sleep_until:
            self.wake()  # the loop sleeps past this retry
        if warned:
            await self.writer.execute(SetWarned(message.queue_id))
        for notice in notices:
            maillog.dsn(message.queue_id, notice.message.queue_id, notice.reason, notice.to)
        if new_messages:
            self.wake()

    def _waiting_client(
        self,
        queue_id: str,
        recipient: StoredRecipient,
        request: DeliveryRequest | None,
        result: DeliveryResult,
    ) -> Waiting | None:
        """The LMTP client waiting for this local result, if any (it answers it now)."""
        if request is not None and request.next_hop.transport not in LOCAL_TRANSPORTS:
            return None
        if result.outcome is Outcome.RELAYED:
            return None
        return self.answers.take(queue_id, result.index, recipient.address)

    def _answer(
        self, queue_id: str, answering: list[tuple[Waiting, StoredRecipient, DeliveryResult]]
    ) -> None:
        for waiting, recipient, result in answering:
            if result.outcome is Outcome.DELIVERED:
                waiting.settle(result.index, Reply.of(250, "2.0.0", f"{queue_id} Delivered"))
                continue
            reply = result.reply
            if reply.code < 400:  # a failure must read as one
                reply = Reply.of(451, "4.3.0", reply.text)
            waiting.settle(result.index, reply)
            maillog.emit(
                queue_id,
                to=f"<{recipient.address}>",
                stat=f"returned to the LMTP client (no bounce): {reply.code} {reply.text}",
            )

    def _recorder(
        self, message: StoredMessage, recipients: list[StoredRecipient]
    ) -> Callable[[DeliveryResult], Awaitable[None]]:
        """What records one delivered recipient as soon as its delivery is durable; the
        message's full record later finds it done (and leaves it so)."""
        by_index = {r.index: r for r in recipients}

        async def delivered(result: DeliveryResult) -> None:
            recipient = by_index.get(result.index)
            if recipient is None or Notify.SUCCESS in (parse_notify(recipient.notify) or ()):
                return  # its success DSN is made with the message's results
            record = RecipientResult(
                queue_id=message.queue_id,
                index=result.index,
                state=RecipientState.DELIVERED,
                next_attempt=0.0,
                attempted_at=self.clock.now(),
                status=result.reply.status,
                reply=result.reply.text,
                remote_mta=result.remote_mta or None,
            )
            try:
                await self.writer.execute(RecordResults([record]))
            except StoreError as exc:  # recorded with the others, or tried again
                log.warning(
                    "%s: cannot record <%s> yet: %s", message.queue_id, recipient.address, exc
                )

        return delivered

    def _final_state(
        self, message: StoredMessage, recipient: StoredRecipient, result: DeliveryResult, now: float
    ) -> tuple[RecipientState, DeliveryResult]:
        if result.outcome is Outcome.DELIVERED:
            return RecipientState.DELIVERED, result
        if result.outcome is Outcome.RELAYED:
            return RecipientState.RELAYED, result
        if result.outcome is Outcome.FAILED:
            return RecipientState.FAILED, result
        if self.settings.retry.expired(message.received_at, now):
            return RecipientState.FAILED, expired(result)
        return RecipientState.QUEUED, result

    def _notices(
        self,
        message: StoredMessage,
        headers: HeaderList,
        reports: MessageReports,
        now: float,
    ) -> tuple[list[Notice], bool]:
        """The reports to queue, and whether a delay warning is among those due (made
        once per message, when the retry policy says it is time)."""
        if not reports.found:
            return [], False  # the usual case: nothing to report on (and nothing to warn of)
        policy = self.settings.retry
        warn = not message.warned and policy.warning_due(message.received_at, now)
        until = message.received_at + policy.max_lifetime if warn else None
        original = OriginalMessage.from_stored(
            message, headers, lambda: self.store.read_body(message.queue_id)
        )
        notices = reports.notices(self.settings.reporter, original, now, warn_until=until)
        return notices, warn and reports.delayed

    def _log_attempt(
        self,
        message: StoredMessage,
        recipient: StoredRecipient,
        result: DeliveryResult,
        request: DeliveryRequest | None,
        started: float,
        now: float,
    ) -> None:
        if not maillog.log.isEnabledFor(logging.INFO):
            return  # the fields cost more than the rest of recording a result; nobody sees them
        agent = self.agents.get(request.next_hop.transport) if request else None
        reply = result.reply
        if result.outcome in (Outcome.DELIVERED, Outcome.RELAYED):
            stat = f"Sent ({reply.text})"
        elif result.outcome is Outcome.DEFERRED and reply.status != "4.4.7":
            stat = f"Deferred: {reply.code} {reply.status or ''} {reply.text}".replace("  ", " ")
        else:
            stat = f"{reply.code} {reply.status or ''} {reply.text}".replace("  ", " ")
        target = recipient.target
        maillog.emit(
            message.queue_id,
            to=str(target)
            if target and target.mailer.value in ("prog", "file")
            else f"<{recipient.address}>",
            ctladdr=f"<{recipient.address}>"
            if target and target.mailer.value in ("prog", "file")
            else None,
            delay=hhmmss(now - message.received_at),
            xdelay=hhmmss(now - started),
            mailer=(target.mailer.log_name if target else agent.name) if agent else "error",
            relay=result.remote_mta or (str(request.next_hop) if request else None),
            dsn=reply.status,
            tls=result.details.get("tls_check"),  # DANE (delivery.dane): verified or failed
            stat=stat,
        )


def accepted(queue_id: str) -> Reply:
    """The LMTP reply for a recipient that stays in our queue."""
    return Reply.of(250, "2.0.0", f"{queue_id} Message accepted for delivery")
