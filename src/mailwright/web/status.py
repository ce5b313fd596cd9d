"""The daemon's status at one moment: what ``mailwright status`` and the status page show.

Plain data, built by the daemon (``daemon.monitor``) and turned into JSON for the
control socket (``as_json``) and back (``from_json``) for the command line.
Values from mail and peers (addresses, replies, error texts) are carried as they
are; displays escape them. Reads no settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mailwright.observability.metrics import Totals
from mailwright.observability.recent import Bounce, LogEntry
from mailwright.queue.nodes import NodeInfo
from mailwright.queue.store import DeferredGroup, QueueCounts


@dataclass(slots=True)
class ListenerStatus:
    name: str
    kind: str
    address: str  # "127.0.0.1:25", "[::1]:587" or a socket path
    sessions: int


@dataclass(slots=True)
class MilterStatus:
    name: str
    calls: int
    failures: int
    last_error: str | None = None
    last_error_stage: str | None = None
    last_error_at: float | None = None


@dataclass(slots=True)
class AuthStatus:
    """One authentication check's results since start (``metrics.auth_counts``)."""

    check: str  # spf, dkim, dmarc, arc, dane, tlsrpt
    enabled: bool  # on in the daemon's settings now
    results: dict[str, int] = field(default_factory=dict)  # result label -> count

    @property
    def title(self) -> str:
        return AUTH_TITLES.get(self.check, self.check)

    def summary(self) -> str:
        """Like "12 pass, 1 fail"; "no results yet" or "off" without any."""
        if self.results:
            counts = ", ".join(f"{n} {result}" for result, n in self.results.items())
            return counts if self.enabled else f"{counts} (off now)"
        return "no results yet" if self.enabled else "off"


AUTH_TITLES = {
    "spf": "SPF",
    "dkim": "DKIM (per signature)",
    "dmarc": "DMARC",
    "arc": "ARC",
    "dane": "DANE (outbound, per MX host)",
    "tlsrpt": "TLS reports (per address)",
}


@dataclass(slots=True)
class Status:
    hostname: str
    version: str
    pid: int
    started_at: float
    now: float
    delivery_mode: str
    queue_directory: str
    listeners: list[ListenerStatus]
    queue: QueueCounts
    totals: Totals
    http: str | None = None  # the status page's URL
    milters: list[MilterStatus] = field(default_factory=list)
    errors: list[LogEntry] = field(default_factory=list)
    bounces: list[Bounce] = field(default_factory=list)
    deferred: list[DeferredGroup] = field(default_factory=list)
    workers: int = 1  # worker processes; pid is then the supervisor's
    # workers accepting connections now: 1 while worker 0 serves alone (edge.standby);
    # 0 from a daemon that does not say (all of them)
    listening: int = 0
    nodes: list[NodeInfo] = field(default_factory=list)  # of a shared queue (PostgreSQL)
    auth: list[AuthStatus] = field(default_factory=list)  # results of each check since start

    @property
    def workers_line(self) -> str:
        """The worker processes ("4 workers"), and how many accept connections when not
        all of them do ("4 workers, 1 listening")."""
        text = f"{self.workers} workers"
        if 0 < self.listening < self.workers:
            return f"{text}, {self.listening} listening"
        return text

    @property
    def uptime(self) -> float:
        return max(0.0, self.now - self.started_at)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        """The inverse of ``as_json`` (unknown keys, from a newer daemon, are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["listeners"] = [ListenerStatus(**x) for x in data.get("listeners", [])]
        values["queue"] = QueueCounts(**data.get("queue", {}))
        values["totals"] = Totals(**data.get("totals", {}))
        values["milters"] = [MilterStatus(**x) for x in data.get("milters", [])]
        values["errors"] = [LogEntry(**x) for x in data.get("errors", [])]
        values["bounces"] = [Bounce(**x) for x in data.get("bounces", [])]
        values["deferred"] = [DeferredGroup(**x) for x in data.get("deferred", [])]
        values["nodes"] = [NodeInfo(**x) for x in data.get("nodes", [])]
        values["auth"] = [AuthStatus(**x) for x in data.get("auth", [])]
        return cls(**values)
