"""Queue administration: hold, release, delete, bounce and flush, whoever asks for them.

One code path for ``mailwright queue ...`` and the status page's buttons. A running
daemon does the work itself (the control socket's ``admin`` request, ``Monitor.act``),
through its writer, the one writer of queue state; without a daemon the command does it
in its own process on its own store (``cli.queue``). Either way each message acted on gets
one mail log line, Sendmail style, saying what was done, by whom and through which
interface::

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
import pwd
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mailwright.core.reply import Reply
from mailwright.observability import maillog, metrics
from mailwright.queue.store import (
    DeleteMessage,
    HoldMessage,
    MessageState,
    Op,
    QueueStore,
    RecipientState,
    ReleaseMessage,
    RescheduleNow,
    StoredMessage,
)
from mailwright.queue.writer import QueueWriter

ACTIONS = ("hold", "release", "delete", "bounce", "flush")
HOLD_REASON = "held by administrator"
BOUNCE_REASON = "Message bounced by administrator"

Bounce = Callable[[str, Reply], Awaitable[bool]]  # the scheduler's bounce
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]  # "wake" or "flush" the daemon


@dataclass
class Selection:
    ids: tuple[str, ...] = ()
    id_contains: str | None = None
    recipient: str | None = None
    sender: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.ids or self.id_contains or self.recipient or self.sender)

    def matches(self, m: StoredMessage) -> bool:
        if self.ids and m.queue_id not in self.ids:
            return False
        if self.id_contains and self.id_contains.upper() not in m.queue_id:
            return False
        if self.sender and self.sender.lower() not in m.envelope.sender_text.lower():
            return False
        return not self.recipient or any(
            self.recipient.lower() in r.address.lower() for r in m.recipients
        )

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ids": list(self.ids)}

    @classmethod
    def from_json(cls, data: Any) -> Selection:
        if not isinstance(data, dict):
            raise ValueError("selection must be an object")
        ids = data.get("ids") or []
        texts = [data.get(k) for k in ("id_contains", "recipient", "sender")]
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("ids must be a list of queue ids")
        if not all(t is None or isinstance(t, str) for t in texts):
            raise ValueError("id_contains, recipient and sender must be text")
        return cls(tuple(i.upper() for i in ids), *texts)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked (a user name, or ``uid N``) and through what (``mailwright queue``)."""

    by: str
    via: str

    @classmethod
    def from_uid(cls, uid: int, via: str) -> Actor:
        try:
            return cls(pwd.getpwuid(uid).pw_name, via)
        except KeyError:
            return cls(f"uid {uid}", via)


@dataclass(slots=True)
class AdminResult:
    action: str
    done: list[str] = field(default_factory=list)  # queue ids acted on
    missing: list[str] = field(default_factory=list)  # named but not in the queue
    held: list[str] = field(default_factory=list)  # flush: on hold, so not scheduled
    scheduled: int = 0  # flush: recipients made due now

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdminResult:
        return cls(
            str(data.get("action", "")),
            [str(i) for i in data.get("done", [])],
            [str(i) for i in data.get("missing", [])],
            [str(i) for i in data.get("held", [])],
            int(data.get("scheduled", 0)),
        )


def selected(store: QueueStore, selection: Selection) -> list[StoredMessage]:
    return [m for m in store.list_messages() if selection.matches(m)]


def admin_operation(action: str, reason: str = HOLD_REASON) -> Callable[[str], Op[bool]]:
    """The store operation of ``hold``, ``release`` or ``delete`` for one queue id."""
    if action == "hold":
        return lambda queue_id: HoldMessage(queue_id, reason)
    if action == "release":
        return ReleaseMessage
    if action == "delete":
        return DeleteMessage
    raise ValueError(f"unknown queue action {action!r}")


@dataclass(frozen=True, slots=True)
class FlushPlan:
    op: RescheduleNow | None  # None: nothing to schedule
    chosen: list[str]  # the messages it schedules (a selective flush)
    held: list[StoredMessage]  # selected but on hold: not scheduled


def flush_plan(store: QueueStore, selection: Selection, now: float) -> FlushPlan:
    """What ``queue flush`` does: every queued recipient (a full run), or those of the
    selected messages; held messages are left out either way and reported."""
    messages = store.list_messages() if selection.empty else selected(store, selection)
    held = [m for m in messages if m.state is MessageState.HOLD]
    if selection.empty:
        return FlushPlan(RescheduleNow(now), [], held)
    ids = [m.queue_id for m in messages if m.state is not MessageState.HOLD]
    return FlushPlan(RescheduleNow(now, queue_ids=ids) if ids else None, ids, held)


def flush_request(op: RescheduleNow | None) -> dict[str, Any]:
    """The arguments of the control socket's ``flush`` for ``op``: none for a full run,
    ``queue_ids`` for a selective one (only those messages; none when nothing matched)."""
    if op is not None and op.queue_ids is None:
        return {}
    return {"queue_ids": list(op.queue_ids or ()) if op is not None else []}


def _waiting(message: StoredMessage) -> int:
    return sum(r.state is RecipientState.QUEUED for r in message.recipients)


class Admin:
    """The actions on one store through one writer; ``notify`` tells the daemon what
    changed (``wake``) or asks for a queue run (``flush``); ``bounce`` is a scheduler's."""

    def __init__(
        self,
        store: QueueStore,
        writer: QueueWriter,
        notify: Notify,
        bounce: Bounce | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.notify = notify
        self.bounce = bounce

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
