"""The single writer of queue state, with group commit.

``QueueWriter`` runs one thread that owns the store's write side. Callers hand it
operations (``queue.store`` dataclasses) with ``await execute(op)`` from asyncio code or
``execute_sync(op)`` from plain threads (CLI tools). The thread waits for the first
request, then takes every request already waiting, up to ``max_ops`` operations or
``max_body_bytes`` of message bodies, and applies them with one ``apply_batch``: all
messages that arrived while the previous commit ran share one fsync.

A caller's call returns only after the commit holding its op has returned, so "250"
after ``execute`` is a durable promise. An op that fails alone raises in its caller only;
a failed commit raises the same ``StoreError`` in every caller of that batch. Once
submitted, an op is applied even if its caller stops waiting (cancellation): the caller
must keep the op's body readable until then.

With a store that can commit without waiting for the disk (``SyncDeferring``: SQLite,
whose WAL is synced apart from the commit), a batch's callers are answered only after
the store's ``Sync`` has returned. When more requests are already waiting, the thread
hands the batch to a second thread, the sync stage, and commits the next batch while
the disk works: the stage calls the ``Sync`` once for everything handed to it so far
(one ``fdatasync`` covers every commit before it), then answers those batches. When
nothing waits, the writer thread syncs and answers itself, without the hand-over.

An op submitted as ``deferrable`` (a delivery's results, which no client waits for) may
wait up to ``defer_seconds`` for the next op that is not, and share its commit: a batch
of deferrable ops only starts when something urgent arrives, the first of them has
waited long enough, or the batch is full. The next message's insert then does not queue
behind a transaction and an fsync of their own, and one fsync makes both durable. Until
then the deferrable ops are held on the submitting side (a timer of the caller's event
loop hands them over when the wait is over): waking the writer thread for an op it may
not start yet costs a thread switch and a hand-over of the GIL per relayed message.
Only a new message finding the writer thread idle leaves them held, on SQLite: its
client waits for that commit alone (relaying one message at a time, the previous
message's results cost its 250 0.07 ms), and the held ops follow at their timer; when the
writer is busy they ride along as before, since the new message waits for the batch in
progress anyway. Any other urgent op takes them along first, so no op overtakes results
it might depend on (a new message depends on none).

A caller may ask to hear (``on_applied``) when its op's transaction is in, before it is
durable: a delivery that may begin then but must not hand anything on before the
answer (``Scheduler.insert_and_start``) works while the log is synced.

Both threads run under Linux's ``SCHED_BATCH`` policy: woken (a request, the end of an
``fdatasync``), they do not preempt the event loop thread of their process, which holds
the GIL they need and, with ``server.cpu_affinity``, shares their CPU; they run when it
waits. Preempting it bought nothing but two context switches, since the woken thread
then waited for the GIL anyway: two workers relaying spent a tenth more CPU per message.

Trusts the store to honour ``apply_batch``'s contract. Settings read: none (the daemon
may pass ``queue.batch_max_ops`` and ``queue.batch_max_bytes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from mailwright.core import process
from mailwright.queue.store import (
    InsertMessage,
    Op,
    QueueStore,
    RecordResults,
    StoreError,
    Sync,
    SyncDeferring,
)

T = TypeVar("T")

DEFAULT_MAX_OPS = 512
DEFAULT_MAX_BODY_BYTES = 64 << 20
# how long a deferrable op may wait for an urgent one to share its commit
DEFAULT_DEFER_SECONDS = 0.05


@dataclass(slots=True)
class _Request:
    op: Op[Any]
    body_bytes: int
    # exactly one of these is set: the asyncio future of an awaiting coroutine and its
    # loop, or the event a synchronous caller waits on
    future: asyncio.Future[Any] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    done: threading.Event | None = None
    outcome: object = None  # the result, or the exception to raise
    failed: bool = False
    deferrable_until: float | None = None  # monotonic time; None: urgent
    on_applied: Callable[[], None] | None = None  # see ``submit``


@dataclass(slots=True)
class WriterStats:
    commits: int = 0  # batches committed
    failed_batches: int = 0  # batches whose commit (or whole transaction) failed
    ops: int = 0  # operations in committed batches
    largest_batch: int = 0


_STOP = object()


_Committed = tuple[list[_Request], Sync]  # a batch committed, and what makes it durable


@dataclass(slots=True)
class _Inbox:
    """The request queue plus the one request that did not fit the last batch."""

    queue: queue.SimpleQueue[_Request | object] = field(default_factory=queue.SimpleQueue)
    carried: _Request | None = None


class QueueWriter:
    """Serialises every queue write onto one thread and commits them in groups."""

    def __init__(
        self,
        store: QueueStore,
        *,
        max_ops: int = DEFAULT_MAX_OPS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        defer_seconds: float = DEFAULT_DEFER_SECONDS,
    ) -> None:
        self._store = store
        self._max_ops = max_ops
        self._max_body_bytes = max_body_bytes
        self._defer_seconds = defer_seconds
        self._inbox = _Inbox()
        self._lock = threading.Lock()  # orders submissions against stop()
        self._thread: threading.Thread | None = None
        self._unsynced = store if isinstance(store, SyncDeferring) else None
        self._syncing: queue.SimpleQueue[_Committed | object] = queue.SimpleQueue()
        self._sync_thread: threading.Thread | None = None
        self._accepting = False
        self._idle = False  # the writer thread waits for work: nothing being committed
        # deferrable requests not handed to the writer thread yet (under _lock), their
        # count of body bytes, and the timer that hands them over when their wait is over
        self._held: list[_Request] = []
        self._held_bytes = 0
        self._held_timer: asyncio.TimerHandle | None = None
        self._held_timer_loop: asyncio.AbstractEventLoop | None = None
        self.stats = WriterStats()

    @property
    def commits(self) -> int:
        return self.stats.commits

    # ---- life cycle -------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("queue writer already started")
            self._thread = threading.Thread(target=self._run, name="queue-writer", daemon=True)
            if self._unsynced is not None:
                self._sync_thread = threading.Thread(
                    target=self._sync_stage, name="queue-sync", daemon=True
                )
                self._sync_thread.start()
            self._accepting = True
            self._thread.start()

    def stop(self) -> None:
        """Apply everything already submitted, then end the thread; idempotent."""
        with self._lock:
            if self._accepting:
                self._accepting = False
                self._hand_over_held()
                self._inbox.queue.put(_STOP)
            threads = (self._thread, self._sync_thread)
        for thread in threads:
            if thread is not None and thread is not threading.current_thread():
                thread.join()

    # ---- submitting -------------------------------------------------------------------

    async def execute(self, op: Op[T], *, deferrable: bool = False) -> T:
        """Apply ``op``; returns its result once the commit containing it is durable.

        ``deferrable``: nobody waits for it but the caller, which may wait up to
        ``defer_seconds`` longer; the op then rides with the next urgent op's commit.
        """
        return await self.submit(op, deferrable=deferrable)

    def submit(
        self,
        op: Op[T],
        *,
        deferrable: bool = False,
        on_applied: Callable[[], None] | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``op`` now; the future resolves after the commit that contains it.

        ``on_applied`` is called in the caller's loop once the op's transaction has
        committed without a failure of its own, before the future resolves: with SQLite
        while the log is being synced, so not yet durable (the sync may still fail the
        future); never for an op or a transaction that failed.
        Call from a running event loop. Cancelling the future does not withdraw the op.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        request = _Request(op, _body_bytes(op), future=future, loop=loop, on_applied=on_applied)
        if deferrable:
            request.deferrable_until = time.monotonic() + self._defer_seconds
            self._hold(request, loop)
        else:
            self._submit(request)
        return future

    def execute_sync(self, op: Op[T]) -> T:
        """``execute`` for callers without an event loop; blocks the calling thread."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("execute_sync called from the queue writer thread")
        request = _Request(op, _body_bytes(op), done=threading.Event())
        self._submit(request)
        assert request.done is not None
        request.done.wait()
        if request.failed:
            raise cast(BaseException, request.outcome)
        return cast(T, request.outcome)

    def _submit(self, request: _Request) -> None:
        with self._lock:
            if not self._accepting:
                raise RuntimeError("queue writer is not running")
            # a new message may leave held results behind (see above) only on SQLite (the
            # store that syncs apart), where they cost its commit statements of their own; on
            # PostgreSQL a batch is one round trip, and while the database is away each batch
            # waits for the connection pool: results committed apart made the claims behind
            # them wait 30 s and more
            local = self._unsynced is not None
            if not (local and self._idle and isinstance(request.op, InsertMessage)):
                self._hand_over_held()  # in order: the held ops ride with this one
            # else a client waits for this commit alone; the held ops go at their timer
            self._inbox.queue.put(request)

    def _hold(self, request: _Request, loop: asyncio.AbstractEventLoop) -> None:
        """Keep a deferrable request until an urgent one comes, its wait is over or the
        held ones would fill a batch."""
        with self._lock:
            if not self._accepting:
                raise RuntimeError("queue writer is not running")
            self._held.append(request)
            self._held_bytes += request.body_bytes
            if len(self._held) >= self._max_ops or self._held_bytes >= self._max_body_bytes:
                self._hand_over_held()
            elif self._held_timer is None or self._held_timer_loop is not loop:
                # (a timer of another loop may never fire: one that ``asyncio.run`` ended
                # while an urgent op had taken its ops along, as a queue run's may)
                self._arm(loop, self._defer_seconds)

    def _arm(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        # one timer at a time, not one per op: when it fires it hands over what has
        # waited long enough and is armed again for the rest (the caller holds _lock)
        self._held_timer = loop.call_later(delay, self._held_wait_over, loop)
        self._held_timer_loop = loop

    def _held_wait_over(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if loop is not self._held_timer_loop:
                return  # replaced by a timer of the loop that holds ops now
            self._held_timer = None
            if not self._held:
                return  # an urgent op took them along
            until = self._held[0].deferrable_until
            left = 0.0 if until is None else until - time.monotonic()
            if left > 0.001:
                self._arm(loop, left)
            else:
                self._hand_over_held()

    def _hand_over_held(self) -> None:
        """To the writer thread, in the order submitted (the caller holds ``_lock``)."""
        held, self._held, self._held_bytes = self._held, [], 0
        for request in held:
            self._inbox.queue.put(request)

    # ---- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        process.run_as_batch()
        try:
            while True:
                batch, stop = self._next_batch()
                if batch:
                    self._apply(batch)
                if stop:
                    return
        finally:
            self._syncing.put(_STOP)  # the sync stage answers what it holds, then ends

    def _next_batch(self) -> tuple[list[_Request], bool]:
        """Block for one request, then take what is already waiting, within the bounds;
        while the batch holds only deferrable requests, wait for an urgent one until the
        first of them may wait no longer."""
        inbox = self._inbox
        first: _Request | object | None = inbox.carried
        if first is None:
            self._idle = True
            first = inbox.queue.get()
            self._idle = False
        inbox.carried = None
        if first is _STOP:
            return [], True
        assert isinstance(first, _Request)
        batch, body_bytes = [first], first.body_bytes
        until = first.deferrable_until
        while len(batch) < self._max_ops:
            try:
                if until is None:
                    item = inbox.queue.get_nowait()
                else:
                    item = inbox.queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP:
                return batch, True
            assert isinstance(item, _Request)
            if body_bytes + item.body_bytes > self._max_body_bytes:
                inbox.carried = item
                break
            batch.append(item)
            body_bytes += item.body_bytes
            if item.deferrable_until is None:
                until = None  # urgent: commit with what is already waiting
        return batch, False

    def _apply(self, batch: list[_Request]) -> None:
        sync: Sync | None = None
        try:
            ops = [r.op for r in batch]
            if self._unsynced is not None:
                results, sync = self._unsynced.apply_batch_unsynced(ops)
            else:
                results = self._store.apply_batch(ops)
            if len(results) != len(batch):
                raise RuntimeError(f"store gave {len(results)} results for {len(batch)} ops")
        except Exception as exc:  # the whole batch failed: every caller hears it
            _fail(batch, exc)
            self.stats.failed_batches += 1
        else:
            self.stats.commits += 1
            self.stats.ops += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            for request, result in zip(batch, results, strict=True):
                request.failed = isinstance(result, BaseException)
                request.outcome = result
            _announce(batch)
        if sync is None:
            self._answer(batch)
        elif self._inbox.carried is None and self._inbox.queue.empty():
            self._sync_and_answer([(batch, sync)])  # nothing to commit meanwhile
        else:
            self._syncing.put((batch, sync))

    def _sync_stage(self) -> None:
        """The second thread: sync what the writer committed, then answer its callers."""
        process.run_as_batch()
        while True:
            item = self._syncing.get()
            held: list[_Committed] = []
            while item is not _STOP:
                held.append(cast(_Committed, item))
                try:
                    item = self._syncing.get_nowait()
                except queue.Empty:
                    break
            if held:
                self._sync_and_answer(held)
            if item is _STOP:
                return

    def _sync_and_answer(self, committed: list[_Committed]) -> None:
        """One sync, the last one handed over: it covers every commit before it too."""
        try:
            committed[-1][1]()
        except Exception as exc:  # not durable: nobody may hear a success
            error = exc if isinstance(exc, StoreError) else StoreError(f"queue sync: {exc}")
            for batch, _ in committed:
                _fail(batch, error)
            self.stats.failed_batches += len(committed)
        for batch, _ in committed:
            self._answer(batch)

    def _answer(self, batch: list[_Request]) -> None:
        """Wake the callers: one call_soon_threadsafe per event loop, not per request."""
        per_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
        for request in batch:
            if request.done is not None:
                request.done.set()
            elif request.loop is not None:
                per_loop.setdefault(request.loop, []).append(request)
        for loop, requests in per_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve_all, requests)


def _announce(batch: list[_Request]) -> None:
    """Call the ``on_applied`` of the batch's ops that did not fail: one
    call_soon_threadsafe per event loop."""
    per_loop: dict[asyncio.AbstractEventLoop, list[Callable[[], None]]] = {}
    for request in batch:
        if request.on_applied is not None and not request.failed and request.loop is not None:
            per_loop.setdefault(request.loop, []).append(request.on_applied)
    for loop, callbacks in per_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_call_all, callbacks)


def _call_all(callbacks: list[Callable[[], None]]) -> None:
    """Runs in the callers' event loop."""
    for callback in callbacks:
        callback()


def _fail(batch: list[_Request], error: Exception) -> None:
    for request in batch:
        request.outcome, request.failed = error, True


def _resolve_all(requests: list[_Request]) -> None:
    """Runs in the callers' event loop."""
    for request in requests:
        future = request.future
        if future is None or future.done():  # cancelled while we committed
            continue
        if request.failed:
            future.set_exception(cast(BaseException, request.outcome))
        else:
            future.set_result(request.outcome)


def _body_bytes(op: Op[Any]) -> int:
    """How much message body ``op`` writes (the batch bound counts it)."""
    if isinstance(op, InsertMessage):
        return op.message.body.size
    if isinstance(op, RecordResults):
        return sum(m.body.size for m in op.new_messages)
    return 0
