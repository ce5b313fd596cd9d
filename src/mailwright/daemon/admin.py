"""Queue administration: hold, release, delete, bounce and flush, whoever asks for them.

One code path for ``mailwright queue ...`` and the status page's buttons. A running
daemon does the work itself (the control socket's ``admin`` request, ``Monitor.act``),
through its writer, the one writer of queue state; without a daemon the command does it
in its own process on its own store (``cli.queue``). What is selected and which store
operation each action is live in ``queue.admin``, shared by both paths. Either way each
message acted on gets one mail log line, Sendmail style, saying what was done, by whom
and through which interface::

    01JD3K7Q2M4XK9A: admin=hold, by=root, via=mailwright queue, reason=spam?
    01JD3K7Q2M4XK9A: admin=flush, by=root, via=mailwright queue, stat=on hold, not scheduled

and one count in ``mailwright_admin_actions_total{action,via}`` (a daemon's metric: a
command that ran without a daemon only logs). A bounce's own ``QID: QID2: DSN: reason``
line comes from the scheduler that makes it. A flush never schedules a held message: it
says so, and the message waits for ``release``.

Trusts its caller for who it is (``Actor``: the control socket takes it from the peer's
credentials). Reads no settings.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mailwright.core.reply import Reply
from mailwright.observability import maillog, metrics
from mailwright.queue.admin import (
    BOUNCE_REASON,
    HOLD_REASON,
    Actor,
    AdminResult,
    Selection,
    admin_operation,
    flush_plan,
    flush_request,
)
from mailwright.queue.store import (
    QueueStore,
    RecipientState,
    StoredMessage,
)
from mailwright.queue.writer import QueueWriter

Bounce = Callable[[str, Reply], Awaitable[bool]]  # the scheduler's bounce
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]  # "wake" or "flush" the daemon


def _waiting(message: StoredMessage) -> int:
    return sum(r.state is RecipientState.QUEUED for r in message.recipients)


@dataclass(eq=False, repr=False)  # a service, equal only to itself
class Admin:
    """The actions on one store through one writer; ``notify`` tells the daemon what
    changed (``wake``) or asks for a queue run (``flush``); ``bounce`` is a scheduler's."""

    store: QueueStore
    writer: QueueWriter
    notify: Notify
    bounce: Bounce | None = None

    async def act(
        self, action: str, selection: Selection, actor: Actor, reason: str = ""
    ) -> AdminResult:
        if action == "flush":
            return await self._flush(selection, actor)
        if action == "bounce":
            return await self._bounce(selection.ids, actor, reason or BOUNCE_REASON)
        make_op = admin_operation(action, reason or HOLD_REASON)  # ValueError: unknown
        result = AdminResult(action)
        for queue_id in selection.ids:
            if await self.writer.execute(make_op(queue_id)):
                result.done.append(queue_id)
                held_why = (reason or HOLD_REASON) if action == "hold" else None
                _record(queue_id, action, actor, reason=held_why)
            else:
                result.missing.append(queue_id)
        await self.notify("wake", {})
        return result

    async def _bounce(self, ids: Sequence[str], actor: Actor, reason: str) -> AdminResult:
        if self.bounce is None:
            raise ValueError("bounce needs a scheduler")
        reply = Reply.of(550, "5.0.0", reason)
        result = AdminResult("bounce")
        for queue_id in ids:
            if await asyncio.to_thread(self.store.get_message, queue_id) is None:
                result.missing.append(queue_id)
                continue
            _record(queue_id, "bounce", actor, reason=reason)  # before the DSN line it causes
            if await self.bounce(queue_id, reply):
                result.done.append(queue_id)
            else:
                result.missing.append(queue_id)  # gone in between
        await self.notify("wake", {})
        return result

    async def _flush(self, selection: Selection, actor: Actor) -> AdminResult:
        plan = await asyncio.to_thread(flush_plan, self.store, selection, time.time())
        count = await self.writer.execute(plan.op) if plan.op is not None else 0
        result = AdminResult("flush", held=[m.queue_id for m in plan.held])
        # a full run also made the held messages' recipients due: they are not scheduled
        result.scheduled = count - (sum(map(_waiting, plan.held)) if selection.empty else 0)
        result.scheduled = max(result.scheduled, 0)
        if selection.empty:
            _record(None, "flush", actor, scope="queue", scheduled=result.scheduled)
        for queue_id in plan.chosen:
            result.done.append(queue_id)
            _record(queue_id, "flush", actor)
        for queue_id in result.held:
            _record(queue_id, "flush", actor, stat="on hold, not scheduled")
        found = {m.queue_id for m in plan.held} | set(plan.chosen)
        result.missing = [i for i in selection.ids if i not in found]
        await self.notify("flush", flush_request(plan.op))
        return result


def _record(queue_id: str | None, action: str, actor: Actor, **fields: object) -> None:
    maillog.admin(queue_id, action, by=actor.by, via=actor.via, **fields)
    metrics.admin_action(action, actor.via)
