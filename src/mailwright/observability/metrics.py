"""Prometheus metrics of the daemon: counters bumped where things happen, gauges set at scrape.

Counters (messages received, rejections by stage and status code, delivery results,
milter calls and failures, outbound connections per destination, administrative actions)
are incremented by one-line calls from the session, the scheduler, the milter hook, the
SMTP agent and ``daemon.admin``;
each costs one labelled increment (a dict lookup and an uncontended lock), so the
accept path is not slowed. Gauges that describe a state (queue size by state, active
sessions) are computed only when someone scrapes (``set_queue``, ``set_sessions``),
never maintained per message. The same calls feed ``observability.recent`` (recent
bounces, the last failure of each milter) for the status page.

One registry per process (``REGISTRY``), served by the daemon's HTTP endpoint.
Label values that come from outside (destinations) are capped so a flood of new
domains cannot grow memory without bound. Reads no settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from mailwright import __version__
from mailwright.core.reply import Reply
from mailwright.observability import recent
from mailwright.queue.store import RecipientState

if TYPE_CHECKING:
    from mailwright.core.delivery import DeliveryResult
    from mailwright.queue.store import StoredMessage, StoredRecipient

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and help nobody here

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_* series: CPU, memory, open files
MAX_DESTINATIONS = 500  # distinct destination labels; later ones are counted as "other"

RECEIVED = Counter(
    "mailwright_messages_received",
    "Messages accepted and queued (the 250 after the durable commit), per listener.",
    ["listener"],
    registry=REGISTRY,
)
REJECTED = Counter(
    "mailwright_rejections",
    "Commands or messages refused, by SMTP stage and enhanced status code (the reason).",
    ["stage", "status"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "mailwright_deliveries",
    "Delivery results per recipient: delivered, relayed, deferred or bounced, by transport.",
    ["result", "transport"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "mailwright_delivery_latency_seconds",
    "Time from a message's arrival to the final delivery of a recipient, by transport.",
    ["transport"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
    registry=REGISTRY,
)
SESSIONS = Gauge(
    "mailwright_sessions_active",
    "Inbound sessions open now, per listener (computed at scrape time).",
    ["listener"],
    registry=REGISTRY,
)
QUEUE_MESSAGES = Gauge(
    "mailwright_queue_messages",
    "Messages in the queue by state: active or hold (computed at scrape time).",
    ["state"],
    registry=REGISTRY,
)
QUEUE_RECIPIENTS = Gauge(
    "mailwright_queue_recipients",
    "Queued recipients by next step: due, deferred, delivering, held (at scrape time).",
    ["state"],
    registry=REGISTRY,
)
QUEUE_OLDEST = Gauge(
    "mailwright_queue_oldest_message_age_seconds",
    "Age of the oldest message in the queue; 0 when it is empty (at scrape time).",
    registry=REGISTRY,
)
MILTER_CALLS = Counter(
    "mailwright_milter_calls",
    "Stages sent to a milter, by filter and stage.",
    ["filter", "stage"],
    registry=REGISTRY,
)
MILTER_FAILURES = Counter(
    "mailwright_milter_failures",
    "Milter failures (unreachable, timeout, protocol error), by filter and stage.",
    ["filter", "stage"],
    registry=REGISTRY,
)
OUTBOUND = Counter(
    "mailwright_outbound_connections",
    "Outbound SMTP/LMTP connections per destination (next hop): opened, reused, failed.",
    ["destination", "result"],
    registry=REGISTRY,
)
ADMIN_ACTIONS = Counter(
    "mailwright_admin_actions",
    "Queue administration (hold, release, delete, bounce, flush): messages acted on, "
    "by action and interface (mailwright queue, status page).",
    ["action", "via"],
    registry=REGISTRY,
)
START_TIME = Gauge(
    "mailwright_start_time_seconds", "When the daemon started (Unix time).", registry=REGISTRY
)
BUILD = Info("mailwright_build", "Version of the running daemon.", registry=REGISTRY)
BUILD.info({"version": __version__})

_destinations: set[str] = set()


# ---- one-line instrumentation -------------------------------------------------------------


_received: dict[str, Any] = {}  # listener -> its counter (skips the labels() lookup)


def received(listener: str) -> None:
    child = _received.get(listener)
    if child is None:
        child = _received[listener] = RECEIVED.labels(listener)
    child.inc()


def rejected(stage: str, reply: Reply) -> None:
    REJECTED.labels(stage, reply.status or str(reply.code)).inc()


def greeted(reply: Reply | None) -> None:
    """The connect stage's verdict: counts a refused greeting."""
    if reply is not None and not reply.positive:
        rejected("connect", reply)


