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

One process (the default): one registry (``REGISTRY``), served by the daemon's HTTP
endpoint, values in memory. Several workers (``use_multiprocess``, called by the
supervisor before it forks them): prometheus-client's multiprocess mode. Every value
lives in a per-process memory-mapped file in ``<queue directory>/metrics``, and
``REGISTRY`` then reads all files at scrape time: counters and histograms sum over
every worker that ever ran since the supervisor started (a dead worker's counts stay),
the sessions gauge sums over live workers (``worker_exited`` drops a dead worker's
share), the queue gauges are the value last set (by the worker that serves
``/metrics``; the store is shared, so any worker would read the same). The
``process_*`` series are left out there: they would describe one worker only.
``totals``, ``milter_counts`` and ``sessions_active`` read the same aggregate.

Label values that come from outside (destinations) are capped so a flood of new
domains cannot grow memory without bound (per process: with workers, the files hold
at most workers x the cap). Trusts the metrics directory (the daemon's own).
Reads no settings.
"""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
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
    values,
)
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from mailwright import __version__
from mailwright.core.reply import Reply
from mailwright.observability import recent
from mailwright.queue.store import RecipientState

if TYPE_CHECKING:
    from mailwright.core.delivery import DeliveryResult
    from mailwright.queue.store import StoredMessage, StoredRecipient

disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the output and help nobody here

MAX_DESTINATIONS = 500  # distinct destination labels; later ones are counted as "other"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client opens its files there


@dataclass(slots=True, frozen=True)
class Workers:
    """The multiprocess mode's facts, set by the supervisor and inherited by its workers."""

    directory: Path  # the workers' memory-mapped value files
    count: int  # workers configured
    started_at: float  # when the supervisor started them: the daemon's start
    pid: int  # the supervisor's: the daemon's pid


MULTIPROCESS: Workers | None = None  # None: one process, values in memory

REGISTRY: CollectorRegistry  # what /metrics serves (set by _define)
RECEIVED: Counter
REJECTED: Counter
DELIVERIES: Counter
DELIVERY_LATENCY: Histogram
SESSIONS: Gauge
QUEUE_MESSAGES: Gauge
QUEUE_RECIPIENTS: Gauge
QUEUE_OLDEST: Gauge
QUEUE_REFUSING: Gauge
MILTER_CALLS: Counter
MILTER_FAILURES: Counter
OUTBOUND: Counter
ADMIN_ACTIONS: Counter
DANE: Counter
SPF_RESULTS: Counter
DKIM_RESULTS: Counter
TLSRPT_REPORTS: Counter
ARC_RESULTS: Counter
DMARC_RESULTS: Counter
START_TIME: Gauge
BUILD: Info


def _define(served: CollectorRegistry, own: CollectorRegistry | None) -> None:
    """(Re)create every metric with the current value class, in ``own`` (None: in none;
    multiprocess mode collects from the files instead); ``served`` becomes ``REGISTRY``.

    The gauges' ``multiprocess_mode`` says how workers' values combine; one process
    ignores it. Only the serving worker sets the queue gauges and the start time
    (``livemostrecent``: its last value); every worker counts its sessions (``livesum``).
    """
    global REGISTRY, RECEIVED, REJECTED, DELIVERIES, DELIVERY_LATENCY, SESSIONS
    global QUEUE_MESSAGES, QUEUE_RECIPIENTS, QUEUE_OLDEST, QUEUE_REFUSING
    global MILTER_CALLS, MILTER_FAILURES
    global OUTBOUND, ADMIN_ACTIONS, START_TIME, BUILD, DANE, SPF_RESULTS
    global TLSRPT_REPORTS, ARC_RESULTS
    global DMARC_RESULTS, DKIM_RESULTS
    REGISTRY = served
    RECEIVED = Counter(
        "mailwright_messages_received",
        "Messages accepted and queued (the 250 after the durable commit), per listener.",
        ["listener"],
        registry=own,
    )
    REJECTED = Counter(
        "mailwright_rejections",
        "Commands or messages refused, by SMTP stage and enhanced status code (the reason).",
        ["stage", "status"],
        registry=own,
    )
    DELIVERIES = Counter(
        "mailwright_deliveries",
        "Delivery results per recipient: delivered, relayed, deferred or bounced, by transport.",
        ["result", "transport"],
        registry=own,
    )
    DELIVERY_LATENCY = Histogram(
        "mailwright_delivery_latency_seconds",
        "Time from a message's arrival to the final delivery of a recipient, by transport.",
        ["transport"],
        buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
        registry=own,
    )
    SESSIONS = Gauge(
        "mailwright_sessions_active",
        "Inbound sessions open now, per listener.",
        ["listener"],
        registry=own,
        multiprocess_mode="livesum",
    )
    QUEUE_MESSAGES = Gauge(
        "mailwright_queue_messages",
        "Messages in the queue by state: active or hold (computed at scrape time).",
        ["state"],
        registry=own,
        multiprocess_mode="livemostrecent",
    )
    QUEUE_RECIPIENTS = Gauge(
        "mailwright_queue_recipients",
        "Queued recipients by next step: due, deferred, delivering, held (at scrape time).",
        ["state"],
        registry=own,
        multiprocess_mode="livemostrecent",
    )
    QUEUE_OLDEST = Gauge(
        "mailwright_queue_oldest_message_age_seconds",
        "Age of the oldest message in the queue; 0 when it is empty (at scrape time).",
        registry=own,
        multiprocess_mode="livemostrecent",
    )
    QUEUE_REFUSING = Gauge(
        "mailwright_queue_refusing_commits",
        "1 while a failed sync of the queue's log keeps every commit from being"
        " acknowledged (451 4.3.0) until a checkpoint completes (at scrape time).",
        registry=own,
        multiprocess_mode="livemostrecent",
    )
    MILTER_CALLS = Counter(
        "mailwright_milter_calls",
        "Stages sent to a milter, by filter and stage.",
        ["filter", "stage"],
        registry=own,
    )
    MILTER_FAILURES = Counter(
        "mailwright_milter_failures",
        "Milter failures (unreachable, timeout, protocol error), by filter and stage.",
        ["filter", "stage"],
        registry=own,
    )
    OUTBOUND = Counter(
        "mailwright_outbound_connections",
        "Outbound SMTP/LMTP connections per destination (next hop): opened, reused, failed.",
        ["destination", "result"],
        registry=own,
    )
    DANE = Counter(
        "mailwright_dane_results",
        "DANE (RFC 7672) per MX host tried: verified, encrypted (TLSA records none usable), "
        "failed, lookup_failed, no_tlsa, insecure (records not DNSSEC-validated).",
        ["result"],
        registry=own,
    )
    TLSRPT_REPORTS = Counter(
        "mailwright_tlsrpt_reports",
        "SMTP TLS reports (RFC 8460) per destination address: queued (mailto:), posted "
        "(https:), failed (a POST refused or unreachable), too_large, no_record.",
        ["result"],
        registry=own,
    )
    ADMIN_ACTIONS = Counter(
        "mailwright_admin_actions",
        "Queue administration (hold, release, delete, bounce, flush): messages acted on, "
        "by action and interface (mailwright queue, status page).",
        ["action", "via"],
        registry=own,
    )
    SPF_RESULTS = Counter(
        "mailwright_spf_results",
        "SPF results (RFC 7208) of inbound transactions: the MAIL FROM identity's (the HELO "
        "name's for a null sender).",
        ["result"],
        registry=own,
    )
    DKIM_RESULTS = Counter(
        "mailwright_dkim_results",
        "DKIM verification results (RFC 6376, the dkim_verify filter) of inbound messages, "
        "per signature: pass, fail, neutral, policy, temperror, permerror; none per message "
        "without one.",
        ["result"],
        registry=own,
    )
    ARC_RESULTS = Counter(
        "mailwright_arc_results",
        "ARC chain validation results (RFC 8617: pass, fail, none) of inbound messages.",
        ["result"],
        registry=own,
    )
    DMARC_RESULTS = Counter(
        "mailwright_dmarc_results",
        "DMARC results (RFC 7489) of inbound messages: pass, fail, none, temperror, permerror.",
        ["result"],
        registry=own,
    )
    START_TIME = Gauge(
        "mailwright_start_time_seconds",
        "When the daemon started (Unix time).",
        registry=own,
        multiprocess_mode="livemostrecent",
    )
    # Info has no multiprocess form; the version is the same in every worker, so the
    # serving process's own is the daemon's
    BUILD = Info("mailwright_build", "Version of the running daemon.", registry=served)
    BUILD.info({"version": __version__})
    _children.clear()
    _destinations.clear()


_destinations: set[str] = set()
# (metric, label values) -> its child: labels() costs microseconds, and several run for
# every message; no more entries than the metrics themselves keep
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def _one_process() -> None:
    # in memory whatever the environment says: a PROMETHEUS_MULTIPROC_DIR meant for some
    # other program would make prometheus-client write files there (or fail to)
    values.ValueClass = values.MutexValue
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)  # process_* series: CPU, memory, open files
    _define(registry, registry)


_one_process()


# ---- several workers ----------------------------------------------------------------------


def use_multiprocess(directory: Path, workers: int) -> None:
    """Several worker processes from now on: called by the supervisor before it forks them.

    Empties ``directory`` of value files (those of an earlier run would add their counts),
    switches prometheus-client to memory-mapped values there and re-creates every metric
    with them; each forked worker then writes its own files (prometheus-client notices the
    new pid at the first update). Counts made before the call are dropped. Call it as the
    account the workers run as (after the drop of root): they create files in ``directory``.
    """
    global MULTIPROCESS
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    for old in directory.glob("*.db"):
        old.unlink()
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
    os.environ[MULTIPROC_ENV] = str(directory)  # the value class reads it on each new file
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    MULTIPROCESS = Workers(directory, workers, time.time(), os.getpid())
    served = CollectorRegistry()
    MultiProcessCollector(served, str(directory))  # type: ignore[no-untyped-call]
    _define(served, None)


def use_one_process() -> None:
    """Back to in-memory values in one process (tests; a supervisor that stops forking)."""
    global MULTIPROCESS
    values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
    os.environ.pop(MULTIPROC_ENV, None)
    MULTIPROCESS = None
    _one_process()


def worker_exited(pid: int) -> None:
    """The supervisor reaped worker ``pid``: its live gauges (sessions) stop counting.

    Its counters and histograms stay in the sums; a no-op in one process.
    """
    if MULTIPROCESS is not None:
        mark_process_dead(pid, str(MULTIPROCESS.directory))  # type: ignore[no-untyped-call]


# ---- one-line instrumentation -------------------------------------------------------------


def received(listener: str) -> None:
    _child(RECEIVED, listener).inc()


def rejected(stage: str, reply: Reply) -> None:
    REJECTED.labels(stage, reply.status or str(reply.code)).inc()


def spf_result(result: str) -> None:
    SPF_RESULTS.labels(result).inc()


def dkim_result(result: str) -> None:
    DKIM_RESULTS.labels(result).inc()


def arc_result(result: str) -> None:
    ARC_RESULTS.labels(result).inc()


def dmarc_result(result: str) -> None:
    DMARC_RESULTS.labels(result).inc()


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
        _child(DELIVERY_LATENCY, transport).observe(max(0.0, now - message.received_at))
        _child(DELIVERIES, state.value, transport).inc()
    elif state is RecipientState.QUEUED:
        _child(DELIVERIES, "deferred", transport).inc()
    else:
        _child(DELIVERIES, "bounced", transport).inc()
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
    _child(OUTBOUND, destination, result).inc()


def dane(result: str) -> None:
    """One MX host's DANE outcome (``delivery.dane``, ``delivery.smtp``)."""
    DANE.labels(result).inc()


def tlsrpt_report(result: str) -> None:
    """One TLS report to one address, or a domain without a record (``daemon.tlsreports``)."""
    TLSRPT_REPORTS.labels(result).inc()


def admin_action(action: str, via: str) -> None:
    """An administrator acted on one message (``daemon.admin``)."""
    ADMIN_ACTIONS.labels(action, via).inc()


# ---- sessions -----------------------------------------------------------------------------


def session_started(listener: str) -> None:
    """An inbound session began (the edge calls it; ``session_ended`` when it is over).

    One process counts its sessions from the listeners' tables at scrape time; workers
    keep their own count in their file, as the serving worker cannot see their tables.
    """
    if MULTIPROCESS is not None:
        _child(SESSIONS, listener).inc()


def session_ended(listener: str) -> None:
    if MULTIPROCESS is not None:
        _child(SESSIONS, listener).dec()


# ---- gauges at scrape time ----------------------------------------------------------------


def set_sessions(per_listener: dict[str, int]) -> None:
    """Active sessions now in this process; listeners without a session read 0 (not missing).

    With workers, this process's share (the others keep theirs up to date themselves).
    """
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
    refusing: bool = False  # QueueCounts.refusing_since is set


def set_queue(sizes: QueueSizes) -> None:
    QUEUE_MESSAGES.labels("active").set(sizes.active_messages)
    QUEUE_MESSAGES.labels("hold").set(sizes.held_messages)
    for state in ("due", "deferred", "delivering", "held"):
        QUEUE_RECIPIENTS.labels(state).set(getattr(sizes, state))
    QUEUE_OLDEST.set(sizes.oldest_age)
    QUEUE_REFUSING.set(1 if sizes.refusing else 0)


def exposition() -> bytes:
    """The Prometheus text format of every metric (of every worker, with workers)."""
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


Samples = list[tuple[dict[str, str], float]]  # (labels, value)


def _summed(metrics: Iterable[Counter | Gauge], files: str) -> dict[str, Samples]:
    """Each metric's samples by metric name: this process's, or with workers summed over
    the value files matching ``files`` (counters: every worker's; live gauges: live ones').

    Reads the files itself rather than through prometheus-client's collector: it parses
    only the keys of the metrics asked for (a key is the JSON list ``[metric name,
    sample name, labels, help]``), where the collector parses every key of every file,
    and the status sampler runs this on the event loop.
    """
    metrics = list(metrics)
    out: dict[str, Samples] = {m._name: [] for m in metrics}
    if MULTIPROCESS is None:
        for metric in metrics:
            for family in metric.collect():
                out[metric._name].extend((s.labels, s.value) for s in family.samples)
        return out
    prefixes = tuple(json.dumps([name])[:-1] + ", " for name in out)  # '["name", '
    parsed: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
    sums: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for path in glob.glob(os.path.join(MULTIPROCESS.directory, files)):
        try:
            entries = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
        except FileNotFoundError:  # a live gauge file of a worker that just exited
            continue
        for key, value, _, _ in entries:
            if not key.startswith(prefixes):
                continue
            found = parsed.get(key)
            if found is None:
                name, _, labels, _ = json.loads(key)
                found = parsed[key] = (name, tuple(sorted(labels.items())))
            sums[found] = sums.get(found, 0.0) + value
    for (name, labels), value in sums.items():
        out[name].append((dict(labels), value))
    return out


def _sum(samples: Samples, label: str = "", wanted: tuple[str, ...] = ()) -> int:
    return int(sum(v for labels, v in samples if not label or labels.get(label) in wanted))


def totals() -> Totals:
    """Counts since the daemon started (every worker's), summed over labels."""
    found = _summed((RECEIVED, REJECTED, DELIVERIES), "counter_*.db")
    deliveries = found[DELIVERIES._name]
    return Totals(
        received=_sum(found[RECEIVED._name]),
        rejected=_sum(found[REJECTED._name]),
        delivered=_sum(deliveries, "result", ("delivered", "relayed")),
        deferred=_sum(deliveries, "result", ("deferred",)),
        bounced=_sum(deliveries, "result", ("bounced",)),
    )


def milter_counts() -> dict[str, tuple[int, int]]:
    """Calls and failures per filter, summed over stages (and workers)."""
    found = _summed((MILTER_CALLS, MILTER_FAILURES), "counter_*.db")
    out: dict[str, list[int]] = {}
    for metric, slot in ((MILTER_CALLS, 0), (MILTER_FAILURES, 1)):
        for labels, value in found[metric._name]:
            out.setdefault(labels["filter"], [0, 0])[slot] += int(value)
    return {name: (calls, failures) for name, (calls, failures) in out.items()}


def sessions_active() -> dict[str, int]:
    """Sessions open now per listener in every live worker (multiprocess mode only:
    one process counts its tables itself, see ``daemon.monitor``)."""
    out: dict[str, int] = {}
    for labels, value in _summed((SESSIONS,), "gauge_livesum_*.db")[SESSIONS._name]:
        out[labels["listener"]] = out.get(labels["listener"], 0) + int(value)
    return out


# ---- authentication results for the status page and ``mailwright status`` ----------------


def auth_counts() -> dict[str, dict[str, int]]:
    """Results since start (every worker's) per check, by result label: SPF, DKIM (per
    signature), DMARC and ARC of inbound mail, DANE per MX host tried, TLS reports per
    destination address. A check without results has an empty dict."""
    checks = (
        ("spf", SPF_RESULTS),
        ("dkim", DKIM_RESULTS),
        ("dmarc", DMARC_RESULTS),
        ("arc", ARC_RESULTS),
        ("dane", DANE),
        ("tlsrpt", TLSRPT_REPORTS),
    )  # read at each call: use_multiprocess re-creates the metrics
    found = _summed((metric for _, metric in checks), "counter_*.db")
    out: dict[str, dict[str, int]] = {}
    for check, metric in checks:
        counts: dict[str, int] = {}
        for labels, value in found[metric._name]:
            result = labels.get("result", "")
            counts[result] = counts.get(result, 0) + int(value)
        out[check] = {result: counts[result] for result in sorted(counts) if counts[result]}
    return out
