"""Queue administration on the durable state: which messages a command selects, and the
store operation each action is (hold, release, delete, flush).

Shared by ``mailwright queue`` (without a daemon, on its own store and writer), the daemon's
control socket and the status page (``daemon.admin.Admin``, which also logs and counts each
action), so all three select and act the same way; ``status_text`` is the one-line status that
``mailq`` and the status page show. Trusts its caller for who asks (``Actor``). Reads no settings.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

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

ACTIONS = ("hold", "release", "delete", "bounce", "flush")
HOLD_REASON = "held by administrator"
BOUNCE_REASON = "Message bounced by administrator"


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


def status_text(message: StoredMessage) -> str | None:
    """Why a message is still here, in one line: held (and why), or its last deferral."""
    if message.state is MessageState.HOLD:
        return f"Held: {message.hold_reason or 'on hold'}"
    for r in message.recipients:
        if r.state is RecipientState.QUEUED and r.last_reply:
            prefix = "Deferred: " if (r.last_status or "").startswith("4") else ""
            status = f"{r.last_status} " if r.last_status else ""
            return f"{prefix}{status}{r.last_reply}"[:200]
    return None