def recorded(
    message: StoredMessage,
    recipient: StoredRecipient,
    state: RecipientState,
    result: DeliveryResult,
    transport: str | None,
    now: float,
) -> None:
    """One recipient's result as the scheduler commits it (``state`` QUEUED: deferred).

    ``transport`` is the next hop's transport, None when no delivery was attempted.
    """
    transport = transport or "error"
    if state is RecipientState.DELIVERED or state is RecipientState.RELAYED:
        DELIVERY_LATENCY.labels(transport).observe(max(0.0, now - message.received_at))
        DELIVERIES.labels(state.value, transport).inc()
    elif state is RecipientState.QUEUED:
        DELIVERIES.labels("deferred", transport).inc()
    else:
        DELIVERIES.labels("bounced", transport).inc()
        reply = result.reply
        bounce = recent.Bounce(
            now,
            message.queue_id,
            message.envelope.sender_text,
            recipient.address,
            reply.status,
            str(reply)[: recent.MAX_TEXT],  # as the reply reads: 550 5.1.1 text
            result.remote_mta or None,
        )
        recent.RECENT.bounce(bounce)


def milter_call(name: str, stage: str) -> None:
    MILTER_CALLS.labels(name, stage).inc()


def milter_failure(name: str, stage: str, error: object) -> None:
    MILTER_FAILURES.labels(name, stage).inc()
    recent.RECENT.milter_failed(name, stage, str(error))


def outbound(destination: str, result: str) -> None:
    """A connection to ``destination`` was ``opened``, ``reused`` or ``failed``."""
    if destination not in _destinations:
        if len(_destinations) >= MAX_DESTINATIONS:
            destination = "other"
        else:
            _destinations.add(destination)
    OUTBOUND.labels(destination, result).inc()


def admin_action(action: str, via: str) -> None:
    """An administrator acted on one message (``daemon.admin``)."""
    ADMIN_ACTIONS.labels(action, via).inc()


# ---- gauges at scrape time ----------------------------------------------------------------


def set_sessions(per_listener: dict[str, int]) -> None:
    """Active sessions now; listeners without a session read 0 (not missing)."""
    for name, count in per_listener.items():
        SESSIONS.labels(name).set(count)


@dataclass(slots=True)
class QueueSizes:
    active_messages: int
    held_messages: int
    due: int
    deferred: int
    delivering: int
    held: int
    oldest_age: float


def set_queue(sizes: QueueSizes) -> None:
    QUEUE_MESSAGES.labels("active").set(sizes.active_messages)
    QUEUE_MESSAGES.labels("hold").set(sizes.held_messages)
    for state in ("due", "deferred", "delivering", "held"):
        QUEUE_RECIPIENTS.labels(state).set(getattr(sizes, state))
    QUEUE_OLDEST.set(sizes.oldest_age)


def exposition() -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(REGISTRY)


# ---- totals for the status page and ``mailwright status`` --------------------------------


@dataclass(slots=True, frozen=True)
class Totals:
    received: int = 0
    rejected: int = 0
    delivered: int = 0  # delivered and relayed
    deferred: int = 0
    bounced: int = 0

    def __sub__(self, other: Totals) -> Totals:
        return Totals(
            self.received - other.received,
            self.rejected - other.rejected,
            self.delivered - other.delivered,
            self.deferred - other.deferred,
            self.bounced - other.bounced,
        )


def _sum(metric: Counter, label: str = "", values: tuple[str, ...] = ()) -> int:
    total = 0.0
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total") and (not label or s.labels.get(label) in values):
                total += s.value
    return int(total)


def totals() -> Totals:
    """Counts since the process started, summed over labels."""
    return Totals(
        received=_sum(RECEIVED),
        rejected=_sum(REJECTED),
        delivered=_sum(DELIVERIES, "result", ("delivered", "relayed")),
        deferred=_sum(DELIVERIES, "result", ("deferred",)),
        bounced=_sum(DELIVERIES, "result", ("bounced",)),
    )


def milter_counts() -> dict[str, tuple[int, int]]:
    """Calls and failures per filter, summed over stages."""
    out: dict[str, list[int]] = {}
    for metric, slot in ((MILTER_CALLS, 0), (MILTER_FAILURES, 1)):
        for family in metric.collect():
            for s in family.samples:
                if s.name.endswith("_total"):
                    out.setdefault(s.labels["filter"], [0, 0])[slot] += int(s.value)
    return {name: (calls, failures) for name, (calls, failures) in out.items()}
